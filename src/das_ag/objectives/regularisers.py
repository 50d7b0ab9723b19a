"""Pixel regularisers on the augmented batch: total variation (smoothness) and L1 (darkness)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schedules import is_finite_number
from ..settings import PartSettings, setting
from .base import Term, TermInputs


@dataclass(frozen=True)
class TotalVariationSettings(PartSettings):
    weight: float = setting(1e-8, group="regularisers", minimum=0, maximum=10.0, flag="--tv", format="%.2e",
                            label="TV weight", help="total-variation weight")

    def problems(self) -> list[str]:
        return _weight_problems("tv weight", self.weight)


@dataclass(frozen=True)
class L1Settings(PartSettings):
    weight: float = setting(0.0, group="regularisers", minimum=0, maximum=10.0, flag="--l1", format="%.4f",
                            label="L1 weight", help="L1 weight on the augmented pixels")

    def problems(self) -> list[str]:
        return _weight_problems("l1 weight", self.weight)


def _weight_problems(name: str, weight: object) -> list[str]:
    return [] if is_finite_number(weight) and weight >= 0 else [f"{name} must be a finite number >= 0, not {weight!r}"]


def total_variation(batch: torch.Tensor) -> torch.Tensor:
    return (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean() + (batch[..., :, 1:] - batch[..., :, :-1]).abs().mean()


def l1(batch: torch.Tensor) -> torch.Tensor:
    return batch.abs().mean()


class _PixelRegulariser(Term):
    """weight x penalty(augmented views), active only with a positive weight."""

    @staticmethod
    def penalty(views: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight > 0

    def __init__(self, config, models):
        super().__init__(config, models)
        self.weight = self.number(self.settings.weight)

    def loss(self, inputs: TermInputs):
        return self.weight * self.penalty(inputs.views), {}


class TotalVariationTerm(_PixelRegulariser):
    name, penalty, Settings = "tv", staticmethod(total_variation), TotalVariationSettings
    title = "Total variation (smoothness)"


class L1Term(_PixelRegulariser):
    name, penalty, Settings = "l1", staticmethod(l1), L1Settings
    title = "L1 (darkness)"
