"""Frames as an animation file: a run's image forming, every few steps, then the final image, or
the frames of a video that moves (animate.py).

GIF and animated WebP are written with Pillow; MP4 needs PyAV, the optional extra `video`
(`uv run --extra video das-ag ...`). Frames are the 8-bit images a user sees, so the last frame is
the saved PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from .durable import write_atomic
from .errors import DasAgError

FORMATS = (".gif", ".webp", ".mp4")
HOLD_LAST_SECONDS = 1.0  # the finished image stays on screen a moment before the loop restarts
NO_PYAV = "an .mp4 animation needs PyAV: `uv run --extra video das-ag ...` (or `pip install 'das-ag[video]'`); .gif and .webp need nothing"


def check_format(suffix: str) -> None:
    """Refuse, in one line, an animation this machine cannot write, before any run spends time on it."""
    suffix = suffix.lower()
    if suffix not in FORMATS:
        raise DasAgError(f"an animation must be one of {', '.join(FORMATS)}, not {suffix or 'a name without one'}")
    if suffix == ".mp4":
        _pyav()


def _pyav():
    try:
        import av
    except ImportError:
        raise DasAgError(NO_PYAV) from None
    return av


def encode_animation(frames: list[Image.Image], suffix: str, fps: float = 10.0, *, hold_last: bool = True) -> bytes:
    """The animation file's bytes for `frames` in the format of `suffix`; `hold_last` keeps the
    last frame (a finished image) on screen a moment, as a video of frames that move does not."""
    if not frames:
        raise DasAgError("an animation needs at least one frame")
    check_format(suffix)
    suffix = suffix.lower()
    frames = [f.convert("RGB") for f in frames]
    step_ms = max(20, round(1000 / fps))
    hold = HOLD_LAST_SECONDS if hold_last else 0.0
    durations = [step_ms] * (len(frames) - 1) + [max(step_ms, round(hold * 1000))]
    buffer = io.BytesIO()
    if suffix == ".mp4":
        return _mp4(frames, fps, hold)
    frames[0].save(buffer, format="GIF" if suffix == ".gif" else "WEBP", save_all=True, append_images=frames[1:],
                   duration=durations, loop=0, **({"lossless": True} if suffix == ".webp" else {}))
    return buffer.getvalue()


def _mp4(frames: list[Image.Image], fps: float, hold: float) -> bytes:
    av = _pyav()
    rate = max(1, round(fps))
    # H.264 in yuv420p halves the colour planes, so it takes only even sides: an odd canvas
    # (--size 97x33) gets its last column or row repeated rather than losing a line of pixels.
    frames = [_even(frame) for frame in frames]
    # A video has one frame rate, so the finished image is held by repeating it, as the GIF's
    # longer last duration does.
    frames += [frames[-1]] * max(0, round(hold * rate) - 1)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _even(frame: Image.Image) -> Image.Image:
    width, height = frame.size
    if width % 2 == 0 and height % 2 == 0:
        return frame
    even = Image.new("RGB", (width + width % 2, height + height % 2))
    even.paste(frame)
    if width % 2:
        even.paste(frame.crop((width - 1, 0, width, height)), (width, 0))
    if height % 2:
        even.paste(even.crop((0, height - 1, even.width, height)), (0, height))
    return even


def save_animation(frames: list[Image.Image], path: str | Path, fps: float = 10.0, *, overwrite: bool = False) -> Path:
    path = Path(path)
    return write_atomic(path, encode_animation(frames, path.suffix, fps), overwrite=overwrite)
