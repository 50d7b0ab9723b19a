"""A latent scorer: das-ag's image-space score distilled into a small network on VAE latents.

The LECO-score write-up scores latents directly (its ResNet was trained on AVA ratings). das-ag
distils its own score instead: the base model makes latents (the clean latent a denoising step
predicts, at random steps, as the training loop will feed it), the VAE decodes each once, das-ag
scores the picture, and a small convolutional network learns to predict that score from the
latent. Training the slider against it needs no VAE decode and no CLIP backward.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import __version__
from ..augment import normalize
from ..durable import write_atomic
from ..errors import DasAgError
from ..resample import resize
from . import existing
from .denoise import denoised_part_way, guided_prediction, predicted_clean, prompt_conditions, starting_latent

if TYPE_CHECKING:
    from .train import SliderSettings  # train loads a scorer; the scorer only reads the settings

SCORER_KEY = "das-ag:latent-scorer"


class LatentScorer(nn.Module):
    """(N, 4, h, w) latents -> (N,) predicted aesthetic scores, at any latent size."""

    def __init__(self, channels: int = 4, width: int = 64):
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(channels, width // 2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(width, 1)
        # The targets' mean and spread: the network learns standardised scores.
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(latents)).squeeze(-1) * self.std + self.mean


@dataclass
class DistilReport:
    samples: int
    validation_mse: float
    validation_correlation: float  # Pearson, predicted vs das-ag's score, on held-out latents
    target_std: float


@torch.no_grad()
def collect(base, models, settings: SliderSettings, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` predicted clean latents of the base model at random steps, and das-ag's scores of
    their decoded pictures."""
    pipe, unet, scheduler = base.pipe, base.unet, base.pipe.scheduler
    settings = settings.for_base(base)
    scheduler.set_timesteps(settings.inference_steps, device=pipe.device)
    side = settings.resolution // pipe.vae_scale_factor
    latents_out, scores = [], []
    for i in range(samples):
        draw = random.Random(f"scorer:{settings.seed}:{i}")
        conditions = prompt_conditions(pipe, draw.choice(settings.prompts), settings.resolution)
        generator = torch.Generator().manual_seed(draw.randrange(2**63))
        latents = starting_latent(unet, scheduler, side, generator, pipe.device)
        k = draw.randrange(settings.inference_steps)
        latents = denoised_part_way(unet, scheduler, latents, conditions, k, settings.guidance_scale)
        t = scheduler.timesteps[k]
        output = guided_prediction(unet, latents, t, conditions, settings.guidance_scale)
        clean = predicted_clean(scheduler, output, latents, t)
        images = (pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample + 1) / 2
        views = resize(normalize(images.clamp(0, 1).float()), models.input_resolution, "bilinear", antialias=True)
        latents_out.append(clean.float().cpu())
        scores.append(float(models.aesthetic_score(models.encode_images(views))[0]))
    return torch.cat(latents_out), torch.tensor(scores)


def distil(latents: torch.Tensor, scores: torch.Tensor, *, epochs: int = 200, lr: float = 3e-3, seed: int = 0,
           width: int = 64) -> tuple[LatentScorer, DistilReport]:
    """Fit a LatentScorer to (latent, score) pairs; a fifth of them is held out to say how well."""
    n = latents.shape[0]
    if n < 10:
        raise DasAgError(f"a latent scorer needs at least 10 samples, not {n}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    held = max(2, n // 5)
    val, fit = order[:held], order[held:]
    torch.manual_seed(seed)  # the network's start
    scorer = LatentScorer(latents.shape[1], width)
    scorer.mean.fill_(float(scores[fit].mean()))
    scorer.std.fill_(float(scores[fit].std().clamp(min=1e-6)))
    optimizer = torch.optim.Adam(scorer.parameters(), lr=lr)
    for _ in range(epochs):
        for batch in torch.randperm(len(fit), generator=generator).split(32):
            index = fit[batch]
            loss = ((scorer(latents[index]) - scores[index]) / scorer.std).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = scorer(latents[val])
        mse = float((predicted - scores[val]).pow(2).mean())
        correlation = float(torch.corrcoef(torch.stack([predicted, scores[val]]))[0, 1])
    scorer.requires_grad_(False)
    return scorer.eval(), DistilReport(n, mse, correlation, float(scores.std()))


def save_scorer(path: str | Path, scorer: LatentScorer, recipe: dict) -> Path:
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in scorer.state_dict().items()}
    meta = {SCORER_KEY: json.dumps({**recipe, "width": scorer.width, "das_ag_version": __version__}, sort_keys=True)}
    return write_atomic(Path(path), save(state, metadata=meta), overwrite=True)


def load_scorer(path: str | Path, base=None) -> tuple[LatentScorer, dict]:
    from safetensors import SafetensorError, safe_open

    path = existing(path, "latent scorer")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[SCORER_KEY])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise DasAgError(f"{path} is not a latent scorer made by das-ag slider scorer ({exc})") from None
    scorer = LatentScorer(state["features.0.weight"].shape[1], int(meta.get("width", 64)))
    scorer.load_state_dict(state)
    if base is not None and meta.get("base", {}).get("sha256") not in (None, base.sha256):
        raise DasAgError(f"latent scorer {path} was made for another base model; make one for this base")
    return scorer.requires_grad_(False).eval(), meta
