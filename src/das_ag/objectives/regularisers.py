"""Pixel regularisers on the augmented batch: total variation (smoothness) and L1 (darkness)."""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import Term, TermInputs


def total_variation(batch: torch.Tensor) -> torch.Tensor:
    return (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean() + (batch[..., :, 1:] - batch[..., :, :-1]).abs().mean()


def l1(batch: torch.Tensor) -> torch.Tensor:
    return batch.abs().mean()


class _PixelRegulariser(Term):
    """weight x penalty(augmented views), active only with a positive weight."""

    weight_field: ClassVar[str]

    @staticmethod
    def penalty(views: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def active(cls, config):
        return getattr(config, cls.weight_field) > 0

    def __init__(self, config, models):
        super().__init__(config, models)
        self.weight = self.number(getattr(config, self.weight_field))

    def loss(self, inputs: TermInputs):
        return self.weight * self.penalty(inputs.views), {}


class TotalVariationTerm(_PixelRegulariser):
    name, weight_field, penalty = "tv", "tv_weight", staticmethod(total_variation)


class L1Term(_PixelRegulariser):
    name, weight_field, penalty = "l1", "l1_weight", staticmethod(l1)
