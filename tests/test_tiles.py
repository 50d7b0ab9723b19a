"""Seamless tiles: with --tile the canvas wraps around, so a 2 x 2 tiling shows no seam."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.canvases.base import from_pil
from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.objectives.seam import seam
from das_ag.png import read_recipe
from das_ag.prompts import Prompt
from das_ag.resample import circular_resample_matrix

from .test_strokes import resvg_pixels


def line_jumps(picture: np.ndarray, axis: int) -> np.ndarray:
    """The mean difference between each pair of neighbouring columns (axis 1) or rows (axis 0)."""
    return np.abs(np.diff(picture.astype(float), axis=axis)).mean(axis=tuple(a for a in range(3) if a != axis))


def seam_and_inside(image: Image.Image) -> tuple[float, float]:
    """Of a 2 x 2 tiling of `image`: the largest jump across a line where copies meet, and the
    largest jump between neighbouring lines anywhere else."""
    x = np.asarray(image.convert("RGB"))
    tiled = np.concatenate([np.concatenate([x, x], 1)] * 2, 0)
    h, w = x.shape[:2]
    rows, cols = line_jumps(tiled, 0), line_jumps(tiled, 1)
    at_seam = [rows[h - 1], cols[w - 1]]
    inside = np.concatenate([np.delete(rows, h - 1), np.delete(cols, w - 1)])
    return max(at_seam), inside.max()


@pytest.mark.parametrize("canvas", ["pyramid", "strokes"])
def test_a_tiled_image_has_no_seam_larger_than_its_inside(toy_models, canvas):
    maker, _ = toy_models
    config = GenerationConfig(prompts=(Prompt("a red circle"),), steps=60, augment_copies=8, width=96, height=64,
                              device="cpu", canvas=canvas, terms={"aesthetic": {"guidance": "off"}})
    tiled = synthesize(config.replace(tile=True), maker).run()
    across, inside = seam_and_inside(tiled.image)
    assert across <= inside
    assert tiled.scores.values["seam"] < 1.5
    plain = synthesize(config, maker).run()  # the same picture without --tile has a seam
    assert seam(from_pil(plain.image)) > 2.5 and seam_and_inside(plain.image)[0] > inside


def test_the_tile_flag_is_in_the_recipe_and_its_png_makes_itself_again(weights_env, tmp_path, capsys):
    out, again = tmp_path / "tile.png", tmp_path / "again.png"
    assert main(["generate", "--prompt", "a kite", "--tile", "--steps", "3", "--copies", "2", "--resolution", "64",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert "seam" in capsys.readouterr().out
    recipe = read_recipe(out)
    assert recipe["config"]["tile"] is True and recipe["scores"]["seam"] > 0
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_tiles_svg_tiles_too(models):
    """A stroke that crosses an edge is in the SVG twice, once on each side, so resvg paints the
    tile as das-ag does."""
    config = GenerationConfig(prompts=(Prompt("a kite"),), steps=8, augment_copies=2, resolution=64, device="cpu",
                              canvas="strokes", tile=True, canvas_settings={"count": 48, "width": 6.0},
                              crop_min=1.0, view_turn=0.0, view_flip=False)  # the views the margins below were measured with
    files = synthesize(config, models).run().files()
    ours = np.asarray(Image.open(io.BytesIO(files[".png"])).convert("RGB"), dtype=float)
    theirs = resvg_pixels(files[".svg"])
    assert files[".svg"].count(b"<path") > 48  # copies of the strokes that cross an edge
    difference = np.abs(ours - theirs).max(axis=-1)
    # As close as a drawing that is not a tile (its edges: test_strokes); closer at the edges
    # than a missing copy would leave them.
    assert difference.mean() <= 3.5 and np.mean(difference <= 24) >= 0.98
    edges = np.concatenate([difference[:, :2].ravel(), difference[:, -2:].ravel(), difference[:2].ravel(), difference[-2:].ravel()])
    assert edges.mean() <= 2 * difference.mean()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_a_circular_resize_keeps_a_signal_periodic(mode):
    """Shifting the input by one sample shifts the output by dst/src samples, around the end."""
    signal = torch.rand(8, generator=torch.Generator().manual_seed(0))
    up = circular_resample_matrix(8, 32, mode)
    assert torch.allclose(up @ signal.roll(1), (up @ signal).roll(4), atol=1e-6)
    assert torch.allclose(up.sum(1), torch.ones(32))
