"""Compare, batch plans and reports on the tiny CLIP and the real head."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.errors import DasAgError
from das_ag.evaluators import EvaluatorUnavailable, optional_evaluator
from das_ag.experiments import load_plan
from das_ag.png import read_recipe
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule
from das_ag.scoring import score_image
from das_ag import reference

from .conftest import cli_env

FAST = ["--steps", "4", "--copies", "2", "--device", "cpu", "--quiet"]


@pytest.fixture
def compared(weights_env, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--prompt", "a paper lantern", "--negative", "smoke", "--seeds", "3,4", "--out", str(out), *FAST])
    assert code == 0
    return out, capsys.readouterr().out


def test_compare_makes_every_method_with_identical_settings(compared):
    out, printed = compared
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(f"a-paper-lantern-{m}-seed{s}.png" for m in ("DAS", "DAS-AG", "DAS-rAG") for s in (3, 4))
    configs = {}
    for name in names:
        config = read_recipe(out / "images" / name)["config"]
        del config["terms"]["aesthetic"]["guidance"]
        configs.setdefault(config["seed"], []).append(config)
    for seed, same in configs.items():
        assert all(c == same[0] for c in same)  # only the guidance differs
    assert "| DAS-AG | 2 |" in printed


def test_tables_agree_with_the_images(compared, models):
    out, _ = compared
    rows = json.loads((out / "scores.json").read_text())["rows"]
    with open(out / "scores.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(rows) == len(csv_rows) == 6
    for row, csv_row in zip(rows, csv_rows):
        assert float(csv_row["aesthetic"]) == pytest.approx(row["aesthetic"], abs=1e-9)
        recipe = read_recipe(out / row["file"])
        assert row["aesthetic"] == recipe["scores"]["aesthetic"]
        # The stored numbers are what the saved pixels score now.
        image = Image.open(out / row["file"])
        again = score_image(models, image, GenerationConfig.from_dict(recipe["config"]))
        assert again.aesthetic == pytest.approx(row["aesthetic"], abs=1e-5)
        assert again.clip_positive == pytest.approx(row["clip_positive"], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["columns"]["aesthetic"]["held_out"] is False
    by_method = {s["method"]: s for s in summary["summary"]}
    das_ag = [r["aesthetic"] for r in rows if r["method"] == "DAS-AG"]
    assert by_method["DAS-AG"]["aesthetic"]["mean"] == pytest.approx(sum(das_ag) / 2)
    assert [s["method"] for s in summary["summary"]] == ["DAS", "DAS-AG", "DAS-rAG"]
    md = (out / "summary.md").read_text()
    assert "training head, not held out" in md and "± " in md
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 3 * 192 and sheet.height > 2 * 192  # 3 methods x 2 seeds
    with Image.open(out / "summary.png") as chart:
        assert chart.width > 300


def test_the_summary_rebuilt_from_the_pngs_equals_the_one_written_at_run_time(compared, capsys):
    out, _ = compared
    written = {name: (out / name).read_bytes() for name in ("summary.json", "summary.md", "scores.json", "scores.csv")}
    for name in written:
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    for name, data in written.items():
        assert (out / name).read_bytes() == data, name


def test_report_on_any_folder_of_das_ag_pngs(compared, tmp_path, capsys):
    out, _ = compared
    loose = tmp_path / "loose"
    loose.mkdir()
    for p in (out / "images").glob("*seed3.png"):
        (loose / p.name).write_bytes(p.read_bytes())
    (loose / "holiday.png").write_bytes((out / "contact_sheet.png").read_bytes())  # not das-ag: ignored
    assert main(["report", str(loose)]) == 0
    rows = json.loads((loose / "scores.json").read_text())["rows"]
    assert sorted(r["method"] for r in rows) == ["DAS", "DAS-AG", "DAS-rAG"]


def test_a_report_on_a_folder_without_das_ag_images_says_so_in_one_line(compared, tmp_path, capsys):
    out, _ = compared
    for folder, pictures in (("empty", []), ("holiday", [out / "contact_sheet.png"])):
        loose = tmp_path / folder
        loose.mkdir()
        for p in pictures:
            (loose / p.name).write_bytes(p.read_bytes())
        assert main(["report", str(loose)]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "holds no das-ag images" in err
        assert sorted(p.name for p in loose.iterdir()) == [p.name for p in pictures]  # no empty tables left


def test_reference_prompts_make_the_published_experiment(weights_env, tmp_path, capsys):
    out = tmp_path / "ref"
    assert main(["compare", "--prompts", "reference", "--seeds", "0", "--out", str(out),
                 "--steps", "1", "--copies", "1", "--device", "cpu", "--quiet"]) == 0
    images = list((out / "images").glob("*.png"))
    assert len(images) == 12  # four prompts x three methods
    recipe = read_recipe(out / "images" / "tokyo-tower-DAS-AG-seed0.png")
    assert recipe["config"]["prompts"][1] == {"text": reference.NEGATIVE, "weight": -1.0}
    md = (out / "summary.md").read_text()
    assert "Published" in md and "3.783 ± 0.203" in md


def test_a_missing_optional_evaluator_is_a_message_not_a_crash(weights_env, tmp_path, capsys):
    code = main(["compare", "--prompt", "x", "--out", str(tmp_path / "o"), "--evaluate", "aesthetic-v2.5", *FAST])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "aesthetic-v2.5" in err and ("not installed" in err or "local weights" in err)
    assert not (tmp_path / "o" / "images").exists()  # nothing was spent before saying so
    with pytest.raises(EvaluatorUnavailable, match="unknown evaluator"):
        optional_evaluator("vibes")


PLAN = """
preset = "quick"
seeds = [0, 1]
methods = ["DAS", "reward"]

