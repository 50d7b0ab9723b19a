"""SVG files of stroke drawings that carry their own recipe, as das-ag's PNGs do.

One `<path>` per stroke in z-order (the first is painted first, at the bottom), each a chain of
cubic Béziers with the stroke's full width, colour and opacity, round caps and joins: what the
renderer in canvases/rasterise.py paints. The viewBox is the visible window, so a viewer shows
what the PNG shows. The recipe sits in `<metadata>` as JSON; bytes depend on the drawing and the
recipe only, so the same run writes the same file.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as defused
from defusedxml import DefusedXmlException

from . import __version__
from .errors import DasAgError
from .recipe_text import parse_recipe

SVG_NS = "http://www.w3.org/2000/svg"
RECIPE_ID = "das-ag-recipe"
MAX_SVG_BYTES = 64 * 2**20  # a drawing of the most strokes is a few MB; refuse anything far larger


def _n(value: float, places: int = 2) -> str:
    """A number as SVG text: fixed places, no trailing zeros, no "-0"."""
    text = f"{round(value, places) + 0.0:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _rgb(colour) -> str:
    r, g, b = (min(255, max(0, round(c * 255))) for c in colour)
    return f"rgb({r},{g},{b})"


def path_data(points) -> str:
    """"M x0 y0 C x1 y1 x2 y2 x3 y3 C ..." for control points [[x, y], ...] (3n+1 of them)."""
    head = f"M {_n(points[0][0])} {_n(points[0][1])}"
    cubics = []
    for i in range(1, len(points), 3):
        cubics.append("C " + " ".join(f"{_n(x)} {_n(y)}" for x, y in points[i:i + 3]))
    return " ".join([head, *cubics])


def stroke_svg(drawing: dict, recipe: dict | None) -> bytes:
    """The SVG file of a drawing (StrokeCanvas.drawing()) with `recipe` in its metadata."""
    width, height = _n(drawing["width"]), _n(drawing["height"])
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{SVG_NS}" version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<desc>made by das-ag {escape(__version__)}</desc>",
    ]
    if recipe is not None:
        text = json.dumps(recipe, sort_keys=True, ensure_ascii=False)
        lines.append(f'<metadata id="{RECIPE_ID}">{escape(text)}</metadata>')
    lines.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="{_rgb(drawing["background"])}"/>')
    for stroke in drawing["strokes"]:
        lines.append(
            f'<path d="{path_data(stroke["points"])}" fill="none" stroke="{_rgb(stroke["colour"])}" '
            f'stroke-opacity="{_n(stroke["opacity"], 3)}" stroke-width="{_n(stroke["width"])}" '
            'stroke-linecap="round" stroke-linejoin="round"/>'
        )
    lines.append("</svg>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def read_svg_recipe(source: str | Path | bytes) -> dict:
    """The recipe in an SVG das-ag wrote, given its path or bytes."""
    name = "the file" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        data = source
    else:
        try:
            if Path(source).exists() and not Path(source).is_dir() and not Path(source).is_file():
                raise DasAgError(f"{name} is not a regular file")  # /dev/zero's size is 0 and it never ends
            if Path(source).stat().st_size > MAX_SVG_BYTES:
                raise DasAgError(f"{name} is too large for an SVG das-ag wrote")
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise DasAgError(f"{name} does not exist") from None
        except IsADirectoryError:
            raise DasAgError(f"{name} is a folder, not an SVG") from None
    try:
        # defusedxml: an SVG from a visitor may declare entities that expand a few KB into
        # gigabytes; a drawing das-ag wrote has no DTD, so any is refused.
        root = defused.fromstring(data, forbid_dtd=True)
    except ElementTree.ParseError as exc:
        raise DasAgError(f"{name} is not a readable SVG ({exc})") from None
    except DefusedXmlException:
        raise DasAgError(f"{name} declares a DTD or entities, which an SVG das-ag wrote never does") from None
    if root.tag != f"{{{SVG_NS}}}svg":
        raise DasAgError(f"{name} is not an SVG")
    node = next((m for m in root.iter(f"{{{SVG_NS}}}metadata") if m.get("id") == RECIPE_ID), None)
    if node is None or not (node.text or "").strip():
        raise DasAgError(f"{name} has no das-ag recipe (not written by das-ag, or its metadata was removed)")
    return parse_recipe(node.text, name)


def read_drawing(source: str | Path | bytes) -> dict:
    """The strokes of an SVG das-ag wrote, as numbers (for tests and tools): the inverse of
    stroke_svg up to its rounding."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    root = defused.fromstring(data, forbid_dtd=True)
    rect = root.find(f"{{{SVG_NS}}}rect")
    strokes = []
    for path in root.iter(f"{{{SVG_NS}}}path"):
        numbers = [float(v) for v in path.get("d").replace("M", " ").replace("C", " ").split()]
        strokes.append({
            "points": [numbers[i:i + 2] for i in range(0, len(numbers), 2)],
            "width": float(path.get("stroke-width")),
            "colour": _parse_rgb(path.get("stroke")),
            "opacity": float(path.get("stroke-opacity")),
        })
    return {"width": float(root.get("width")), "height": float(root.get("height")), "background": _parse_rgb(rect.get("fill")), "strokes": strokes}


def _parse_rgb(text: str) -> list[float]:
    return [int(v) / 255 for v in text.removeprefix("rgb(").removesuffix(")").split(",")]
