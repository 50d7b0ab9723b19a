"""Training the slider LoRA, the "LECO score" loop with das-ag's image-space score.

Each step: a prompt and a seed; the base model (with the LoRA) denoises a fresh latent part of
the way without gradient (k of the schedule's steps, k random); then one UNet call with the LoRA
and with gradient; its predicted clean latent is decoded by the VAE, and das-ag scores the image:
the signed aesthetic head on CLIP's embedding (plus, if asked, CLIP similarity to the prompt, so
the LoRA does not drift off-prompt). The loss is minus that reward; only the LoRA learns.

Every step draws from a generator seeded by (seed, step), so a run resumed from a checkpoint
continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..augment import normalize
from ..errors import ConfigError, DasAgError, WriteError
from ..durable import check_writable, write_atomic
from ..resample import resize
from ..rescue import save_or_rescue
from .base import PRECISIONS
from .denoise import Conditions, denoised_part_way, guided_prediction, predicted_clean, prompt_conditions, starting_latent
from .lora import ADAPTER, LORA_TARGETS, add_lora, save_lora

# A general list of prompts: the slider should raise the score of whatever the model is asked for.
GENERAL_PROMPTS = (
    "a portrait of a woman", "a portrait of an old man", "a city street at night", "a mountain lake at dawn",
    "a bowl of fruit on a table", "a cat sleeping on a sofa", "a lighthouse on a cliff", "a forest in autumn",
    "a sailing boat at sea", "an old house in the countryside", "a plate of food", "a bird on a branch",
    "a car on a desert road", "a bouquet of flowers", "a snowy village", "a child playing on a beach",
)


@dataclass(frozen=True)
class SliderSettings:
    sign: str = "reward"  # reward raises the aesthetic score, penalty lowers it
    steps: int = 500
    lr: float = 1e-4
    rank: int = 4
    alpha: float = 4.0
    resolution: int | None = None  # None: the base model's own size (base.native_resolution)
    inference_steps: int = 26  # the write-up's schedule: partly denoise 0-25 of 26 steps
    # DRaFT-K: the UNet calls the gradient runs through, ending at the step that learns (1 is the
    # write-up's loop; more reach further back along the sample, at K times the activations).
    grad_steps: int = 1
    guidance_scale: float = 5.0
    aesthetic_weight: float = 1.0
    clip_weight: float = 0.0  # CLIP similarity to the training prompt, to stay on-prompt
    # DRaFT+'s anchor: minus this times the mean squared difference between the LoRA's and the base
    # model's UNet outputs at the step that learns, so the score is not raised by drifting anywhere
    # the reward model can be fooled (reward hacking). 0 is off.
    anchor_weight: float = 0.0
    # Concept sliders' two-sided training: each step also runs the LoRA at weight -1 and asks it to
    # move the score the other way (the prompt and anchor terms still pull both ways alike), both
    # gradients in one update. Twice the cost of a step; -1 is then trained, not extrapolated.
    symmetric: bool = False
    ambiguity: str = "off"  # the style-ambiguity term on the same embedding: reward, penalty or off
    ambiguity_weight: float = 0.25
    styles: str = "wikiart"
    # A latent scorer (das-ag slider scorer) in place of the image-space score: no VAE decode and
    # no CLIP backward in the loop.
    scorer: str = ""
    prompts: tuple[str, ...] = field(default=GENERAL_PROMPTS)
    seed: int = 0
    checkpoint_every: int = 50
    # The frozen models' precision: fp32, or bf16 (half the memory; the LoRA itself and its
    # optimiser stay in float32, where small updates are not rounded away).
    precision: str = "fp32"

    def aesthetic_sign(self, direction: int = 1) -> int:
        """+1 where the score should rise, -1 where it should fall; `direction` -1 is the LoRA's
        other side in a symmetric run."""
        return (1 if self.sign == "reward" else -1) * direction

    def for_base(self, base) -> "SliderSettings":
        """These settings with the base model's own size where none was asked for."""
        if self.resolution is not None:
            return self
        return dataclasses.replace(self, resolution=base.native_resolution)

    def problems(self) -> list[str]:
        p = []
        if self.sign not in ("reward", "penalty"):
            p.append(f"sign must be reward or penalty, not {self.sign!r}")
        for name, lo in (("steps", 1), ("rank", 1), ("inference_steps", 2), ("grad_steps", 1), ("checkpoint_every", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < lo:
                p.append(f"{name.replace('_', ' ')} must be a whole number of at least {lo}, not {v!r}")
        if isinstance(self.grad_steps, int) and isinstance(self.inference_steps, int) \
                and self.grad_steps > self.inference_steps >= 2:
            p.append(f"grad steps must be at most the inference steps ({self.inference_steps}), not {self.grad_steps}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 64
                                            or self.resolution % 8):
            p.append(f"resolution must be a multiple of 8 of at least 64, not {self.resolution!r}")
        for name in ("lr", "alpha"):
            if not _positive(getattr(self, name)):
                p.append(f"{name} must be a positive number, not {getattr(self, name)!r}")
        for name in ("guidance_scale", "aesthetic_weight", "clip_weight", "anchor_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                p.append(f"{name.replace('_', ' ')} must be a finite number >= 0, not {v!r}")
        if self.scorer and (self.clip_weight > 0 or self.ambiguity != "off"):
            p.append("a latent scorer replaces the image-space score; CLIP similarity and style ambiguity need the "
                     "decoded image (drop --clip-weight / --ambiguity, or the scorer)")
        if self.precision not in PRECISIONS:
            p.append(f"precision must be {' or '.join(PRECISIONS)}, not {self.precision!r}")
        if self.ambiguity not in ("reward", "penalty", "off"):
            p.append(f"ambiguity must be reward, penalty or off, not {self.ambiguity!r}")
        if not self.prompts or not all(isinstance(t, str) and t.strip() for t in self.prompts):
            p.append("the slider needs at least one non-empty training prompt")
        return p


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def load_prompts(path: str | Path) -> tuple[str, ...]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt file {path} could not be read ({exc})") from None
    prompts = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise ConfigError(f"prompt file {path} holds no prompts (one per line)")
    return prompts


# -- the reward ------------------------------------------------------------------------------------
def ambiguity_term(models, settings: SliderSettings):
    """das-ag's style-ambiguity term, built as a run would build it (None when off)."""
    if settings.ambiguity == "off":
        return None
    from ..config import GenerationConfig
    from ..objectives.ambiguity import AmbiguityTerm

    config = GenerationConfig(prompts=(), terms={"text": {"weight": 0.0}, "aesthetic": {"guidance": "off"}, "ambiguity": {
        "guidance": settings.ambiguity, "weight": settings.ambiguity_weight, "styles": settings.styles}})
    return AmbiguityTerm(config, models)


def image_reward(images: torch.Tensor, models, settings: SliderSettings, text: torch.Tensor | None,
                 styles=None, direction: int = 1) -> tuple[torch.Tensor, dict]:
    """das-ag's signed score of images in [0, 1] (N, 3, H, W), differentiable, and its parts.
    `direction` -1 turns the slider's own aims (aesthetic, ambiguity) around, not the prompt term."""
    from ..objectives import TermInputs

    # The pictures in float32 (the VAE may decode in bf16); CLIP runs in the settings' precision.
    views = resize(normalize(images.float()), models.input_resolution, "bilinear", antialias=True)
    embeddings = models.encode_images(views, dtype=PRECISIONS[settings.precision])
    score = models.aesthetic_score(embeddings).mean()
    reward = settings.aesthetic_sign(direction) * settings.aesthetic_weight * score / 10
    parts = {"aesthetic": float(score.detach())}
    if text is not None and settings.clip_weight > 0:
        similarity = (embeddings @ text.t()).mean()
        reward = reward + settings.clip_weight * similarity
        parts["clip"] = float(similarity.detach())
    if styles is not None:
        loss, metrics = styles.loss(TermInputs(embeddings, views))
        reward = reward - direction * loss  # the term's loss is what it minimises
        parts["style_entropy"] = float(metrics["entropy"].detach())
    return reward, parts


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class StepReport:
    step: int
    steps: int
    reward: float
    parts: dict


def train(
    base, models, settings: SliderSettings, out: str | Path, *, resume: bool = True,
    on_step: Callable[[StepReport], None] | None = None, stop: Callable[[], bool] | None = None,
    gradient_checkpointing: bool = False, preview_every: int = 0, preview_seeds: tuple[int, ...] = (0, 1),
    on_preview: Callable[[dict], None] | None = None,
) -> Path:
    """Train the slider LoRA and save it at `out` (with its recipe); checkpoints beside it.

    The base's frozen models are put in the settings' precision. `gradient_checkpointing` trades
    time for memory (the UNet's and the VAE decoder's activations are recomputed in the backward);
    the result is the same, so it is not part of the recipe and a resumed run may change it.

    Every `preview_every` steps, and after the last, a scored grid of the LoRA at weights -1, 0
    and +1 (first training prompt, `preview_seeds`) is written beside `out`; the final LoRA's
    recipe lists their mean scores, so the file says how far training moved the score. Previews
    do not change what is trained."""
    problems = settings.problems()
    if problems:
        raise ConfigError(problems[0])
    settings = settings.for_base(base)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"the LoRA file {out} must end in .safetensors")
    pipe, unet = base.pipe, base.unet
    base.to_precision(settings.precision)
    with torch.random.fork_rng(devices=[]):  # peft draws the LoRA's start from torch's global generator
        torch.manual_seed(settings.seed)
        params = add_lora(unet, settings.rank, settings.alpha)
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    checkpoint = out.with_name(out.stem + ".checkpoint.pt")
    check_writable(out)  # now, not after the first hour of training
    start, previews = 0, []
    recipe = _recipe(base, models, settings)
    if resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("recipe") != json.dumps(recipe, sort_keys=True):
            raise DasAgError(f"{checkpoint} is from a run with other settings or models; remove it or use another --out")
        for p, value in zip(params, saved["lora"]):
            p.data.copy_(value.to(p.device))
        optimizer.load_state_dict(saved["optimizer"])
        start, previews = int(saved["step"]), json.loads(saved.get("previews", "[]"))
    device = pipe.device
    latent_side = settings.resolution // pipe.vae_scale_factor
    text_cache: dict[str, tuple[Conditions, torch.Tensor | None]] = {}
    styles = ambiguity_term(models, settings)
    scorer = None
    if settings.scorer:
        from .latent_scorer import load_scorer

        scorer = load_scorer(settings.scorer, base)[0].to(device)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(settings.inference_steps, device=device)
    unet.train()
    for model in (unet, pipe.vae):
        if gradient_checkpointing:
            model.enable_gradient_checkpointing()
        else:
            model.disable_gradient_checkpointing()
    done = start
    try:
        for step in range(start, settings.steps):
            if stop is not None and stop():
                raise KeyboardInterrupt
            optimizer.zero_grad(set_to_none=True)
            reward, parts = _gradients(pipe, unet, models, settings, step, scheduler, latent_side, text_cache,
                                       styles, scorer)
            optimizer.step()
            done = step + 1
            if on_step is not None:
                on_step(StepReport(done, settings.steps, float(reward.detach()), parts))
            if preview_every and (done % preview_every == 0 or done == settings.steps):
                from .sample import write_preview

                try:
                    previews.append(write_preview(base, models, settings, out, done, preview_seeds))
                except WriteError as exc:  # a preview is a view of the training, not its result
                    _warn(f"{exc}; training goes on without this preview")
                else:
                    if on_preview is not None:
                        on_preview(previews[-1])
            if done % settings.checkpoint_every == 0 and done < settings.steps:
                try:
                    _save_checkpoint(checkpoint, params, optimizer, done, recipe, previews)
                except WriteError as exc:
                    _warn(f"{exc}; training goes on, but an interruption now would lose the steps since the last "
                          "checkpoint")
    except KeyboardInterrupt:
        # Keep what was learnt: the same command continues from here.
        _keep_checkpoint(checkpoint, params, optimizer, done, recipe, previews)
        raise SliderStopped(done, checkpoint) from None
    except (torch.OutOfMemoryError, MemoryError):
        # The failed step changed nothing (its update had not begun): keep the steps before it.
        optimizer.zero_grad(set_to_none=True)
        _keep_checkpoint(checkpoint, params, optimizer, done, recipe, previews)
        raise SliderOutOfMemory(done, checkpoint, device) from None
    unet.eval()
    final = {**recipe, "steps_done": settings.steps, **({"previews": previews} if previews else {})}
    # A disk that filled up during training must not lose the LoRA: it is kept elsewhere, and said.
    _, trouble = save_or_rescue(lambda path: save_lora(path, unet, final), out, "the LoRA")
    checkpoint.unlink(missing_ok=True)
    if trouble:
        raise DasAgError(trouble)
    return out


class SliderStopped(DasAgError):
    def __init__(self, done: int, checkpoint: Path):
        super().__init__(f"stopped after {done} steps; {checkpoint} keeps them: run the same command again to continue")
        self.done = done


class SliderOutOfMemory(DasAgError):
    def __init__(self, done: int, checkpoint: Path, device: torch.device):
        # Precision and resolution are in the recipe, so changing them starts afresh; gradient
        # checkpointing is not, so it continues.
        super().__init__(f"ran out of {device.type} memory at step {done + 1}; {checkpoint} keeps the {done} steps before "
                         "it: add --gradient-checkpointing and run the same command to continue (or start afresh with "
                         "--precision bf16 or a smaller --resolution)")
        self.done = done


def _gradients(pipe, unet, models, settings, step, *context) -> tuple[torch.Tensor, dict]:
    """The step's gradients in the LoRA's .grad, and its reward at weight +1 with its parts. A
    symmetric run adds the LoRA's step at weight -1: both sides' gradients, halved, one update."""
    sides = (1, -1) if settings.symmetric else (1,)
    for direction in sides:
        if direction != 1:
            unet.set_adapters([ADAPTER], weights=[float(direction)])
        try:
            side, side_parts = _step(pipe, unet, models, settings, step, *context, direction=direction)
            (-side / len(sides)).backward()
        finally:
            if direction != 1:
                unet.set_adapters([ADAPTER], weights=[1.0])
        if direction == 1:
            reward, parts = side, side_parts
        else:
            parts = {**parts, "reward_at_minus_one": float(side.detach())}
    return reward, parts


def _step(pipe, unet, models, settings, step, scheduler, latent_side, text_cache, styles, scorer,
          direction: int = 1):
    """One training step's reward, differentiable in the LoRA, for the LoRA at weight `direction`
    (+1, or -1 in a symmetric run: the same draws, the slider's aims turned around)."""
    draw = random.Random(f"{settings.seed}:{step}")  # per step, so a resumed run draws the same
    prompt = draw.choice(settings.prompts)
    if prompt not in text_cache:
        from ..prompts import tokenize

        clip_text = models.encode_texts(tokenize([prompt])[0]) if settings.clip_weight > 0 else None
        text_cache[prompt] = (prompt_conditions(pipe, prompt, settings.resolution), clip_text)
    conditions, clip_text = text_cache[prompt]
    generator = torch.Generator().manual_seed(draw.randrange(2**63))
    latents = starting_latent(unet, scheduler, latent_side, generator, pipe.device)
    # k no-grad steps, then grad_steps - 1 steps with gradient, then the one that learns
    k = draw.randrange(settings.inference_steps - settings.grad_steps + 1)
    latents = denoised_part_way(unet, scheduler, latents, conditions, k, settings.guidance_scale)
    for t in scheduler.timesteps[k:k + settings.grad_steps - 1]:
        latents = scheduler.step(guided_prediction(unet, latents, t, conditions, settings.guidance_scale), t,
                                 latents).prev_sample
    t = scheduler.timesteps[k + settings.grad_steps - 1]
    base_output = None
    if settings.anchor_weight > 0:
        base_output = base_prediction(unet, latents, t, conditions, settings.guidance_scale)
    output = guided_prediction(unet, latents, t, conditions, settings.guidance_scale)
    clean = predicted_clean(scheduler, output, latents, t)  # the step's prediction of the final latent
    if scorer is not None:  # a latent scorer: no decode, no CLIP
        score = scorer(clean.float()).mean()
        reward = settings.aesthetic_sign(direction) * settings.aesthetic_weight * score / 10
        parts = {"aesthetic": float(score.detach())}
    else:
        images = (pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample + 1) / 2
        reward, parts = image_reward(images.clamp(0, 1), models, settings, clip_text, styles, direction)
    if base_output is not None:
        anchor = (output.float() - base_output.float()).pow(2).mean()
        reward = reward - settings.anchor_weight * anchor
        parts["anchor"] = float(anchor.detach())
    return reward, parts


def base_prediction(unet, latents, t, conditions, guidance_scale: float) -> torch.Tensor:
    """The base model's guided output, the LoRA switched off, without gradient. (Called before the
    LoRA's own forward: switching adapters off and on also switches their requires_grad.)"""
    unet.disable_adapters()
    try:
        with torch.no_grad():
            return guided_prediction(unet, latents, t, conditions, guidance_scale)
    finally:
        unet.enable_adapters()


def _save_checkpoint(path: Path, params, optimizer, step: int, recipe: dict, previews: list[dict]) -> Path:
    buffer = io.BytesIO()
    torch.save({"lora": [p.detach().cpu() for p in params], "optimizer": optimizer.state_dict(), "step": step,
                "recipe": json.dumps(recipe, sort_keys=True), "previews": json.dumps(previews)}, buffer)
    return write_atomic(path, buffer.getvalue(), overwrite=True)


def _keep_checkpoint(path: Path, *state) -> None:
    """The checkpoint of a run that stops; where it cannot be written, kept elsewhere with the
    one line that says how to continue from it."""
    _, trouble = save_or_rescue(lambda p: _save_checkpoint(p, *state), path, "the steps made")
    if trouble:
        raise DasAgError(f"{trouble}: move it to {path} and run the same command again to continue")


def _warn(message: str) -> None:
    print(f"das-ag: warning: {message}", file=sys.stderr)


def _recipe(base, models, settings: SliderSettings) -> dict:
    return {
        "das_ag_version": __version__,
        "base": base.identity(),
        "models": models.identities(),
        "settings": {**asdict(settings), "prompts": list(settings.prompts)},
        "lora": {"rank": settings.rank, "alpha": settings.alpha, "targets": list(LORA_TARGETS),
                 "layers_per_block": base.unet.config.layers_per_block},  # where kohya's SDXL names put each layer
    }
