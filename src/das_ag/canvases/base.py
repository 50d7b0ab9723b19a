"""The canvas protocol: what the engine optimises, whatever it is made of (pixels, strokes, ...).

A canvas is a torch module holding its parameters. It renders an RGB image in [0, 1] that
includes a jitter margin around the visible part (augmentation shifts windows within it), says
which of its parameters learn at which rate, keeps them in range after each update, and turns
itself into the 8-bit image a user sees. Its settings are fields of the GenerationConfig that
names it, or its own `Settings` dataclass carried in `config.canvas_settings`, so a recipe
re-creates it.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class Canvas(nn.Module):
    name: ClassVar[str]
    # How a user is shown the choice of this canvas (the studio's list).
    title: ClassVar[str] = ""
    # A frozen dataclass of this canvas's own settings (GenerationConfig.canvas_settings holds an
    # instance), or None when it reads top-level config fields (the pyramid's, from before). It may
    # define `unused() -> {name: why}`: its settings that its other values leave unread (a palette
    # without the palette colour mode), which the CLI warns of when given and the studio greys.
    Settings: ClassVar[type | None] = None
    # Suffixes of the files `exports` writes beside the PNG (".svg"): a plan's image is complete
    # only with them.
    files: ClassVar[tuple[str, ...]] = ()
    # Top-level config settings this canvas does not read, with the reason (the studio greys them).
    ignores: ClassVar[dict[str, str]] = {}

    # Geometry: `size` px in all, the central `resolution` px visible; each an int for a square or
    # (height, width).
    size: int | tuple[int, int]
    resolution: int | tuple[int, int]

    @classmethod
    def from_config(cls, config, generator: torch.Generator) -> Canvas:
        """The canvas a run of `config` starts from; every random draw comes from `generator`."""
        raise NotImplementedError

    @classmethod
    def problems(cls, config) -> list[str]:
        """Why this canvas cannot run `config`, beyond what its own settings say (empty if it can)."""
        return []

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups: one per learning rate the canvas wants (lr is the run's)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def at_step(self, step: int, steps: int) -> None:
        """Called before step `step` (0-based) of `steps` is rendered: for canvases with schedules."""

    def forward(self) -> torch.Tensor:
        """The whole canvas, margin included: (1, 3, height, width) in [0, 1], differentiable."""
        raise NotImplementedError

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put parameters back in their valid range after an update (no-op when all are valid)."""

    def maintain_(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> None:
        """Called after update `step` (1-based) of `steps`, after clamp_: a canvas may renew parts
        of itself here (clearing their optimizer moments); by default nothing happens."""

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the whole canvas."""
        return hw(self.size)

    @property
    def visible(self) -> tuple[int, int]:
        """(height, width) of the visible part: the image a user gets."""
        return hw(self.resolution)

    @property
    def offsets(self) -> tuple[int, int]:
        """(top, left) of the visible part in the canvas."""
        return tuple((c - v) // 2 for c, v in zip(self.shape, self.visible))

    @property
    def crop_offset(self) -> int:
        """The visible part's offset on both axes of a square canvas."""
        return self.offsets[0]

    def crop(self, canvas: torch.Tensor) -> torch.Tensor:
        (top, left), (h, w) = self.offsets, self.visible
        return canvas[..., top : top + h, left : left + w]

    def extend(self, picture: torch.Tensor, mode: str = "mirror") -> torch.Tensor:
        """A picture of the visible part's size (..., h, w) grown to the whole canvas: into the
        margin (what jittered views see past the edge) it continues as a mirror ("mirror"; its
        edge repeated where the margin is wider than the picture) or as its edge ("edge")."""
        (top, left), (h, w) = self.offsets, self.visible
        bottom, right = self.shape[0] - h - top, self.shape[1] - w - left
        mirror = mode == "mirror" and max(top, bottom) < h and max(left, right) < w
        return F.pad(picture.float(), (left, right, top, bottom), mode="reflect" if mirror else "replicate")

    def exports(self) -> dict[str, Callable[[dict], bytes]]:
        """Files this canvas saves beside the PNG, by suffix (".svg" for strokes): each makes the
        file's bytes from the recipe. Called when a result is made, so each must hold a copy of
        the state it needs, not read the canvas later."""
        return {}

    @torch.no_grad()
    def image(self) -> Image.Image:
        """The visible part as an 8-bit RGB image: what a user sees and saves."""
        return to_pil(self.crop(self.forward()))


class Wrapper(Canvas):
    """A canvas around another (a mask, a tile): it learns, keeps in range, renews and exports as
    the canvas inside does; a wrapper changes only what `forward` shows (and may change `image`)."""

    def __init__(self, inner: Canvas):
        super().__init__()
        self.inner = inner
        self.size, self.resolution = inner.size, inner.resolution

    def param_groups(self, lr: float) -> list[dict]:
        return self.inner.param_groups(lr)

    def at_step(self, step: int, steps: int) -> None:
        self.inner.at_step(step, steps)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.inner.clamp_()

    def maintain_(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> None:
        self.inner.maintain_(step, steps, optimizer)

    def exports(self) -> dict[str, Callable[[dict], bytes]]:
        return self.inner.exports()


def geometry(config) -> tuple[int | tuple[int, int], int | tuple[int, int]]:
    """The canvas's size and its visible part's for `config`: a side for a square image (as
    canvases have always been given), else (height, width)."""
    # A seamless tile's canvas is the picture itself: its margin is the picture wrapped around
    # (canvases/tiled.py), not more canvas.
    size, visible = (config.image_shape if config.tile else config.canvas_shape), config.image_shape
    if size[0] == size[1] and visible[0] == visible[1]:
        return size[0], visible[0]
    return size, visible


def hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a size given as a square's side or as (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) floats in [0, 1] -> 8-bit RGB."""
    x = pixels.detach().float().reshape(-1, *pixels.shape[-2:])[:3]
    array = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def from_pil(image: Image.Image) -> torch.Tensor:
    """8-bit RGB -> (1, 3, H, W) floats in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float() / 255


def unused_settings(settings) -> dict[str, str]:
    """The settings of a canvas's `settings` that its other values leave unread, with why."""
    return settings.unused() if settings is not None else {}
