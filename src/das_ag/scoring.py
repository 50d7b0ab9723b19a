"""Scores of a finished image, measured without augmentation: what a user is told about a PNG.

Every term of the run says what it measures on the final 8-bit image (the text term its CLIP
similarities, the aesthetic term the head's score, ...); a Scores holds them by name.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .augment import normalize, spread
from .canvases.base import from_pil
from .models import ModelBundle
from .prompts import Prompt, tokenize
from .resample import resize


@dataclass(frozen=True)
class PromptScore:
    text: str
    weight: float
    similarity: float


@dataclass(frozen=True)
class Scores:
    """Named numbers about a finished image, from every term of its run (None: not applicable)."""

    values: dict[str, Any] = field(default_factory=dict)

    @property
    def clip_positive(self) -> float | None:
        return self.values.get("clip_positive")  # None: a run without prompts

    @property
    def clip_negative(self) -> float | None:
        return self.values.get("clip_negative")

    @property
    def aesthetic(self) -> float | None:
        """The head's score; None for a run without a head (guidance off on a CLIP other than ViT-L/14)."""
        return self.values.get("aesthetic")

    @property
    def prompts(self) -> tuple[PromptScore, ...]:
        return tuple(PromptScore(**p) for p in self.values.get("prompts", ()))

    def numbers(self) -> dict[str, float | None]:
        """The scalar scores (for tables), without per-prompt details."""
        return {k: v for k, v in self.values.items()
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}

    def to_dict(self) -> dict:
        return dict(self.values)

    def summary(self) -> str:
        from .objectives import score_label  # the terms import this module

        parts = []
        for key, value in self.numbers().items():
            if value is not None:
                parts.append(f"{score_label(key)} {value:.4f}")
        return "  ".join(parts)




def encode_text_prompts(models: ModelBundle, prompts: tuple[Prompt, ...]) -> tuple[torch.Tensor, list[str]]:
    """Normalised text features for `prompts` (one row each) and any truncation warnings."""
    tokens, warnings = tokenize([p.text for p in prompts])
    return models.encode_texts(tokens), warnings


def embed_image(models: ModelBundle, image: Image.Image) -> torch.Tensor:
    """The fp32 CLIP embedding (1, D) of an 8-bit image, unaugmented (see picture_views)."""
    return joined(models.encode_images(picture_views(models, image)))


def picture_views(models: ModelBundle, image: Image.Image) -> torch.Tensor:
    """An 8-bit image as CLIP-normalised input views, unaugmented: the image itself, or for an
    image that is not square, squares of its short side spread along the long side (as few as
    cover it; their embeddings are averaged and normalised again)."""
    pixels = from_pil(image).to(models.device)
    height, width = pixels.shape[-2:]
    side = min(height, width)
    if height != width:
        count = math.ceil(max(height, width) / side)
        starts = spread(max(height, width) - side, count, pixels.device).tolist()
        windows = [pixels[..., a:a + side, :] if height > width else pixels[..., :, a:a + side] for a in starts]
        pixels = torch.cat(windows)
    return resize(normalize(pixels), models.input_resolution, "bilinear", antialias=True)


def joined(embeddings: torch.Tensor) -> torch.Tensor:
    """One embedding (1, D) of an image seen as several views: their normalised mean."""
    if len(embeddings) == 1:
        return embeddings
    return torch.nn.functional.normalize(embeddings.float().mean(dim=0, keepdim=True), dim=-1)


@torch.no_grad()
def score_image(models: ModelBundle, image: Image.Image, config=None, terms=None) -> Scores:
    """Every term's scores of an 8-bit image, from one fp32 encoder forward.

    `terms` are a run's built terms (reusing their text features); without them they are built
    from `config`.
    """
    if terms is None:
        from .objectives import active_terms

        terms = [cls(config, models) for cls in active_terms(config)]
    views = picture_views(models, image)
    embedding = joined(models.encode_images(views))
    values: dict[str, Any] = {}
    for term in terms:
        values.update(term.final_scores(embedding, views))
    return Scores(values)
