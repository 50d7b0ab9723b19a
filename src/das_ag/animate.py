"""Videos that move: frames that each start from the last one, seen by a moving camera.

Frame 0 is an ordinary run of the config. Every later frame starts from the frame before, warped
by the camera's move (camera.py: zoom, pan, turn, each a number or a schedule over the frames),
and runs `frame_steps` steps, so the picture drifts, grows and turns while CLIP keeps it showing
the prompts. Prompts follow their timelines across the frames: a prompt whose weight is a
schedule has, in frame k of N, the schedule's value at k of N - 1 (a constant within the frame),
so a video can move from one prompt to another. A stroke drawing carries its strokes over: they
are moved with the camera and go on from where they were.

Every frame is a PNG with its recipe (and an SVG for strokes) in the frames folder, next to the
start picture it was made from; the video is made from the frames at the end. Frames start from
the 8-bit files on disk, so a run that stopped (Ctrl-C, a crash) goes on from its last frame with
the same command and makes the same bytes as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from .camera import Move, warp_picture, warp_points
from .config import MAX_STEPS, GenerationConfig
from .durable import write_atomic, write_files
from .errors import ConfigError, DasAgError
from .schedules import Schedule
from .settings import PartSettings, described, kind_of, setting

MAX_FRAMES = 10_000
MAX_PAN = 512.0  # px per frame
FRAME_NAME, START_NAME = "frame-{:04d}", "start-{:04d}"


@dataclass(frozen=True)
class Motion(PartSettings):
    """How an animation moves: how many frames, how long each runs, and the camera's move from
    one frame to the next (numbers, or schedules over the frames)."""

    frames: int = setting(24, group="animation", minimum=1, maximum=MAX_FRAMES, help="frames in the video")
    frame_steps: int = setting(20, group="animation", minimum=1, maximum=MAX_STEPS,
                               help="optimisation steps of every frame after the first (the first takes --steps)")
    zoom: Schedule = setting(Schedule.constant(1.02), group="animation", minimum=0.01, maximum=10.0,
                             help="the camera's zoom per frame: above 1 moves in, below 1 out")
    pan_x: Schedule = setting(Schedule.constant(0.0), group="animation", minimum=-MAX_PAN, maximum=MAX_PAN,
                              label="Pan right (px)",
                              help="the camera's move right per frame, in px (the picture slides left)")
    pan_y: Schedule = setting(Schedule.constant(0.0), group="animation", minimum=-MAX_PAN, maximum=MAX_PAN,
                              label="Pan down (px)",
                              help="the camera's move down per frame, in px (the picture slides up)")
    turn: Schedule = setting(Schedule.constant(0.0), group="animation", minimum=-180.0, maximum=180.0,
                             label="Turn (degrees)",
                             help="the camera's clockwise turn per frame, in degrees")
    fps: float = setting(12.0, group="animation", minimum=1.0, maximum=60.0, label="Frames per second",
                         help="frames per second of the video")

    def problems(self) -> list[str]:
        p = []
        for f, s in described(type(self)):
            name, value, kind = f.name.replace("_", " "), getattr(self, f.name), kind_of(f)
            if kind == "schedule":
                found = value.problems(name) if isinstance(value, Schedule) else [f"{name} must be a number or a schedule"]
                if found:
                    p.extend(found)
                    continue
                low, high = sorted((value.start, value.end))
            elif not isinstance(value, int if kind == "int" else (int, float)) or isinstance(value, bool):
                p.append(f"{name} must be a {'whole ' if kind == 'int' else ''}number, not {value!r}")
                continue
            else:
                low = high = value
            if f.name == "zoom" and low <= 0:
                p.append(f"a zoom of {low:g} would shrink the picture to nothing: zoom must be above 0 (1: no zoom)")
            elif not s.minimum <= low <= high <= s.maximum:
                p.append(f"{name} must be from {s.minimum:g} to {s.maximum:g}, not {low:g}" + (f" to {high:g}" if high != low else ""))
        return p

    def at(self, schedule: Schedule, frame: int) -> float:
        """A schedule's value at `frame`: its start at frame 0, its end at the last frame."""
        return schedule.at(frame, max(self.frames - 1, 1))

    def move(self, frame: int) -> Move:
        """The camera's move from frame - 1 to `frame`."""
        return Move(self.at(self.zoom, frame), self.at(self.pan_x, frame), self.at(self.pan_y, frame),
                    self.at(self.turn, frame))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, table: dict) -> Motion:
        from .settings import settings_from_table

        return settings_from_table(cls, table, "the animation's settings")


def check(config: GenerationConfig, motion: Motion) -> None:
    """Refuse, in one line, an animation that cannot be made, before anything runs."""
    problems = motion.problems()
    if config.term_settings("init").mask:
        problems.append("an animation's frames start from the frame before, so a mask has nothing to keep; drop --mask")
    if config.canvas == "strokes" and config.tile:
        problems.append("a strokes animation cannot be a tile: its SVGs hold copies of the strokes at the edges")
    if problems:
        raise ConfigError(problems[0])


