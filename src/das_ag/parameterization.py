"""The multi-resolution image: a stack of square levels, upsampled to one canvas and squashed.

Coarse levels move large regions at once and fine levels add detail, which is what lets plain
gradient ascent on CLIP produce images instead of adversarial noise (Direct Ascent Synthesis).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from .resample import resample_matrix


def level_sizes(canvas_size: int, levels: str = "pow2") -> list[int]:
    """Side lengths of the levels: powers of two up to the canvas (DAS-AG) or every size (DAS)."""
    if levels == "all":
        return list(range(1, canvas_size + 1))
    sizes, s = [], 1
    while s <= canvas_size:
        sizes.append(s)
        s *= 2
    return sizes


class MultiResolutionImage(nn.Module):
    def __init__(
        self,
        canvas_size: int,
        resolution: int,
        *,
        levels: str = "pow2",
        init: str = "normal",
        combine: str = "mean",
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if resolution > canvas_size:
            raise ValueError("the output cannot be larger than the canvas")
        self.canvas_size, self.resolution, self.combine = canvas_size, resolution, combine
        self.sizes = level_sizes(canvas_size, levels)
        tensors = []
        for s in self.sizes:
            if init == "zeros":
                tensors.append(torch.zeros(1, 3, s, s))
            else:
                # N(0, 1)/s: each level starts with about the same total energy, so coarse levels
                # are not drowned out by the many pixels of fine ones.
                tensors.append(torch.randn(1, 3, s, s, generator=generator) / s)
        self.levels = nn.ParameterList(nn.Parameter(t) for t in tensors)
        # One (canvas, s) matrix per level; the full-size level needs none.
        for s in self.sizes:
            if s != canvas_size:
                self.register_buffer(f"up{s}", resample_matrix(s, canvas_size, interpolation), persistent=False)

    def raw(self) -> torch.Tensor:
        """The combined, unsquashed canvas (1, 3, S, S)."""
        total = None
        for s, level in zip(self.sizes, self.levels):
            if s == self.canvas_size:
                up = level
            else:
                u = getattr(self, f"up{s}")
                up = u @ level @ u.t()
            total = up if total is None else total + up
        return total / len(self.sizes) if self.combine == "mean" else total

    def forward(self) -> torch.Tensor:
        """Canvas pixels in [0, 1], the full range (the reference's tanh-as-normalised bug fixed)."""
        return (torch.tanh(self.raw()) + 1) / 2

    @property
    def crop_offset(self) -> int:
        return (self.canvas_size - self.resolution) // 2

    def crop(self, canvas: torch.Tensor) -> torch.Tensor:
        o, r = self.crop_offset, self.resolution
        return canvas[..., o : o + r, o : o + r]

    @torch.no_grad()
    def image(self) -> Image.Image:
        """The central crop as an 8-bit RGB image: what a user sees and saves."""
        return to_pil(self.crop(self.forward()))


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) floats in [0, 1] -> 8-bit RGB."""
    x = pixels.detach().float().reshape(-1, *pixels.shape[-2:])[:3]
    array = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def from_pil(image: Image.Image) -> torch.Tensor:
    """8-bit RGB -> (1, 3, H, W) floats in [0, 1]."""
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float() / 255
