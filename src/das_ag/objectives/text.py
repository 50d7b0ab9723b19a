"""The text term: CLIP similarity to signed prompts.

A positive weight attracts the image towards its prompt and a negative one repels it. The term
averages weight x similarity within the attracting and within the repelling prompts, so equal
weights give DAS-AG's mean(positive) - mean(negative), and "+1 main, -0.3 negative" gives the
original DAS objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..embedding import encode_text_prompts
from ..schedules import is_finite_number
from ..settings import PartSettings, setting
from .base import Term, TermInputs


@dataclass(frozen=True)
class TextSettings(PartSettings):
    # The studio lays it out by hand, beside the aesthetic guidance.
    weight: float = setting(5.0, group="guidance", minimum=0, flag="--clip-weight", studio=False, label="CLIP weight",
                            help="weight of the text term (0 turns it off)")

    def problems(self) -> list[str]:
        if not is_finite_number(self.weight) or self.weight < 0:
            return [f"clip weight must be a finite number >= 0, not {self.weight!r}"]
        return []


def prompt_similarities(embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every prompt with the batch, averaged over the batch: (prompts,)."""
    return (embeddings @ text_features.t()).mean(dim=0)


class SignedWeights:
    """Prompt weights with their attracting (w > 0) and repelling sides found once, on the host.

    A step then picks each side by fixed indices: a boolean mask would give its selection a shape
    that depends on the data, which a compiled step cannot take without breaking its graph.
    """

    def __init__(self, weights, device=None, repels=None):
        """`repels`: which weights repel, where a weight alone does not say (a timeline's weight
        at 0 still belongs to its side); by default those not above 0."""
        weights = [float(w) for w in weights]
        repels = [not w > 0 for w in weights] if repels is None else list(repels)
        self.weights = torch.tensor(weights, device=device)
        self.attract = _indices([i for i, r in enumerate(repels) if not r], device)
        self.repel = _indices([i for i, r in enumerate(repels) if r], device)

    def score(self, similarities: torch.Tensor) -> torch.Tensor:
        """mean(w * sim) over attracting prompts + mean(w * sim) over repelling ones (w < 0 there);
        with none attracting, mean(w * sim) over all."""
        weighted = self.weights * similarities
        if self.attract is None:
            return weighted.mean()
        score = weighted[self.attract].mean()
        if self.repel is not None:
            score = score + weighted[self.repel].mean()
        return score

    def attracting(self, similarities: torch.Tensor) -> torch.Tensor | None:
        """The mean similarity to the attracting prompts (None with none)."""
        return None if self.attract is None else similarities[..., self.attract].mean(dim=-1)

    def repelling(self, similarities: torch.Tensor) -> torch.Tensor | None:
        return None if self.repel is None else similarities[..., self.repel].mean(dim=-1)


def _indices(indices: list[int], device) -> torch.Tensor | None:
    return torch.tensor(indices, dtype=torch.long, device=device) if indices else None


class TextTerm(Term):
    name = "text"
    title = "Text prompts"
    chart_title = "CLIP similarity (positive / negative prompts)"
    score_labels = {"clip_positive": "CLIP +", "clip_negative": "CLIP -"}
    labels = {"clip_positive": "clip+", "clip_negative": "clip-"}
    score_descriptions = {"clip_positive": "CLIP similarity to the prompts", "clip_negative": "to the negative prompts"}
    Settings = TextSettings

    @classmethod
    def active(cls, config):
        return bool(config.positive_prompts)  # none: pure aesthetic guidance (clip weight 0)

    def __init__(self, config, models):
        super().__init__(config, models)
        self.text_features, warnings = encode_text_prompts(models, config.prompts)
        self.warnings = tuple(warnings)
        self.prompts = config.prompts
        self.timeline = any(p.scheduled for p in self.prompts)
        self.signed = SignedWeights([p.weight_at(0, config.steps) for p in self.prompts], models.device,
                                    repels=[p.is_negative for p in self.prompts])
        self.clip_weight = self.number(self.settings.weight)

    def at_step(self, step, steps):
        if self.timeline:
            # A new tensor each step, as the aesthetic term's weight: a compiled step reads it as
            # an input rather than being compiled again for each step's numbers.
            self.signed.weights = torch.tensor([p.weight_at(step, steps) for p in self.prompts], device=self.models.device)
        return {}

    def loss(self, inputs: TermInputs):
        sims = prompt_similarities(inputs.embeddings, self.text_features)
        metrics = {"clip_positive": self.signed.attracting(sims)}
        if self.signed.repel is not None:
            metrics["clip_negative"] = self.signed.repelling(sims)
        return -self.clip_weight * self.signed.score(sims), metrics

    def final_scores(self, embedding, views=None):
        sims = (embedding @ self.text_features.t())[0].tolist()
        last = self.config.steps - 1  # a timeline's weight as the run ended
        prompts = [{"text": p.text, "weight": p.weight_at(last, self.config.steps), "similarity": s}
                   for p, s in zip(self.prompts, sims)]
        pos = [s for p, s in zip(self.prompts, sims) if not p.is_negative]
        neg = [s for p, s in zip(self.prompts, sims) if p.is_negative]
        scores = {
            "clip_positive": sum(pos) / len(pos),
            "clip_negative": sum(neg) / len(neg) if neg else None,
            "prompts": prompts,
        }
        if len(self.models.guides) > 1:  # an ensemble: each encoder's own similarity too
            texts = dict(self.models.parts(self.text_features))
            for name, part in self.models.parts(embedding):
                scores[f"clip_positive@{name}"] = float(self.signed.attracting(part @ texts[name].t())[0])
        return scores
