"""A disk that fills up, or a folder that cannot be written, costs one line and loses nothing made:
a finished image, plan batch, LoRA or scorer is kept in the rescue folder under the temporary
folder, and the line says where. The full disk is real: a small tmpfs, filled to the last byte
(mounting one needs root, as CI and this machine's sessions have; elsewhere these tests skip)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
import sys
import os
import tempfile
from pathlib import Path

import pytest
import torch

from das_ag.cli import main
from das_ag.errors import DasAgError, WriteError
from das_ag.png import read_recipe, write_atomic

from .conftest import cli_env, small_config


def fill(folder: Path) -> Path:
    """Write into `folder` until its filesystem has no byte left."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@contextlib.contextmanager
def small_filesystem(folder: Path, options: str = ""):
    """`folder` on its own 1 MiB tmpfs (with mount `options` such as "ro") while in the block;
    the test skips where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(filter(None, (options, "size=1m"))), "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on its own 1 MiB filesystem, full."""
    with small_filesystem(tmp_path / "full") as folder:
        fill(folder)
        yield folder


@pytest.fixture
def rescue_root(tmp_path, monkeypatch):
    """The temporary folder, where rescued files go, on the ordinary disk."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root / f"das-ag-rescued-{os.getuid()}"


def test_a_full_disk_leaves_no_partial_file_and_says_so(full_disk):
    with pytest.raises(WriteError, match="No space left on device") as failure:
        write_atomic(full_disk / "a.png", b"x" * 100_000)
    assert failure.value.path == full_disk / "a.png" and "\n" not in str(failure.value)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no .partial left behind


def test_generate_keeps_its_image_and_animation_when_the_disk_is_full(full_disk, tmp_path, tiny_clip_path, head_path):
    """The run finishes; its PNG (recipe and all) and GIF go to the rescue folder, and stderr
    says so in one line each."""
    rescue = tmp_path / "tmp"
    rescue.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "das_ag.cli", "generate", "--prompt", "a red apple", "--steps", "3", "--copies", "2",
         "--device", "cpu", "--seed", "5", "--quiet", "--out", str(full_disk / "apple.png"),
         "--animation", str(full_disk / "apple.gif")],
        env={**cli_env(tiny_clip_path, head_path), "TMPDIR": str(rescue)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("das-ag: error:")]
    assert len(errors) == 2 and "Traceback" not in done.stderr, done.stderr
    kept = rescue / f"das-ag-rescued-{os.getuid()}"
    assert f"could not write {full_disk / 'apple.png'}: No space left on device; the image is kept at {kept / 'apple.png'}" \
        in errors[0]
    assert "the animation is kept at" in errors[1]
    recipe = read_recipe(kept / "apple.png")
    assert recipe["config"]["seed"] == 5 and recipe["run"]["steps_done"] == 3
    assert (kept / "apple.gif").stat().st_size > 0
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_folder_that_cannot_be_made_is_refused_before_the_models_load(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    code = main(["generate", "--prompt", "a red apple", "--clip-model", str(tmp_path / "no-such-clip.pt"),
                 "--out", str(tmp_path / "notes.txt" / "apple.png")])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == (f"das-ag: error: could not write {tmp_path / 'notes.txt' / 'apple.png'}: "
                                         f"{tmp_path / 'notes.txt'} is a file, not a folder")


def test_a_read_only_folder_is_refused_before_the_models_load(tmp_path, capsys):
    with small_filesystem(tmp_path / "read-only", "ro") as folder:
        code = main(["generate", "--prompt", "a red apple", "--clip-model", str(tmp_path / "no-such-clip.pt"),
                     "--out", str(folder / "apples" / "apple.png")])
    assert code == 1 and capsys.readouterr().err.strip() == (
        f"das-ag: error: could not write {folder / 'apples' / 'apple.png'}: Read-only file system")


def test_a_plan_keeps_the_batch_it_could_not_save_and_resumes(full_disk, rescue_root, models):
    """The disk fills after the first image: the second image's batch goes to the rescue folder,
    the error says to free space and run again, and the run again makes only what is missing."""
    from das_ag.experiments import build_plan, run_plan, slug
    from das_ag.prompts import Prompt

    filler = full_disk / "filler"
    filler.unlink()  # room for the plan's manifest and one image
    config = small_config(steps=2)
    base = {k: getattr(config, k) for k in ("steps", "augment_copies", "device")}
    prompts = (Prompt("a red apple"),)
    plan = build_plan([(slug("a red apple"), prompts)], [0, 1], base, full_disk / "plan", methods=("DAS-AG",))
    made = []

    def disk_fills_up(item, status):
        made.append(item.filename)
        fill(full_disk)

    with pytest.raises(WriteError, match="No space left on device") as failure:
        run_plan(plan, models, on_item=disk_fills_up, images_per_step=1)
    message = str(failure.value)
    assert "1 unsaved image(s) are kept in" in message and "run the same command again to continue" in message
    assert len(made) == 1 and (plan.image_dir / made[0]).is_file()
    rescued = list(rescue_root.iterdir())
    assert len(rescued) == 1 and rescued[0].name != made[0]
    assert read_recipe(rescued[0])["config"]["seed"] in (0, 1)

    (full_disk / "filler").unlink()
    assert run_plan(plan, models, images_per_step=1) == (1, 1)  # made the one missing, skipped the one kept


def needs_slider_extra():
    pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")


def test_a_slider_keeps_its_lora_when_the_disk_fills_during_training(full_disk, rescue_root, tiny_sd_path, models,
                                                                     capsys):
    needs_slider_extra()
    from das_ag.slider.base import load_base
    from das_ag.slider.lora import read_lora
    from das_ag.slider.train import SliderSettings, train

    settings = SliderSettings(steps=4, lr=3e-3, resolution=64, inference_steps=4, prompts=("a red house",),
                              checkpoint_every=2)
    base = load_base(tiny_sd_path, torch.device("cpu"))
    with pytest.raises(DasAgError, match="the LoRA is kept at") as failure:
        train(base, models, settings, full_disk / "beauty.safetensors")
    assert "\n" not in str(failure.value)
    warnings = capsys.readouterr().err
    assert "das-ag: warning: could not write" in warnings and "training goes on" in warnings
    tensors, recipe = read_lora(rescue_root / "beauty.safetensors")
    assert tensors and recipe["steps_done"] == 4


def test_a_stopped_slider_keeps_its_steps_where_the_disk_is_full(full_disk, rescue_root, tiny_sd_path, models, tmp_path):
    """Stopped mid-run with no room for the checkpoint: the checkpoint goes to the rescue folder,
    and moved where the line says, the same run continues from it."""
    needs_slider_extra()
    from das_ag.slider.base import load_base
    from das_ag.slider.lora import read_lora
    from das_ag.slider.train import SliderSettings, train

    settings = SliderSettings(steps=4, lr=3e-3, resolution=64, inference_steps=4, prompts=("a red house",),
                              checkpoint_every=10)
    out = full_disk / "beauty.safetensors"
    steps = []
    with pytest.raises(DasAgError, match="run the same command again to continue") as failure:
        train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, out,
              on_step=lambda report: steps.append(report.step), stop=lambda: len(steps) == 3)
    kept = rescue_root / "beauty.checkpoint.pt"
    assert f"kept at {kept} instead: move it to {out.with_name('beauty.checkpoint.pt')}" in str(failure.value)

    elsewhere = tmp_path / "beauty.safetensors"  # free space: here, by training into a folder with room
    kept.rename(elsewhere.with_name("beauty.checkpoint.pt"))
    resumed = []
    train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, elsewhere,
          on_step=lambda report: resumed.append(report.step))
    assert resumed == [4] and read_lora(elsewhere)[1]["steps_done"] == 4



def test_rescued_files_go_to_a_folder_of_the_users_alone(rescue_root):
    # A shared, predictable /tmp/das-ag-rescued let other users read rescued images or plant a
    # link first: the folder is the user's own, 0700, and one that is not is not used.
    from das_ag.rescue import rescue_folder

    folder = rescue_folder()
    assert folder == rescue_root and folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    with pytest.raises(WriteError, match="not a folder of this user's alone"):
        rescue_folder()
