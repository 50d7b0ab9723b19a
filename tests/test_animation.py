"""Animations of a run: the image forming, every few steps, ending on the saved image."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from das_ag.animation import encode_animation
from das_ag.cli import main
from das_ag.errors import DasAgError


def frames_of(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as animation:
        out = []
        for i in range(animation.n_frames):
            animation.seek(i)
            out.append(np.asarray(animation.convert("RGB")))
        return out


def test_gif_and_webp_hold_every_frame():
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 255 - i * 40)) for i in range(5)]
    for suffix in (".gif", ".webp"):
        decoded = frames_of(encode_animation(frames, suffix))
        assert len(decoded) == 5
        assert np.array_equal(decoded[-1], np.asarray(frames[-1]))
    with pytest.raises(DasAgError, match="must be one of"):
        encode_animation(frames, ".avi")


def test_generate_saves_the_animation_it_was_asked_for(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out, animation = tmp_path / "kite.png", tmp_path / "kite.webp"
    assert main(["generate", "--prompt", "a kite", "--steps", "20", "--copies", "2", "--resolution", "64",
                 "--device", "cpu", "--out", str(out), "--animation", str(animation), "--animation-every", "5",
                 "--quiet"]) == 0
    frames = frames_of(animation.read_bytes())
    assert len(frames) == 5  # the start, then steps 5, 10, 15 and 20
    assert np.array_equal(frames[-1], np.asarray(Image.open(out).convert("RGB")))  # ends on the saved image
    assert not np.array_equal(frames[0], frames[-1])
    assert "(5 frames)" in capsys.readouterr().out

    assert main(["generate", "--prompt", "a kite", "--animation", str(tmp_path / "kite.avi"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "must end in .gif, .webp, .mp4" in err


def mp4_frames(data: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("size", [(16, 16), (97, 33)])
def test_mp4_holds_every_frame_at_any_size(size):
    pytest.importorskip("av")
    colours = [(230, 30, 30), (30, 200, 30), (30, 30, 230)]
    frames = [Image.new("RGB", size, colour) for colour in colours]
    decoded = mp4_frames(encode_animation(frames, ".mp4", fps=10))
    # The frames in order, then the finished image held for a second (10 frames at 10 fps in all).
    assert len(decoded) == 2 + 10
    width, height = size
    assert decoded[0].shape == (height + height % 2, width + width % 2, 3)  # H.264 takes even sides only
    for frame, colour in zip(decoded, colours + [colours[-1]] * 9):
        assert np.abs(frame.reshape(-1, 3).mean(0) - colour).max() < 12  # lossy, but the right colour


def test_an_mp4_without_pyav_is_refused_before_the_models_load(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as where PyAV is not installed
    # No CLIP is there to load: had the run started, the error would be about the missing weights.
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tmp_path / "missing.pt"))
    assert main(["generate", "--prompt", "a kite", "--out", str(tmp_path / "kite.png"),
                 "--animation", str(tmp_path / "kite.mp4"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs PyAV" in err and "--extra video" in err
    assert not list(tmp_path.iterdir())
