"""The das-ag command: real models, real files, and one clear line for every mistake."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from das_ag.cli import build_parser, main
from das_ag.config import GenerationConfig
from das_ag.png import read_recipe

from .conftest import cli_env

FAST = ["--steps", "6", "--copies", "2", "--device", "cpu", "--quiet"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("das-ag"), err
    return lines[0]


def test_generate_saves_a_png_whose_recipe_says_what_was_asked(weights_env, tmp_path, capsys, head_sha256):
    out = tmp_path / "out.png"
    code = main(["generate", "--prompt", "a lighthouse:1.5", "--negative", "fog:0.5", "--guidance", "penalty",
                 "--aesthetic-weight", "2", "--clip-weight", "4", "--seed", "9", "--out", str(out), *FAST])
    assert code == 0
    summary = capsys.readouterr().out
    assert f"saved {out}" in summary and "DAS-rAG" in summary and "aesthetic" in summary
    recipe = read_recipe(out)
    config = recipe["config"]
    assert config["prompts"] == [{"text": "a lighthouse", "weight": 1.5}, {"text": "fog", "weight": -0.5}]
    terms = config["terms"]
    assert (terms["aesthetic"]["guidance"], terms["text"]["weight"], config["seed"], config["steps"]) == ("penalty", 4.0, 9, 6)
    assert terms["aesthetic"]["weight"]["end"] == 2.0
    assert recipe["method"] == "DAS-rAG" and recipe["run"]["steps_done"] == 6
    assert recipe["models"]["aesthetic"]["sha256"] == head_sha256
    assert set(recipe["scores"]) >= {"clip_positive", "clip_negative", "aesthetic"}

    assert main(["recipe", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == recipe


def test_every_setting_has_a_flag_schedules_included(weights_env, tmp_path):
    out = tmp_path / "flags.png"
    assert main(["generate", "--prompt", "a kite", *FAST, "--noise", "exp_decay:0.3:0.1:0.05", "--colour-shift", "0.2",
                 "--jitter", "linear:1:0.5", "--jitter-margin", "8", "--levels", "all", "--resolution", "48",
                 "--init", "zeros", "--coarse-lr", "2.5", "--copies", "3", "--out", str(out)]) == 0
    config = read_recipe(out)["config"]
    assert config["noise"] == {"kind": "exp_decay", "start": 0.3, "end": 0.1, "rate": 0.05}
    assert config["colour_shift"] == {"kind": "constant", "start": 0.2, "end": 0.2, "rate": 0.03}
    assert (config["jitter"]["kind"], config["jitter"]["end"], config["jitter_margin"]) == ("linear", 0.5, 8)
    pyramid = config["canvas_settings"]  # the pyramid's own settings; --init is --fill's old name
    assert (pyramid["levels"], pyramid["fill"], pyramid["coarse_lr"], config["augment_copies"]) == ("all", "zeros", 2.5, 3)
    assert "levels" not in config and "init" not in config


def test_from_png_reproduces_the_same_pixels_and_bytes(weights_env, tmp_path, capsys):
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    assert main(["generate", "--prompt", "a red kite", "--seed", "5", "--out", str(first), *FAST]) == 0
    assert main(["generate", "--from-png", str(first), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == first.read_bytes()
    other = tmp_path / "other.png"
    assert main(["generate", "--from-png", str(first), "--seed", "6", "--out", str(other), "--quiet"]) == 0
    assert other.read_bytes() != first.read_bytes()
    assert read_recipe(other)["config"]["prompts"] == read_recipe(first)["config"]["prompts"]


def test_default_output_name_never_overwrites(weights_env, tmp_path, capsys):
    for _ in range(2):
        assert main(["generate", "--prompt", "A Red Kite!", *FAST]) == 0
    names = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert names == ["a-red-kite-DAS-AG-seed42-1.png", "a-red-kite-DAS-AG-seed42.png"]


def test_existing_output_is_kept(weights_env, tmp_path, capsys):
    out = tmp_path / "taken.png"
    out.write_bytes(b"precious")
    assert main(["generate", "--prompt", "x", "--out", str(out), *FAST]) == 1
    assert "already exists" in one_line_error(capsys)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prompt", "x", "--guidance", "sideways"], "invalid choice"),
        (["--prompt", "x", "--steps", "0"], "steps must be from 1 to"),
        (["--prompt", "x", "--steps", "many"], "whole number"),
        (["--prompt", "x", "--resolution", "8"], "resolution"),
        (["--prompt", "x", "--clip-weight", "nan"], "finite"),
        (["--prompt", "x", "--aesthetic-weight", "inf"], "finite"),
        (["--prompt", "x", "--aesthetic-weight", "-1"], "penalty"),
        (["--prompt", "x", "--lr", "-0.1"], "learning rate"),
        (["--prompt", "x", "--device", "tpu"], "device"),
        (["--prompt", "x", "--seed", "-4"], "seed must be from 0 to 9223372036854775807,"),
        (["--prompt", "x", "--noise", "exp_decay:0.2"], "KIND:START:END"),
        (["--prompt", "x", "--out", "picture.jpg"], ".png"),
        (["--negative", "blurry"], "at least one prompt to steer towards (a positive one)"),
        ([], "or set the CLIP weight to 0"),
        (["--prompt", ":3"], "no text"),
        (["--prompt", "x", "--aesthetic-model", "/nowhere/head.pth"], "does not exist"),
        (["--prompt", "x", "--clip-model", "/nowhere/clip.pt"], "does not exist"),
        (["--prompt", "x", "--from-png", "/nowhere/recipe.png"], "does not exist"),
        (["--prompt", "x", "--dtype", "float16", "--device", "cpu"], "float16 needs a CUDA GPU"),
    ],
)
def test_bad_input_gives_one_clear_line(weights_env, tmp_path, capsys, args, words):
    code = main(["generate", *args, "--quiet"] + ([] if "--steps" in args else ["--steps", "2"]))
    assert code != 0
    assert words in one_line_error(capsys)
    assert not (tmp_path / "outputs").exists()


def test_corrupt_head_is_refused(weights_env, tmp_path, capsys, monkeypatch, head_path):
    bad = tmp_path / "head.pth"
    bad.write_bytes(head_path.read_bytes()[:50_000])
    assert main(["generate", "--prompt", "x", "--aesthetic-model", str(bad), *FAST]) == 1
    assert "not a PyTorch checkpoint" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_but_absent(weights_env, capsys):
    assert main(["generate", "--prompt", "x", "--device", "cuda", "--steps", "2", "--quiet"]) == 1
    assert "no CUDA GPU" in one_line_error(capsys)


def test_download_offline_names_what_to_set(monkeypatch, capsys):
    monkeypatch.setenv("DAS_AG_CLIP_URL", "http://127.0.0.1:9/ViT-L-14.pt")
    assert main(["download"]) == 1
    line = one_line_error(capsys)
    assert "CLIP_MODEL_PATH" in line and "AESTHETIC_PREDICTOR_PATH" in line


def test_download_with_local_files_verifies_them(weights_env, head_sha256, capsys):
    assert main(["download"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {head_sha256[:16]}" in out


def test_the_installed_command_fails_cleanly(tiny_clip_path, head_path, tmp_path):
    # The real entry point in a fresh process: a usage mistake exits 2 with one line.
    proc = subprocess.run(
        [sys.executable, "-m", "das_ag.cli", "generate", "--prompt", "x", "--steps", "-3"],
        capture_output=True, text=True, env=cli_env(tiny_clip_path, head_path), cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_running_out_of_memory_is_one_line_whether_loading_or_stepping(weights_env, tmp_path, capsys, monkeypatch):
    """The GPU's out-of-memory error, raised here where CUDA raises it: while the models load, and
    at the encoder's third call. A step that fails keeps the image so far."""
    import das_ag.models
    from das_ag.models import ModelBundle

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total)")

    with monkeypatch.context() as patch:
        patch.setattr(das_ag.models, "load_models", oom)
        assert main(["generate", "--prompt", "a kite", "--out", str(tmp_path / "a.png"), *FAST]) == 1
    line = one_line_error(capsys)
    assert "ran out of memory (CUDA out of memory" in line and "free memory on the device" in line
    assert list(tmp_path.iterdir()) == []

    real, calls = ModelBundle.encode_images, []

    def encode_until_full(self, *args, **kwargs):
        calls.append(1)
        return oom() if len(calls) == 3 else real(self, *args, **kwargs)

    monkeypatch.setattr(ModelBundle, "encode_images", encode_until_full)
    assert main(["generate", "--prompt", "a kite", "--out", str(tmp_path / "b.png"), *FAST]) == 1
    line = one_line_error(capsys)
    assert "stopped at step 2: CUDA out of memory" in line and "kept the image so far" in line
    assert (tmp_path / "b.png").is_file()


