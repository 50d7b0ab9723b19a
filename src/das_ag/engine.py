"""The optimisation loop: a stream of StepEvents a caller can watch, preview and stop.

    run = synthesize(config, models, preview_every=10)        # or a list of configs: one batch
    for event in run:
        print(event.step, event.loss)      # call run.stop() to end early
    result = run.result()                   # final image, its scores, and its recipe

Each step renders every image's canvas, augments each into its copies, runs ONE encoder forward
on all of them together (images x copies) and one backward; every term of every image reads its
share of that forward. The loop knows no particular canvas or term: it builds them from the
registries (das_ag.canvases, das_ag.objectives) by what each image's config names.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from . import determinism
from . import augment
from .canvases import build_canvas
from .config import GenerationConfig
from .durable import write_files
from .errors import ConfigError, DeviceError, first_line
from .cpu_routes import EncoderShape, bf16_emulated_by_cap, chosen_route, cpu_flags, describe_routes, effective, parse_routes
from .models import ModelBundle, resolve_device, use_compile_cache
from .objectives import TermInputs, active_terms
from .png import build_recipe, encode_png
from .scoring import Scores, score_image

ADAM_BETAS = (0.5, 0.99)  # the references' momentum: short memory suits ever-changing augmentations
FINAL_LR_FRACTION = 0.01  # cosine annealing ends at 1% of the initial learning rate
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Settings every image of one batch must share: they shape the whole step, not one image.
BATCH_SHARED = ("steps", "device", "dtype", "compile", "deterministic", "cpu_route")


@dataclass(frozen=True)
class ImageStep:
    """One image's numbers at one step."""

    loss: float
    terms: dict[str, float]  # each term's contribution to the loss, by term name
    metrics: dict[str, dict[str, float]]  # each term's named metrics, by term name
    lr: float
    preview: Image.Image | None = None
    status: str = "running"  # "running", or "non_finite" at the step where this image stopped


@dataclass(frozen=True)
class StepEvent:
    step: int  # steps completed, 1..steps
    steps: int
    elapsed: float  # seconds since the first step began
    images: tuple[ImageStep, ...]  # one per image of the run, in the order of its configs

    # The first image's numbers: what a single-image run is about.
    @property
    def loss(self) -> float:
        return self.images[0].loss

    @property
    def terms(self) -> dict[str, float]:
        return self.images[0].terms

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.images[0].metrics

    @property
    def lr(self) -> float:
        return self.images[0].lr

    @property
    def preview(self) -> Image.Image | None:
        return self.images[0].preview

    @property
    def steps_per_second(self) -> float:
        return self.step / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float:
        rate = self.steps_per_second
        return (self.steps - self.step) / rate if rate > 0 else float("inf")


@dataclass(frozen=True)
class SynthesisResult:
    image: Image.Image
    config: GenerationConfig
    scores: Scores
    initial_scores: Scores  # the starting image's scores, so a user sees how far the run moved it
    steps_done: int
    status: str  # "completed", "cancelled", "non_finite" or "failed"
    message: str
    elapsed: float
    device: str
    dtype: str  # the encoder precision actually used ("auto" resolved)
    model_identities: dict[str, dict[str, str]]
    warnings: tuple[str, ...] = field(default=())
    # The run's configs when it made several images together, and which one this is: batched
    # arithmetic can differ in the last bits from a run alone, so a recipe re-creates its batch.
    batch: tuple[GenerationConfig, ...] = ()
    batch_index: int = 0
    # The canvas's files besides the PNG, by suffix (Canvas.exports).
    exports: dict = field(default_factory=dict, compare=False, repr=False)
    compiled: bool = False  # whether the step ran compiled (the config's None resolved; False after a fallback)
    # The CPU routes the steps took (cpu_routes.py; "auto" resolved), one per encoder or one for
    # all; None on a GPU. A recipe records it, and a re-run from the recipe takes it again.
    cpu_route: str | None = None

    def recipe(self) -> dict:
        return build_recipe(self)

    def files(self, **more: dict) -> dict[str, bytes]:
        """Every file of the result by suffix: the PNG with its recipe, and the canvas's own.
        `more`: tables the recipe carries besides (an animation's frame says which it is)."""
        recipe = {**self.recipe(), **more}
        return {".png": encode_png(self.image, recipe), **{sfx: make(recipe) for sfx, make in self.exports.items()}}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the PNG at `path` and the canvas's other files beside it (same name, their suffix)."""
        return write_files(path, self.files(), overwrite=overwrite)


