"""Images of a base model with the slider LoRA at several weights, scored, in one grid PNG.

Rows are seeds, columns LoRA weights (-1 lowers, 0 is the base model, +1 raises); every cell has
its aesthetic score under it, and the grid carries its recipe like every das-ag PNG.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .. import __version__
from ..durable import write_atomic
from ..errors import DasAgError
from ..embedding import embed_image
from . import one_line, quiet_libraries
from .lora import ADAPTER, read_lora


PREVIEW_WEIGHTS = (-1.0, 0.0, 1.0)


@dataclass
class Cell:
    seed: int
    weight: float
    image: Image.Image
    aesthetic: float


def load_slider(base, lora: str | Path) -> dict:
    """Put the slider LoRA on the base pipeline; returns the LoRA's recipe."""
    tensors, recipe = read_lora(lora)
    trained_for = recipe.get("base", {}).get("sha256")
    try:
        # It warns that a UNet-only LoRA has no text-encoder part, and logs every mismatched
        # tensor of a LoRA that does not fit before raising: the line below says it once.
        with quiet_libraries(errors_too=True):
            base.pipe.load_lora_weights(tensors, adapter_name=ADAPTER)
    except Exception as exc:  # shapes or names that do not fit this UNet
        raise DasAgError(f"LoRA {lora} does not fit this base model ({one_line(exc)})") from None
    if trained_for and trained_for != base.sha256:
        print(f"das-ag: warning: {lora} was trained for another base model (sha256 {trained_for[:12]})", file=sys.stderr)
    return recipe


@torch.no_grad()
def sample(base, models, lora: str | Path, weights: list[float], prompt: str, seeds: list[int], *,
           steps: int = 26, guidance_scale: float = 5.0, resolution: int | None = None) -> tuple[list[Cell], dict]:
    """Every (seed, weight) image of `prompt`, each scored by das-ag's aesthetic head, at `resolution`
    (default: the base model's own size)."""
    recipe = load_slider(base, lora)
    return sample_adapter(base, models, weights, prompt, seeds, steps=steps, guidance_scale=guidance_scale,
                          resolution=resolution or base.native_resolution), recipe


@torch.no_grad()
def sample_adapter(base, models, weights: list[float], prompt: str, seeds: list[int], *, steps: int,
                   guidance_scale: float, resolution: int) -> list[Cell]:
    """The cells of the slider adapter already on the base (loaded, or being trained)."""
    cells = []
    for seed in seeds:
        for weight in weights:
            base.pipe.set_adapters([ADAPTER], adapter_weights=[float(weight)])
            with quiet_libraries():  # a prompt too long is cut; the CLI says so once, not per picture
                image = base.pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=resolution,
                                  width=resolution, generator=torch.Generator().manual_seed(seed)).images[0]
            score = float(models.aesthetic_score(embed_image(models, image))[0])
            cells.append(Cell(seed, float(weight), image, score))
    return cells


def write_preview(base, models, settings, out: Path, step: int, seeds: tuple[int, ...]) -> dict:
    """A scored grid of the LoRA in training at weights -1, 0 and +1 (the first training prompt,
    fixed seeds), written beside `out`; returns its mean scores by weight. The adapter is left at
    weight 1, and the scheduler at the training's steps, exactly as they were."""
    from ..png import encode_png

    unet, weights = base.unet, list(PREVIEW_WEIGHTS)
    unet.eval()
    try:
        cells = sample_adapter(base, models, weights, settings.prompts[0], list(seeds), steps=settings.inference_steps,
                               guidance_scale=settings.guidance_scale, resolution=settings.resolution)
    finally:
        base.pipe.set_adapters([ADAPTER], adapter_weights=[1.0])
        base.pipe.scheduler.set_timesteps(settings.inference_steps, device=base.pipe.device)
        unet.train()
    path = out.with_name(f"{out.stem}.preview-{step:05d}.png")
    recipe = grid_recipe(base, models, out, {"steps_done": step}, cells, settings.prompts[0], kind="slider-preview",
                         weights=weights, seeds=list(seeds), steps=settings.inference_steps,
                         guidance_scale=settings.guidance_scale, resolution=settings.resolution,
                         precision=base.precision)
    write_atomic(path, encode_png(grid(cells, weights, list(seeds)), recipe), overwrite=True)
    means = {f"{w:+g}": sum(c.aesthetic for c in cells if c.weight == w) / len(seeds) for w in weights}
    return {"step": step, "file": path.name, "aesthetic": means}


def grid(cells: list[Cell], weights: list[float], seeds: list[int], thumb: int = 256) -> Image.Image:
    caption, pad, header = 18, 6, 22
    side = thumb  # small pictures are enlarged (nearest, so their pixels stay honest) for the captions to fit
    sheet = Image.new("RGB", (pad + len(weights) * (side + pad), header + len(seeds) * (side + caption + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for j, weight in enumerate(weights):
        draw.text((pad + j * (side + pad), 4), f"LoRA weight {weight:+g}", fill="black", font=font)
    for cell in cells:
        i, j = seeds.index(cell.seed), weights.index(cell.weight)
        x, y = pad + j * (side + pad), header + i * (side + caption + pad)
        enlarge = cell.image.width < side
        sheet.paste(cell.image.resize((side, side), Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS),
                    (x, y))
        draw.text((x, y + side + 2), f"seed {cell.seed}  aesthetic {cell.aesthetic:.3f}", fill="black", font=font)
    return sheet


def grid_recipe(base, models, lora: str | Path, lora_recipe: dict, cells: list[Cell], prompt: str, *,
                kind: str = "slider-grid", **settings) -> dict:
    """What the grid PNG records: enough to make it again, and every cell's score."""
    return {
        "format": 1,
        "das_ag_version": __version__,
        "kind": kind,
        "config": {"prompt": prompt, **settings},  # "config" so das-ag recipe reads it
        "base": base.identity(),
        "lora": {"path": str(lora), "recipe": lora_recipe},
        "models": models.identities(),
        "cells": [{"seed": c.seed, "weight": c.weight, "aesthetic": c.aesthetic} for c in cells],
    }
