"""The terms of the loss. Each reads the one embedding batch (or the one augmented batch) of a step.

Losses are minimised, so an attracting term enters with a minus sign.
"""

from __future__ import annotations

import torch


def prompt_similarities(embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every prompt with the batch, averaged over the batch: (prompts,)."""
    return (embeddings @ text_features.t()).mean(dim=0)


def text_score(similarities: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean(w * sim) over attracting prompts + mean(w * sim) over repelling ones (w < 0 there).

    With unit weights this is DAS-AG's mean(positive) - mean(negative); with "+1 main, -0.3 neg"
    it is the original DAS objective.
    """
    weighted = weights * similarities
    positive = weights > 0
    score = weighted[positive].mean()
    if (~positive).any():
        score = score + weighted[~positive].mean()
    return score


def text_loss(similarities: torch.Tensor, weights: torch.Tensor, clip_weight: float) -> torch.Tensor:
    return -clip_weight * text_score(similarities, weights)


def aesthetic_loss(score: torch.Tensor, sign: int, weight: float) -> torch.Tensor:
    """The signed aesthetic term: sign +1 rewards beauty (DAS-AG), -1 penalises it (DAS-rAG).

    The score is divided by 10 as in the reference, so weights are comparable to theirs.
    """
    return -sign * weight * score / 10


def total_variation(batch: torch.Tensor) -> torch.Tensor:
    return (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean() + (batch[..., :, 1:] - batch[..., :, :-1]).abs().mean()


def l1(batch: torch.Tensor) -> torch.Tensor:
    return batch.abs().mean()
