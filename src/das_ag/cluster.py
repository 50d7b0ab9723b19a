"""Batch plans and comparisons on a Ray cluster: workers hold the models, the driver holds the plan.

Each worker is a Ray actor that loads the models once (on a GPU, or with a share of a node's
CPUs) and makes whole batches, the same batches a local run makes, sending each image's files
back as bytes. The driver owns the plan's folder exactly as a local run does: it skips what is
complete, hands batches to idle workers, writes what comes back atomically, and gives a dead
worker's batch to another. Machines share nothing but what Ray carries, so nodes need no common
disk, and the folder is the one `das-ag report` reads.

Only this module imports ray (the `cluster` extra), and only when a plan asks for it.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .durable import check_writable, write_files
from .errors import DasAgError, first_line
from .experiments import Plan, PlanItem, item_batches, plan_lock, plan_todo, save_batch

RESTARTS = 5  # a worker whose process died is started again (models reloaded) at most this many times
ATTEMPTS = 3  # a batch is tried on at most this many workers before its images count as failed
INSTALL_HINT = "--ray needs the cluster extra: uv sync --extra cluster (or pip install 'das-ag[cluster]')"


def require_ray():
    try:
        import ray
    except ImportError:
        raise DasAgError(INSTALL_HINT) from None
    return ray


def connect(address: str) -> bool:
    """Join the cluster at `address`; "auto" joins the one this machine runs (`ray start`),
    else starts a local one, as ray.init does. True when this call started the connection
    (the caller then ends it); a process already connected keeps its connection."""
    ray = require_ray()
    if address != "auto":
        _check_answers(address)  # Ray itself would retry an address where nothing listens for minutes
    if ray.is_initialized():
        return False
    try:
        # Workers' own logs stay on their nodes: the driver says every failure itself, in a line.
        ray.init(address=None if address == "auto" else address, logging_level=logging.ERROR, log_to_driver=False,
                 include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = "" if address == "auto" or os.environ.get("RAY_AUTH_MODE") else (
            "; a cluster with token authentication (Ray's default for new clusters) also needs RAY_AUTH_MODE=token "
            "here, with its token in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head shows it)")
        raise DasAgError(f"could not join the Ray cluster at {address}: {first_line(exc)}{hint}") from None
    return True


def _check_answers(address: str, timeout: float = 5.0) -> None:
    """Raise unless something accepts a connection at `address` (HOST:PORT or ray://HOST:PORT)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DasAgError(f"--ray {address} is not an address: use auto, HOST:PORT (the head's GCS, port 6379 by "
                         "default) or ray://HOST:PORT (Ray Client, 10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DasAgError(f"nothing answers at {address} ({exc.strerror or first_line(exc)}): is `ray start --head` "
                         "running there, and is the port open to this machine?") from None


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker loads and what it takes of a node."""

    clip_source: str | tuple[str, ...] | None  # as load_models takes it; None: each node's own default
    aesthetic_source: str | None
    need_head: bool
    gpus: float = 0.0  # per worker (a fraction packs several on one GPU); 0: a CPU worker
    cpus: int = 1  # CPU slots per worker; a CPU worker also runs torch on this many threads

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def slots(self, resources: dict[str, float]) -> int:
        """How many of these workers a node with `resources` holds."""
        fits = [resources.get("CPU", 0) / self.cpus]
        if self.gpus:
            fits.append(resources.get("GPU", 0) / self.gpus)
        return max(0, math.floor(min(fits) + 1e-9))

    def asks(self) -> str:
        return (f"{self.gpus:g} GPU and {self.cpus} CPU" if self.gpus else f"{self.cpus} CPU") + " per worker"


@dataclass
class PlanProgress:
    """The plan as the driver sees it, for its one progress bar."""

    done: int = 0  # made now or already complete
    running: int = 0  # images in batches that workers are making
    failed: int = 0
    workers: int = 0  # workers holding their models, ready or busy

    def __str__(self) -> str:
        return f"done {self.done}, running {self.running}, failed {self.failed}, workers {self.workers}"


@dataclass(frozen=True)
class Finished:
    """One image as a worker sends it back: its files' bytes, written by the driver."""

    status: str
    message: str
    files: dict[str, bytes]

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_files(path, self.files, overwrite=overwrite)