def test_every_option_of_every_command_says_what_it_does():
    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), "das-ag")) == []


def test_compile_is_left_to_the_device_unless_a_flag_says_otherwise():
    from das_ag.cli import config_from_args

    def compile_of(*flags):
        return config_from_args(build_parser().parse_args(["generate", "--prompt", "a kite", *flags])).compile

    assert (compile_of(), compile_of("--compile"), compile_of("--no-compile")) == (None, True, False)


def test_the_terms_flags_set_their_own_settings():
    """--clip-weight, --guidance, --aesthetic (and its short forms), --tv and --l1 are the flags
    they always were; the settings they set are their terms'."""
    from das_ag.cli import config_from_args
    from das_ag.schedules import Schedule

    def config_of(*flags):
        return config_from_args(build_parser().parse_args(["generate", "--prompt", "a kite", *flags]))

    c = config_of("--clip-weight", "2", "--guidance", "penalty", "--aesthetic", "linear:0.5:2", "--tv", "0.01",
                  "--l1", "0.02", "--aesthetic-every", "3")
    assert (c.term_settings("text").weight, c.guidance, c.term_settings("tv").weight, c.term_settings("l1").weight) == (
        2.0, "penalty", 0.01, 0.02)
    assert c.term_settings("aesthetic") == c.term_settings("aesthetic").__class__(
        guidance="penalty", weight=Schedule("linear", 0.5, 2.0), every=3)
    shaped = config_of("--aesthetic-weight", "4", "--aesthetic-start", "1", "--aesthetic-schedule", "cosine")
    assert shaped.term_settings("aesthetic").weight == Schedule("cosine", 1.0, 4.0, 0.06)
    assert config_of("--preset", "quick", "--guidance", "off").term_settings("aesthetic").weight.rate == 0.1


