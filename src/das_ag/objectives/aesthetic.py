"""The signed aesthetic term: LAION's improved aesthetic predictor on the CLIP embedding.

guidance reward (+1) pushes the head's score up (DAS-AG), penalty (-1) pushes it down (DAS-rAG),
off (0) leaves it out of the loss (DAS) while the score is still reported.

Two guards against what pure aesthetic ascent does to an image (the head is linear in the CLIP
embedding, so the score can be pushed far past anything natural by adversarial texture): a cap,
beyond which a higher score earns nothing (score clipping), and applying the term only every N
steps, so the other terms shape the image in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..embedding import joined
from ..errors import ConfigError
from ..methods import GUIDANCE
from ..schedules import Schedule
from ..settings import PartSettings, setting
from .base import Term, TermInputs


@dataclass(frozen=True)
class AestheticSettings(PartSettings):
    # The sign: reward (DAS-AG), penalty (DAS-rAG) or off (DAS). The studio lays it out by hand,
    # at the top of the page: it names the method.
    guidance: str = setting("reward", group="guidance", choices=tuple(GUIDANCE), flag="--guidance", studio=False,
                            help="aesthetic term: reward (DAS-AG), penalty (DAS-rAG) or off (DAS)")
    # The magnitude over the run; the sign comes from `guidance`.
    weight: Schedule = setting(Schedule("exp_decay", 0.0, 3.0, 0.06), group="guidance", flag="--aesthetic",
                               studio=False, label="Aesthetic weight", minimum=0.0, maximum=100.0,
                               help="the aesthetic weight over the run (also see --aesthetic-weight)")
    cap: float | None = setting(None, group="guidance", minimum=-100.0, maximum=100.0, label="Score cap",
                                help="reward the score only up to this value (a penalty only down to it); "
                                     "unset: no cap")
    every: int = setting(1, group="guidance", minimum=1, maximum=10_000, label="Apply every N steps",
                         help="apply the aesthetic term on every Nth step only (1: every step)")

    @property
    def sign(self) -> int:
        return GUIDANCE[self.guidance]

    def problems(self) -> list[str]:
        p = []
        if self.guidance not in GUIDANCE:
            p.append(f"guidance must be one of {', '.join(GUIDANCE)}, not {self.guidance!r}")
        if not isinstance(self.weight, Schedule):
            p.append("the aesthetic weight must be a schedule")
        elif self.weight.problems("aesthetic"):
            p.extend(self.weight.problems("aesthetic"))
        elif min(self.weight.start, self.weight.end) < 0:
            p.append("aesthetic values must be >= 0; use guidance penalty to push the score down")
        if self.cap is not None and (not isinstance(self.cap, (int, float)) or isinstance(self.cap, bool)
                                     or not math.isfinite(self.cap)):
            p.append(f"the aesthetic cap must be a finite number, not {self.cap!r}")
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            p.append(f"aesthetic every must be a whole number of steps, 1 or more, not {self.every!r}")
        return p


def capped(score: torch.Tensor, sign: int, cap: float | torch.Tensor | None) -> torch.Tensor:
    """The score as the term sees it: no higher than the cap for a reward, no lower for a penalty
    (past the cap the gradient is zero: the term stops pushing)."""
    if cap is None or sign == 0:
        return score
    return score.clamp(max=cap) if sign > 0 else score.clamp(min=cap)


def aesthetic_loss(score: torch.Tensor, sign: int, weight: float | torch.Tensor) -> torch.Tensor:
    """-sign * weight * score / 10: the score is divided by 10 as in the reference, so weights
    are comparable to theirs."""
    return -sign * weight * score / 10


class AestheticTerm(Term):
    name = "aesthetic"
    title = "Aesthetic term: score cap, every N steps"
    chart_title = "aesthetic score (training head) and its weight"
    score_labels = {"aesthetic": "aesthetic (train)"}
    labels = {"score": "aes", "weight": "aes_w"}
    score_descriptions = {"aesthetic": "aesthetic score (training head, not held out)"}
    Settings = AestheticSettings

    def __init__(self, config, models):
        super().__init__(config, models)
        self.sign = self.settings.sign
        if models.aesthetic_head is None and self.sign != 0:
            raise ConfigError(f"guidance {self.settings.guidance} needs the aesthetic head, which reads a ViT-L/14: "
                              "add --clip-model ViT-L/14:0 for the head alone, or use --guidance off")
        self.cap = None if self.settings.cap is None else self.number(self.settings.cap)

    # This step's weight, set by at_step: whether the term counts, and the weight as a tensor, so
    # that a compiled step reads a new number each step rather than being compiled for each one.
    counts, weight = False, None

    def at_step(self, step, steps):
        weight = self.settings.weight.at(step, steps)
        if step % self.settings.every:
            weight = 0.0  # not this step's turn
        self.counts = weight != 0 and self.sign != 0
        self.weight = torch.full((), weight, device=self.models.device)
        # The weight applied, which charts show: guidance off applies none, whatever its schedule.
        return {"weight": weight if self.sign != 0 else 0.0}

    def loss(self, inputs: TermInputs):
        if self.models.aesthetic_head is None or (self.models.head_is_separate and not self.counts):
            # No head, or one whose encoder runs only for it: not measured this step.
            return inputs.embeddings.new_zeros(()), {}
        embedding = self.models.head_embedding(inputs.embeddings, inputs.views, **inputs.encode)
        score = self.models.aesthetic_score(embedding).mean()
        metrics = {"score": score}
        if torch.compiler.is_compiling() and self.sign != 0:
            # One graph for every step: a Python test of `counts` would compile the step again
            # the first time it flips (step 1 of a schedule that starts at 0, as the paper's
            # does), about 40 s for ViT-L/14 on an H200. A weight of 0 keeps the term out of
            # the loss; unlike the eager branch below, a non-finite score then makes the step
            # non-finite, and the engine undoes it as it undoes any other.
            return aesthetic_loss(capped(score, self.sign, self.cap), self.sign, self.weight), metrics
        if not self.counts:
            # Out of the loss, even for a score that is not finite (0 x inf would be NaN).
            return score.new_zeros(()), metrics
        return aesthetic_loss(capped(score, self.sign, self.cap), self.sign, self.weight), metrics

    def final_scores(self, embedding, views=None):
        if self.models.aesthetic_head is None:
            return {}
        head = joined(self.models.head_embedding(embedding, views))  # views of a wide image: their mean
        return {"aesthetic": float(self.models.aesthetic_score(head)[0])}

    @classmethod
    def progress(cls, metrics):
        return f"aes={metrics['score']:.2f}" if "score" in metrics else ""
