"""PNG files that carry their own recipe: every setting, the model checksums and the final scores.

A recipe holds nothing that changes from run to run (no timestamps, no timings), so the same
recipe re-run on the same machine gives the same bytes. Files are written atomically and an
existing file is never replaced unless the caller says so.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, PngImagePlugin

from . import __version__
from .config import GenerationConfig
# Atomic writes were png.py's before they were everyone's; older imports from here keep working.
from .durable import OutputExistsError, check_writable, write_atomic  # noqa: F401
from .errors import DasAgError
from .recipe_text import RECIPE_KEY, parse_recipe
from .svg import read_svg_recipe

if TYPE_CHECKING:
    from .engine import SynthesisResult

RECIPE_FORMAT = 1


def build_recipe(result: SynthesisResult) -> dict:
    import torch

    recipe = {
        "format": RECIPE_FORMAT,
        "das_ag_version": __version__,
        "method": result.config.method,
        "config": result.config.to_dict(),
        "models": result.model_identities,
        "scores": result.scores.to_dict(),
        "initial_scores": result.initial_scores.to_dict(),
        "run": {
            "status": result.status,
            "steps_done": result.steps_done,
            "device": result.device,
            "dtype": result.dtype,
            "compiled": result.compiled,
            "torch": torch.__version__,
        },
    }
    if result.cpu_route is not None:
        recipe["run"]["cpu_route"] = result.cpu_route
    if result.batch:
        # Made together with other images: re-running it means re-running the whole batch.
        recipe["batch"] = {"index": result.batch_index, "configs": [c.to_dict() for c in result.batch]}
    return recipe


def encode_png(image: Image.Image, recipe: dict) -> bytes:
    """The PNG file's bytes: `image` with `recipe` in an iTXt chunk (UTF-8, so any prompt fits)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"das-ag {__version__}")
    info.add_itxt(RECIPE_KEY, json.dumps(recipe, sort_keys=True, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | Path, recipe: dict, *, overwrite: bool = False) -> Path:
    """Write `image` with `recipe` embedded; the file appears whole or not at all."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DasAgError(f"output {path} must end in .png")
    return write_atomic(path, encode_png(image, recipe), overwrite=overwrite)


def next_free_path(config: GenerationConfig, folder: str | Path = "outputs") -> Path:
    """<folder>/<first words of the prompt>-<method>-seed<S>.png, numbered if the name is taken."""
    folder = Path(folder)
    text = config.positive_prompts[0].text if config.positive_prompts else "aesthetic"
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].rstrip("-")
    stem = f"{words or 'image'}-{config.method}-seed{config.seed}"
    path, n = folder / f"{stem}.png", 1
    while path.exists():
        path, n = folder / f"{stem}-{n}.png", n + 1
    return path


def read_recipe(source: str | Path | bytes) -> dict:
    """The recipe embedded in a das-ag PNG (or SVG), given its path or its bytes (an upload)."""
    if _is_svg(source):
        return read_svg_recipe(source)
    from .pictures import PictureError, opened

    name = "the file" if isinstance(source, bytes) else str(source)
    try:
        # Its size is checked from the header first: the recipe sits after the pixels, and a
        # few-KB PNG can claim 13000 x 13000 of them.
        with opened(source if isinstance(source, bytes) else Path(source), name, kind="PNG") as image:
            image.load()
            text = getattr(image, "text", {}).get(RECIPE_KEY)
    except PictureError as exc:
        raise DasAgError(str(exc)) from None
    if text is None:
        raise DasAgError(f"{name} has no das-ag recipe (not made by das-ag, or its metadata was stripped)")
    return parse_recipe(text, name)


def _is_svg(source: str | Path | bytes) -> bool:
    if isinstance(source, bytes):
        return source.lstrip()[:1] == b"<"
    return Path(source).suffix.lower() == ".svg"


def config_from_png(source: str | Path | bytes) -> GenerationConfig:
    return GenerationConfig.from_dict(read_recipe(source)["config"])


def recorded_route(recipe: dict) -> str | None:
    """The CPU route a recipe's run took (`run.cpu_route`; the packed route of releases before
    routes were chosen), for `synthesize(..., cpu_route=)`: so the same machine makes the same
    bytes again even after a re-measurement chose another route. None for a GPU's run."""
    from .cpu_routes import LEGACY_ROUTE, parse_routes

    run = recipe.get("run") if isinstance(recipe.get("run"), dict) else {}
    if not str(run.get("device", "cpu")).startswith("cpu"):
        return None
    route = str(run.get("cpu_route", LEGACY_ROUTE))
    try:
        parse_routes(route)
    except ValueError as exc:
        raise DasAgError(f"the recipe's cpu route is damaged: {exc}") from None
    return route


def batch_from_recipe(recipe: dict) -> tuple[tuple[GenerationConfig, ...], int]:
    """The configs of the run that made a recipe's image, and which of them it is."""
    batch = recipe.get("batch")
    if not batch:
        return (GenerationConfig.from_dict(recipe["config"]),), 0
    try:
        configs = tuple(GenerationConfig.from_dict(c) for c in batch["configs"])
        index = int(batch["index"])
    except (KeyError, TypeError, ValueError):
        raise DasAgError("the recipe's batch is damaged") from None
    if not 0 <= index < len(configs):
        raise DasAgError(f"the recipe's batch has {len(configs)} images but names image {index}")
    return configs, index
