"""Any aspect ratio: --size WxH gives an image of that size on either canvas, seen whole by CLIP."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.augment import jittered_windows
from das_ag.canvases import PyramidCanvas, from_pil
from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.png import read_recipe
from das_ag.prompts import Prompt
from tests.test_strokes import resvg_pixels, strokes_config


def wide(**changes) -> GenerationConfig:
    base = dict(prompts=(Prompt("a lighthouse"),), width=96, height=64, steps=6, augment_copies=4, device="cpu")
    return GenerationConfig(**{**base, **changes})


def test_the_geometry_of_an_image_that_is_not_square():
    config = wide(width=640, height=384)
    assert config.image_shape == (384, 640) and config.short_side == 384 and config.margin == 384 // 14
    assert config.canvas_shape == (512, 1024)
    # A square size is written one way only: as the resolution, so old recipes compare equal.
    assert wide(width=300, height=300) == GenerationConfig(prompts=(Prompt("a lighthouse"),), resolution=300,
                                                          steps=6, augment_copies=4, device="cpu")


@pytest.mark.parametrize("changes, words", [
    ({"width": 96, "height": None}, "width and height together"),
    ({"width": 640, "height": 128}, "too narrow"),
    ({"width": 4096, "height": 512}, "width must be a whole number from 32 to 2048"),
    ({"width": 96.5, "height": 64}, "width must be a whole number"),
])
def test_sizes_the_canvas_cannot_make_are_refused_in_words(changes, words):
    with pytest.raises(ConfigError, match=words):
        wide(**changes)


def test_the_views_of_a_wide_image_cover_all_of_it():
    """Square windows of the short side, spread from the left edge to the right one."""
    canvas = torch.arange(128 * 256, dtype=torch.float32).reshape(1, 1, 128, 256).expand(1, 3, 128, 256)
    views = jittered_windows(canvas, (96, 200), torch.zeros(2, 4, dtype=torch.long))
    assert views.shape == (4, 3, 96, 96)
    seen = torch.zeros(128, 256, dtype=torch.bool)
    for view in views[:, 0]:
        flat = view.long().flatten()
        seen.view(-1)[flat] = True
    top, left = (128 - 96) // 2, (256 - 200) // 2
    assert seen[top:top + 96, left:left + 200].all() and seen.sum() == 96 * 200  # all of it, nothing outside
    # A tall image the same way, down its height.
    tall = jittered_windows(canvas.transpose(-1, -2), (200, 96), torch.zeros(2, 3, dtype=torch.long))
    assert tall.shape == (3, 3, 96, 96)


def test_a_gradient_reaches_both_ends_of_a_wide_image(models):
    # The square windows of a wide picture cover both ends at every step. (Crops from half the
    # side, the default views, reach every part over a run's steps but not within each one.)
    run = synthesize(wide(width=192, height=64, steps=1, crop_min=1.0, view_turn=0.0, view_flip=False), models)
    image = run.images[0]
    views, _ = image.views(image.prepare(0), models.input_resolution)
    views.float().square().mean().backward()
    levels = image.canvas.levels[-1].grad[0].abs().sum(0)  # the finest level: one px per canvas px
    (top, left), (h, w) = image.canvas.offsets, image.canvas.visible
    visible = levels[top:top + h, left:left + w]
    assert visible[:, :8].sum() > 0 and visible[:, -8:].sum() > 0


@pytest.mark.parametrize("canvas", ["pyramid", "strokes"])
def test_a_wide_image_from_the_command_line_has_its_size_and_re_runs(canvas, weights_env, tmp_path, capsys):
    out = tmp_path / "wide.png"
    common = ["--steps", "3", "--copies", "2", "--device", "cpu", "--quiet", "--canvas", canvas]
    assert main(["generate", "--prompt", "a harbour", "--size", "160x96", "--out", str(out), *common]) == 0
    assert Image.open(out).size == (160, 96)
    config = read_recipe(out)["config"]
    assert (config["width"], config["height"]) == (160, 96)
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
    if canvas == "strokes":
        assert b'width="160" height="96"' in out.with_suffix(".svg").read_bytes()

    for size, words in (("160by96", "expected WIDTHxHEIGHT"), ("640x96", "too narrow"), ("16x16", "width must be"), ("16x40", "width must be")):
        assert main(["generate", "--prompt", "x", "--size", size, *common]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err


def test_an_independent_renderer_paints_a_wide_svg_like_the_png(models):
    config = strokes_config(width=128, height=80, steps=6, canvas_settings={"count": 48})
    files = synthesize(config, models).run().files()
    ours = np.asarray(Image.open(io.BytesIO(files[".png"])).convert("RGB"), dtype=np.float64)
    theirs = resvg_pixels(files[".svg"])
    assert theirs.shape == ours.shape == (80, 128, 3)
    difference = np.abs(ours - theirs).max(axis=-1)
    assert difference.mean() <= 2.5 and np.mean(difference <= 24) >= 0.98


def test_a_wide_start_picture_holds_in_the_pyramid(tmp_path):
    rng = np.random.default_rng(1)
    pixels = (rng.random((64, 160, 3)) * 255).astype(np.uint8)
    canvas = PyramidCanvas((128, 256), (64, 160), picture=from_pil(Image.fromarray(pixels)))
    assert canvas.image().size == (160, 64) and np.array_equal(np.asarray(canvas.image()), pixels)
    assert [tuple(level.shape[-2:]) for level in canvas.levels][:3] == [(1, 1), (1, 2), (2, 4)]


def test_the_studio_form_keeps_every_size():
    from das_ag.studio import form

    assert form.aspect_size(640, "16:9 wide") == (640, 360) and form.aspect_size(640, "2:3") == (424, 640)
    for config in (wide(width=640, height=360), wide(width=640, height=384), wide(width=200, height=200)):
        state = form.config_to_state(config)
        back, problems = form.state_to_config(state)
        assert problems == [] and back == config, (state["aspect"], problems)
    assert form.config_to_state(wide(width=640, height=384))["aspect"] == "640x384"
