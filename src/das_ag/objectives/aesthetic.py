"""The signed aesthetic term: LAION's improved aesthetic predictor on the CLIP embedding.

guidance reward (+1) pushes the head's score up (DAS-AG), penalty (-1) pushes it down (DAS-rAG),
off (0) leaves it out of the loss (DAS) while the score is still reported.
"""

from __future__ import annotations

import torch

from .base import Term, TermInputs


def aesthetic_loss(score: torch.Tensor, sign: int, weight: float) -> torch.Tensor:
    """-sign * weight * score / 10: the score is divided by 10 as in the reference, so weights
    are comparable to theirs."""
    return -sign * weight * score / 10


class AestheticTerm(Term):
    name = "aesthetic"
    labels = {"score": "aes", "weight": "aes_w"}

    def loss(self, inputs: TermInputs):
        cfg = self.config
        weight = cfg.aesthetic.at(inputs.step, inputs.steps)
        score = self.models.aesthetic_score(inputs.embeddings).mean()
        metrics = {"score": score, "weight": weight}  # the weight is known on the host
        if cfg.guidance_sign == 0 or weight == 0:
            # Out of the loss, even for a score that is not finite (0 x inf would be NaN).
            return score.new_zeros(()), metrics
        return aesthetic_loss(score, cfg.guidance_sign, weight), metrics

    def final_scores(self, embedding):
        return {"aesthetic": float(self.models.aesthetic_score(embedding)[0])}

    @classmethod
    def progress(cls, metrics):
        return f"aes={metrics['score']:.2f}"
