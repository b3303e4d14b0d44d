"""Mask: a mapping {parameter name -> bool tensor}, 1 = kept."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from lth.atomic import atomic_torch_save
from lth.errors import LthError


def as_mask_tensor(value: torch.Tensor, source: str, name: str) -> torch.Tensor:
    """``value`` as a bool tensor if it is boolean or holds only 0 and 1; else LthError naming
    ``source`` (e.g. "mask file 'm.pt'") and the entry ``name`` (NaN, 0.5 or 2 are not keep flags)."""
    if value.dtype == torch.bool:
        return value
    if value.is_complex() or not (value.is_floating_point() or value.dtype in _INTEGER):
        raise LthError(f"{source}: {name!r} is a {value.dtype} tensor; masks must be boolean (or hold only 0 and 1)")
    flags = (value == 0) | (value == 1)
    if not bool(flags.all()):
        bad = value[~flags].flatten()[0].item()
        raise LthError(f"{source}: {name!r} holds {bad!r}; masks must be boolean (or hold only 0 and 1)")
    return value.bool()


_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Mask(dict[str, torch.Tensor]):
    """Boolean keep-masks for some of a model's parameters (the prunable ones)."""

    @classmethod
    def ones(cls, params: Mapping[str, torch.Tensor]) -> Mask:
        """The dense mask of ``params``: every entry kept (a bool tensor of each parameter's shape)."""
        return cls({name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()})

    def kept(self) -> int:
        """The number of entries kept, over all masked parameters."""
        return int(sum(int(m.sum()) for m in self.values()))

    def size(self) -> int:
        """The number of masked entries, kept or pruned, over all masked parameters."""
        return int(sum(m.numel() for m in self.values()))

    def density(self) -> float:
        """Fraction of the masked parameters still kept (1.0 = dense)."""
        size = self.size()
        return self.kept() / size if size else 1.0

    def layer_density(self) -> dict[str, float]:
        """The fraction kept of each masked parameter, by name."""
        return {name: float(m.sum()) / m.numel() for name, m in self.items()}

    def to(self, device: torch.device | str) -> Mask:
        """A copy of the mask on ``device``."""
        return Mask({name: m.to(device) for name, m in self.items()})

    def cpu(self) -> Mask:
        """A copy of the mask on the CPU."""
        return self.to("cpu")

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned entries of the model's parameters in place."""
        params = dict(model.named_parameters())
        for name, m in self.items():
            params[name].mul_(m.to(params[name].device, params[name].dtype))
        return model

    def save(self, path: str | Path) -> None:
        """Write the mask to ``path`` with ``torch.save`` (on the CPU; atomically: readers never see half a file)."""
        atomic_torch_save({name: m.detach().cpu() for name, m in self.items()}, path)

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        """Read a mask saved by :meth:`save` (or any file of name -> 0/1 or bool tensors), on the CPU.

        LthError for a missing, damaged or foreign file, or an entry that is not a keep flag.
        """
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise LthError(f"mask file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise LthError(f"mask file {str(path)!r} is a directory, not a file saved with torch.save") from None
        except Exception as error:  # corrupt, truncated or not a torch file (torch's message is long)
            raise LthError(
                f"cannot read mask file {str(path)!r}: torch cannot load it ({type(error).__name__}); "
                "it is damaged or not a mask"
            ) from None
        if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise LthError(f"mask file {str(path)!r} must hold a mapping of parameter names to tensors")
        return cls({str(k): as_mask_tensor(v, f"mask file {str(path)!r}", str(k)) for k, v in data.items()})

    def check_matches(self, params: Mapping[str, torch.Tensor], names: Iterable[str] | None = None) -> None:
        """Raise LthError unless every mask entry names a parameter of the same shape."""
        for name, m in self.items():
            if name not in params:
                raise LthError(f"mask names parameter {name!r}, which the model does not have")
            if tuple(m.shape) != tuple(params[name].shape):
                raise LthError(
                    f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(params[name].shape)}"
                )
