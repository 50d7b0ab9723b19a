"""Sketch mode end to end: the strokes canvas, its SVG, its settings, and what CLIP sees in it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.canvases import build_canvas
from das_ag.canvases.strokes import StrokeCanvas, StrokeSettings
from das_ag.colours import parse_palette
from das_ag.cli import main
from das_ag.config import PRESETS, GenerationConfig, merged_terms
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.png import read_recipe
from das_ag.prompts import Prompt, tokenize
from das_ag.schedules import Schedule
from das_ag.embedding import embed_image
from das_ag.svg import read_drawing, stroke_svg


DARK = "#202020"  # the toy CLIPs saw shapes on dark grounds only


def strokes_config(**changes) -> GenerationConfig:
    settings = {"count": 24, "width": 3.0, **changes.pop("canvas_settings", {})}
    terms = merged_terms({"tv": {"weight": 0.0}}, changes.pop("terms", {}))
    base = dict(prompts=(Prompt("a lighthouse"),), canvas="strokes", canvas_settings=settings, resolution=64,
                steps=10, augment_copies=2, device="cpu", terms=terms)
    return GenerationConfig(**{**base, **changes})


def resvg_pixels(svg: bytes) -> np.ndarray:
    resvg_py = pytest.importorskip("resvg_py")
    png = bytes(resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), skip_system_fonts=True))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


# -- the SVG -------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, changes", [
    ("sketch", {}),
    ("clipdraw", {"count": 64}),
    (None, {"count": 24, "segments": 3, "width": 4.0, "opacity": 0.6}),
])
def test_an_independent_renderer_paints_the_svg_like_the_png(models, preset, changes):
    """resvg (Rust, from PyPI) rasterises das-ag's SVG; it must look like das-ag's own PNG.

    Tolerance, in 0-255 levels of the largest channel difference: a mean of at most 2.5, and 98%
    of pixels within 24. They differ only at stroke edges, where das-ag's sigmoid edge (0.2 px
    softness) meets resvg's exact area coverage, most at tight kinks of pixel-sized strokes."""
    settings = {**PRESETS[preset]["canvas_settings"], **changes} if preset else changes
    # The whole-picture views: the margins below were measured on these drawings.
    config = strokes_config(resolution=96, steps=6, canvas_settings=settings, crop_min=1.0, view_turn=0.0, view_flip=False)
    result = synthesize(config, models).run()
    files = result.files()
    ours = np.asarray(Image.open(io.BytesIO(files[".png"])).convert("RGB"), dtype=np.float64)
    theirs = resvg_pixels(files[".svg"])
    assert theirs.shape == ours.shape == (96, 96, 3)
    difference = np.abs(ours - theirs).max(axis=-1)
    assert difference.mean() <= 2.5, difference.mean()
    assert np.mean(difference <= 24) >= 0.98, np.percentile(difference, 98)
    assert ours.std() > 10  # a drawing, not a blank page


def test_the_svg_lists_every_stroke_in_z_order_with_its_numbers():
    config = strokes_config(canvas_settings={"count": 9, "segments": 2, "opacity": 0.7})
    canvas = build_canvas(config, torch.Generator().manual_seed(config.seed))
    drawing = canvas.drawing()
    svg = stroke_svg(drawing, {"config": config.to_dict()})
    back = read_drawing(svg)
    assert back["width"] == back["height"] == config.resolution and len(back["strokes"]) == 9
    offset = canvas.crop_offset
    for stroke, points, width, colour, opacity in zip(back["strokes"], canvas.points.detach(), canvas.widths.detach(),
                                                      canvas.rgb.detach(), canvas.opacities.detach()):
        assert np.allclose(stroke["points"], (points - offset).tolist(), atol=0.006)
        assert len(stroke["points"]) == 7  # 2 cubics: 3n+1 control points
        assert stroke["width"] == pytest.approx(float(width), abs=0.006)
        assert np.allclose(stroke["colour"], colour.tolist(), atol=0.5 / 255 + 1e-9)
        assert stroke["opacity"] == pytest.approx(float(opacity), abs=0.0006)


