"""The multi-resolution image: a stack of square levels, upsampled to one canvas and squashed.

Coarse levels move large regions at once and fine levels add detail, which is what lets plain
gradient ascent on CLIP produce images instead of adversarial noise (Direct Ascent Synthesis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..resample import resample_matrix
from .base import Canvas


def level_sizes(canvas_size: int, levels: str = "pow2") -> list[int]:
    """Side lengths of the levels: powers of two up to the canvas (DAS-AG) or every size (DAS)."""
    if levels == "all":
        return list(range(1, canvas_size + 1))
    sizes, s = [], 1
    while s <= canvas_size:
        sizes.append(s)
        s *= 2
    return sizes


class PyramidCanvas(Canvas):
    """Square levels of 1, 2, 4, ... px (or every size), each upsampled to the canvas, summed or
    averaged, and squashed into [0, 1] by tanh."""

    name = "pyramid"

    @classmethod
    def from_config(cls, config, generator: torch.Generator) -> PyramidCanvas:
        picture = None
        if config.start_picture:
            from ..pictures import load_picture

            picture = load_picture(config.start_picture, config.resolution, config.resolution)
        return cls(config.canvas_size, config.resolution, levels=config.levels, init=config.init,
                   combine=config.combine, interpolation=config.interpolation, generator=generator, picture=picture)

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
        picture: torch.Tensor | None = None,
    ):
        """`picture` (1, 3, R, R) in [0, 1]: start as this picture instead of from `init`."""
        super().__init__()
        if resolution > canvas_size:
            raise ValueError("the output cannot be larger than the canvas")
        self.size, self.resolution, self.combine = canvas_size, resolution, combine
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
        if picture is not None:
            self._hold(picture)

    @torch.no_grad()
    def _hold(self, picture: torch.Tensor) -> None:
        """Set the levels so the canvas shows `picture` in its visible part, coarse to fine: each
        level takes the local means of what the coarser ones left, the finest level the rest.
        Every level then starts with its own share of the picture, so both large regions and
        details can move it (one full-size level holding everything could only move pixels)."""
        margin = (self.size - self.resolution) // 2
        extra = self.size - self.resolution - margin
        # The margin (what jittered views see past the edge) continues the picture as a mirror.
        mode = "reflect" if max(margin, extra) < self.resolution else "replicate"
        full = F.pad(picture.float(), (margin, extra, margin, extra), mode=mode)
        # Undo the squash: raw = atanh(2p - 1), kept finite at 0 and 1 (still the same 8-bit value).
        eps = 1 / 1024
        rest = torch.atanh(full.clamp(eps, 1 - eps) * 2 - 1) * (len(self.sizes) if self.combine == "mean" else 1)
        for s, level in zip(self.sizes, self.levels):
            if s == self.size:
                level.copy_(rest)
                break
            part = F.adaptive_avg_pool2d(rest, s)
            level.copy_(part)
            u = getattr(self, f"up{s}")
            rest = rest - u @ part @ u.t()

    def raw(self) -> torch.Tensor:
        """The combined, unsquashed canvas (1, 3, S, S)."""
        total = None
        for s, level in zip(self.sizes, self.levels):
            if s == self.size:
                up = level
            else:
                u = getattr(self, f"up{s}")
                up = u @ level @ u.t()
            total = up if total is None else total + up
        return total / len(self.sizes) if self.combine == "mean" else total

    def forward(self) -> torch.Tensor:
        """Canvas pixels in [0, 1], the full range (the reference's tanh-as-normalised bug fixed)."""
        return (torch.tanh(self.raw()) + 1) / 2

