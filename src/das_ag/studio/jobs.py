"""Generation jobs for the studio: one background thread per job, queued per device.

The Streamlit script reruns on every click, so a run cannot live inside it. A Job owns its thread
and exposes a snapshot the page polls. Runs on one device take turns, first come first served
(one line per physical device): two sessions never share a GPU mid-step, and a waiting one can
say how many runs are ahead of it. A job whose page has gone (its owner no longer alive) stops
and leaves its images in a folder, so a closed tab neither holds the device nor loses work.
Nothing here imports streamlit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..config import GenerationConfig
from ..engine import StepEvent, SynthesisResult, choose_images_per_step, plan_batches, synthesize
from ..errors import DasAgError, first_line
from ..models import load_models, resolve_device

log = logging.getLogger(__name__)

# Previews are for watching, not for keeping: each is shrunk to this side, and an image keeps at
# most MAX_FRAMES of them for its "image forming" animation (every other one is dropped when full),
# so a long run of many images cannot fill the server's memory with full-size copies.
PREVIEW_SIDE = 384
MAX_FRAMES = 64


class DeviceLine:
    """First come, first served turns on one physical device.

    A plain lock wakes its waiters in no particular order: a visitor who came first could wait
    behind any number who came later. Here each waiter joins the end of the line and runs when it
    is at the front; its place is the number of runs ahead of it.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: list[object] = []

    def join(self, who: object) -> None:
        with self._changed:
            self._line.append(who)

    def ahead(self, who: object) -> int | None:
        """How many runs are ahead of `who` (0: its turn), None when it is not in line."""
        with self._changed:
            return self._line.index(who) if who in self._line else None

    def wait_turn(self, who: object, give_up: Callable[[], bool], poll: float = 0.2) -> bool:
        """Block until `who` is at the front (True), or leave the line when `give_up()` (False)."""
        with self._changed:
            while self._line[0] is not who:
                if give_up():
                    self._line.remove(who)
                    self._changed.notify_all()
                    return False
                self._changed.wait(poll)
            return True

    def leave(self, who: object) -> None:
        with self._changed:
            if who in self._line:
                self._line.remove(who)
            self._changed.notify_all()


_device_lines: dict[str, DeviceLine] = {}
_registry_lock = threading.Lock()


def device_line(device: str) -> DeviceLine:
    """The line of one physical device: "cuda", "cuda:0" and "auto" on a one-GPU machine are the
    same GPU, and runs on it must take turns whichever name their settings used."""
    with _registry_lock:
        return _device_lines.setdefault(physical_device(device), DeviceLine())


def physical_device(device: str) -> str:
    """cpu, or cuda:N with the index that CUDA uses for a name without one."""
    import torch

    parsed = torch.device(device)
    if parsed.type != "cuda":
        return parsed.type
    index = parsed.index if parsed.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return f"cuda:{index}"


@dataclass(frozen=True)
class Metrics:
    """The numbers of one step for the live curves: each image's loss and term metrics."""

    step: int
    first: int  # the job's index of images[0] (a job of many images may run in several batches)
    images: tuple[tuple[float, dict[str, dict[str, float]]], ...]


def series(metrics: list[Metrics], index: int) -> list[tuple[int, float, dict[str, dict[str, float]]]]:
    """(step, loss, term metrics) of image `index` of a job, step by step."""
    return [(m.step, *m.images[index - m.first]) for m in metrics if m.first <= index < m.first + len(m.images)]


@dataclass
class JobSnapshot:
    state: str  # queued, loading, running, finished
    config: GenerationConfig  # the first image's settings
    configs: tuple[GenerationConfig, ...] = ()
    metrics: list[Metrics] = field(default_factory=list)  # one per step of every batch so far
    last_event: StepEvent | None = None
    previews: list[Image.Image] = field(default_factory=list)  # one per image
    frames: list[list[Image.Image]] = field(default_factory=list)  # per image, its previews so far (animation)
    results: list[SynthesisResult] = field(default_factory=list)
    error: str | None = None
    warnings: tuple[str, ...] = ()
    device: str = ""
    compiled: bool = False  # the run in progress compiles its step (its first step waits for the compiler)
    ahead: int = 0  # while queued: how many runs are before this one in its device's line
    abandoned: tuple[str, ...] = ()  # where the images went when the page that started it had gone
    frame: int = 0  # a video's frame in progress (VideoJob)
    frames_total: int = 0  # a video's frames (0: not a video)
    video: str = ""  # where a finished video was written

    @property
    def active(self) -> bool:
        return self.state != "finished"

    @property
    def images(self) -> int:
        return len(self.configs)

    @property
    def preview(self) -> Image.Image | None:
        return self.previews[0] if self.previews else None

    @property
    def result(self) -> SynthesisResult | None:
        return self.results[-1] if self.results else None