def test_a_drawing_saves_a_png_and_an_svg_that_re_make_themselves(models, tmp_path):
    result = synthesize(strokes_config(), models).run()
    path = result.save(tmp_path / "drawing.png")
    svg_path = tmp_path / "drawing.svg"
    assert svg_path.is_file() and path.is_file()
    assert read_recipe(svg_path) == read_recipe(path)  # the same recipe in both files
    again = synthesize(GenerationConfig.from_dict(read_recipe(svg_path)["config"]), models).run().files()
    assert again[".png"] == path.read_bytes() and again[".svg"] == svg_path.read_bytes()


# -- the command line ---------------------------------------------------------------------------
FAST = ["--canvas", "strokes", "--strokes", "16", "--steps", "5", "--copies", "2", "--resolution", "64",
        "--device", "cpu", "--quiet"]


def test_generate_from_svg_gives_the_same_bytes(weights_env, tmp_path, capsys):
    first = tmp_path / "first.png"
    assert main(["generate", "--prompt", "a lighthouse", "--guidance", "reward", "--seed", "3", "--out", str(first),
                 "--stroke-colour", "palette", "--palette", "#000000,#ff0000,#ffffff", *FAST]) == 0
    again = tmp_path / "again.png"
    assert main(["generate", "--from-svg", str(first.with_suffix(".svg")), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == first.read_bytes()
    assert again.with_suffix(".svg").read_bytes() == first.with_suffix(".svg").read_bytes()
    # Every stroke shows one of the palette's colours, in the SVG as in the run.
    palette = {tuple(round(c * 255) for c in colour) for colour in parse_palette("#000000,#ff0000,#ffffff")}
    drawn = {tuple(round(c * 255) for c in s["colour"]) for s in read_drawing(again.with_suffix(".svg"))["strokes"]}
    assert drawn <= palette


def test_recipe_prints_an_svgs_recipe(weights_env, tmp_path, capsys):
    out = tmp_path / "d.png"
    assert main(["generate", "--prompt", "a kite", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["recipe", str(out.with_suffix(".svg"))]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe == read_recipe(out)
    assert recipe["config"]["canvas"] == "strokes" and recipe["config"]["canvas_settings"]["count"] == 16


@pytest.mark.parametrize("args, words", [
    (["--strokes", "0"], "strokes must be"),
    (["--strokes", "100000"], "strokes must be"),
    (["--stroke-width-max", "1000"], "widest"),
    (["--stroke-width", "20", "--stroke-width-max", "12"], "start width 20 px must lie between"),
    (["--stroke-colour", "palette", "--palette", "red,blue"], "is not a colour"),
    (["--palette", "#zz0000"], "is not a colour"),  # unused by full colour, but a typo all the same
    (["--stroke-layout", "image"], "needs a start picture (--init-image"),
])
def test_bad_stroke_settings_get_one_line_and_keep_old_files(weights_env, tmp_path, capsys, args, words):
    out = tmp_path / "keep.png"
    out.write_bytes(b"an earlier image")
    code = main(["generate", "--prompt", "a kite", "--out", str(out), "--overwrite", *FAST, *args])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and words in err, err
    assert out.read_bytes() == b"an earlier image" and not out.with_suffix(".svg").exists()


def test_an_init_image_that_is_not_an_image_is_refused(weights_env, tmp_path, capsys):
    fake = tmp_path / "photo.png"
    fake.write_text("not a picture")
    assert main(["generate", "--prompt", "a kite", "--stroke-layout", "image", "--init-image", str(fake), *FAST]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a readable image" in err


def test_an_svg_das_ag_did_not_write_is_refused(weights_env, tmp_path, capsys):
    foreign = tmp_path / "logo.svg"
    foreign.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg><path")
    for path, words in ((foreign, "has no das-ag recipe"), (broken, "is not a readable SVG")):
        assert main(["generate", "--from-svg", str(path), "--quiet"]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err


def test_a_stroke_flag_without_the_strokes_canvas_says_so(weights_env, capsys):
    assert main(["generate", "--prompt", "a kite", "--strokes", "8", "--quiet"]) != 0
    assert "add --canvas strokes" in capsys.readouterr().err


def test_a_stroke_setting_the_others_leave_unread_is_warned_of(weights_env, tmp_path, capsys):
    out = tmp_path / "kite.png"
    assert main(["generate", "--prompt", "a kite", "--palette", "#000000,#ff0000", "--stroke-width-min", "3",
                 "--stroke-width-max", "3", "--stroke-width", "3", "--width-lr", "0.5", "--out", str(out), *FAST]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("das-ag: warning")]
    assert warnings == ["das-ag: warning: --palette has no effect: only the palette colour mode draws with the palette",
                        "das-ag: warning: --width-lr has no effect: the width is fixed (the thinnest equals the widest)"]
    assert main(["generate", "--prompt", "a kite", "--stroke-colour", "palette", "--palette", "#000000,#ff0000",
                 "--out", str(out), "--overwrite", *FAST]) == 0
    assert "warning" not in capsys.readouterr().err  # used: nothing to say


# -- settings that shape the drawing ------------------------------------------------------------
def test_an_init_image_places_strokes_on_its_edges_in_its_colours(tmp_path):
    picture = Image.new("RGB", (128, 128), (0, 0, 0))
    picture.paste((255, 0, 0), (32, 32, 96, 96))  # a red square: its edges are at 32 and 96 (of 128)
    path = tmp_path / "square.png"
    picture.save(path)
    config = strokes_config(canvas_settings={"count": 200}, terms={"init": {"image": str(path)}})
    canvas = StrokeCanvas.from_config(config, torch.Generator().manual_seed(0))
    first = canvas.points[:, 0] - canvas.crop_offset  # each stroke's start, in the 64 px output
    to_edge = torch.minimum((first - 16).abs(), (first - 48).abs())  # the square's edges at 64 px
    near_an_edge = (to_edge.min(dim=1).values <= 2.5) & (first >= 14).all(1) & (first <= 50).all(1)
    assert near_an_edge.float().mean() > 0.8
    assert ((canvas.rgb[:, 0] > 0.2) & (canvas.rgb[:, 1:] < 0.1).all(1)).float().mean() > 0.3  # reds from the square
    # The checksum is kept: a recipe notices a changed start picture.
    assert config.term_settings("init").sha256
    picture.paste((0, 255, 0), (0, 0, 8, 8))
    picture.save(path)
    with pytest.raises(ConfigError, match="has changed"):
        GenerationConfig.from_dict(config.to_dict())


def test_a_recipe_from_before_the_shared_start_picture_still_loads(tmp_path):
    """Strokes recipes once kept the start picture in their own settings; it moves to the init term."""
    path = tmp_path / "square.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    old = strokes_config().to_dict()
    del old["canvas_settings"]["layout"]  # then called init
    old["canvas_settings"].update(init="image", init_image=str(path), init_image_sha256="")
    old["tv_weight"] = old.pop("terms")["tv"]["weight"]  # that release kept no term settings
    config = GenerationConfig.from_dict(old)
    assert config.start_picture == str(path) and config.canvas_settings.layout == "image"
    assert config == strokes_config(canvas_settings={"layout": "image"}, terms={"init": {"image": str(path)}})


def test_mono_strokes_stay_black_and_fixed_widths_stay_fixed(models):
    config = strokes_config(canvas_settings={**PRESETS["sketch"]["canvas_settings"], "count": 12})
    run = synthesize(config, models)
    start = run.images[0].canvas.points.detach().clone()
    result = run.run()
    drawing = read_drawing(result.files()[".svg"])
    assert all(s["colour"] == [0, 0, 0] and s["width"] == 3.0 and s["opacity"] == 1 for s in drawing["strokes"])
    assert not torch.equal(run.images[0].canvas.points, start)  # and yet the strokes moved


def test_settings_keep_their_ranges():
    assert "thinnest" in StrokeSettings(width=2.0, width_min=3.0, width_max=5.0).problems()[0]
    with pytest.raises(ConfigError, match="thinnest"):
        strokes_config(canvas_settings={"width": 2.0, "width_min": 3.0, "width_max": 5.0})
    with pytest.raises(ConfigError, match="settings of the pyramid canvas must be a PyramidSettings"):
        GenerationConfig(prompts=(Prompt("x"),), canvas="pyramid", canvas_settings=StrokeSettings(count=7))


# -- what the guidance does -----------------------------------------------------------------------
def test_the_aesthetic_cap_stops_the_push_beyond_it(models):
    config = strokes_config(prompts=(), terms={"text": {"weight": 0.0}, "aesthetic": {"weight": Schedule.constant(3.0)}})
    start = synthesize(config, models).run().initial_scores.aesthetic
    capped = config.with_term("aesthetic", cap=start - 1)
    run = synthesize(capped, models)
    before = run.preview()
    result = run.run()
    assert result.image.tobytes() == before.tobytes()  # already past the cap: nothing to gain, nothing moved
    free = synthesize(config, models).run()
    assert free.image.tobytes() != before.tobytes()


def test_the_aesthetic_term_can_apply_every_nth_step(models):
    config = strokes_config(terms={"aesthetic": {"every": 3, "weight": Schedule.constant(2.0)}})
    weights = [(e.step, e.metrics["aesthetic"]["weight"], e.terms["aesthetic"]) for e in synthesize(config, models)]
    for step, weight, contribution in weights:
        applied = (step - 1) % 3 == 0
        assert (weight == 2.0) == applied and (contribution != 0) == applied, (step, weight, contribution)


def toy_config(**changes) -> GenerationConfig:
    terms = merged_terms({"aesthetic": {"guidance": "off"}}, changes.pop("terms", {}))
    base = dict(canvas="strokes", canvas_settings=dict(count=24, width=4.0, width_max=10.0, background=DARK),
                resolution=64, steps=100, augment_copies=8, device="cpu", seed=0, terms=terms)
    return GenerationConfig(**{**base, **changes})


def test_a_stroke_drawing_shows_its_captions_colour_to_another_clip(toy_models):
    """Drawn with one toy CLIP, judged by the other (never optimised against) among all 30 captions."""
    maker, judge = toy_models
    colours = ["red", "green", "blue", "yellow", "purple", "white"]
    captions = [f"a {c} {s}" for c in colours for s in ("circle", "square", "triangle", "cross", "ring")]
    text = judge.encode_texts(tokenize(captions)[0])
    for caption in ("a red cross", "a blue square", "a yellow triangle"):
        # The whole-picture views, for which these three drawings were chosen; bench/transfer.py
        # measures the default views over 90 drawings (the judge's colour: 66% -> 82% with them).
        image = synthesize(toy_config(prompts=(Prompt(caption),), crop_min=1.0, view_turn=0.0, view_flip=False), maker).run().image
        seen = captions[int((embed_image(judge, image) @ text.t())[0].argmax())]
        assert seen.split()[1] == caption.split()[1], (caption, seen)


def test_reward_and_penalty_move_a_drawings_aesthetic_score_their_ways(toy_models):
    maker, _ = toy_models
    # Beside the text, a drawing's score moves its sign's way on average, not at every seed: one
    # seed of three put "off" above "reward" or below "penalty" on one CPU, in bf16 and float32
    # alike (note/strokes.md). The mean over three seeds kept its order with a 0.1-0.4 margin.
    text = dict(prompts=(Prompt("a red cross"),))
    clip = {"text": {"weight": 5.0}}
    mean, starts = {}, set()
    for g in ("reward", "off", "penalty"):
        aesthetic = {"guidance": g, "weight": Schedule.constant(10.0)}
        runs = [synthesize(toy_config(steps=40, augment_copies=4, seed=seed, **text, terms={**clip, "aesthetic": aesthetic}),
                           maker).run() for seed in (3, 4, 5)]
        starts.add(tuple(r.initial_scores.aesthetic for r in runs))
        mean[g] = sum(r.scores.aesthetic for r in runs) / 3
    assert len(starts) == 1  # each method from the same three starts
    assert mean["reward"] > mean["off"] > mean["penalty"], mean
    start = next(iter(starts))[0]  # seed 3's

    common = dict(steps=40, augment_copies=4, seed=3)

    # Pure aesthetic mode (no text): the score moves further, and each sign moves it its own way.
    half = Schedule.constant(0.5)
    pure = {"text": {"weight": 0.0}}
    up = synthesize(toy_config(prompts=(), **common, terms={**pure, "aesthetic": {"guidance": "reward", "weight": half}}),
                    maker).run()
    down = synthesize(toy_config(prompts=(), **common, terms={**pure, "aesthetic": {"guidance": "penalty", "weight": half}}),
                      maker).run()
    auxiliary = synthesize(toy_config(**text, **common, terms={**clip, "aesthetic": {"guidance": "reward", "weight": half}}),
                           maker).run()
    assert up.scores.aesthetic > start > down.scores.aesthetic
    assert up.scores.aesthetic - start > auxiliary.scores.aesthetic - start


def test_invisible_strokes_start_again_elsewhere_with_fresh_moments():
    config = strokes_config(canvas_settings={"count": 6, "reseed_every": 50, "opacity": 0.8})
    canvas = StrokeCanvas.from_config(config, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(canvas.param_groups(0.1))
    canvas(softness=0.5).mean().backward()
    optimizer.step()
    with torch.no_grad():
        canvas.opacities[1] = 0.01  # faded away
        canvas.points[4] = 0.5  # in the corner of the margin, out of view
    before = {name: p.detach().clone() for name, p in canvas.named_parameters()}
    assert canvas.invisible().tolist() == [False, True, False, False, True, False]

    canvas.maintain_(49, 1000, optimizer)  # not a re-seeding step
    assert torch.equal(canvas.opacities, before["opacities"])
    canvas.maintain_(50, 1000, optimizer)
    assert canvas.invisible().tolist() == [False] * 6
    assert float(canvas.opacities[1].detach()) == pytest.approx(0.8) and not torch.equal(canvas.points[4], before["points"][4])
    kept = [0, 2, 3, 5]
    assert torch.equal(canvas.points[kept], before["points"][kept])  # the visible ones untouched
    moments = optimizer.state[canvas.points]["exp_avg"]
    assert moments[[1, 4]].abs().sum() == 0 and moments[kept].abs().sum() > 0

    late = StrokeCanvas.from_config(config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        late.opacities[1] = 0.01
    late.maintain_(850, 1000, torch.optim.Adam(late.param_groups(0.1)))  # the last fifth: left alone
    assert float(late.opacities[1].detach()) == pytest.approx(0.01)


def test_a_run_that_re_seeds_strokes_repeats_itself(models):
    config = strokes_config(steps=30, canvas_settings={"count": 16, "reseed_every": 5, "layout": "clipdraw"})
    first = synthesize(config, models)
    canvas = first.images[0].canvas
    assert canvas.invisible().any()  # CLIPDraw's random opacities: some strokes start all but invisible
    invisible = {event.step: int(canvas.invisible().sum()) for event in first}
    assert invisible[5] == 0  # re-seeded after the fifth update
    again = synthesize(config, models).run()
    assert first.result().files() == again.files()
