"""Left-right symmetry: the mean difference between the picture and its mirror image.

Measured on the visible picture, not on the augmented views: a jittered window is shifted, and a
shifted symmetric picture is not symmetric about the window's middle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import PartSettings, setting
from .base import Term, TermInputs


def asymmetry(picture: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of a picture (..., H, W) and its left-right mirror (0: symmetric)."""
    return (picture - picture.flip(-1)).abs().mean()


@dataclass(frozen=True)
class SymmetrySettings(PartSettings):
    weight: float = setting(0.0, group="appearance", minimum=0.0, maximum=100.0, step=0.1,
                            help="pull the picture towards left-right symmetry (0: off)")


class SymmetryTerm(Term):
    name = "symmetry"
    title = "Symmetry (left-right)"
    labels = {"asymmetry": "asym"}
    Settings = SymmetrySettings

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight > 0

    def __init__(self, config, models):
        super().__init__(config, models)
        self.weight = self.number(self.settings.weight)

    def loss(self, inputs: TermInputs):
        value = asymmetry(inputs.picture)
        return self.weight * value, {"asymmetry": value}
