"""Masks: repaint the painted part of a start picture and keep the rest, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.pictures import start_mask
from das_ag.png import read_recipe
from das_ag.prompts import Prompt
from das_ag.weights import file_sha256


def start_and_mask(folder, size=(64, 64), *, transparent=False):
    """A blue-and-orange start picture, and a mask painting its right half (white on black, or
    opaque strokes on a transparent layer, as the studio's painter saves them)."""
    picture = Image.new("RGB", size, "#204060")
    ImageDraw.Draw(picture).ellipse((8, 8, size[0] - 8, size[1] - 8), fill="#e0a030")
    picture.save(folder / "start.png")
    mask = Image.new("RGBA" if transparent else "L", size, (0, 0, 0, 0) if transparent else 0)
    ImageDraw.Draw(mask).rectangle((size[0] // 2, 0, size[0], size[1]), fill=(255, 0, 0, 255) if transparent else 255)
    mask.save(folder / "mask.png")
    return str(folder / "start.png"), str(folder / "mask.png")


def kept(size=(64, 64)) -> np.ndarray:
    """Where start_and_mask's mask keeps the picture: its left half."""
    keep = np.zeros(size[::-1], bool)
    keep[:, : size[0] // 2] = True
    return keep


def masked_config(start, mask, **changes):
    return GenerationConfig(**{**dict(prompts=(Prompt("a red apple"),), steps=15, augment_copies=4, resolution=64,
                                      device="cpu", terms={"init": {"image": start, "mask": mask}}), **changes})


@pytest.mark.parametrize("canvas", ["pyramid", "strokes"])
def test_only_the_painted_region_changes(models, tmp_path, canvas):
    start, mask = start_and_mask(tmp_path)
    result = synthesize(masked_config(start, mask, canvas=canvas, lr=0.3 if canvas == "pyramid" else 0.1), models).run()
    made = np.asarray(result.image, dtype=int)
    original = np.asarray(Image.open(start).convert("RGB"), dtype=int)
    assert np.abs(made - original)[kept()].max() <= 1  # within 1/255 (in fact equal)
    assert np.abs(made - original)[~kept()].mean() > 5  # the painted half was repainted


def test_a_transparent_drawing_is_a_mask_and_its_edge_is_soft(tmp_path):
    start, mask = start_and_mask(tmp_path, transparent=True)
    config = masked_config(start, mask, terms={"init": {"image": start, "mask": mask, "mask_edge": 4}})
    ramp = start_mask(config)[0, 0]
    assert ramp[:, :32].max() == 0  # kept exactly
    assert ramp[10, 32:37].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # 4 px inside the painted region
    hard = start_mask(masked_config(start, mask, terms={"init": {"image": start, "mask": mask, "mask_edge": 0}}))[0, 0]
    assert hard[10, 31:34].tolist() == [0.0, 1.0, 1.0]


def test_the_mask_is_in_the_recipe_and_its_png_makes_itself_again(weights_env, tmp_path):
    start, mask = start_and_mask(tmp_path, size=(96, 64))
    out, again = tmp_path / "m.png", tmp_path / "again.png"
    assert main(["generate", "--prompt", "a red apple", "--init-image", start, "--mask", mask, "--size", "96x64",
                 "--steps", "3", "--copies", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    init = read_recipe(out)["config"]["terms"]["init"]
    assert init["mask"] == mask and init["mask_sha256"] == file_sha256(mask) and init["mask_edge"] == 4
    made, original = np.asarray(Image.open(out), dtype=int), np.asarray(Image.open(start), dtype=int)
    assert np.abs(made - original)[kept((96, 64))].max() <= 1
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("case, said", [
    ("other size", "the mask is 32x32 but the start picture is 64x64"),
    ("empty", "the mask paints nothing"),
    ("no start picture", "a mask keeps part of a start picture"),
    ("not a picture", "is not a readable image"),
])
def test_a_mask_that_cannot_serve_is_one_line(weights_env, tmp_path, capsys, case, said):
    start, mask = start_and_mask(tmp_path)
    if case == "other size":
        Image.new("L", (32, 32), 255).save(mask)
    elif case == "empty":
        Image.new("L", (64, 64), 0).save(mask)
    elif case == "not a picture":
        open(mask, "wb").write(b"not a png")
    args = ["generate", "--prompt", "a red apple", "--mask", mask, "--steps", "2", "--device", "cpu",
            "--out", str(tmp_path / "x.png")]
    assert main(args if case == "no start picture" else [*args, "--init-image", start]) != 0
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1 and not (tmp_path / "x.png").exists()