class PlanWorker:
    """A Ray actor: the models, loaded once, and the batches given to it."""

    def __init__(self, spec: WorkerSpec):
        if not spec.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA starts: "auto" must mean this CPU
        import torch

        if not spec.gpus:
            # Images are the same bytes only at the same thread count (that is what --cpus-per-worker
            # keeps equal to the local run it should match); Ray would have set one thread.
            torch.set_num_threads(spec.cpus)
        self.problem = None
        try:
            from .models import load_models

            # Never a download on a worker: the nodes were checked, and a missing file is said there.
            self.models = load_models(spec.clip_source, spec.aesthetic_source, spec.device, download=False,
                                      need_head=spec.need_head)
            # The engine's modules now, while the driver waits anyway: imported by the first batch,
            # they added seconds to it in a new process.
            from . import engine  # noqa: F401
        except (DasAgError, MemoryError, RuntimeError) as exc:
            self.problem = first_line(exc)

    def describe(self) -> dict:
        import ray
        import torch

        return {"node": ray.util.get_node_ip_address(), "pid": os.getpid(), "problem": self.problem,
                "identities": None if self.problem else self.models.identities(), "threads": torch.get_num_threads()}

    def images_per_step(self, configs) -> int:
        from .engine import choose_images_per_step

        return choose_images_per_step(self.models, configs)

    def run(self, configs) -> list[Finished]:
        from .engine import synthesize

        run = synthesize(list(configs), self.models)
        for _ in run:
            pass
        return [Finished(r.status, r.message, r.files()) for r in run.results()]


def node_report(spec: WorkerSpec) -> dict:
    """Run on each node before a plan: what it lacks to load the models, and its das-ag."""
    from . import __version__
    from .models import missing_weights

    return {"missing": missing_weights(spec.clip_source, spec.aesthetic_source, need_head=spec.need_head),
            "version": __version__}


def worker_nodes(spec: WorkerSpec) -> list[dict]:
    """The cluster's live nodes that can hold a worker (ray.nodes() entries), or why none can."""
    ray = require_ray()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    hosts = [n for n in alive if spec.slots(n["Resources"])]
    if not hosts:
        have = "; ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in alive)
        hint = "--gpus-per-worker 0 for CPU workers" if spec.gpus else "a smaller --cpus-per-worker"
        raise DasAgError(f"no node of the cluster can hold a worker ({spec.asks()}; {have}); try {hint}")
    return hosts


