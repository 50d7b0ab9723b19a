"""Videos that move: frames that each start from the last one, warped by the camera's move."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.animate import Motion, animate, frame_config, frames_folder
from das_ag.camera import Move, warp_picture, warp_points
from das_ag.canvases.base import from_pil
from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.png import read_recipe
from das_ag.prompts import Prompt, parse_prompt
from das_ag.schedules import Schedule
from das_ag.svg import read_drawing


def small(**changes) -> GenerationConfig:
    return GenerationConfig(**{**dict(prompts=(Prompt("a kite"),), steps=6, augment_copies=2, resolution=64,
                                      device="cpu"), **changes})


MOTION = Motion(frames=4, frame_steps=3, zoom=Schedule("linear", 1.1, 1.0), pan_x=Schedule.constant(2.0),
                turn=Schedule.constant(5.0))


def test_the_camera_moves_points_and_pictures_alike():
    """A bright dot moved by warp_picture lands where warp_points sends its centre."""
    picture = Image.new("RGB", (64, 48))
    picture.putpixel((40, 12), (255, 255, 255))
    move = Move(zoom=1.5, pan_x=3.0, pan_y=-2.0, turn=20.0)
    warped = np.asarray(warp_picture(picture, move).convert("L"), dtype=float)
    y, x = np.unravel_index(warped.argmax(), warped.shape)
    expected = warp_points(torch.tensor([[40.5, 12.5]]), move, 64, 48)[0]
    assert abs(x + 0.5 - float(expected[0])) <= 1 and abs(y + 0.5 - float(expected[1])) <= 1
    still = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert warp_picture(still, Move()).tobytes() == still.tobytes()  # no move: the same picture
    # The camera's directions: a pan right slides the picture left, a zoom in moves points away from the centre.
    assert warp_points(torch.tensor([[40.5, 12.5]]), Move(pan_x=3.0), 64, 48).tolist() == [[37.5, 12.5]]
    assert warp_points(torch.tensor([[40.0, 12.0]]), Move(zoom=2.0), 64, 48).tolist() == [[48.0, 0.0]]


def test_each_frame_starts_as_the_last_frame_warped(models, tmp_path):
    paths = animate(small(), MOTION, models, tmp_path / "video.gif")
    folder = frames_folder(tmp_path / "video.gif")
    assert [p.name for p in paths] == [f"frame-{k:04d}.png" for k in range(4)]
    for k in (1, 2, 3):
        last = Image.open(paths[k - 1]).convert("RGB")
        start = Image.open(folder / f"start-{k:04d}.png").convert("RGB")
        assert start.tobytes() == warp_picture(last, MOTION.move(k)).tobytes()
        # ... and the frame's canvas shows that picture before its first step.
        config = GenerationConfig.from_dict(read_recipe(paths[k])["config"])
        assert config.start_picture == str(folder / f"start-{k:04d}.png") and config.steps == 3 and config.seed == 42 + k
        before = synthesize(config, models).preview()
        assert (from_pil(before) - from_pil(start)).abs().max() <= 1 / 255 + 1e-6
    assert MOTION.move(1).zoom == pytest.approx(1.1 - 0.1 / 3) and MOTION.move(3).zoom == 1.0
    video = Image.open(tmp_path / "video.gif")
    assert video.n_frames == 4


def test_an_interrupted_animation_goes_on_from_its_frames_and_makes_the_same_bytes(models, tmp_path):
    import shutil

    out = tmp_path / "video.webp"
    whole = [p.read_bytes() for p in animate(small(), MOTION, models, out)]
    video = out.read_bytes()
    shutil.rmtree(frames_folder(out))
    out.unlink()

    def stop_after_two(done):
        if done.frame == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        animate(small(), MOTION, models, out, on_frame=stop_after_two)
    assert len(list(frames_folder(out).glob("frame-*.png"))) == 2 and not out.exists()
    seen = []
    again = animate(small(), MOTION, models, out, on_frame=seen.append)
    assert [d.resumed for d in seen] == [True, True, False, False]
    assert [p.read_bytes() for p in again] == whole and out.read_bytes() == video


def test_prompts_follow_their_timelines_across_the_frames():
    config = small(prompts=(parse_prompt("a red circle:linear:1:0"), parse_prompt("a blue square:linear:0:1"),
                            parse_prompt("dull:0.3", negative=True)))
    motion = Motion(frames=5)
    weights = [{p.text: p.weight for p in frame_config(config, motion, k).prompts} for k in range(5)]
    assert weights[0] == {"a red circle": 1.0, "dull": -0.3}  # a weight of 0 takes no part
    assert weights[2] == {"a red circle": 0.5, "a blue square": 0.5, "dull": -0.3}
    assert weights[4] == {"a blue square": 1.0, "dull": -0.3}


def test_a_drawing_carries_its_strokes_from_frame_to_frame(models, tmp_path):
    config = small(canvas="strokes", canvas_settings={"count": 12})
    motion = Motion(frames=2, frame_steps=2, zoom=Schedule.constant(1.25), turn=Schedule.constant(30.0))
    paths = animate(config, motion, models, tmp_path / "drawing.gif")
    folder = frames_folder(tmp_path / "drawing.gif")
    last = read_drawing(paths[0].with_suffix(".svg"))
    start = read_drawing(folder / "start-0001.svg")
    moved = warp_points(torch.tensor([s["points"] for s in last["strokes"]]), motion.move(1), 64, 64)
    assert torch.allclose(torch.tensor([s["points"] for s in start["strokes"]]), moved, atol=0.01)
    assert [s["width"] for s in start["strokes"]] == pytest.approx([s["width"] * 1.25 for s in last["strokes"]], abs=0.01)
    frame = GenerationConfig.from_dict(read_recipe(paths[1])["config"])
    canvas = synthesize(frame, models).images[0].canvas
    (top, left) = canvas.offsets
    assert torch.allclose(canvas.points.detach() - torch.tensor([left, top]), torch.tensor(
        [s["points"] for s in start["strokes"]]), atol=1e-4)


def test_the_cli_makes_a_video_and_a_frame_brings_back_its_animation(weights_env, tmp_path, capsys):
    out = tmp_path / "zoom.gif"
    args = ["animate", "--prompt", "a kite", "--frames", "3", "--frame-steps", "2", "--steps", "3", "--copies", "2",
            "--resolution", "64", "--zoom", "linear:1:1.2", "--turn", "2", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "3 frames" in said and "s a frame" in said
    recipe = read_recipe(frames_folder(out) / "frame-0002.png")
    assert recipe["animation"]["frame"] == 2 and recipe["animation"]["motion"]["zoom"]["end"] == 1.2
    again = tmp_path / "again.gif"
    assert main(["animate", "--from-png", str(frames_folder(out) / "frame-0001.png"), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("extra, said", [
    (["--zoom", "0"], "zoom must be from 0.01 to 10, got 0"),
    (["--zoom", "linear:1:0"], "zoom must be from 0.01 to 10"),
    (["--frames", "0"], "frames must be from 1 to"),
    (["--out", "video.avi"], "an animation must be one of .gif, .webp, .mp4"),
])
def test_bad_animation_settings_are_one_line(weights_env, tmp_path, capsys, extra, said):
    args = ["animate", "--prompt", "a kite", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "v.gif"), *extra]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert said in err and "Traceback" not in err and len(err.splitlines()) <= 2  # argparse adds its usage line


def test_frames_made_with_other_settings_are_not_taken_for_this_animation(models, tmp_path):
    from das_ag.errors import DasAgError

    animate(small(), Motion(frames=2, frame_steps=2), models, tmp_path / "v.gif")
    with pytest.raises(DasAgError, match="was made with other settings"):
        animate(small(prompts=(Prompt("a boat"),)), Motion(frames=2, frame_steps=2), models, tmp_path / "v.gif")


def test_a_zoom_of_0_from_the_api_is_one_line():
    assert Motion(zoom=Schedule.constant(0.0)).problems() == [
        "a zoom of 0 would shrink the picture to nothing: zoom must be above 0 (1: no zoom)"]


VIDEO_PLAN = """
seeds = [0]
methods = ["DAS-AG"]

