"""Colours as people write them (#rrggbb, comma-separated palettes), for the strokes' palette and
background and the palette term."""

from __future__ import annotations

from .errors import ConfigError


def parse_hex(text: str) -> tuple[float, float, float]:
    """"#rrggbb" (or "rrggbb", "#rgb") -> (r, g, b) in [0, 1]."""
    value = str(text).strip().lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    try:
        if len(value) != 6:
            raise ValueError
        return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))
    except ValueError:
        raise ConfigError(f"{text!r} is not a colour; write it as #rrggbb") from None


def parse_palette(text: str) -> list[tuple[float, float, float]]:
    colours = [c for c in str(text).replace(" ", "").split(",") if c]
    if not colours:
        raise ConfigError("a palette needs at least one colour, e.g. #000000,#ff0000")
    return [parse_hex(c) for c in colours]
