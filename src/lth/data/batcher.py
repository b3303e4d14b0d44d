"""Deterministic, random-access minibatches: batch i is a pure function of (seed, i)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lth.errors import LthError

_MASK64 = (1 << 64) - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """Mix ``seed`` and ``epoch`` into one well-spread 63-bit generator seed (splitmix64)."""
    z = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad ``x`` (B,C,H,W) by ``pad``, crop at ``offsets`` (B,2: dy,dx), flip if ``flips``."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    cropped = padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


class Batcher:
    """Shuffled minibatches addressed by global iteration; partial last batches are dropped."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        augment: bool = False,
        pad: int = 4,
    ) -> None:
        n = x.shape[0]
        if y.shape[0] != n:
            raise LthError(f"x has {n} examples but y has {y.shape[0]}; they must match")
        if not 1 <= batch_size <= n:
            raise LthError(
                f"batch size {batch_size} is invalid; it must be between 1 and {n} (the number of training examples)"
            )
        if augment and x.dim() != 4:
            raise LthError(f"augmentation needs images shaped (N, C, H, W), got {tuple(x.shape)}")
        self.x, self.y = x, y
        self.batch_size, self.seed, self.augment, self.pad = batch_size, seed, augment, pad
        self.num_examples = n
        self.iterations_per_epoch = n // batch_size
        self._epoch: int | None = None
        self._perm = torch.empty(0, dtype=torch.long)
        self._offsets = torch.empty(0, 2, dtype=torch.long)
        self._flips = torch.empty(0, dtype=torch.bool)

    def _load_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n, dev = self.num_examples, self.x.device
        self._perm = torch.randperm(n, generator=gen).to(dev)
        if self.augment:
            self._offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen).to(dev)
            self._flips = (torch.rand(n, generator=gen) < 0.5).to(dev)
        self._epoch = epoch

    def _slot(self, iteration: int) -> slice:
        if iteration < 0:
            raise LthError(f"iteration {iteration} is invalid; it must be >= 0")
        epoch, step = divmod(iteration, self.iterations_per_epoch)
        self._load_epoch(epoch)
        return slice(step * self.batch_size, (step + 1) * self.batch_size)

    def indices(self, iteration: int) -> torch.Tensor:
        """Example indices of batch ``iteration`` (on the data's device)."""
        slot = self._slot(iteration)  # first: it may load the epoch's permutation
        return self._perm[slot]

    def augmentation(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Crop offsets (B,2) and flip flags (B,) of batch ``iteration``; None if not augmenting."""
        if not self.augment:
            return None
        slot = self._slot(iteration)
        return self._offsets[slot], self._flips[slot]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) minibatch for global ``iteration``."""
        slot = self._slot(iteration)
        idx = self._perm[slot]
        xb, yb = self.x[idx], self.y[idx]
        if self.augment:
            xb = crop_flip(xb, self._offsets[slot], self._flips[slot], self.pad)
        return xb, yb
