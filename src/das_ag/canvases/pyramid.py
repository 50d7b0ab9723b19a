"""The multi-resolution image: a stack of levels, upsampled to one canvas and squashed.

Coarse levels move large regions at once and fine levels add detail, which is what lets plain
gradient ascent on CLIP produce images instead of adversarial noise (Direct Ascent Synthesis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..resample import circular_resample_matrix, resample_matrix
from ..settings import PartSettings, number_in, setting
from .base import Canvas, geometry

LEVELS = ("pow2", "all")
FILLS = ("normal", "zeros")
COMBINES = ("mean", "sum")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MIN_COARSE_LR, MAX_COARSE_LR = 0.1, 10.0
# Levels whose long side is at most this share of the picture's (the visible part, not the jitter
# margin around it) are the coarse ones: the large regions (a 64 px picture's levels of 1 to 16 px;
# a 224 px picture's, 1 to 32 px).
COARSE_SHARE = 0.25


@dataclass(frozen=True)
class PyramidSettings(PartSettings):
    """The pyramid's own settings (before version 0.9 they were top-level config fields: recipes
    and plans that have them there are converted by config.upgraded)."""

    levels: str = setting("pow2", group="pyramid", choices=LEVELS, flag="--levels",
                          help="pyramid levels: pow2 = 1, 2, 4, ... (DAS-AG); all = every size (original DAS, slower)")
    # Was `init`, a name the start picture's term also has: `--init` stays as the flag's alias.
    fill: str = setting("normal", group="pyramid", choices=FILLS, flag="--fill", aliases=("--init",),
                        label="Levels start as", help="what the levels start as: random normal values or zeros "
                                                      "(a start picture replaces both)")
    combine: str = setting("mean", group="pyramid", choices=COMBINES, flag="--combine", label="Combine levels",
                           help="how the pyramid's levels add up")
    interpolation: str = setting("bilinear", group="pyramid", choices=INTERPOLATIONS, flag="--interpolation",
                                 help="how coarse levels are upsampled (all deterministic: matrix products)")
    # Issue 29's lever: large regions that move faster than detail. At 2 the maker recognised more
    # of its images with the judge unchanged (a lean over 180 images, note/transfer.md), not yet a
    # default. 1 keeps one rate, and so the images of releases before it.
    coarse_lr: float = setting(1.0, group="pyramid", minimum=MIN_COARSE_LR, maximum=MAX_COARSE_LR, step=0.25,
                               flag="--coarse-lr", label="Coarse levels' rate",
                               help="the learning rate of the coarse levels (a quarter of the picture's side or "
                                    "less), as a multiple of the run's: above 1, large regions move faster than detail")

    def problems(self) -> list[str]:
        p = [f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
             for name, allowed in (("levels", LEVELS), ("fill", FILLS), ("combine", COMBINES),
                                   ("interpolation", INTERPOLATIONS)) if getattr(self, name) not in allowed]
        number_in(p, "the coarse levels' rate", self.coarse_lr, MIN_COARSE_LR, MAX_COARSE_LR)
        return p


def level_sizes(canvas_size: int, levels: str = "pow2") -> list[int]:
    """Side lengths of the levels: powers of two up to the canvas (DAS-AG) or every size (DAS)."""
    if levels == "all":
        return list(range(1, canvas_size + 1))
    sizes, s = [], 1
    while s <= canvas_size:
        sizes.append(s)
        s *= 2
    return sizes


def level_shapes(shape: tuple[int, int], levels: str = "pow2") -> list[tuple[int, int]]:
    """(height, width) of each level of a canvas of `shape`, coarse to fine: the square's sides
    for a square canvas; for another shape the long side's sizes, the short side in proportion
    (at least 1 px), so every level has about the canvas's aspect."""
    height, width = shape
    longest = max(shape)
    return [(max(1, round(s * height / longest)), max(1, round(s * width / longest))) for s in level_sizes(longest, levels)]


