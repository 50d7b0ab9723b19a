"""Colourfulness, signed: Hasler and Süsstrunk's measure of how colourful a picture looks.

    rg = R - G,  yb = (R + G) / 2 - B,  M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)

on [0, 1] values (the paper's 0-255 scale divided by 255). A positive weight makes the picture
more colourful, a negative one more muted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schedules import is_finite_number
from ..settings import PartSettings, setting
from .base import Term, TermInputs


def colourfulness(picture: torch.Tensor) -> torch.Tensor:
    r, g, b = picture[..., 0, :, :], picture[..., 1, :, :], picture[..., 2, :, :]
    rg, yb = r - g, (r + g) / 2 - b
    spread = (rg.var() + yb.var() + 1e-12).sqrt()
    mean = (rg.mean() ** 2 + yb.mean() ** 2 + 1e-12).sqrt()
    return spread + 0.3 * mean


@dataclass(frozen=True)
class ColourfulnessSettings(PartSettings):
    weight: float = setting(0.0, group="appearance", minimum=-100.0, maximum=100.0, step=0.1,
                            help="more colourful (> 0) or more muted (< 0); 0: off")

    def problems(self) -> list[str]:
        return [] if is_finite_number(self.weight) else [f"the colourfulness weight must be a finite number, not {self.weight!r}"]


class ColourfulnessTerm(Term):
    name = "colourfulness"
    title = "Colourfulness (more or less)"
    labels = {"colourfulness": "colour"}
    Settings = ColourfulnessSettings

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight != 0

    def __init__(self, config, models):
        super().__init__(config, models)
        self.weight = self.number(self.settings.weight)

    def loss(self, inputs: TermInputs):
        value = colourfulness(inputs.picture)
        return -self.weight * value, {"colourfulness": value}
