"""Symmetry: the mean difference between the picture and its mirror images or rotations.

One term, several kinds (disco-diffusion's users asked for each): left-right (a vertical mirror
axis, the kind das-ag always had), top-bottom, both axes, diagonal (the picture equals its
transpose; square pictures only) and radial N-fold (the picture equals itself turned by 360/N
degrees, inside the largest centred circle).

Measured on the visible picture, not on the augmented views: a jittered window is shifted, and a
shifted symmetric picture is not symmetric about the window's middle.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..settings import PartSettings, setting, whole_number_in
from .base import Term, TermInputs

KINDS = ("left-right", "top-bottom", "both", "diagonal", "radial")
MAX_FOLDS = 64


def asymmetry(picture: torch.Tensor, kind: str = "left-right", folds: int = 6) -> torch.Tensor:
    """Mean absolute difference of a picture (..., H, W) and its `kind` of mirror image or
    rotation (0: symmetric). Every kind is a fixed linear map of the pixels, so its gradient is
    exact and deterministic."""
    if kind == "left-right":
        return (picture - picture.flip(-1)).abs().mean()
    if kind == "top-bottom":
        return (picture - picture.flip(-2)).abs().mean()
    if kind == "both":
        return (asymmetry(picture, "left-right") + asymmetry(picture, "top-bottom")) / 2
    if kind == "diagonal":
        return (picture - picture.transpose(-1, -2)).abs().mean()
    if kind == "radial":
        index, weight, inside = rotation(tuple(picture.shape[-2:]), folds, str(picture.device))
        flat = picture.flatten(-2)
        turned = (flat[..., index] * weight.to(picture.dtype)).sum(-2)  # (..., 4, HW) taps -> (..., HW)
        return ((flat - turned).abs() * inside).sum(-1).mean() / inside.sum()
    raise ValueError(f"unknown symmetry kind {kind!r}")


@functools.lru_cache(maxsize=16)
def rotation(shape: tuple[int, int], folds: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A turn by 360/folds degrees about the picture's centre as bilinear taps: for every pixel
    the flat indices of the 4 pixels it is read from (4, H*W), their weights (4, H*W), and which
    pixels lie in the largest centred circle, where a turned picture is defined (H*W,)."""
    height, width = shape
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    cy, cx = (height - 1) / 2, (width - 1) / 2
    angle = 2 * math.pi / folds
    dy, dx = y - cy, x - cx
    sy = cy + math.cos(angle) * dy - math.sin(angle) * dx  # where each pixel's turned value comes from
    sx = cx + math.sin(angle) * dy + math.cos(angle) * dx
    radius = (min(height, width) - 1) / 2
    inside = (dy.square() + dx.square() <= radius ** 2).flatten()
    y0, x0 = sy.floor().clamp(0, height - 2), sx.floor().clamp(0, width - 2)
    fy, fx = (sy - y0).clamp(0, 1), (sx - x0).clamp(0, 1)
    taps = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx), (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]
    index = torch.stack([(ty * width + tx).long().flatten() for ty, tx, _ in taps])
    weight = torch.stack([w.flatten() for _, _, w in taps]).float()
    return index.to(device), weight.to(device), inside.float().to(device)


@dataclass(frozen=True)
class SymmetrySettings(PartSettings):
    weight: float = setting(0.0, group="appearance", minimum=0.0, maximum=100.0, step=0.1,
                            help="pull the picture towards symmetry (0: off); a high weight can tint it")
    kind: str = setting("left-right", group="appearance", choices=KINDS,
                        help="left-right (a vertical mirror axis), top-bottom, both axes, diagonal "
                             "(square pictures) or radial (turned by 360/folds degrees)")
    folds: int = setting(6, group="appearance", minimum=2, maximum=MAX_FOLDS, step=1,
                         help="radial symmetry's number of folds: the picture repeats this often around its centre")

    def unused(self) -> dict[str, str]:
        unread = {} if self.kind == "radial" else {"folds": "only radial symmetry has folds"}
        if self.weight == 0:
            unread.update(kind="the symmetry weight is 0", folds="the symmetry weight is 0")
        return unread

    def problems(self) -> list[str]:
        p = []
        if self.kind not in KINDS:
            p.append(f"symmetry kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        whole_number_in(p, "symmetry folds", self.folds, 2, MAX_FOLDS)
        return p


class SymmetryTerm(Term):
    name = "symmetry"
    title = "Symmetry"
    labels = {"asymmetry": "asym"}
    score_labels = {"asymmetry": "asym"}
    score_descriptions = {"asymmetry": "difference from its symmetric self (0: symmetric)"}
    Settings = SymmetrySettings

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight > 0

    @classmethod
    def problems(cls, config):
        p = super().problems(config)
        height, width = config.image_shape
        if config.term_settings(cls.name).kind == "diagonal" and height != width:
            p.append(f"diagonal symmetry needs a square picture, not {width}x{height}")
        return p

    def __init__(self, config, models):
        super().__init__(config, models)
        self.weight = self.number(self.settings.weight)
        self.kind, self.folds = self.settings.kind, self.settings.folds

    def loss(self, inputs: TermInputs):
        value = asymmetry(inputs.picture, self.kind, self.folds)
        return self.weight * value, {"asymmetry": value}

    def picture_scores(self, picture):
        return {"asymmetry": float(asymmetry(picture, self.kind, self.folds))}
