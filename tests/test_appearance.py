"""Terms about the picture's own look: left-right symmetry, colourfulness, a colour palette."""

from __future__ import annotations

import torch

from das_ag.canvases.base import from_pil
from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.objectives.colourfulness import colourfulness
from das_ag.objectives.palette import palette_distance
from das_ag.objectives.symmetry import asymmetry
from das_ag.png import read_recipe
from das_ag.prompts import Prompt

PALETTE = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.8, 0.0]])


def run(models, **terms):
    config = GenerationConfig(prompts=(Prompt("a red apple"),), steps=25, augment_copies=4, resolution=64, device="cpu",
                              terms=terms)
    return from_pil(synthesize(config, models).run().image)


def test_the_measures_on_known_pictures():
    draw = torch.Generator().manual_seed(0)
    mirror = torch.rand(1, 3, 8, 4, generator=draw)
    assert asymmetry(torch.cat([mirror, mirror.flip(-1)], -1)) == 0 and asymmetry(torch.rand(1, 3, 8, 8, generator=draw)) > 0
    grey = torch.full((1, 3, 8, 8), 0.5)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    assert colourfulness(grey) < 1e-3 < colourfulness(red)
    on_palette = PALETTE[torch.randint(2, (64,), generator=draw)].t().reshape(1, 3, 8, 8)
    assert palette_distance(on_palette, PALETTE) < 1e-6 < palette_distance(grey, PALETTE)


def test_each_term_moves_the_picture_its_way(models):
    plain = run(models)
    assert asymmetry(run(models, symmetry={"weight": 20.0})) < 0.5 * asymmetry(plain)
    vivid, muted = run(models, colourfulness={"weight": 5.0}), run(models, colourfulness={"weight": -5.0})
    assert colourfulness(vivid) > colourfulness(plain) > colourfulness(muted)
    palette = {"weight": 20.0, "colours": "#000000,#ffcc00"}
    assert palette_distance(run(models, palette=palette), PALETTE) < 0.7 * palette_distance(plain, PALETTE)


def test_the_terms_have_flags_and_live_in_recipes(tiny_clip_path, head_path, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "sym.png"
    assert main(["generate", "--prompt", "a kite", "--symmetry-weight", "3", "--colourfulness-weight", "-1",
                 "--palette-weight", "2", "--palette-colours", "#000000,#ffffff", "--steps", "3", "--copies", "2",
                 "--resolution", "64", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    terms = read_recipe(out)["config"]["terms"]
    # The built-in terms are written in full too, so a later release's defaults change nothing.
    assert set(terms) == {"aesthetic", "colourfulness", "palette", "symmetry", "text", "tv"}
    assert {name: terms[name] for name in ("colourfulness", "palette", "symmetry")} == {
        "colourfulness": {"weight": -1.0}, "palette": {"colours": "#000000,#ffffff", "weight": 2.0},
        "symmetry": {"weight": 3.0}}
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