def test_renamed_flags_and_recipe_keys_still_work_and_name_the_new_one(capsys):
    """--batch, --colour, --init and --stroke-init were renamed (one name per thing): the old
    flags set the same settings with a one-line note, and recipes with the old keys load."""
    from das_ag.cli import config_from_args

    def config_of(*flags):
        return config_from_args(build_parser().parse_args(["generate", "--prompt", "a kite", "--canvas", "strokes", *flags]))

    new = config_of("--copies", "3", "--colour-shift", "0.2", "--stroke-layout", "clipdraw")
    assert capsys.readouterr().err == ""
    old = config_of("--batch", "3", "--colour", "0.2", "--stroke-init", "clipdraw")
    notes = capsys.readouterr().err.splitlines()
    assert old == new and new.canvas_settings.layout == "clipdraw" and new.augment_copies == 3
    assert notes == [f"das-ag: note: {a} is now {b}; the old name will go in a later release"
                     for a, b in (("--batch", "--copies"), ("--colour", "--colour-shift"), ("--stroke-init", "--stroke-layout"))]
    recipe = new.to_dict()
    recipe["colour"] = recipe.pop("colour_shift")
    recipe["canvas_settings"]["init"] = recipe["canvas_settings"].pop("layout")
    assert GenerationConfig.from_dict(recipe) == new
    with pytest.warns(DeprecationWarning, match="colour is colour_shift now"):
        assert new.replace(colour=new.colour_shift) == new


def test_a_repeatable_setting_takes_its_flag_again_and_again(tmp_path):
    """--image-prompt is the image-prompt term's own setting (Setting.repeat): the CLI names no term."""
    from PIL import Image

    from das_ag.cli import config_from_args

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    config = config_from_args(build_parser().parse_args(
        ["generate", "--image-prompt", str(a), "--image-prompt", f"{b}:-0.5"]))
    settings = config.term_settings("image_prompt")
    assert settings.images == f"{a}|{b}:-0.5" and settings.entries() == [(str(a), 1.0), (str(b), -0.5)]
    assert config.prompts == () and len(settings.sha256.split("|")) == 2  # the pictures steer: no text needed