[settings]
steps = {steps}
augment_copies = 2
device = "cpu"

[[prompts]]
text = "a quiet harbour"
negative = ["fog"]

[[prompts]]
name = "kites"
text = ["red kites:1.0", "a blue sky:0.5"]
"""


def test_plans_parse_into_every_combination(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(steps=3) + '\n[[variants]]\nname = "slow"\nlr = 0.01\n\n[[variants]]\nname = "fast"\nlr = 0.2\n')
    plan = load_plan(path)
    assert len(plan.items) == 2 * 2 * 2 * 2  # prompt sets x variants x methods x seeds
    assert plan.out_dir == tmp_path / "plan"
    kites = [i for i in plan.items if i.prompt_set == "kites"][0]
    assert kites.config.prompts == (Prompt("red kites", 1.0), Prompt("a blue sky", 0.5))
    assert {i.method for i in plan.items} == {"DAS", "DAS-AG"}
    assert {i.config.lr for i in plan.items} == {0.01, 0.2}
    assert kites.config.augment_copies == 2 and kites.config.steps == 3


def test_a_plan_written_before_the_pyramid_owned_its_settings_keeps_working(tmp_path):
    # levels, init, combine and interpolation were top-level settings; plans name them there.
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(steps=3).replace('device = "cpu"', 'device = "cpu"\nlevels = "all"\ninterpolation = "bicubic"')
                    + '\n[[variants]]\nname = "flat"\ninit = "zeros"\n\n[[variants]]\nname = "summed"\ncombine = "sum"\n')
    plan = load_plan(path)
    looks = {(i.variant, i.config.canvas_settings) for i in plan.items}
    from das_ag.canvases.pyramid import PyramidSettings

    assert looks == {("flat", PyramidSettings(levels="all", fill="zeros", interpolation="bicubic")),
                     ("summed", PyramidSettings(levels="all", combine="sum", interpolation="bicubic"))}


@pytest.mark.parametrize("text, words", [
    ("seeds = [-1]\n[[prompts]]\ntext='x'", "seeds"),
    ("colour_me = 1\n[[prompts]]\ntext='x'", "unknown key"),
    ("methods = ['DAS-XL']\n[[prompts]]\ntext='x'", "unknown method"),
    ("[settings]\nseed = 3\n[[prompts]]\ntext='x'", "set by the plan"),
    ("[[prompts]]\ntext='x'\n[settings]\nsteps = 0", "steps"),
    ("this is = not toml [", "not valid TOML"),
    ("[[prompts]]\nname='../../x'\ntext='x'", "becomes part of file names"),  # would write outside the plan's folder
    ("[[prompts]]\nname='.hidden'\ntext='x'", "letters, digits"),
])
def test_bad_plans_say_what_is_wrong(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DasAgError, match=words):
        load_plan(path)


def test_an_interrupted_batch_resumes_without_redoing_finished_images(tmp_path, tiny_clip_path, head_path, capsys, monkeypatch):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(steps=60))
    images = tmp_path / "plan" / "images"
    # Two images per step, so a kill can land between batches (auto would make all 8 together).
    proc = subprocess.Popen([sys.executable, "-m", "das_ag.cli", "batch", str(plan), "--quiet", "--images-per-step", "2"],
                            env=cli_env(tiny_clip_path, head_path), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(images.glob("*.png")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # a crash, not a polite stop
    proc.wait(30)
    done = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in images.glob("*.png")}
    assert 1 <= len(done) < 8
    for name in done:
        assert read_recipe(images / name)["run"]["status"] == "completed"

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    assert main(["batch", str(plan), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"made {8 - len(done)}, skipped {len(done)} already finished" in printed
    assert len(list(images.glob("*.png"))) == 8 and not list(images.glob(".*.partial"))
    for name, (mtime, data) in done.items():
        assert (images / name).stat().st_mtime_ns == mtime and (images / name).read_bytes() == data

    # A changed plan redoes exactly the images whose settings changed.
    plan.write_text(PLAN.format(steps=3))
    assert main(["batch", str(plan), "--quiet"]) == 0
    assert "made 8, skipped 0" in capsys.readouterr().out


STROKE_PLAN = """
preset = "sketch"
seeds = [0]
methods = ["DAS-AG"]

[settings]
steps = 3
augment_copies = 2
resolution = 64
device = "cpu"

