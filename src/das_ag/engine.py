"""The optimisation loop: a stream of StepEvents a caller can watch, preview and stop.

    run = synthesize(config, models, preview_every=10)
    for event in run:
        print(event.step, event.loss)      # call run.stop() to end early
    result = run.result()                   # final image, its scores, and its recipe

Each step renders the canvas once, augments it into a batch, runs one encoder forward and one
backward; every term of the loss reads that one forward.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from . import determinism
from .augment import AugmentStrength, augment
from .config import GenerationConfig
from .errors import ConfigError, DeviceError, first_line
from .models import ModelBundle, resolve_device
from .objectives import aesthetic_loss, l1, prompt_similarities, text_loss, total_variation
from .parameterization import MultiResolutionImage
from .scoring import Scores, encode_text_prompts, score_image

ADAM_BETAS = (0.5, 0.99)  # the references' momentum: short memory suits ever-changing augmentations
FINAL_LR_FRACTION = 0.01  # cosine annealing ends at 1% of the initial learning rate
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StepEvent:
    step: int  # steps completed, 1..steps
    steps: int
    loss: float
    terms: dict[str, float]  # each term's contribution to the loss: text, aesthetic, tv, l1
    clip_positive: float  # mean similarity to attracting prompts over the augmented batch
    clip_negative: float | None
    aesthetic_score: float  # mean head score over the augmented batch
    aesthetic_weight: float  # the scheduled magnitude this step (its sign is the guidance)
    lr: float
    elapsed: float  # seconds since the first step began
    preview: Image.Image | None = None

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

    def recipe(self) -> dict:
        from .png import build_recipe

        return build_recipe(self)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        from .png import save_png

        return save_png(self.image, path, self.recipe(), overwrite=overwrite)


@dataclass
class _Pending:
    """A launched step whose numbers have not been read yet."""

    t: int
    stats: torch.Tensor  # loss, four terms, CLIP +, CLIP -, aesthetic, finite flag
    ready: torch.cuda.Event | None  # recorded after the stats' copy to the host (CUDA only)
    aesthetic_weight: float
    lr: float = 0.0
    before: list[torch.Tensor] = field(default_factory=list)  # parameters before the update


class Synthesis:
    """One run in progress. Iterate it for StepEvents; `result()` at any point for the image so far."""

    def __init__(self, config: GenerationConfig, models: ModelBundle, *, preview_every: int = 0):
        self.config, self.models, self.preview_every = config, models, preview_every
        self.device = resolve_device(config.device)
        if self.device != models.device:
            raise ConfigError(f"the config asks for device {config.device} but the models are on {models.device}")
        self.dtype = _check_dtype(config.dtype, self.device)
        self._compile = config.compile

        with self._deterministic():
            self.text_features, warnings = encode_text_prompts(models, config.prompts)
            self.warnings = tuple(warnings)
            self.prompt_weights = torch.tensor([p.weight for p in config.prompts], device=self.device)
            self._positive = self.prompt_weights > 0
            # The initial image is drawn on the CPU so every device starts from the same pixels;
            # augmentation draws on the run's device.
            self.image = MultiResolutionImage(
                config.canvas_size,
                config.resolution,
                levels=config.levels,
                init=config.init,
                combine=config.combine,
                interpolation=config.interpolation,
                generator=torch.Generator().manual_seed(config.seed),
            ).to(self.device)
            self.augment_generator = torch.Generator(device=self.device).manual_seed(config.seed)
            self.optimizer = torch.optim.Adam(self.image.parameters(), lr=config.lr, betas=ADAM_BETAS)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=config.steps, eta_min=FINAL_LR_FRACTION * config.lr
            )
            self.initial_scores = self._scores(self.image.image())
        self.step = 0
        self.status, self.message = "running", ""
        self._stop_requested = False
        self._t0: float | None = None
        self._elapsed = 0.0

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end after the step in progress; the image so far is kept."""
        self._stop_requested = True

    def preview(self) -> Image.Image:
        return self.image.image()

    def __iter__(self):
        """Steps as they finish, one behind the device.

        Step t is launched before step t-1's numbers are read, so the host waits for t-1 while the
        device already works on t: on a GPU the Python side of a step (augmentation, pyramid, Adam)
        overlaps the previous step's encoder instead of leaving the GPU idle. On the CPU nothing
        overlaps and nothing changes. The arithmetic and its order are the same either way.
        """
        cfg = self.config
        pending: _Pending | None = None
        while self.status == "running":
            launched = None
            if self.step < cfg.steps and not self._stop_requested:
                if self._t0 is None:
                    self._t0 = time.perf_counter()
                try:
                    launched = self._launch(self.step)
                except RuntimeError as exc:
                    # Out of GPU memory, a kernel with no deterministic version, a driver error: end
                    # the run with a message and keep the image from the last completed step.
                    self.status = "failed"
                    self.message = f"stopped at step {self.step + 1}: {first_line(exc)}; kept the image so far"
            if pending is not None:
                event = self._resolve(pending)
                if event is None:
                    return
                self._elapsed = time.perf_counter() - self._t0
                yield event
            if launched is None or self._stop_requested or self.status != "running":
                self._elapsed = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
                return
            self._apply(launched)
            pending = launched

    def run(self) -> SynthesisResult:
        """Run to the end (or until stopped) and return the result."""
        for _ in self:
            pass
        return self.result()

    def result(self) -> SynthesisResult:
        if self.status == "running":
            if self.step >= self.config.steps:
                self.status, self.message = "completed", f"completed {self.step} steps"
            else:
                self.status, self.message = "cancelled", f"stopped after {self.step} of {self.config.steps} steps"
        image = self.image.image()
        with self._deterministic():
            scores = self._scores(image)
        return SynthesisResult(
            image=image,
            config=self.config,
            scores=scores,
            initial_scores=self.initial_scores,
            steps_done=self.step,
            status=self.status,
            message=self.message,
            elapsed=self._elapsed,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            model_identities={
                "clip": self.models.clip_identity.to_dict(),
                "aesthetic": self.models.aesthetic_identity.to_dict(),
            },
            warnings=self.warnings,
        )

    # -- the step ----------------------------------------------------------------------------
    def _launch(self, t: int) -> _Pending:
        """Queue step t's forward and backward; its numbers stay on the device for now."""
        cfg, T = self.config, self.config.steps
        strength = AugmentStrength(
            jitter=int(cfg.jitter.at(t, T) * cfg.margin),
            colour=cfg.colour.at(t, T),
            noise=cfg.noise.at(t, T),
        )
        aesthetic_weight = cfg.aesthetic.at(t, T)
        with self._deterministic():
            canvas = self.image()
            batch = augment(
                canvas,
                copies=cfg.augment_copies,
                resolution=cfg.resolution,
                strength=strength,
                generator=self.augment_generator,
                out_size=self.models.input_resolution,
            )
            embeddings = self._encode(batch)
            sims = prompt_similarities(embeddings, self.text_features)
            score = self.models.aesthetic_score(embeddings).mean()
            zero = sims.new_zeros(())
            terms = {
                "text": text_loss(sims, self.prompt_weights, cfg.clip_weight),
                "aesthetic": aesthetic_loss(score, cfg.guidance_sign, aesthetic_weight),
                "tv": cfg.tv_weight * total_variation(batch) if cfg.tv_weight else zero,
                "l1": cfg.l1_weight * l1(batch) if cfg.l1_weight else zero,
            }
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite = torch.isfinite(loss) & torch.stack([p.grad.isfinite().all() for p in self.image.parameters()]).all()
            negatives = sims[~self._positive]
            stats = torch.stack(
                [
                    loss.detach(),
                    *(v.detach() for v in terms.values()),
                    sims[self._positive].mean(),
                    negatives.mean() if negatives.numel() else sims.new_full((), float("nan")),
                    score.detach(),
                    finite.float(),
                ]
            )
            ready = None
            if self.device.type == "cuda":
                stats = stats.to("cpu", non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
        return _Pending(t, stats, ready, aesthetic_weight)

    def _apply(self, pending: _Pending) -> None:
        """Apply step t's update, keeping the parameters it started from in case it proves bad."""
        with self._deterministic():
            pending.before = [p.detach().clone() for p in self.image.parameters()]
            pending.lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
        self.step += 1

    def _resolve(self, pending: _Pending) -> StepEvent | None:
        """Read step t's numbers (the run's one host sync per step); undo it if it was not finite."""
        if pending.ready is not None:
            pending.ready.synchronize()
        loss_v, text_v, aes_v, tv_v, l1_v, pos_v, neg_v, score_v, finite = pending.stats.tolist()
        if not finite:
            # The update of a non-finite step may have poisoned the image: restore the last good one.
            with torch.no_grad():
                for p, saved in zip(self.image.parameters(), pending.before):
                    p.copy_(saved)
            self.step = pending.t
            self.status = "non_finite"
            self.message = f"stopped at step {pending.t + 1}: the loss or its gradient became non-finite; kept the last good image"
            return None
        step = pending.t + 1
        preview = None
        if self.preview_every and (step % self.preview_every == 0 or step == self.config.steps):
            preview = self.preview()
        return StepEvent(
            step=step,
            steps=self.config.steps,
            loss=loss_v,
            terms={"text": text_v, "aesthetic": aes_v, "tv": tv_v, "l1": l1_v},
            clip_positive=pos_v,
            clip_negative=None if neg_v != neg_v else neg_v,
            aesthetic_score=score_v,
            aesthetic_weight=pending.aesthetic_weight,
            lr=pending.lr,
            elapsed=time.perf_counter() - self._t0,
            preview=preview,
        )

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        # packed: the loop's many steps pay for weights prepacked for oneDNN on the CPU.
        if self._compile:
            try:
                if self.device.type == "cuda":
                    # A new optimisation step: CUDA-graph outputs of the last one may be reused.
                    torch.compiler.cudagraph_mark_step_begin()
                return self.models.encode_images(batch, compiled=True, dtype=self.dtype, packed=True)
            except Exception as exc:  # no compiler, an unsupported op: run eagerly and say so
                self._compile = False
                self.warnings = (*self.warnings, f"torch.compile failed ({first_line(exc)}); running uncompiled")
        return self.models.encode_images(batch, dtype=self.dtype, packed=True)

    def _scores(self, image: Image.Image) -> Scores:
        """Scores of an 8-bit image without augmentation, reusing this run's text features."""
        return score_image(self.models, image, self.config.prompts, self.text_features)

    def _deterministic(self):
        return determinism.deterministic_algorithms(self.config.deterministic, self.device)


def synthesize(config: GenerationConfig, models: ModelBundle, *, preview_every: int = 0) -> Synthesis:
    """Start a run: iterate the returned Synthesis for StepEvents, then call `result()`."""
    return Synthesis(config, models, preview_every=preview_every)


def generate(config: GenerationConfig, models: ModelBundle) -> SynthesisResult:
    """Make one image and return it with its scores."""
    return Synthesis(config, models).run()


@functools.cache
def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matrix products natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> str:
    """The precision `name` means on `device` ("auto" picks the fastest exact-enough one)."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"


def _check_dtype(name: str, device: torch.device) -> torch.dtype:
    dtype = _DTYPES[resolve_dtype(name, device)]
    if dtype == torch.float16 and device.type == "cpu":
        raise DeviceError("float16 needs a CUDA GPU; on the CPU use bfloat16 or float32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU has no bfloat16 support; use float16 or float32")
    return dtype