class Job:
    """One image, or several (variations, a comparison) made together, in one thread.

    Several images share each step's encoder batch (as many per step as fit), so a comparison of
    three methods costs about one run on a GPU. A job holds its device until all are made.
    """

    def __init__(
        self,
        config: GenerationConfig | Sequence[GenerationConfig],
        *,
        clip_source: str | None = None,
        aesthetic_source: str | None = None,
        preview_every: int = 5,
        downloads: bool | frozenset[str] = True,
        owner_alive: Callable[[], bool] | None = None,
        abandon_after: float = 60.0,
        abandoned_folder: Path | None = None,
        cpu_route: str | None = None,
    ):
        """`downloads`: which CLIP names the job may download (see models.load_models).
        `cpu_route`: the CPU route a restored recipe's run took (png.recorded_route), so that its
        re-run makes the same bytes even where this machine would now choose another.
        `owner_alive`: whether the page that started the job is still open; once it has said no
        for `abandon_after` seconds (a reconnecting browser says no for a moment), the job stops
        and writes the images it made into `abandoned_folder`."""
        self.configs = [config] if isinstance(config, GenerationConfig) else list(config)
        self.config = self.configs[0]
        self._sources = (clip_source, aesthetic_source)
        self._downloads = downloads
        self._preview_every = preview_every
        self._owner_alive = owner_alive
        self._abandon_after = abandon_after
        self._abandoned_folder = abandoned_folder
        self._cpu_route = cpu_route
        self._gone_since: float | None = None
        self._abandoned = False
        self._lock = threading.Lock()  # guards the snapshot fields below
        self._snapshot = JobSnapshot(state="queued", config=self.config, configs=tuple(self.configs))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="das-ag-job", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the run after the step in progress (or stop waiting in the queue)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            s = self._snapshot
            # Copy the lists the worker keeps appending to; everything else is replaced, not mutated.
            snap = dataclasses.replace(s, metrics=list(s.metrics), results=list(s.results), previews=list(s.previews),
                                       frames=[list(f) for f in s.frames])
        if snap.state == "queued" and snap.device:
            snap.ahead = device_line(snap.device).ahead(self) or 0
        return snap

    def _should_stop(self) -> bool:
        """Stop asked for, or the page that started the job gone for longer than the grace."""
        if self._stop.is_set():
            return True
        if self._owner_alive is None or self._owner_alive():
            self._gone_since = None
            return False
        now = time.monotonic()
        self._gone_since = self._gone_since or now
        if now - self._gone_since >= self._abandon_after:
            self._abandoned = True
            self._stop.set()
            return True
        return False

    # -- the worker thread -------------------------------------------------------------------
    def _update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._snapshot, name, value)

    def _work(self) -> None:
        try:
            device = str(resolve_device(self.config.device))
        except DasAgError as exc:
            self._update(state="finished", error=str(exc))
            return
        line = device_line(device)
        line.join(self)
        self._update(device=device)
        if not line.wait_turn(self, self._should_stop):
            why = "its page was closed" if self._abandoned else "cancelled"
            self._update(state="finished", error=f"{why} while waiting for the device")
            return
        try:
            self._generate()
        except DasAgError as exc:
            self._update(error=str(exc))
        except Exception as exc:  # keep the page alive; the server log has the traceback
            log.exception("generation failed")
            self._update(error=f"unexpected error: {first_line(exc)}")
        finally:
            line.leave(self)
            if self._abandoned:
                self._keep_abandoned()
            self._update(state="finished")

    def _keep_abandoned(self) -> None:
        """Write the images of a job whose page has gone into the abandoned folder (nobody is
        left to press Save), and say where in the server log."""
        from ..png import next_free_path

        kept = []
        for result in self.snapshot().results if self._abandoned_folder else ():
            try:  # the PNG and the canvas's other files (an SVG), as a saved result has them
                kept.append(str(result.save(next_free_path(result.config, self._abandoned_folder))))
            except (DasAgError, OSError) as exc:
                log.error("could not keep an abandoned run's image: %s", first_line(exc))
        log.warning("a run's page was closed; stopped it and kept %d image(s): %s", len(kept), ", ".join(kept) or "-")
        self._update(abandoned=tuple(kept), error="stopped: the page that started the run was closed")

    def _load_models(self):
        self._update(state="loading")
        clip, head = self._sources
        return load_models(self.config.clip_models or clip, head, device=self.config.device,
                           download=self._downloads, need_head=any(c.guidance != "off" for c in self.configs))

    def _generate(self) -> None:
        models = self._load_models()
        for indices in plan_batches(self.configs, choose_images_per_step(models, self.configs)):
            if self._should_stop() or not self._run_batch([self.configs[i] for i in indices], models):
                break

    def _run_batch(self, configs: list[GenerationConfig], models) -> bool:
        """Images made together; False when the job should not go on to the next batch."""
        run = synthesize(configs, models, preview_every=self._preview_every, cpu_route=self._cpu_route)
        first = len(self._snapshot.results)
        with self._lock:
            self._snapshot.state, self._snapshot.warnings = "running", run.warnings
            self._snapshot.compiled = run.compiled
            self._snapshot.previews[first:] = [small(run.preview(i)) for i in range(len(configs))]
            self._snapshot.frames[first:] = [[p] for p in self._snapshot.previews[first:]]
        offered, strides = [0] * len(configs), [1] * len(configs)  # each image's previews so far, and its stride
        try:
            for event in run:
                metrics = Metrics(event.step, first, tuple((i.loss, i.metrics) for i in event.images))
                with self._lock:
                    self._snapshot.metrics.append(metrics)
                    self._snapshot.last_event = event
                    for i, image in enumerate(event.images):
                        if image.preview is not None:
                            preview = small(image.preview)
                            self._snapshot.previews[first + i] = preview
                            offered[i] += 1
                            strides[i] = keep_frame(self._snapshot.frames[first + i], preview, offered[i], strides[i])
                if self._should_stop():
                    run.stop()
        finally:
            # Whatever ended the loop, the images made so far become results.
            results = run.results()
            with self._lock:
                self._snapshot.results.extend(results)
                self._snapshot.previews[first:] = [r.image for r in results]
            failed = [r.message for r in results if r.status in ("non_finite", "failed")]
            if failed:
                self._update(error=failed[0])
        return all(r.status == "completed" for r in results)