[[prompts]]
text = "a kite"

[[variants]]
name = "few"
canvas_settings = { count = 6 }

[[variants]]
name = "many"
canvas_settings = { count = 20, width_max = 5.0, width_min = 1.0, width = 2.0 }
"""


def test_a_plan_of_stroke_drawings_keeps_the_presets_look_and_its_svgs(tmp_path, tiny_clip_path, head_path, capsys,
                                                                      monkeypatch):
    from das_ag.canvases.strokes import StrokeCanvas

    import torch

    sketch = GenerationConfig.from_preset("sketch", prompts=(Prompt("x"),))
    assert set(StrokeCanvas.files) == set(StrokeCanvas.from_config(sketch, torch.Generator()).exports())
    path = tmp_path / "drawings.toml"
    path.write_text(STROKE_PLAN)
    plan = load_plan(path)
    few, many = (next(i.config.canvas_settings for i in plan.items if i.variant == v) for v in ("few", "many"))
    assert (few.count, few.colour, few.width_max) == (6, "mono", 3.0)  # the variant changed the count only
    assert (many.count, many.colour, many.width_max) == (20, "mono", 5.0)

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    assert main(["batch", str(path), "--quiet"]) == 0
    images = plan.image_dir
    assert sorted(p.suffix for p in images.iterdir()) == [".png", ".png", ".svg", ".svg"]
    lost = next(images.glob("*.svg"))
    lost.unlink()  # a drawing without its SVG is not finished: the next run makes it again
    capsys.readouterr()
    assert main(["batch", str(path), "--quiet"]) == 0
    assert "made 1, skipped 1" in capsys.readouterr().out and lost.is_file()


def test_a_second_process_on_the_same_plan_is_refused(tmp_path):
    # Running, a plan deletes leftover temporary files as a killed run's: a second process on the
    # same folder would delete the first one's files mid-write and make its images again. The
    # lock is the kernel's (flock), so it holds between processes and goes with a killed one.
    import subprocess
    import sys

    from das_ag.experiments import plan_lock

    with plan_lock(tmp_path):
        other = subprocess.run([sys.executable, "-c", "import sys; from das_ag.experiments import plan_lock\n"
                                "with plan_lock(sys.argv[1]): pass", str(tmp_path)], capture_output=True, text=True)
        assert other.returncode != 0 and "another das-ag process is running the plan" in other.stderr
    with plan_lock(tmp_path):  # free again once the first is done
        pass


def test_a_plan_written_before_the_terms_owned_their_settings_keeps_working(tmp_path):
    # clip_weight, aesthetic, tv_weight and l1_weight were top-level settings; a variant that sets
    # one term's weight keeps the base's settings of the others, and the method sets the sign.
    path = tmp_path / "plan.toml"
    old = 'device = "cpu"\nclip_weight = 3.0\naesthetic = { kind = "constant", start = 1.5, end = 1.5 }\ntv_weight = 0.01'
    path.write_text(PLAN.format(steps=3).replace('device = "cpu"', old)
                    + '\n[[variants]]\nname = "darker"\nl1_weight = 0.2\n\n[[variants]]\nname = "new"\nterms.tv.weight = 0.5\n')
    plan = load_plan(path)
    for item in plan.items:
        c = item.config
        assert c.term_settings("text").weight == 3.0 and c.term_settings("aesthetic").weight == Schedule.constant(1.5)
        assert c.guidance == {"DAS": "off", "DAS-AG": "reward"}[item.method]
        weights = (c.term_settings("tv").weight, c.term_settings("l1").weight)
        assert weights == {"darker": (0.01, 0.2), "new": (0.5, 0.0)}[item.variant]


def test_a_plan_cannot_set_the_aesthetic_sign_its_methods_set(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text("[settings]\nterms.aesthetic.guidance = 'off'\n[[prompts]]\ntext='x'")
    with pytest.raises(DasAgError, match="set by the plan's methods"):
        load_plan(path)


def test_a_plan_takes_timelines_tiles_masks_and_symmetry_kinds(tmp_path):
    from PIL import Image

    from das_ag.schedules import Schedule

    Image.new("RGB", (64, 64), "navy").save(tmp_path / "start.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "mask.png")
    path = tmp_path / "plan.toml"
    path.write_text(f"""
seeds = [0]
methods = ["DAS"]

[settings]
steps = 3
tile = true
terms.symmetry = {{ weight = 2.0, kind = "radial", folds = 5 }}
terms.init = {{ image = "{tmp_path / 'start.png'}", mask = "{tmp_path / 'mask.png'}", mask_edge = 2 }}

[[prompts]]
text = ["a red circle:linear:1:0", "a blue circle:cosine:0:1"]
""")
    config = load_plan(path).items[0].config
    assert config.tile and config.term_settings("symmetry").kind == "radial" and config.term_settings("init").mask_edge == 2
    assert config.prompts == (Prompt("a red circle", Schedule("linear", 1.0, 0.0)), Prompt("a blue circle", Schedule("cosine", 0.0, 1.0)))
