"""A canvas behind a mask: the start picture is kept wherever the mask is not painted.

`--mask` repaints part of a picture. Whatever canvas runs (pixels, strokes) renders as usual, and
this wrapper shows, pixel by pixel, `mask x canvas + (1 - mask) x picture`: gradients reach the
canvas only through the painted region, and the final image equals the start picture outside it,
to the bit. The mask ramps up over a few pixels inside the painted region (pictures.start_mask),
so the repainted part blends into the kept one. Beyond the visible part (the jitter margin), the
picture continues as the pyramid continues it, mirrored, and the mask as its edge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Canvas


class MaskedCanvas(Canvas):
    def __init__(self, inner: Canvas, picture: torch.Tensor, mask: torch.Tensor):
        """`picture` (1, 3, h, w) and `mask` (1, 1, h, w) in [0, 1] at the visible part's size."""
        super().__init__()
        self.inner = inner
        self.size, self.resolution = inner.size, inner.resolution
        (top, left), (h, w) = inner.offsets, inner.visible
        pad = (left, inner.shape[1] - w - left, top, inner.shape[0] - h - top)
        mode = "reflect" if max(pad[2:]) < h and max(pad[:2]) < w else "replicate"
        self.register_buffer("picture", F.pad(picture.float(), pad, mode=mode), persistent=False)
        self.register_buffer("mask", F.pad(mask.float(), pad, mode="replicate"), persistent=False)

    def param_groups(self, lr: float) -> list[dict]:
        return self.inner.param_groups(lr)

    def at_step(self, step: int, steps: int) -> None:
        self.inner.at_step(step, steps)

    def forward(self) -> torch.Tensor:
        return self.mask * self.inner() + (1 - self.mask) * self.picture

    @torch.no_grad()
    def clamp_(self) -> None:
        self.inner.clamp_()

    def maintain_(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> None:
        self.inner.maintain_(step, steps, optimizer)

    @torch.no_grad()
    def image(self):
        # The inner canvas's own picture (a stroke drawing at its final softness) behind the mask.
        from .base import from_pil, to_pil

        inner = from_pil(self.inner.image()).to(self.mask.device)
        return to_pil(self.crop(self.mask) * inner + (1 - self.crop(self.mask)) * self.crop(self.picture))

    def exports(self):
        # A stroke drawing's SVG holds its strokes alone: the kept picture is the PNG's.
        return self.inner.exports()
