"""A canvas behind a mask: the start picture is kept wherever the mask is not painted.

`--mask` repaints part of a picture. Whatever canvas runs (pixels, strokes) renders as usual, and
this wrapper shows, pixel by pixel, `mask x canvas + (1 - mask) x picture`: gradients reach the
canvas only through the painted region, and the final image equals the start picture outside it,
to the bit. The mask ramps up over a few pixels inside the painted region (pictures.start_mask),
so the repainted part blends into the kept one. Beyond the visible part (the jitter margin), the
picture continues as the pyramid continues it, mirrored, and the mask as its edge. A stroke
drawing's SVG (the inner canvas's export) holds its strokes alone: the kept picture is the PNG's.
"""

from __future__ import annotations

import torch

from .base import Canvas, Wrapper, from_pil, to_pil


class MaskedCanvas(Wrapper):
    def __init__(self, inner: Canvas, picture: torch.Tensor, mask: torch.Tensor):
        """`picture` (1, 3, h, w) and `mask` (1, 1, h, w) in [0, 1] at the visible part's size."""
        super().__init__(inner)
        self.register_buffer("picture", inner.extend(picture), persistent=False)
        self.register_buffer("mask", inner.extend(mask, "edge"), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.mask * self.inner() + (1 - self.mask) * self.picture

    @torch.no_grad()
    def image(self):
        # The inner canvas's own picture (a stroke drawing at its final softness) behind the mask.
        inner = from_pil(self.inner.image()).to(self.mask.device)
        return to_pil(self.crop(self.mask) * inner + (1 - self.crop(self.mask)) * self.crop(self.picture))
