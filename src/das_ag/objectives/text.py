"""The text term: CLIP similarity to signed prompts.

A positive weight attracts the image towards its prompt and a negative one repels it. The term
averages weight x similarity within the attracting and within the repelling prompts, so equal
weights give DAS-AG's mean(positive) - mean(negative), and "+1 main, -0.3 negative" gives the
original DAS objective.
"""

from __future__ import annotations

import torch

from ..scoring import encode_text_prompts
from .base import Term, TermInputs


def prompt_similarities(embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every prompt with the batch, averaged over the batch: (prompts,)."""
    return (embeddings @ text_features.t()).mean(dim=0)


def text_score(similarities: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean(w * sim) over attracting prompts + mean(w * sim) over repelling ones (w < 0 there)."""
    weighted = weights * similarities
    positive = weights > 0
    score = weighted[positive].mean()
    if (~positive).any():
        score = score + weighted[~positive].mean()
    return score


def text_loss(similarities: torch.Tensor, weights: torch.Tensor, clip_weight: float) -> torch.Tensor:
    return -clip_weight * text_score(similarities, weights)


class TextTerm(Term):
    name = "text"
    labels = {"clip_positive": "clip+", "clip_negative": "clip-"}

    @classmethod
    def active(cls, config):
        return bool(config.positive_prompts)  # none: pure aesthetic guidance (clip weight 0)

    def __init__(self, config, models):
        super().__init__(config, models)
        self.text_features, warnings = encode_text_prompts(models, config.prompts)
        self.warnings = tuple(warnings)
        self.weights = torch.tensor([p.weight for p in config.prompts], device=models.device)
        self.positive = self.weights > 0
        self.has_negative = bool((~self.positive).any())

    def loss(self, inputs: TermInputs):
        sims = prompt_similarities(inputs.embeddings, self.text_features)
        metrics = {"clip_positive": sims[self.positive].mean()}
        if self.has_negative:
            metrics["clip_negative"] = sims[~self.positive].mean()
        return text_loss(sims, self.weights, self.config.clip_weight), metrics

    def final_scores(self, embedding, views=None):
        sims = (embedding @ self.text_features.t())[0].tolist()
        prompts = [{"text": p.text, "weight": p.weight, "similarity": s} for p, s in zip(self.config.prompts, sims)]
        pos = [s for p, s in zip(self.config.prompts, sims) if p.weight > 0]
        neg = [s for p, s in zip(self.config.prompts, sims) if p.weight < 0]
        scores = {
            "clip_positive": sum(pos) / len(pos),
            "clip_negative": sum(neg) / len(neg) if neg else None,
            "prompts": prompts,
        }
        if len(self.models.guides) > 1:  # an ensemble: each encoder's own similarity too
            texts = dict(self.models.parts(self.text_features))
            for name, part in self.models.parts(embedding):
                scores[f"clip_positive@{name}"] = float((part @ texts[name][self.positive].t())[0].mean())
        return scores
