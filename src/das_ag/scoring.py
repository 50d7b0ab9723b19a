"""Scores of a finished image, measured without augmentation: what a user is told about a PNG."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .augment import normalize
from .models import ModelBundle
from .parameterization import from_pil
from .prompts import Prompt, tokenize
from .resample import resize


@dataclass(frozen=True)
class PromptScore:
    text: str
    weight: float
    similarity: float


@dataclass(frozen=True)
class Scores:
    clip_positive: float  # mean cosine similarity to the attracting prompts
    clip_negative: float | None  # mean cosine similarity to the repelling prompts, if any
    aesthetic: float  # the training head's score (not a held-out judgement)
    prompts: tuple[PromptScore, ...] = ()

    def to_dict(self) -> dict:
        return {
            "clip_positive": self.clip_positive,
            "clip_negative": self.clip_negative,
            "aesthetic": self.aesthetic,
            "prompts": [{"text": p.text, "weight": p.weight, "similarity": p.similarity} for p in self.prompts],
        }

    def summary(self) -> str:
        neg = "" if self.clip_negative is None else f"  clip- {self.clip_negative:.4f}"
        return f"clip+ {self.clip_positive:.4f}{neg}  aesthetic {self.aesthetic:.3f}"


def encode_text_prompts(models: ModelBundle, prompts: tuple[Prompt, ...]) -> tuple[torch.Tensor, list[str]]:
    """Normalised text features for `prompts` (one row each) and any truncation warnings."""
    tokens, warnings = tokenize([p.text for p in prompts])
    return models.encode_texts(tokens), warnings


@torch.no_grad()
def score_image(
    models: ModelBundle, image: Image.Image, prompts: tuple[Prompt, ...], text_features: torch.Tensor | None = None
) -> Scores:
    """CLIP similarities and the aesthetic score of an 8-bit image, in fp32, one encoder forward."""
    if text_features is None:
        text_features, _ = encode_text_prompts(models, prompts)
    pixels = from_pil(image).to(models.device)
    batch = resize(normalize(pixels), models.input_resolution, "bilinear", antialias=True)
    embedding = models.encode_images(batch)
    sims = (embedding @ text_features.t())[0].tolist()
    aesthetic = float(models.aesthetic_score(embedding)[0])
    per_prompt = tuple(PromptScore(p.text, p.weight, s) for p, s in zip(prompts, sims))
    pos = [s.similarity for s in per_prompt if s.weight > 0]
    neg = [s.similarity for s in per_prompt if s.weight < 0]
    return Scores(
        clip_positive=sum(pos) / len(pos),
        clip_negative=sum(neg) / len(neg) if neg else None,
        aesthetic=aesthetic,
        prompts=per_prompt,
    )