[settings]
steps = 3
augment_copies = 2
resolution = 64
device = "cpu"

[[prompts]]
name = "kite"
text = ["a kite"]

[animation]
frames = 3
frame_steps = 2
zoom = 1.1
turn = "linear:0:4"
format = "webp"

[[variants]]
name = "in"

[[variants]]
name = "pan"
animation = { zoom = 1.0, pan_x = 3 }
"""


def test_a_plan_makes_a_video_per_item_resumes_and_reports_their_last_frames(weights_env, tmp_path, capsys):
    import csv

    from das_ag.experiments import load_plan

    path = tmp_path / "videos.toml"
    path.write_text(VIDEO_PLAN)
    plan = load_plan(path)
    motions = {item.variant: item.motion for item in plan.items}
    assert motions["in"] == Motion(frames=3, frame_steps=2, zoom=Schedule.constant(1.1), turn=Schedule("linear", 0.0, 4.0))
    assert motions["pan"] == Motion(frames=3, frame_steps=2, zoom=Schedule.constant(1.0), pan_x=Schedule.constant(3.0),
                                    turn=Schedule("linear", 0.0, 4.0))  # the variant changed two settings only

    assert main(["batch", str(path), "--quiet"]) == 0
    assert "made 2, skipped 0" in capsys.readouterr().out
    for item in plan.items:
        video = plan.path(item)
        assert video.suffix == ".webp" and Image.open(video).n_frames >= 2
        last = read_recipe(frames_folder(video) / "frame-0002.png")
        assert last["animation"]["motion"] == item.motion.to_dict() and last["run"]["status"] == "completed"
        # Frame 1 started from frame 0 as this variant's camera moved it.
        start = Image.open(frames_folder(video) / "start-0001.png").convert("RGB")
        frame0 = Image.open(frames_folder(video) / "frame-0000.png").convert("RGB")
        assert np.array_equal(np.asarray(start), np.asarray(warp_picture(frame0, item.motion.move(1))))
    rows = list(csv.DictReader((plan.out_dir / "scores.csv").open()))
    assert sorted(r["video"] for r in rows) == sorted(f"images/{i.filename}" for i in plan.items)
    assert all(r["file"].endswith("-frames/frame-0002.png") and r["status"] == "completed" for r in rows)

    videos = {i.filename: plan.path(i).read_bytes() for i in plan.items}
    assert main(["batch", str(path), "--quiet"]) == 0
    assert "made 0, skipped 2" in capsys.readouterr().out
    # A lost video is made again from its frames on disk: the same bytes, no frame redone.
    lost = plan.items[0]
    frames = {p: p.stat().st_mtime_ns for p in frames_folder(plan.path(lost)).glob("frame-*.png")}
    plan.path(lost).unlink()
    assert main(["batch", str(path), "--quiet"]) == 0
    assert "made 1, skipped 1" in capsys.readouterr().out
    assert plan.path(lost).read_bytes() == videos[lost.filename]
    assert all(p.stat().st_mtime_ns == t for p, t in frames.items())


@pytest.mark.parametrize("table, said", [
    ("[animation]\nzoom = 0", "zoom"),
    ("[animation]\nformat = 'avi'", "an animation must be one of .gif, .webp, .mp4"),
    ("[animation]\nturn = 'wobbly:1'", "turn: expected a number or KIND:START:END"),
    ("[animation]\nspin = 3", "unknown setting(s) spin"),
    ("animation = 3", "must be a table"),
    ("[[variants]]\nname = 'v'\nanimation = { zoom = 1.1 }", "the plan has no [animation] table"),
    ("[settings]\ntile = true\ncanvas = 'strokes'\n[animation]\nframes = 2", "cannot be a tile"),
])
def test_bad_animation_plans_are_one_line(tmp_path, table, said):
    from das_ag.errors import DasAgError
    from das_ag.experiments import load_plan

    path = tmp_path / "bad.toml"
    path.write_text(f"{table}\n[[prompts]]\ntext = 'a kite'\n")
    with pytest.raises(DasAgError, match=re.escape(said)):
        load_plan(path)


def test_a_plan_of_videos_is_refused_on_ray_before_joining_a_cluster(tmp_path):
    from das_ag.cluster import check_plan
    from das_ag.errors import DasAgError
    from das_ag.experiments import load_plan

    path = tmp_path / "videos.toml"
    path.write_text(VIDEO_PLAN)
    with pytest.raises(DasAgError, match=r"\[animation\] table runs on one machine for now: drop --ray"):
        check_plan(load_plan(path))