def ask_nodes(nodes: list[dict], spec: WorkerSpec) -> list:
    """Start node_report on each of `nodes` (a task that takes no CPU, so busy nodes answer too)."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    report = ray.remote(num_cpus=0)(node_report)
    return [report.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(spec)
            for n in nodes]


def check_reports(nodes: list[dict], reports: list[dict]) -> None:
    """One line naming each node that lacks the weights or runs another das-ag."""
    from . import __version__

    problems, hints = [], {}
    for node, report in zip(nodes, reports):
        if report["version"] != __version__:
            problems.append(f"{node['NodeManagerAddress']} runs das-ag {report['version']}, this machine {__version__}")
            hints["version"] = "install the same das-ag on every node"
        elif report["missing"]:
            problems.append(f"{node['NodeManagerAddress']}: {report['missing']}")
            hints["weights"] = ("run `das-ag download` on each such node, or set CLIP_MODEL_PATH and "
                                "AESTHETIC_PREDICTOR_PATH in its .env")
    if problems:
        raise DasAgError(f"{len(problems)} of {len(nodes)} node(s) cannot run the plan, so it did not start: "
                         + "; ".join(problems) + f" ({'; '.join(hints.values())})")


def check_plan(plan: Plan) -> None:
    """Refuse, in one line and before joining a cluster, a plan the cluster cannot make."""
    if any(item.motion for item in plan.items):
        # A video's frames name their start pictures by path, and Ray's nodes share no disk.
        raise DasAgError("a plan with an [animation] table runs on one machine for now: drop --ray")


def run_plan_on_ray(plan: Plan, spec: WorkerSpec, *, images_per_step: int | None = None,
                    on_item: Callable[[PlanItem, str], None] | None = None,
                    on_progress: Callable[[PlanProgress], None] | None = None,
                    on_failure: Callable[[str], None] | None = None) -> tuple[int, int, int]:
    """Make every item of `plan` not already complete on the connected cluster.
    Returns (made, skipped, failed); each failure is also a line to `on_failure`."""
    check_plan(plan)
    ray = require_ray()
    nodes = worker_nodes(spec)
    check_writable(plan.image_dir / "probe.png")  # before any image is made
    plan.image_dir.mkdir(parents=True, exist_ok=True)
    with plan_lock(plan.out_dir):
        dispatcher = _Dispatcher(plan, spec, on_item, on_progress, on_failure)
        try:
            # The nodes are asked while the workers load their models: both take a new process each.
            reports = ask_nodes(nodes, spec)
            dispatcher.start(min(sum(spec.slots(n["Resources"]) for n in nodes), len(plan.items)))
            check_reports(nodes, ray.get(reports))
            return dispatcher.run(images_per_step)
        finally:
            dispatcher.let_go()  # also on Ctrl-C: what finished is written, the rest is given up


@dataclass
class _Worker:
    handle: object
    name: str = "a worker"  # "node:pid", once it has said


@dataclass
class _Batch:
    items: list[PlanItem]
    attempts: int = 0

    @property
    def names(self) -> str:
        return ", ".join(item.filename for item in self.items)


@dataclass
class _Dispatcher:
    plan: Plan
    spec: WorkerSpec
    on_item: Callable | None
    on_progress: Callable | None
    on_failure: Callable | None
    workers: list[_Worker] = field(default_factory=list)
    probes: dict = field(default_factory=dict)  # a describe() call -> its worker (starting or restarting)
    running: dict = field(default_factory=dict)  # a run() call -> (worker, batch)
    idle: list[_Worker] = field(default_factory=list)
    queue: collections.deque = field(default_factory=collections.deque)
    progress: PlanProgress = field(default_factory=PlanProgress)
    identities: dict | None = None
    made: int = 0

    def start(self, count: int) -> None:
        import ray

        actor = ray.remote(PlanWorker).options(num_cpus=self.spec.cpus, num_gpus=self.spec.gpus,
                                               max_restarts=RESTARTS, max_task_retries=0)
        for _ in range(count):
            self._probe(_Worker(actor.remote(self.spec)))

    def run(self, images_per_step: int | None) -> tuple[int, int, int]:
        while self.identities is None:  # the first worker's models say which files are complete
            self._wait()
        todo, skipped = plan_todo(self.plan, self.identities, self._item_done)
        if not todo:
            return 0, skipped, 0
        if images_per_step is None:  # auto: what a worker's device holds, measured once for every batch
            images_per_step = self._measure([item.config for item in todo])
        self.queue.extend(_Batch(items) for items in item_batches(todo, images_per_step))
        # More workers than batches: the spare ones go (those still loading first), freeing their share.
        ready_first = sorted(self.workers, key=lambda w: w not in self.idle)
        self._let_go_of(ready_first[len(self.queue):])
        while self.queue or self.running:
            self._dispatch()
            if not self.running and not self.probes:
                left = sum(len(b.items) for b in self.queue)
                raise DasAgError(f"no worker is left to make the plan's {left} remaining image(s); finished images "
                                 f"are in {self.plan.image_dir}; run the same command again to continue")
            self._wait()
        return self.made, skipped, self.progress.failed

    def _measure(self, configs) -> int:
        import ray
        from ray.exceptions import RayActorError

        while True:
            if not self.idle:
                self._wait()  # a worker back from a restart, or the error that none is left
                continue
            worker = self.idle[0]
            try:
                return ray.get(worker.handle.images_per_step.remote(configs))
            except (RayActorError, *_lost_worker_errors()) as exc:
                self.idle.remove(worker)
                self._fail(f"{worker.name} died while measuring images per step ({_why_lost(exc)}); asking another")
                self._probe(worker)

    def let_go(self) -> None:
        self._let_go_of(list(self.workers))

    # -- the loop's steps --------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self.queue and self.idle:
            worker, batch = self.idle.pop(0), self.queue.popleft()
            self.running[worker.handle.run.remote([item.config for item in batch.items])] = (worker, batch)
        self._said()

    def _wait(self) -> None:
        import ray

        if not self.probes and not self.running:
            raise DasAgError(f"no worker could load the models ({self.spec.asks()})")
        [ref], _ = ray.wait([*self.probes, *self.running], num_returns=1)
        if ref in self.probes:
            self._probed(ref, self.probes.pop(ref))
        else:
            self._finished(ref, *self.running.pop(ref))

    def _probe(self, worker: _Worker) -> None:
        if worker not in self.workers:
            self.workers.append(worker)
        self.probes[worker.handle.describe.remote()] = worker

    def _probed(self, ref, worker: _Worker) -> None:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        try:
            info = ray.get(ref)
        except ActorUnavailableError:  # restarting after its process died: ask again shortly
            time.sleep(0.5)
            self._probe(worker)
            return
        except RayActorError as exc:
            self._fail(f"{worker.name} is gone: {_why_lost(exc)}")
            self._let_go_of([worker])
            return
        worker.name = f"worker {info['node']}:{info['pid']}"
        if info["problem"]:
            self._fail(f"{worker.name} could not load the models: {info['problem']}")
            self._let_go_of([worker])
            if not self.probes and not self.running and self.identities is None:
                raise DasAgError(f"no worker could load the models: {info['problem']}")
            return
        if self.identities is None:
            self.identities = info["identities"]
        elif info["identities"] != self.identities:
            self._fail(f"{worker.name} holds other weights than the first worker ({info['identities']}); left out")
            self._let_go_of([worker])
            return
        self.idle.append(worker)
        self._said()

    def _finished(self, ref, worker: _Worker, batch: _Batch) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            results = ray.get(ref)
        except RayTaskError as exc:  # our code failed on the worker: the same batch would fail again
            self._fail(f"{batch.names}: failed on {worker.name}: {first_line(exc.cause if exc.cause else exc)}")
            self.progress.failed += len(batch.items)
            self.idle.append(worker)
            return
        except (RayActorError, *_lost_worker_errors()) as exc:  # the process died: killed, out of memory, node lost
            batch.attempts += 1
            reason = _why_lost(exc)
            if batch.attempts < ATTEMPTS:
                self._fail(f"{batch.names}: {worker.name} died ({reason}); trying again on another worker")
                self.queue.appendleft(batch)
            else:
                self._fail(f"{batch.names}: failed {ATTEMPTS} times, the last on {worker.name} ({reason}); left out")
                self.progress.failed += len(batch.items)
            self._probe(worker)  # back when Ray has restarted it, or gone
            self._said()
            return
        self.made += save_batch(self.plan, list(zip(batch.items, results)), self._item_done)
        self.idle.append(worker)

    def _item_done(self, item: PlanItem, status: str) -> None:
        self.progress.done += 1
        self._said()
        if self.on_item:
            self.on_item(item, status)

    def _fail(self, line: str) -> None:
        if self.on_failure:
            self.on_failure(line)

    def _said(self) -> None:
        # Derived, never counted by hand: a worker is ready (idle) or making one batch.
        self.progress.workers = len(self.idle) + len(self.running)
        self.progress.running = sum(len(batch.items) for _, batch in self.running.values())
        if self.on_progress:
            self.on_progress(self.progress)

    def _let_go_of(self, workers: list[_Worker]) -> None:
        import ray

        for worker in workers:
            self.idle = [w for w in self.idle if w is not worker]
            self.workers = [w for w in self.workers if w is not worker]
            self.probes = {ref: w for ref, w in self.probes.items() if w is not worker}
            self.running = {ref: call for ref, call in self.running.items() if call[0] is not worker}
            ray.kill(worker.handle, no_restart=True)


def _why_lost(exc: BaseException) -> str:
    """A few words for why a worker went away (Ray's own messages run to paragraphs)."""
    from ray import exceptions

    text = str(exc)
    if isinstance(exc, exceptions.NodeDiedError) or "node died" in text.lower():
        return "its node left the cluster"
    if isinstance(exc, exceptions.OutOfMemoryError) or "memory monitor" in text:
        return "out of memory: Ray's memory monitor stopped it"
    return "its process ended: killed, crashed or out of memory"


def _lost_worker_errors() -> tuple[type, ...]:
    """Ray's errors for a call whose process or node went away, besides RayActorError."""
    from ray import exceptions

    return (exceptions.OutOfMemoryError, exceptions.WorkerCrashedError, exceptions.NodeDiedError,
            exceptions.LocalRayletDiedError)
