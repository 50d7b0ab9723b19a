"""Generation jobs for the studio: one background thread per job, queued per device.

The Streamlit script reruns on every click, so a run cannot live inside it. A Job owns its thread
and exposes a snapshot the page polls. Runs on one device take turns (a lock per device): two
sessions never share a GPU mid-step, and the waiting one can say why it waits. Nothing here
imports streamlit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from ..config import GenerationConfig
from ..engine import StepEvent, SynthesisResult, choose_images_per_step, plan_batches, synthesize
from ..errors import DasAgError, first_line
from ..models import load_models, resolve_device

log = logging.getLogger(__name__)

_device_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    """The lock of one physical device: "cuda", "cuda:0" and "auto" on a one-GPU machine are the
    same GPU, and runs on it must take turns whichever name their settings used."""
    with _registry_lock:
        return _device_locks.setdefault(physical_device(device), threading.Lock())


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
    ):
        self.configs = [config] if isinstance(config, GenerationConfig) else list(config)
        self.config = self.configs[0]
        self._sources = (clip_source, aesthetic_source)
        self._preview_every = preview_every
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
            return dataclasses.replace(s, metrics=list(s.metrics), results=list(s.results), previews=list(s.previews),
                                       frames=[list(f) for f in s.frames])

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
        self._update(device=device)
        lock = device_lock(device)
        while not lock.acquire(timeout=0.2):
            if self._stop.is_set():
                self._update(state="finished", error="cancelled while waiting for the device")
                return
        try:
            self._generate()
        except DasAgError as exc:
            self._update(error=str(exc))
        except Exception as exc:  # keep the page alive; the server log has the traceback
            log.exception("generation failed")
            self._update(error=f"unexpected error: {first_line(exc)}")
        finally:
            lock.release()
            self._update(state="finished")

    def _generate(self) -> None:
        self._update(state="loading")
        clip, head = self._sources
        models = load_models(self.config.clip_models or clip, head, device=self.config.device,
                             need_head=any(c.guidance != "off" for c in self.configs))
        for indices in plan_batches(self.configs, choose_images_per_step(models, self.configs)):
            if self._stop.is_set() or not self._run_batch([self.configs[i] for i in indices], models):
                break

    def _run_batch(self, configs: list[GenerationConfig], models) -> bool:
        """Images made together; False when the job should not go on to the next batch."""
        run = synthesize(configs, models, preview_every=self._preview_every)
        first = len(self._snapshot.results)
        with self._lock:
            self._snapshot.state, self._snapshot.warnings = "running", run.warnings
            self._snapshot.compiled = run.compiled
            self._snapshot.previews[first:] = [run.preview(i) for i in range(len(configs))]
            self._snapshot.frames[first:] = [[p] for p in self._snapshot.previews[first:]]
        try:
            for event in run:
                metrics = Metrics(event.step, first, tuple((i.loss, i.metrics) for i in event.images))
                with self._lock:
                    self._snapshot.metrics.append(metrics)
                    self._snapshot.last_event = event
                    for i, image in enumerate(event.images):
                        if image.preview is not None:
                            self._snapshot.previews[first + i] = image.preview
                            self._snapshot.frames[first + i].append(image.preview)
                if self._stop.is_set():
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
