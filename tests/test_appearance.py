"""Terms about the picture's own look: symmetry of every kind, colourfulness, a colour palette."""

from __future__ import annotations

import pytest
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


def symmetric(kind: str, folds: int = 4) -> torch.Tensor:
    """A 16 x 16 picture with exactly `kind`'s symmetry, built from random pixels."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    if kind == "left-right":
        return (x + x.flip(-1)) / 2
    if kind == "top-bottom":
        return (x + x.flip(-2)) / 2
    if kind == "both":
        return (x + x.flip(-1) + x.flip(-2) + x.flip(-1, -2)) / 4
    if kind == "diagonal":
        return (x + x.transpose(-1, -2)) / 2
    # radial, 4 folds: the four quarter turns are exact permutations of a square's pixels
    return sum(torch.rot90(x, k, (-2, -1)) for k in range(4)) / 4


@pytest.mark.parametrize("kind", ["left-right", "top-bottom", "both", "diagonal", "radial"])
def test_each_symmetry_kind_measures_zero_on_its_own_symmetry_only(kind):
    noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert asymmetry(symmetric(kind), kind, 4) < 1e-6 < 0.1 < asymmetry(noise, kind, 4)
    others = {"left-right": "top-bottom", "top-bottom": "left-right", "both": "diagonal", "diagonal": "left-right",
              "radial": "left-right"}
    assert asymmetry(symmetric(kind), others[kind], 4) > 0.05  # each kind asks for something of its own


def test_radial_symmetry_turns_by_its_folds():
    # A turn by 360/6 degrees of a 6-fold pattern (a function of the angle only) is the pattern again,
    # bilinear sampling aside; a 5-fold turn of it is not.
    y, x = torch.meshgrid(torch.arange(63.0) - 31, torch.arange(63.0) - 31, indexing="ij")
    pattern = ((torch.atan2(y, x) * 6).cos() * (x.square() + y.square()).sqrt().clamp(max=8) / 8 + 1) / 2
    picture = pattern.expand(1, 3, 63, 63)
    assert asymmetry(picture, "radial", 6) < 0.5 * asymmetry(picture, "radial", 5)
    assert asymmetry(picture, "radial", 3) < 0.5 * asymmetry(picture, "radial", 5)  # 6-fold is 3-fold too


def test_radial_symmetry_lowers_its_own_measure(models):
    plain = run(models)
    radial = run(models, symmetry={"weight": 20.0, "kind": "radial", "folds": 5})
    assert asymmetry(radial, "radial", 5) < 0.5 * asymmetry(plain, "radial", 5)


def test_a_diagonal_symmetry_of_a_wide_picture_is_refused_in_a_line():
    from das_ag.errors import ConfigError

    with pytest.raises(ConfigError, match="diagonal symmetry needs a square picture, not 96x64"):
        GenerationConfig(prompts=(Prompt("a kite"),), width=96, height=64, terms={"symmetry": {"weight": 1.0, "kind": "diagonal"}})
    with pytest.raises(ConfigError, match="symmetry folds must be"):
        GenerationConfig(prompts=(Prompt("a kite"),), terms={"symmetry": {"weight": 1.0, "kind": "radial", "folds": 1}})


def test_each_term_moves_the_picture_its_way(models):
    plain = run(models)
    assert asymmetry(run(models, symmetry={"weight": 20.0})) < 0.5 * asymmetry(plain)
    vivid, muted = run(models, colourfulness={"weight": 5.0}), run(models, colourfulness={"weight": -5.0})
    assert colourfulness(vivid) > colourfulness(plain) > colourfulness(muted)
    palette = {"weight": 20.0, "colours": "#000000,#ffcc00"}
    assert palette_distance(run(models, palette=palette), PALETTE) < 0.7 * palette_distance(plain, PALETTE)


def test_the_terms_have_flags_and_live_in_recipes(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "sym.png"
    assert main(["generate", "--prompt", "a kite", "--symmetry-weight", "3", "--symmetry-kind", "radial",
                 "--symmetry-folds", "5", "--colourfulness-weight", "-1",
                 "--palette-weight", "2", "--palette-colours", "#000000,#ffffff", "--steps", "3", "--copies", "2",
                 "--resolution", "64", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    terms = read_recipe(out)["config"]["terms"]
    # The built-in terms are written in full too, so a later release's defaults change nothing.
    assert set(terms) == {"aesthetic", "colourfulness", "palette", "symmetry", "text", "tv"}
    assert {name: terms[name] for name in ("colourfulness", "palette", "symmetry")} == {
        "colourfulness": {"weight": -1.0}, "palette": {"colours": "#000000,#ffffff", "weight": 2.0},
        "symmetry": {"weight": 3.0, "kind": "radial", "folds": 5}}
    assert "asym" in capsys.readouterr().out  # the final picture's radial measure, in the summary
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
