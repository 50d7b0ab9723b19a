"""Generation jobs for the studio: one background thread per run, queued per device.

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
from ..engine import StepEvent, SynthesisResult, synthesize
from ..errors import DasAgError, first_line
from ..models import load_models, resolve_device

log = logging.getLogger(__name__)

_device_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    with _registry_lock:
        return _device_locks.setdefault(device, threading.Lock())


@dataclass(frozen=True)
class Metrics:
    """The numbers of one step, for the live curves (a StepEvent without its preview)."""

    step: int
    loss: float
    clip_positive: float
    clip_negative: float | None
    aesthetic_score: float


@dataclass
class JobSnapshot:
    state: str  # queued, loading, running, finished
    config: GenerationConfig  # the run in progress (the first, before any starts)
    run_index: int = 0  # which of the job's runs is in progress, 0-based
    runs: int = 1
    metrics: list[Metrics] = field(default_factory=list)  # of the run in progress
    last_event: StepEvent | None = None
    preview: Image.Image | None = None
    results: list[SynthesisResult] = field(default_factory=list)
    run_metrics: list[list[Metrics]] = field(default_factory=list)  # one list per finished run
    error: str | None = None
    warnings: tuple[str, ...] = ()
    device: str = ""

    @property
    def active(self) -> bool:
        return self.state != "finished"

    @property
    def result(self) -> SynthesisResult | None:
        return self.results[-1] if self.results else None


class Job:
    """One or several runs (a comparison: the same settings with each guidance) in one thread.

    The runs of a job hold the device for their whole sequence, so a comparison is never split by
    another session's run.
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
        self._snapshot = JobSnapshot(state="queued", config=self.config, runs=len(self.configs))
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
            return dataclasses.replace(s, metrics=list(s.metrics), results=list(s.results),
                                       run_metrics=[list(m) for m in s.run_metrics])

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
        models = load_models(*self._sources, device=self.config.device)
        for index, config in enumerate(self.configs):
            if self._stop.is_set():
                break
            if not self._run_one(index, config, models):
                break

    def _run_one(self, index: int, config: GenerationConfig, models) -> bool:
        """One run; False when the job should not go on to the next."""
        run = synthesize(config, models, preview_every=self._preview_every)
        self._update(state="running", config=config, run_index=index, metrics=[], last_event=None,
                     warnings=run.warnings, preview=run.preview())
        try:
            for event in run:
                metrics = Metrics(event.step, event.loss, event.clip_positive, event.clip_negative, event.aesthetic_score)
                with self._lock:
                    self._snapshot.metrics.append(metrics)
                    self._snapshot.last_event = event
                    if event.preview is not None:
                        self._snapshot.preview = event.preview
                if self._stop.is_set():
                    run.stop()
        finally:
            # Whatever ended the loop, the image made so far becomes a result.
            result = run.result()
            with self._lock:
                self._snapshot.results.append(result)
                self._snapshot.run_metrics.append(list(self._snapshot.metrics))
                self._snapshot.preview = result.image
            if result.status in ("non_finite", "failed"):
                self._update(error=result.message)
        return result.status == "completed"
