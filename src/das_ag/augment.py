"""Random views of the canvas for one step: jitter, colour shift, noise, crop, resize, normalise.

Every draw comes from the run's seeded generator, so a run is a function of its config. The whole
batch is made with tensor ops (no per-copy Python loop and no host sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import CLIP_MEAN, CLIP_STD
from .resample import resize


@dataclass(frozen=True)
class AugmentStrength:
    """This step's augmentation strengths, read off the schedules."""

    jitter: int  # largest shift in pixels
    colour: float  # colour affine range, CLIP-normalised units
    noise: float  # Gaussian noise sigma, CLIP-normalised units


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std


def jittered_windows(
    canvas: torch.Tensor, copies: int, resolution: int, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """`copies` windows of `resolution` px around the canvas centre, each shifted by up to `max_shift`.

    This equals the references' circular roll by (dy, dx) followed by cropping the margin: the
    margin is at least the largest shift, so wrapped pixels never reach the window.
    """
    size = canvas.shape[-1]
    base = (size - resolution) // 2
    if max_shift > base:
        raise ValueError(f"a shift of {max_shift} px leaves the {size} px canvas")
    device = canvas.device
    shifts = torch.randint(-max_shift, max_shift + 1, (2, copies), generator=generator, device=device)
    span = torch.arange(resolution, device=device)
    rows = (base - shifts[0]).unsqueeze(1) + span  # (copies, resolution)
    cols = (base - shifts[1]).unsqueeze(1) + span
    views = canvas[0][:, rows[:, :, None], cols[:, None, :]]  # (3, copies, R, R)
    return views.transpose(0, 1)


def augment(
    canvas: torch.Tensor,
    *,
    copies: int,
    resolution: int,
    strength: AugmentStrength,
    generator: torch.Generator,
    out_size: int = 224,
) -> torch.Tensor:
    """A CLIP-normalised batch (copies, 3, out_size, out_size) of augmented views of `canvas`."""
    views = normalize(jittered_windows(canvas, copies, resolution, strength.jitter, generator))
    device, dtype = views.device, views.dtype
    if strength.colour > 0:
        # Per-copy, per-channel affine: x * exp(u1) + u2 with u1, u2 ~ U[-c, c].
        u = (torch.rand(2, copies, 3, 1, 1, generator=generator, device=device, dtype=dtype) * 2 - 1) * strength.colour
        views = views * u[0].exp() + u[1]
    if strength.noise > 0:
        views = views + strength.noise * torch.randn(views.shape, generator=generator, device=device, dtype=dtype)
    return resize(views, out_size, "bilinear", antialias=True)