class VideoJob(Job):
    """A video that moves (animate.py), made in the background: its frames and the video go to
    `out` and the folder beside it, the page sees the frame in progress and the last frame made,
    and the last frame is the job's result (its scores, its files). A stopped video keeps its
    frames on disk."""

    def __init__(self, config: GenerationConfig, motion, out: Path, **kwargs):
        super().__init__(config, **kwargs)
        self.motion, self.out = motion, Path(out)
        self._snapshot.frames_total = motion.frames

    def _generate(self) -> None:
        from ..animate import animate, frames_folder

        models = self._load_models()
        first, later = self.config.steps, self.motion.frame_steps
        with self._lock:
            self._snapshot.state, self._snapshot.previews, self._snapshot.frames = "running", [], [[]]

        def on_step(frame: int, event: StepEvent) -> None:
            step = event.step + (0 if frame == 0 else first + (frame - 1) * later)  # the video's steps, for the curves
            with self._lock:
                self._snapshot.metrics.append(Metrics(step, 0, tuple((i.loss, i.metrics) for i in event.images)))
                self._snapshot.last_event, self._snapshot.frame = event, frame

        def on_frame(done) -> None:
            with self._lock:
                if done.result is not None:
                    self._snapshot.results = [done.result]
                    self._snapshot.previews = [small(done.result.image)]

        paths = animate(self.config, self.motion, models, self.out, on_step=on_step, on_frame=on_frame,
                        stop=self._should_stop)
        if len(paths) == self.motion.frames:
            self._update(video=str(self.out))
        else:
            self._update(error=f"stopped after {len(paths)} of {self.motion.frames} frames; they are kept in "
                               f"{frames_folder(self.out)}")


def small(picture: Image.Image) -> Image.Image:
    """A preview no larger than PREVIEW_SIDE on its longer side (the same picture when it is)."""
    if max(picture.size) <= PREVIEW_SIDE:
        return picture
    shrunk = picture.copy()
    shrunk.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return shrunk


def keep_frame(frames: list[Image.Image], frame: Image.Image, index: int, stride: int) -> int:
    """Offer an image's `index`-th preview (0: before the first step) and return the stride to go
    on with. Kept are the previews whose index is a multiple of the stride; when MAX_FRAMES are
    kept, every other one goes and the stride doubles, so the animation always spans the whole
    run at an even pace."""
    if index % stride:
        return stride
    if len(frames) >= MAX_FRAMES:
        frames[:] = frames[::2]
        stride *= 2
        if index % stride:
            return stride
    frames.append(frame)
    return stride
