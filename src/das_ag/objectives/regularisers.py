"""Pixel regularisers on the augmented batch: total variation (smoothness) and L1 (darkness)."""

from __future__ import annotations

import torch

from .base import Term, TermInputs


def total_variation(batch: torch.Tensor) -> torch.Tensor:
    return (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean() + (batch[..., :, 1:] - batch[..., :, :-1]).abs().mean()


def l1(batch: torch.Tensor) -> torch.Tensor:
    return batch.abs().mean()


class TotalVariationTerm(Term):
    name = "tv"

    @classmethod
    def active(cls, config):
        return config.tv_weight > 0

    def loss(self, inputs: TermInputs):
        return self.config.tv_weight * total_variation(inputs.views), {}


class L1Term(Term):
    name = "l1"

    @classmethod
    def active(cls, config):
        return config.l1_weight > 0

    def loss(self, inputs: TermInputs):
        return self.config.l1_weight * l1(inputs.views), {}
