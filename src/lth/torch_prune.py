"""Interop with ``torch.nn.utils.prune``: lth masks to torch's reparametrisation and back."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from lth.errors import LthError
from lth.masks import Mask


def _split(name: str) -> tuple[str, str]:
    module_path, _, param = name.rpartition(".")
    return module_path, param


def _target(model: nn.Module, name: str) -> tuple[nn.Module, str, Tensor]:
    """The module owning parameter ``name`` (pruned by torch already or not), its local name, its value."""
    module_path, param = _split(name)
    try:
        module = model.get_submodule(module_path)
    except AttributeError:
        module = None
    if module is not None:
        value = module._parameters.get(param)
        if value is not None:
            return module, param, value
        orig = module._parameters.get(f"{param}_orig")
        if orig is not None and f"{param}_mask" in module._buffers:  # already pruned by torch
            return module, param, orig
    raise LthError(f"mask names parameter {name!r}, which the model does not have")


def apply_with_torch_prune(model: nn.Module, mask: Mapping[str, Tensor]) -> nn.Module:
    """Prune ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``, one call per mask entry.

    Each parameter ``p`` becomes ``p_orig`` (a parameter) and ``p_mask`` (a buffer), exactly as torch's
    own pruning does; on a parameter pruned by torch already, the masks are combined by torch.
    All entries are checked before the model is touched.
    """
    targets = []
    for name, m in mask.items():
        module, param, value = _target(model, name)
        if tuple(m.shape) != tuple(value.shape):
            raise LthError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(value.shape)}")
        targets.append((module, param, m.detach().to(device=value.device, dtype=torch.bool)))
    for module, param, m in targets:
        torch_prune.custom_from_mask(module, param, m)
    return model


def mask_from_torch_prune(model: nn.Module) -> Mask:
    """The masks of every parameter pruned with ``torch.nn.utils.prune``, keyed by the original name.

    A pruned parameter ``fc1.weight`` is stored by torch as ``fc1.weight_orig`` and ``fc1.weight_mask``;
    the result maps ``fc1.weight`` to the mask as a bool tensor on the CPU.
    """
    found = Mask()
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module._buffers.items():
            if buffer is None or not buffer_name.endswith("_mask"):
                continue
            param = buffer_name[: -len("_mask")]
            if module._parameters.get(f"{param}_orig") is None:
                continue
            key = f"{module_name}.{param}" if module_name else param
            found[key] = buffer.detach().cpu().bool()
    return found