def frame_config(config: GenerationConfig, motion: Motion, frame: int, start: str = "",
                 drawing: str = "") -> GenerationConfig:
    """The settings of frame `frame`: the prompts' weights at this frame, its own seed, and after
    frame 0 the start picture `start` (and for strokes, the start drawing `drawing`) and the
    frames' steps."""
    span = max(motion.frames - 1, 1)
    terms = dict(config.terms)
    images = config.term_settings("image_prompt")
    if any(isinstance(w, Schedule) for _, w in images.entries()):
        from .prompts import weight_at

        fixed = "|".join(f"{path}:{weight_at(w, frame, span)!r}" for path, w in images.entries()
                         if weight_at(w, frame, span) != 0)
        terms["image_prompt"] = dataclasses.replace(images, images=fixed)  # the same files: the same checksums
    # A prompt whose timeline is at 0 in this frame takes no part in it (a fixed weight of 0 is no weight).
    prompts = tuple(q for q in (p.at(frame, span) for p in config.prompts) if q.weight != 0)
    changes = {"prompts": prompts, "seed": config.seed + frame}
    if frame > 0:
        init = config.term_settings("init")
        terms["init"] = dataclasses.replace(init, image=start, sha256="")
        changes["steps"] = motion.frame_steps
        if drawing:
            from .svg import read_drawing

            count = len(read_drawing(drawing)["strokes"])
            changes["canvas_settings"] = dataclasses.replace(config.canvas_settings, drawing=drawing,
                                                             drawing_sha256="", count=count)
    return config.replace(terms=terms, **changes)


@dataclass
class FrameDone:
    frame: int
    path: Path
    seconds: float  # 0 for a frame found on disk
    resumed: bool
    result: object = None  # the frame's SynthesisResult (None for a frame found on disk)


def frames_folder(out: str | Path) -> Path:
    """Where the frames of the video `out` go: beside it, named after it."""
    out = Path(out)
    return out.with_name(out.stem + "-frames")


def animate(config: GenerationConfig, motion: Motion, models, out: str | Path, *,
            on_step: Callable | None = None, on_frame: Callable[[FrameDone], None] | None = None,
            stop: Callable[[], bool] | None = None) -> list[Path]:
    """Make (or go on making) the animation: its frames in frames_folder(out), then the video
    `out` (.gif, .webp or .mp4). Returns the frames' paths. `on_step(frame, event)` sees every
    step, `on_frame(FrameDone)` every frame. When `stop()` says so after a step, the frame in
    progress is given up and the frames made so far are returned, without a video: the same call
    goes on from them later."""
    from .animation import check_format, encode_animation
    from .engine import synthesize
    from .png import read_recipe

    check(config, motion)
    out = Path(out)
    check_format(out.suffix)
    folder = frames_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    strokes = config.canvas == "strokes"
    paths, last = [], None
    for k in range(motion.frames):
        start = drawing = ""
        if k > 0:
            move = motion.move(k)
            start = str(folder / (START_NAME.format(k) + ".png"))
            write_atomic(start, _png(warp_picture(last, move)), overwrite=True)
            if strokes:
                drawing = str(folder / (START_NAME.format(k) + ".svg"))
                write_atomic(drawing, _moved_drawing(paths[-1].with_suffix(".svg"), move), overwrite=True)
        wanted = frame_config(config, motion, k, start, drawing)
        path = folder / (FRAME_NAME.format(k) + ".png")
        if path.exists():
            made = GenerationConfig.from_dict(read_recipe(path)["config"])
            if made != wanted:
                raise DasAgError(f"{path} was made with other settings; to start this animation afresh, "
                                 f"move {folder} away or choose another output")
            last = _open(path)
            paths.append(path)
            if on_frame:
                on_frame(FrameDone(k, path, 0.0, True))
            continue
        began = time.perf_counter()
        run = synthesize(wanted, models)
        for event in run:
            if on_step:
                on_step(k, event)
            if stop is not None and stop():
                return paths
        result = run.result()
        if result.status != "completed":
            raise DasAgError(f"frame {k}: {result.message}; the frames before it are kept in {folder}")
        files = result.files(animation={"frame": k, "motion": motion.to_dict(), "config": config.to_dict()})
        write_files(path, files, overwrite=True)
        last = result.image
        paths.append(path)
        if on_frame:
            on_frame(FrameDone(k, path, time.perf_counter() - began, False, result))
    write_atomic(out, encode_animation([_open(p) for p in paths], out.suffix, motion.fps, hold_last=False),
                 overwrite=True)
    return paths


def animation_from_recipe(recipe: dict) -> tuple[GenerationConfig, Motion] | None:
    """The animation a frame's recipe belongs to (its whole config and motion), or None."""
    table = recipe.get("animation")
    if not isinstance(table, dict):
        return None
    return GenerationConfig.from_dict(table["config"]), Motion.from_dict(table["motion"])


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _moved_drawing(svg: Path, move: Move) -> bytes:
    """The drawing of `svg` with every stroke moved with the camera (widths scaled by the zoom)."""
    import torch

    from .svg import read_drawing, stroke_svg

    drawing = read_drawing(svg)
    for stroke in drawing["strokes"]:
        points = warp_points(torch.tensor(stroke["points"], dtype=torch.float64), move, drawing["width"], drawing["height"])
        stroke["points"] = points.tolist()
        stroke["width"] = stroke["width"] * move.zoom
    return stroke_svg(drawing, None)
