"""Scores of a finished image, measured without augmentation: what a user is told about a PNG.

Every term of the run says what it measures on the final 8-bit image (the text term its CLIP
similarities, the aesthetic term the head's score, ...); a Scores holds them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .embedding import embed_image, joined, picture_views  # noqa: F401  (embed_image: scoring's since 0.1)
from .models import ModelBundle
from .canvases.base import from_pil
from .objectives import active_terms, score_label
from .objectives.base import Term


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
        parts = []
        for key, value in self.numbers().items():
            if value is not None:
                parts.append(f"{score_label(key)} {value:.4f}")
        return "  ".join(parts)


@torch.no_grad()
def score_image(models: ModelBundle, image: Image.Image, config=None, terms=None) -> Scores:
    """Every term's scores of an 8-bit image, from one fp32 encoder forward.

    `terms` are a run's built terms (reusing their text features); without them they are built
    from `config`.
    """
    if terms is None:
        terms = [cls(config, models) for cls in active_terms(config)]
    views = picture_views(models, image)
    embedding = joined(models.encode_images(views))
    values: dict[str, Any] = {}
    pixels = None
    for term in terms:
        values.update(term.final_scores(embedding, views))
        if type(term).picture_scores is not Term.picture_scores:
            pixels = from_pil(image) if pixels is None else pixels
            values.update(term.picture_scores(pixels))
    return Scores(values)
