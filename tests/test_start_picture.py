"""Start pictures: the canvas begins as a picture (--init-image) and a strength holds it there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from das_ag.canvases import PyramidCanvas, from_pil
from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.png import read_recipe
from das_ag.prompts import Prompt


def yellow_circle(path, size=(64, 64)):
    picture = Image.new("RGB", size, (30, 30, 30))
    w, h = size
    ImageDraw.Draw(picture).ellipse((w // 2 - 18, h // 2 - 18, w // 2 + 18, h // 2 + 18), fill=(240, 220, 20))
    picture.save(path)
    return path


def distance(image: Image.Image, path) -> float:
    """Mean absolute difference to the picture at `path`, as a share of full brightness."""
    return float(np.abs(np.asarray(image, float) - np.asarray(Image.open(path).convert("RGB"), float)).mean() / 255)


@pytest.mark.parametrize("levels, combine, interpolation", [("pow2", "mean", "bilinear"), ("pow2", "sum", "bicubic"),
                                                            ("all", "mean", "nearest")])
def test_the_pyramid_starts_as_the_picture_on_every_level(levels, combine, interpolation):
    rng = np.random.default_rng(0)
    pixels = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    pixels[:4], pixels[-4:] = 0, 255  # the squash's ends are kept too
    canvas = PyramidCanvas(64, 48, levels=levels, combine=combine, interpolation=interpolation,
                           picture=from_pil(Image.fromarray(pixels)))
    assert np.array_equal(np.asarray(canvas.image()), pixels)
    # Coarse levels hold the picture's large-scale part, so they can move it as a whole.
    assert canvas.levels[0].abs().max() > 0 and canvas.levels[2].abs().mean() > 0.01


def test_a_start_picture_of_another_shape_is_centre_cropped(tmp_path):
    path = yellow_circle(tmp_path / "wide.png", size=(128, 64))
    config = GenerationConfig(prompts=(Prompt("x"),), resolution=64, device="cpu", terms={"init": {"image": str(path)}})
    canvas = PyramidCanvas.from_config(config, torch.Generator().manual_seed(0))
    Image.open(path).crop((32, 0, 96, 64)).save(tmp_path / "middle.png")
    Image.open(path).resize((64, 64)).save(tmp_path / "squeezed.png")
    assert distance(canvas.image(), tmp_path / "middle.png") < 0.01
    assert distance(canvas.image(), tmp_path / "squeezed.png") > 0.05


def test_the_picture_survives_at_high_strength_and_moves_at_low(toy_models, tmp_path):
    maker, _ = toy_models
    path = yellow_circle(tmp_path / "circle.png")
    moved = {}
    for strength in (0.0, 100.0):
        config = GenerationConfig(prompts=(Prompt("a red square"),), resolution=64, steps=40, augment_copies=8, device="cpu", terms={"init": {"image": str(path), "strength": strength}, "aesthetic": {"guidance": "off"}})
        run = synthesize(config, maker)
        events = list(run)
        moved[strength] = distance(run.result().image, path)
        assert events[-1].metrics["init"]["distance"] == pytest.approx(moved[strength], abs=0.01)
    assert moved[0.0] > 0.08 and moved[100.0] < 0.5 * moved[0.0], moved


def test_a_photo_made_more_or_less_beautiful(models, tmp_path):
    """No prompt, CLIP weight 0: the aesthetic term alone moves the start picture up or down."""
    path = yellow_circle(tmp_path / "circle.png")
    scores = {}
    for guidance in ("reward", "penalty"):
        config = GenerationConfig(prompts=(), resolution=64, steps=15, augment_copies=4, device="cpu", terms={"init": {"image": str(path)}, "text": {"weight": 0.0}, "aesthetic": {"guidance": guidance}})
        result = synthesize(config, models).run()
        scores["start"] = result.initial_scores.values["aesthetic"]
        scores[guidance] = result.scores.values["aesthetic"]
    assert scores["reward"] > scores["start"] > scores["penalty"], scores


def test_start_pictures_from_the_command_line(weights_env, tmp_path, capsys):
    path = yellow_circle(tmp_path / "circle.png")
    common = ["--steps", "3", "--copies", "2", "--resolution", "64", "--device", "cpu", "--quiet"]
    out = tmp_path / "out.png"
    assert main(["generate", "--prompt", "a sun", "--init-image", str(path), "--init-strength", "20",
                 "--out", str(out), *common]) == 0
    settings = read_recipe(out)["config"]["terms"]["init"]
    assert settings["image"] == str(path) and settings["strength"] == 20 and len(settings["sha256"]) == 64
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()

    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    drawing = tmp_path / "drawing.svg"
    drawing.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"an earlier image")
    for args, words in ((["--init-image", str(tmp_path / "missing.png")], "does not exist"),
                        (["--init-image", str(notes)], "is not a readable image"),
                        (["--init-image", str(drawing)], "is an SVG; give a raster picture"),
                        (["--init-image", str(path), "--init-strength", "-1"], "must be from 0 to 10000")):
        assert main(["generate", "--prompt", "x", *args, "--out", str(kept), "--overwrite", *common]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert kept.read_bytes() == b"an earlier image"

    Image.new("RGB", (8, 8), "blue").save(path)  # the picture changed: its recipe notices
    with pytest.raises(ConfigError, match="has changed"):
        GenerationConfig.from_dict(read_recipe(out)["config"])


def test_a_strength_without_a_start_picture_is_said_to_do_nothing(capsys):
    """The start picture's settings say their strength is unread without a picture (unused()); the
    CLI warns of any flag a part leaves unread, canvas or term alike, naming none of them itself."""
    from das_ag.cli import _warn_of_unread_flags, build_parser, config_from_args

    args = build_parser().parse_args(["generate", "--prompt", "x", "--init-strength", "5"])
    config = config_from_args(args)
    _warn_of_unread_flags(args, config)
    assert capsys.readouterr().err.strip() == ("das-ag: warning: --init-strength has no effect: it holds the run "
                                               "near a start picture, and none is given")
