"""Scorers for finished images: image batch -> named columns of numbers.

Every column says which evaluator made it, and whether that evaluator is held out (not the one the
images were optimised against). The training head is never held out: a DAS-AG image is *built* to
please it, which is why the paper judges with a different predictor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from .errors import DasAgError, first_line
from .prompts import Prompt

ENV_V25_PREDICTOR = "AESTHETIC_V25_PREDICTOR_PATH"
ENV_V25_ENCODER = "AESTHETIC_V25_ENCODER_PATH"


class EvaluatorUnavailable(DasAgError):
    """An optional evaluator is not installed or has no local weights."""


@dataclass(frozen=True)
class Column:
    name: str  # the table column
    evaluator: str  # who produced it
    held_out: bool  # False: the images were optimised against this very score
    label: str = ""  # its heading in tables (default: what the term that gives it calls it, else the name)

    @property
    def heading(self) -> str:
        from .objectives import score_label

        return self.label or score_label(self.name)


class Evaluator(Protocol):
    columns: tuple[Column, ...]

    def score(self, images: list[Image.Image], prompts: list[tuple[Prompt, ...]]) -> list[dict[str, float | None]]:
        """One dict per image, keyed by column name."""


# The numbers every recipe stores (scoring.score_image of the saved PNG): CLIP similarity and the
# training head's aesthetic score. Reports read them from the recipes instead of re-scoring.
TRAINING_COLUMNS = (
    Column("clip_positive", "CLIP similarity to the prompts (training CLIP)", False),
    Column("clip_negative", "CLIP similarity to the negative prompts (training CLIP)", False),
    Column("aesthetic", "improved aesthetic predictor (training head, not held out)", False),
)


class AestheticV25Evaluator:
    """Aesthetic Predictor v2.5 (SigLIP backbone): the held-out judge of the published table.

    It is AGPL-3.0, so das-ag never depends on it by default: install the `heldout` extra (or the
    `aesthetic-predictor-v2-5` package) and point two variables at local weights.
    """

    name = "aesthetic-v2.5"
    columns = (Column("aesthetic_v2_5", "Aesthetic Predictor v2.5, SigLIP (held out)", True, "aesthetic v2.5"),)

    def __init__(self, device: str = "cpu"):
        try:
            from aesthetic_predictor_v2_5 import convert_v2_5_from_siglip
        except ImportError:
            raise EvaluatorUnavailable(
                "the held-out evaluator aesthetic-v2.5 is not installed; it is AGPL-3.0 and opt-in: "
                "`uv sync --extra heldout` (or `uv pip install aesthetic-predictor-v2-5`), then set "
                f"{ENV_V25_PREDICTOR} and {ENV_V25_ENCODER}"
            ) from None
        predictor, encoder = os.environ.get(ENV_V25_PREDICTOR), os.environ.get(ENV_V25_ENCODER)
        if not (predictor and os.path.isfile(predictor) and encoder and os.path.isdir(encoder)):
            raise EvaluatorUnavailable(
                f"aesthetic-v2.5 needs local weights: set {ENV_V25_PREDICTOR} to its .pth file and "
                f"{ENV_V25_ENCODER} to a local SigLIP so400m-patch14-384 folder"
            )
        try:
            model, self.processor = convert_v2_5_from_siglip(
                predictor_name_or_path=predictor, encoder_model_name=encoder, local_files_only=True
            )
        except Exception as exc:
            raise EvaluatorUnavailable(f"aesthetic-v2.5 could not load its weights ({first_line(exc)})") from None
        self.model = model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def score(self, images, prompts):
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        logits = self.model(pixels.to(self.device)).logits.squeeze(-1).float().cpu()
        return [{"aesthetic_v2_5": float(v)} for v in logits.reshape(-1)]


OPTIONAL_EVALUATORS = {AestheticV25Evaluator.name: AestheticV25Evaluator}


def optional_evaluator(name: str, device: str = "cpu") -> Evaluator:
    if name not in OPTIONAL_EVALUATORS:
        raise EvaluatorUnavailable(f"unknown evaluator {name!r}; available: {', '.join(OPTIONAL_EVALUATORS)}")
    return OPTIONAL_EVALUATORS[name](device=device)