class PyramidCanvas(Canvas):
    """Levels of 1, 2, 4, ... px (or every size) on the long side, each upsampled to the canvas,
    summed or averaged, and squashed into [0, 1] by tanh."""

    name = "pyramid"
    title = "pyramid (pixels)"
    Settings = PyramidSettings

    @classmethod
    def from_config(cls, config, generator: torch.Generator) -> PyramidCanvas:
        from ..pictures import start_picture

        size, resolution = geometry(config)
        own = config.canvas_settings
        return cls(size, resolution, levels=own.levels, fill=own.fill, combine=own.combine,
                   interpolation=own.interpolation, coarse_lr=own.coarse_lr, generator=generator,
                   picture=start_picture(config), wrap=config.tile)

    def __init__(
        self,
        canvas_size: int | tuple[int, int],
        resolution: int | tuple[int, int],
        *,
        levels: str = "pow2",
        fill: str = "normal",
        combine: str = "mean",
        interpolation: str = "bilinear",
        coarse_lr: float = 1.0,
        generator: torch.Generator | None = None,
        picture: torch.Tensor | None = None,
        wrap: bool = False,
    ):
        """Sizes are a square's side or (height, width). `picture` (1, 3, h, w) in [0, 1]: start as
        this picture instead of from `fill`. `wrap`: a seamless tile, the canvas no larger than the
        picture, every level upsampled as a periodic signal so the sum is periodic too."""
        super().__init__()
        self.size, self.resolution, self.combine = canvas_size, resolution, combine
        self.coarse_lr = coarse_lr
        if any(v > c for v, c in zip(self.visible, self.shape)):
            raise ValueError("the output cannot be larger than the canvas")
        self.shapes = level_shapes(self.shape, levels)
        if self.shapes[-1] != self.shape:  # a tile of any size has a full-size level, as a power-of-two canvas has
            self.shapes.append(self.shape)
        tensors = []
        for h, w in self.shapes:
            if fill == "zeros":
                tensors.append(torch.zeros(1, 3, h, w))
            else:
                # N(0, 1)/side: each level starts with about the same total energy, so coarse
                # levels are not drowned out by the many pixels of fine ones.
                tensors.append(torch.randn(1, 3, h, w, generator=generator) / math.sqrt(h * w))
        self.levels = nn.ParameterList(nn.Parameter(t) for t in tensors)
        # One (canvas side, level side) matrix per side length; the full-size level needs none.
        for n, full in {(n, full) for shape in self.shapes for n, full in zip(shape, self.shape) if n != full}:
            matrix = circular_resample_matrix(n, full, interpolation) if wrap else resample_matrix(n, full, interpolation)
            self.register_buffer(f"up{n}to{full}", matrix, persistent=False)
        if picture is not None:
            self._hold(picture)

    @torch.no_grad()
    def _hold(self, picture: torch.Tensor) -> None:
        """Set the levels so the canvas shows `picture` in its visible part, coarse to fine: each
        level takes the local means of what the coarser ones left, the finest level the rest.
        Every level then starts with its own share of the picture, so both large regions and
        details can move it (one full-size level holding everything could only move pixels)."""
        full = self.extend(picture)
        # Undo the squash: raw = atanh(2p - 1), kept finite at 0 and 1 (still the same 8-bit value).
        eps = 1 / 1024
        rest = torch.atanh(full.clamp(eps, 1 - eps) * 2 - 1) * (len(self.shapes) if self.combine == "mean" else 1)
        for shape, level in zip(self.shapes, self.levels):
            if shape == self.shape:
                level.copy_(rest)
                break
            part = F.adaptive_avg_pool2d(rest, shape)
            level.copy_(part)
            rest = rest - self._upsampled(part)

    def param_groups(self, lr: float) -> list[dict]:
        """The run's rate for every level, or two groups: the coarse levels at `coarse_lr` times it."""
        if self.coarse_lr == 1:
            return super().param_groups(lr)  # one group, as before the setting: the same updates
        longest = max(self.visible)
        coarse = [max(shape) <= COARSE_SHARE * longest for shape in self.shapes]
        groups = [{"params": [p for p, c in zip(self.levels, coarse) if c], "lr": lr * self.coarse_lr},
                  {"params": [p for p, c in zip(self.levels, coarse) if not c], "lr": lr}]
        return [g for g in groups if g["params"]]

    def _upsampled(self, level: torch.Tensor) -> torch.Tensor:
        """A level resampled to the canvas: rows @ level @ columns^T."""
        (h, w), (height, width) = level.shape[-2:], self.shape
        out = level if h == height else getattr(self, f"up{h}to{height}") @ level
        return out if w == width else out @ getattr(self, f"up{w}to{width}").t()

    def raw(self) -> torch.Tensor:
        """The combined, unsquashed canvas (1, 3, H, W)."""
        total = None
        for level in self.levels:
            up = self._upsampled(level)
            total = up if total is None else total + up
        return total / len(self.shapes) if self.combine == "mean" else total

    def forward(self) -> torch.Tensor:
        """Canvas pixels in [0, 1], the full range (the reference's tanh-as-normalised bug fixed)."""
        return (torch.tanh(self.raw()) + 1) / 2

