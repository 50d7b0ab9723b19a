"""Canvases: what a run optimises. Each is a module of its own, registered here by name.

    canvas = build_canvas(config, generator)   # config.canvas names it
"""

from __future__ import annotations

import torch

from ..settings import check_settings_class
from .base import Canvas, from_pil, to_pil
from .masked import MaskedCanvas
from .tiled import TiledCanvas

CANVASES: dict[str, type[Canvas]] = {}


def register_canvas(cls: type[Canvas]) -> type[Canvas]:
    check_settings_class(cls)
    CANVASES[cls.name] = cls
    return cls


def build_canvas(config, generator: torch.Generator) -> Canvas:
    from ..pictures import start_mask, start_picture

    canvas = CANVASES[config.canvas].from_config(config, generator)
    mask = start_mask(config)
    if mask is not None:
        canvas = MaskedCanvas(canvas, start_picture(config), mask)
    return TiledCanvas(canvas, config.margin, config.seed) if config.tile else canvas


def canvas_class(name: str) -> type[Canvas] | None:
    return CANVASES.get(name)


from .pyramid import PyramidCanvas  # noqa: E402
from .strokes import StrokeCanvas  # noqa: E402

register_canvas(PyramidCanvas)
register_canvas(StrokeCanvas)

__all__ = ["CANVASES", "Canvas", "PyramidCanvas", "StrokeCanvas", "canvas_class", "build_canvas", "from_pil", "register_canvas", "to_pil"]