class _Image:
    """One image of a run: its config, canvas, augmentation generator and terms."""

    def __init__(self, config: GenerationConfig, models: ModelBundle, device: torch.device):
        self.config = config
        # The starting canvas is drawn on the CPU so every device starts from the same pixels;
        # augmentation draws on the run's device.
        self.canvas = build_canvas(config, torch.Generator().manual_seed(config.seed)).to(device)
        self.augment_generator = torch.Generator(device=device).manual_seed(config.seed)
        self.view_shape = augment.ViewShape(config.crop_min, config.crop_aspect, config.view_turn, config.view_flip,
                                             config.whole_views)
        self.terms = [cls(config, models) for cls in active_terms(config)]
        self.warnings = tuple(w for t in self.terms for w in t.warnings)
        self.status, self.message, self.steps_done = "running", "", 0

    def prepare(self, t: int) -> _Prepared:
        """Step t's schedules and random draws: eager and seeded, outside any compiled code."""
        cfg, T = self.config, self.config.steps
        self.canvas.at_step(t, T)
        strength = augment.AugmentStrength(
            jitter=int(cfg.jitter.at(t, T) * cfg.margin), colour_shift=cfg.colour_shift.at(t, T), noise=cfg.noise.at(t, T)
        )
        draws = augment.draw(self.canvas.shape, cfg.augment_copies, cfg.image_shape, strength,
                             self.augment_generator, device=self.augment_generator.device, shape=self.view_shape)
        return _Prepared(draws, [term.at_step(t, T) for term in self.terms])

    def views(self, prepared: _Prepared, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's augmented views, and the visible picture they were cut from."""
        rendered = self.canvas()
        views = augment.apply(rendered, prepared.draws, resolution=self.config.image_shape, out_size=out_size)
        return views, self.canvas.crop(rendered)


@dataclass(frozen=True)
class _Prepared:
    """What one image's step needs beyond its parameters, made before the step's forward."""

    draws: augment.AugmentDraws
    known: list[dict[str, float]]  # each term's metrics known on the host (Term.at_step)


class _ReadBack:
    """A step's numbers on their way to the host, and where each one is.

    Every image's term contributions, metrics, loss and finite flag go into one tensor: one copy
    and one host sync per step, however many images and terms. `read` turns it back into each
    image's (loss, finite, contributions by term, metrics by term).
    """

    def __init__(self, stats: torch.Tensor, entries: list, flags: list[int], ready: torch.cuda.Event | None):
        self.stats, self.ready = stats, ready
        # Per image: (term, metric, index in stats or the number the host knew already); metric ""
        # is the term's contribution to the loss. And where its loss is (its finite flag follows).
        self.entries, self.flags = entries, flags

    @classmethod
    def gather(cls, images: list[_Image], prepared: list[_Prepared], losses: list[torch.Tensor],
               stats: list[torch.Tensor], found: list, device: torch.device) -> _ReadBack:
        """After the backward: the forward's numbers (`stats`, placed per image and term by
        `found`), the terms' host-side metrics, and each image's loss and whether it and its
        gradients are finite."""
        entries = [[(term.name, key, where) for term, on_device, known in zip(image.terms, per_term, p.known)
                    for key, where in [*on_device, *((k, float(v)) for k, v in known.items())]]
                   for image, per_term, p in zip(images, found, prepared)]
        flags = []
        for image, loss in zip(images, losses):
            grads = [p.grad.isfinite().all() for p in image.canvas.parameters() if p.grad is not None]
            finite = torch.isfinite(loss)
            flags.append(len(stats))
            stats = [*stats, loss.detach().float(), (finite & torch.stack(grads).all() if grads else finite).float()]
        stacked = torch.stack(stats)  # a copy: compiled outputs may be overwritten by the next step
        ready = None
        if device.type == "cuda":
            stacked = stacked.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        return cls(stacked, entries, flags, ready)

    def read(self) -> list[tuple[float, bool, dict[str, float], dict[str, dict[str, float]]]]:
        if self.ready is not None:
            self.ready.synchronize()
        values, out = self.stats.tolist(), []
        for entries, flag in zip(self.entries, self.flags):
            terms: dict[str, float] = {}
            metrics: dict[str, dict[str, float]] = {}
            for term, key, where in entries:
                value = values[where] if isinstance(where, int) else where
                if key:
                    metrics.setdefault(term, {})[key] = value
                else:
                    terms[term] = value
            out.append((values[flag], bool(values[flag + 1]), terms, metrics))
        return out


@dataclass
class _Pending:
    """A launched step whose numbers have not been read yet."""

    t: int
    numbers: _ReadBack
    lrs: list[float] = field(default_factory=list)
    before: list[list[torch.Tensor]] = field(default_factory=list)  # each image's parameters before the update


def cosine_lr_factor(t: int, steps: int) -> float:
    """The learning rate at step t as a fraction of the initial one: cosine down to 1%."""
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * (1 + math.cos(math.pi * t / steps)) / 2


class Synthesis:
    """One run in progress, of one image or a batch of them that share each step's encoder forward.

    Made by `synthesize`. Iterate it for StepEvents, or `run()` it to the end; `result(i)` and
    `results()` give the images as they are at any point.
    """

    def __init__(
        self,
        config: GenerationConfig | Sequence[GenerationConfig],
        models: ModelBundle,
        *,
        preview_every: int = 0,
        cpu_route: str | None = None,
    ):
        self._one = isinstance(config, GenerationConfig)  # run() answers in the shape it was asked
        self.configs = (config,) if self._one else tuple(config)
        if not self.configs:
            raise ConfigError("a run needs at least one image's settings")
        check_batch(self.configs)
        self.config = self.configs[0]
        self.models, self.preview_every = models, preview_every
        self.device = resolve_device(self.config.device)
        if self.device != models.device:
            raise ConfigError(f"the config asks for device {self.config.device} but the models are on {models.device}")
        self.dtype = _check_dtype(self.config.dtype, self.device)
        self._compile = resolve_compile(self.config.compile, self.device)
        self._compiled = None  # the compiled step forward, made at the first step
        # A re-run of a recipe takes the route its run took, where its config left it to "auto"
        # (and keeps "auto" in the config, so the recipe it writes is the same bytes).
        asked = cpu_route if cpu_route is not None and self.config.cpu_route == "auto" else self.config.cpu_route
        self.cpu_routes = cpu_routes_of_run(asked, models, self.dtype,
                                            sum(c.augment_copies for c in self.configs))
        self.steps = self.config.steps

        with self._deterministic():
            self.images = [_Image(c, models, self.device) for c in self.configs]
            self.warnings = tuple(dict.fromkeys(w for image in self.images for w in image.warnings))
            groups, self._group_base_lr, self._first_group = [], [], []
            for image in self.images:
                self._first_group.append(len(groups))
                for group in image.canvas.param_groups(image.config.lr):
                    groups.append(group)
                    self._group_base_lr.append(group["lr"])
            # Compiled runs update every parameter in one fused kernel rather than a few per tensor.
            self.optimizer = torch.optim.Adam(groups, lr=self.config.lr, betas=ADAM_BETAS, fused=self._compile or None)
            self.initial_scores = [self._scores(image, image.canvas.image()) for image in self.images]
        self._run_warnings: tuple[str, ...] = ()  # the run's own (a failed compile), not one image's
        self.step = 0
        self.status, self.message = "running", ""
        self._stop_requested = False
        self._t0: float | None = None
        self._elapsed = 0.0

    @property
    def compiled(self) -> bool:
        """Whether the step runs compiled (the config's choice resolved for the device; False once
        a compile has failed and the run went on eagerly)."""
        return self._compile

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end after the step in progress; the images so far are kept."""
        self._stop_requested = True

    def preview(self, index: int = 0) -> Image.Image:
        return self.images[index].canvas.image()

    def _running(self) -> list[_Image]:
        return [image for image in self.images if image.status == "running"]

    def run(self) -> SynthesisResult | list[SynthesisResult]:
        """Run to the end (or until stopped): the result of the config given, or the list of
        results of the configs given."""
        for _ in self:
            pass
        return self.result() if self._one else self.results()

    def run_all(self) -> list[SynthesisResult]:
        """Deprecated: `run()` of a run given a list of configs returns the list."""
        warnings.warn("Synthesis.run_all() is deprecated; run() returns every result of a run given a list of configs",
                      DeprecationWarning, stacklevel=2)
        for _ in self:
            pass
        return self.results()

    def results(self) -> list[SynthesisResult]:
        """Every image's result, in the order of the configs."""
        return [self.result(index) for index in range(len(self.images))]

    def result(self, index: int = 0) -> SynthesisResult:
        """Image `index` as it is now, scored (one encoder forward), with its recipe's facts."""
        if self.status == "running":
            if self.step >= self.steps:
                self.status, self.message = "completed", f"completed {self.step} steps"
            else:
                self.status, self.message = "cancelled", f"stopped after {self.step} of {self.steps} steps"
        image = self.images[index]
        picture = image.canvas.image()
        stopped_alone = image.status == "non_finite"
        return SynthesisResult(
            image=picture,
            config=image.config,
            scores=self._scores(image, picture),
            initial_scores=self.initial_scores[index],
            steps_done=image.steps_done if stopped_alone else self.step,
            status=image.status if stopped_alone else self.status,
            message=image.message if stopped_alone else self.message,
            elapsed=self._elapsed,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            model_identities=self.models.identities(),
            warnings=tuple(dict.fromkeys((*image.warnings, *self._run_warnings))),
            batch=self.configs if len(self.configs) > 1 else (),
            batch_index=index,
            exports=image.canvas.exports(),
            compiled=self._compile,
            cpu_route=describe_routes(tuple(self.cpu_routes.values())) if self.cpu_routes else None,
        )

    # -- the step ----------------------------------------------------------------------------
    def __iter__(self):
        """Steps as they finish, one behind the device.

        Step t is launched before step t-1's numbers are read, so the host waits for t-1 while the
        device already works on t: on a GPU the Python side of a step (augmentation, canvas, Adam)
        overlaps the previous step's encoder instead of leaving the GPU idle. On the CPU nothing
        overlaps and nothing changes. The arithmetic and its order are the same either way.

        The step, in order: `_launch` (schedules and draws, forward and backward, the numbers
        queued for the host), `_resolve` of the step before (its numbers read, a bad update
        undone), `_apply` (Adam's update, the canvas's upkeep, the next learning rate).
        """
        pending: _Pending | None = None
        while self.status == "running":
            launched = None
            if self.step < self.steps and not self._stop_requested and self._running():
                if self._t0 is None:
                    self._t0 = time.perf_counter()
                try:
                    launched = self._launch(self.step)
                except RuntimeError as exc:
                    # Out of GPU memory, a kernel with no deterministic version, a driver error: end
                    # the run with a message and keep the images from the last completed step.
                    self.status = "failed"
                    self.message = f"stopped at step {self.step + 1}: {first_line(exc)}; kept the image so far"
            if pending is not None:
                event = self._resolve(pending)
                self._elapsed = time.perf_counter() - self._t0
                if any(image.status == "running" for image in event.images):
                    yield event  # a step that stopped every image is undone, not reported
            if launched is None or self._stop_requested or self.status != "running" or not self._running():
                self._elapsed = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
                return
            self._apply(launched)
            pending = launched

    def _launch(self, t: int) -> _Pending:
        """Queue step t's forward and backward; its numbers stay on the device for now."""
        with self._deterministic():
            prepared = [image.prepare(t) for image in self.images]
            _, losses, stats, found = self._forward_backward(prepared)
            numbers = _ReadBack.gather(self.images, prepared, losses, stats, found, self.device)
        return _Pending(t, numbers)

    def _forward_backward(self, prepared: list[_Prepared]):
        """Step t's forward and backward, compiled when the run asks for it; a compile that fails
        (no C++ compiler, an op the compiler cannot take) runs the step eagerly, with one warning.
        The draws were made beforehand, so the eager retry sees the same random numbers."""
        if self._compile:
            try:
                if self._compiled is None:
                    self.models.make_image_encoders(self.dtype, routes=self.cpu_routes)
                    self._compiled = compiled_step(self._step_forward, self.device)
                if self.device.type == "cuda":
                    # A new optimisation step: CUDA-graph outputs of the last one may be reused.
                    torch.compiler.cudagraph_mark_step_begin()
                return self._backward(self._compiled(prepared))  # its backward is compiled too
            except torch.OutOfMemoryError:
                raise  # the eager step needs as much memory: end the run, keeping its image
            except Exception as exc:
                self._compile = False
                for group in self.optimizer.param_groups:
                    # An uncompiled run's optimiser: fused Adam rounds differently, and the image
                    # should be the one an uncompiled run makes (a compile fails at the first step).
                    group["fused"] = None
                self._run_warnings += (f"torch.compile failed ({first_line(exc)}); running uncompiled",)
                self.warnings = (*self.warnings, *self._run_warnings)
        return self._backward(self._step_forward(prepared))

    def _backward(self, forward: tuple):
        self.optimizer.zero_grad(set_to_none=True)
        forward[0].backward()
        return forward

    def _step_forward(self, prepared: list[_Prepared]):
        """Render, augment, encode (one forward for every image's views) and every term's loss.

        Returns the loss to minimise, each image's loss, the step's numbers as tensors, and per
        image and term the (metric, index in those numbers) pairs. One function of the parameters
        and the draws, which no step number reaches, so that it compiles whole, once.
        """
        views, pictures = zip(*(image.views(p, self.models.input_resolution) for image, p in zip(self.images, prepared)))
        # routes: the loop's many steps run the encoders by this CPU's fastest route (prepacked
        # oneDNN weights, say), which a one-off encoding would not pay for.
        embeddings = self.models.encode_images(torch.cat(views) if len(views) > 1 else views[0],
                                               dtype=self.dtype, routes=self.cpu_routes)
        total, losses, stats, found, offset = None, [], [], [], 0
        for image, image_views, picture in zip(self.images, views, pictures):
            n = image_views.shape[0]
            inputs = TermInputs(embeddings[offset:offset + n], image_views, picture,
                                encode={"dtype": self.dtype, "routes": self.cpu_routes})
            offset += n
            loss, per_term = None, []
            for term in image.terms:
                contribution, metrics = term.loss(inputs)
                loss = contribution if loss is None else loss + contribution
                per_term.append([(key, len(stats) + i) for i, key in enumerate(("", *metrics))])
                stats += [value.detach().float() for value in (contribution, *metrics.values())]
            if image.status == "running":  # an image stopped for a non-finite loss no longer learns
                total = loss if total is None else total + loss
            losses.append(loss)
            found.append(per_term)
        return total, losses, stats, found

    def _apply(self, pending: _Pending) -> None:
        """Apply step t's update, keeping the parameters it started from in case one proves bad."""
        with self._deterministic():
            pending.before = [[p.detach().clone() for p in image.canvas.parameters()] for image in self.images]
            pending.lrs = [group["lr"] for group in self.optimizer.param_groups]
            for image in self.images:
                if image.status != "running":  # Adam skips parameters without a gradient
                    for p in image.canvas.parameters():
                        p.grad = None
            self.optimizer.step()
            for image in self.images:
                image.canvas.clamp_()
                if image.status == "running":
                    image.canvas.maintain_(pending.t + 1, self.steps, self.optimizer)
            factor = cosine_lr_factor(pending.t + 1, self.steps)
            for group, base in zip(self.optimizer.param_groups, self._group_base_lr):
                group["lr"] = base * factor
        self.step += 1

    def _resolve(self, pending: _Pending) -> StepEvent:
        """Read step t's numbers (the run's one host sync per step); undo an image's bad step."""
        numbers, images = pending.numbers.read(), []
        step = pending.t + 1
        show = self.preview_every and (step % self.preview_every == 0 or step == self.steps)
        for index, (image, (loss, finite, terms, metrics)) in enumerate(zip(self.images, numbers)):
            lr = pending.lrs[self._first_group[index]] if pending.lrs else 0.0
            if image.status != "running":
                images.append(ImageStep(math.nan, {}, {}, lr, None, image.status))
                continue
            if not finite:
                # The update of a non-finite step may have poisoned the image: restore the last good one.
                with torch.no_grad():
                    for p, saved in zip(image.canvas.parameters(), pending.before[index]):
                        p.copy_(saved)
                image.status, image.steps_done = "non_finite", pending.t
                image.message = (f"stopped at step {pending.t + 1}: the loss or its gradient became non-finite; "
                                 "kept the last good image")
                if len(self.images) == 1:
                    self.status, self.message, self.step = image.status, image.message, pending.t
            preview = image.canvas.image() if show and image.status == "running" else None
            images.append(ImageStep(loss, terms, metrics, lr, preview, image.status))
        if not self._running() and self.status == "running":
            self.status = "non_finite"
            self.message = self.images[0].message
        return StepEvent(step=step, steps=self.steps, elapsed=time.perf_counter() - self._t0, images=tuple(images))

    def _scores(self, image: _Image, picture: Image.Image) -> Scores:
        """Scores of an image's 8-bit picture without augmentation, reusing its run's terms."""
        with self._deterministic():
            return score_image(self.models, picture, terms=image.terms)

    def _deterministic(self):
        return determinism.deterministic_algorithms(self.config.deterministic, self.device)


def resolve_compile(compile: bool | None, device: torch.device) -> bool:
    """Whether a run compiles its step: as asked, or by default on a GPU and not on the CPU (on an
    H200 the compiled paper preset is ~5x faster after a compile of ~50 s; on the CPU the gain is
    small, note/performance.md)."""
    return device.type == "cuda" if compile is None else compile


RECOMPILE_LIMIT = 64  # kinds of run one process compiles the step for


def compiled_step(forward, device: torch.device):
    """`forward` (a run's step forward) compiled whole: canvas render, augmentation, encoders and
    terms, and through AOTAutograd its backward. On CUDA its graphs are recorded as CUDA graphs
    ("reduce-overhead"): eager, a step launches ~1,000 small kernels from Python, and the GPU
    idles between them; a recorded graph replays them at once. Kernels are cached in das-ag's
    cache folder, so a second process does not wait for the compiler again."""
    use_compile_cache()
    if device.type == "cuda":
        share_cuda_graph_trees()
    # The step is compiled once per kind of run (guidance on or off, negative prompts or none,
    # the number of images...), not per step or per seed; a studio meets many kinds in a session.
    # Past the limit dynamo would run the step eagerly without a word: it raises instead, and
    # the run falls back to eager with its one warning.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(forward, mode="reduce-overhead" if device.type == "cuda" else None)


# CUDA-graph trees keep one manager per device in thread-local state, which torch sets up in the
# thread that imported it and copies into autograd's threads. torch 2.11 asserts (with no message)
# in any other thread, so every compiled run of the studio, whose jobs each run in a thread of
# their own, fell back to eager; later torch gives each thread a manager of its own, with its own
# memory pool. Every run's thread shares these instead: one manager per device, as in a script.
# Runs on a device take turns (studio.jobs.device_line), so the manager is never used by two at once.
_SHARED_TREE_STATE = {"tree_manager_containers": {}, "tree_manager_locks": collections.defaultdict(threading.Lock)}


def share_cuda_graph_trees() -> None:
    """Give this thread the process's CUDA-graph tree managers, unless it has its own already."""
    for key, state in _SHARED_TREE_STATE.items():
        if torch._C._is_key_in_tls(key):
            continue
        references = sys.getrefcount(state)
        torch._C._stash_obj_in_tls(key, state)
        if sys.getrefcount(state) == references:
            # torch 2.11 stashes the object without taking a reference, yet drops one when the
            # thread ends: the second job's thread then found the first one's state freed. The
            # state lives as long as the process, so give the stash the reference it will drop.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(state))


def check_batch(configs: Sequence[GenerationConfig]) -> None:
    """Refuse images that cannot share a step, naming the setting that differs."""
    for name in BATCH_SHARED:
        values = {getattr(c, name) for c in configs}
        if len(values) > 1:
            raise ConfigError(f"images made together must share {name}; got {', '.join(map(str, sorted(values, key=str)))}")


def batch_key(config: GenerationConfig) -> tuple:
    return tuple(getattr(config, name) for name in BATCH_SHARED)


def plan_batches(configs: Sequence[GenerationConfig], images_per_step: int) -> list[list[int]]:
    """Indices of `configs` grouped into runs of at most `images_per_step` images that can share
    a step, in their order of first appearance."""
    if images_per_step < 1:
        raise ConfigError(f"images per step must be at least 1, not {images_per_step}")
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(batch_key(config), []).append(i)
    return [g[k:k + images_per_step] for g in groups.values() for k in range(0, len(g), images_per_step)]


AUTO_IMAGES_LIMIT = 16


def auto_images_per_step(models: ModelBundle, config: GenerationConfig) -> int:
    """As many images per step as should fit in half of the device's free memory (at most 16),
    each costing what step_activation_bytes measures for `config`.

    On a GPU, images share a step almost for free until the device is busy; on a CPU a step is
    compute-bound, so batching gains little and this mostly guards memory. The other half is left
    for what a step holds only for a moment (the backward's gradients, kernels' workspaces).
    """
    per_image = step_activation_bytes(models, config)
    free = _free_memory(models.device)
    return max(1, min(AUTO_IMAGES_LIMIT, int(free * 0.5 // max(per_image, 1))))


def choose_images_per_step(models: ModelBundle, configs: Sequence[GenerationConfig], asked: int | None = None) -> int:
    """Images per step for a run of `configs`: `asked`, else auto. A single image is made alone
    without measuring (the measurement costs two probe forwards and could change nothing)."""
    if asked:
        return asked
    return auto_images_per_step(models, configs[0]) if len(configs) > 1 else 1


def step_activation_bytes(models: ModelBundle, config: GenerationConfig) -> int:
    """The bytes one image of `config` keeps for its step's backward, measured rather than guessed:
    real step forwards (uncompiled, aesthetic guidance on where a head is loaded) of one and of two
    augmented copies, the difference being what each copy adds (attention matrices grow with the
    square of the tokens, which a guess per layer x token x width missed), the rest what the image
    needs once (its canvas), extrapolated to the config's copies."""
    one, two = (saved_bytes(models, config.replace(augment_copies=copies)) for copies in (1, 2))
    per_copy = max(two - one, 0)
    return max(one - per_copy, 0) + per_copy * config.augment_copies


def saved_bytes(models: ModelBundle, config: GenerationConfig | Sequence[GenerationConfig]) -> int:
    """What autograd keeps for the backward of one real step forward of `config` (one image or a
    batch): every saved tensor that is not a frozen weight, each storage counted once."""
    configs = (config,) if isinstance(config, GenerationConfig) else tuple(config)
    # Guidance on where a head is loaded, so the head's forward counts (a comparison's DAS image
    # stands for its DAS-AG one); without a head, every image of the run has guidance off.
    guided = models.aesthetic_head is not None
    probe = Synthesis([c.replace(steps=2, compile=False).with_guidance("reward" if c.guidance == "off" and guided else c.guidance)
                       for c in configs], models)
    kept: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.requires_grad or tensor.grad_fn is not None:  # an activation, not a frozen weight
            storage = tensor.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with probe._deterministic(), torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        probe._step_forward([image.prepare(1) for image in probe.images])
    return sum(kept.values())


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # unknown: assume a small machine


def synthesize(
    config: GenerationConfig | Sequence[GenerationConfig], models: ModelBundle, *, preview_every: int = 0,
    cpu_route: str | None = None,
) -> Synthesis:
    """das-ag's way in: a run of one image, or of several sharing each step. Iterate the returned
    Synthesis for StepEvents, or call its `run()`: the result (a list of them for a list of
    configs). For more images than share one step, see `synthesize_all`. `cpu_route`: the route
    a recipe's run took (png.recorded_route), for a config whose cpu_route is "auto"."""
    return Synthesis(config, models, preview_every=preview_every, cpu_route=cpu_route)


def synthesize_all(configs: Sequence[GenerationConfig], models: ModelBundle, *,
                   images_per_step: int | None = None) -> list[SynthesisResult]:
    """Make every image of `configs`, in that order, several sharing each step: at most
    `images_per_step` (None: auto, as many as half the free memory holds) of those that can share
    one (plan_batches), as `das-ag batch` and `compare` do."""
    configs = list(configs)
    if not configs:
        return []
    results: list[SynthesisResult | None] = [None] * len(configs)
    for indices in plan_batches(configs, choose_images_per_step(models, configs, images_per_step)):
        for i, result in zip(indices, synthesize([configs[i] for i in indices], models).run()):
            results[i] = result
    return results


def generate(config: GenerationConfig, models: ModelBundle) -> SynthesisResult:
    """Deprecated: `synthesize(config, models).run()`."""
    warnings.warn("das_ag.generate(config, models) is deprecated; use synthesize(config, models).run()",
                  DeprecationWarning, stacklevel=2)
    return synthesize(config, models).run()


def generate_all(configs: Sequence[GenerationConfig], models: ModelBundle, *,
                 images_per_step: int | None = None) -> list[SynthesisResult]:
    """Deprecated: `synthesize_all`."""
    warnings.warn("das_ag.generate_all(...) is deprecated; use synthesize_all(...)", DeprecationWarning, stacklevel=2)
    return synthesize_all(configs, models, images_per_step=images_per_step)


@functools.cache
def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matrix products natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags()  # the CPU routes' reading of /proc/cpuinfo (empty where there is none)
    return not bf16_emulated_by_cap() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def resolve_dtype(name: str, device: torch.device) -> str:
    """The precision `name` means on `device` ("auto" picks the fastest exact-enough one)."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"


def cpu_routes_of_run(asked: str, models: ModelBundle, dtype: torch.dtype, views: int) -> dict:
    """Each loop encoder's CPU route for a run of `views` views a step: as the config asks, or
    ("auto") this CPU's fastest, measured once per shape (cpu_routes.chosen_route). {} on a GPU."""
    if models.device.type != "cpu":
        return {}
    encoders = models.loop_encoders
    given = parse_routes(asked)
    if given is not None and len(given) not in (1, len(encoders)):
        raise ConfigError(f"cpu_route names {len(given)} routes but the run has {len(encoders)} encoders: "
                          "give one route for all, or one per encoder")
    if given is None:
        return {e: chosen_route(EncoderShape.of(e.model.visual) if e.fast else None, dtype, views) for e in encoders}
    return {e: effective(given[0] if len(given) == 1 else given[i], dtype) for i, e in enumerate(encoders)}


def _check_dtype(name: str, device: torch.device) -> torch.dtype:
    dtype = _DTYPES[resolve_dtype(name, device)]
    if dtype == torch.float16 and device.type == "cpu":
        raise DeviceError("float16 needs a CUDA GPU; on the CPU use bfloat16 or float32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU has no bfloat16 support; use float16 or float32")
    return dtype

