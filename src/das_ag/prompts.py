"""Prompts with signed weights, their parsing, and tokenisation that never crashes on long text.

A positive weight attracts the image towards the prompt, a negative one repels it. The text term
averages weight * similarity within each group, so equal weights give DAS-AG's
mean(positive) - mean(negative), and "+1.0 main, -0.3 negative" gives the original DAS objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

CONTEXT_LENGTH = 77  # every CLIP text encoder uses 77 tokens, start and end markers included


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0

    @property
    def is_negative(self) -> bool:
        return self.weight < 0


def parse_prompt(spec: str, *, negative: bool = False) -> Prompt:
    """Parse "TEXT" or "TEXT:WEIGHT". A suffix that is not a number stays part of the text.

    `negative` marks a prompt given as a negative one: its weight is the repelling strength, so
    "blurry:0.3" becomes weight -0.3.
    """
    text, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            pass  # "a photo: sunset" is just text with a colon in it
        else:
            text = head
    text = text.strip()
    if not text:
        raise ConfigError(f"prompt {spec!r} has no text; write the text before any ':WEIGHT'")
    if not math.isfinite(weight) or weight == 0:
        raise ConfigError(f"prompt weight in {spec!r} must be a non-zero finite number")
    if negative:
        if weight < 0:
            raise ConfigError(f"negative prompt {spec!r} takes a positive strength; the minus is implied")
        weight = -weight
    return Prompt(text, weight)


def tokenize(texts: list[str]):
    """Token ids for `texts`, truncating anything longer than CLIP's context.

    Returns (tokens, warnings): one warning per truncated prompt, so the caller can tell the user
    instead of crashing as the references do.
    """
    from .clip_package import clip_module

    clip = clip_module()  # deferred: importing clip pulls in torchvision (~10 s)

    warnings = []
    for text in texts:
        try:
            clip.tokenize([text], context_length=CONTEXT_LENGTH)
        except RuntimeError:
            warnings.append(
                f"prompt truncated to CLIP's {CONTEXT_LENGTH}-token limit: {_preview(text)!r}"
            )
    return clip.tokenize(texts, context_length=CONTEXT_LENGTH, truncate=True), warnings


def _preview(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
