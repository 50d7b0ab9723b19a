"""Random views of the canvas for one step: jitter, colour shift, noise, crop, resize, normalise.

Views are the whole picture shifted by the jitter, or, with a view shape (ViewShape), random
crops of other sizes, stretched, turned and mirrored, sampled through one affine grid per view
(a crop of the whole picture with no stretch, turn or flip samples exactly the shifted window).

Every draw comes from the run's seeded generator, so a run is a function of its config. `draw`
makes a step's random numbers (eager, before the step's forward) and `apply` makes the views from
them, a pure function of the canvas that a compiled step traces. The whole batch is made with
tensor ops (no per-copy Python loop and no host sync).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .clip_models import CLIP_MEAN, CLIP_STD
from .models import per_channel
from .resample import resize


@dataclass(frozen=True)
class AugmentStrength:
    """This step's augmentation strengths, read off the schedules."""

    jitter: int  # largest shift in pixels
    colour_shift: float  # colour affine range, CLIP-normalised units
    noise: float  # Gaussian noise sigma, CLIP-normalised units


@dataclass(frozen=True)
class ViewShape:
    """How views may differ from the whole picture: the config's crop_min, crop_aspect,
    view_turn (degrees), view_flip and whole_views."""

    crop_min: float = 1.0
    crop_aspect: float = 1.0
    turn: float = 0.0
    flip: bool = False
    whole: int = 0  # the first `whole` views are the picture's whole short side, never turned or flipped

    @property
    def varies(self) -> bool:
        """Whether views differ from the whole picture at all (else they are the shifted windows)."""
        return replace(self, whole=0) != ViewShape()


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    mean, std = (per_channel(v, pixels.device, pixels.dtype) for v in (CLIP_MEAN, CLIP_STD))
    return (pixels - mean) / std


@dataclass(frozen=True)
class AugmentDraws:
    """One step's random numbers for one image's views, drawn apart from their use.

    Drawing is eager and seeded; applying them is a pure function of the canvas, so a compiled
    step can take the numbers as inputs and still make the views an eager step makes.
    """

    shifts: torch.Tensor  # (2, copies) window shifts in px, rows then columns
    colour: torch.Tensor | None  # (2, copies, 3, 1, 1) uniform [0, 1): log-scale and offset
    noise: torch.Tensor | None  # (copies, 3, side, side) standard normal
    # This step's strengths as 0-d tensors: a compiled step compiled with CUDA graphs takes a
    # Python number as a constant, and would be compiled again for each step's value.
    colour_range: torch.Tensor | None = None
    noise_sigma: torch.Tensor | None = None
    # (copies, 2, 3) each view's affine map from its own coordinates to the canvas's (both in
    # grid_sample's [-1, 1]); None: the views are the shifted windows.
    crops: torch.Tensor | None = None


def draw(
    canvas_shape: tuple[int, int],
    copies: int,
    resolution: int | tuple[int, int],
    strength: AugmentStrength,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    shape: ViewShape | None = None,
) -> AugmentDraws:
    """This step's draws for `copies` views of a canvas of `canvas_shape` (height, width), in the
    order they have always been drawn from `generator`: shifts, colour, noise, and then, when
    `shape` lets views vary, their crops."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    top, left = ((c - v) // 2 for c, v in zip(canvas_shape, (height, width)))
    max_shift = strength.jitter
    if max_shift > min(top, left):
        raise ValueError(f"a shift of {max_shift} px leaves the {tuple(canvas_shape)} px canvas")
    shifts = torch.randint(-max_shift, max_shift + 1, (2, copies), generator=generator, device=device)
    colour = noise = colour_range = noise_sigma = None
    if strength.colour_shift > 0:
        colour = torch.rand(2, copies, 3, 1, 1, generator=generator, device=device, dtype=dtype)
        colour_range = torch.full((), strength.colour_shift, device=device, dtype=dtype)
    if strength.noise > 0:
        side = min(height, width)
        noise = torch.randn((copies, 3, side, side), generator=generator, device=device, dtype=dtype)
        noise_sigma = torch.full((), strength.noise, device=device, dtype=dtype)
    crops = None
    if shape is not None and shape.varies:
        crops = crop_maps(canvas_shape, (height, width), shifts, shape, generator, device)
    return AugmentDraws(shifts, colour, noise, colour_range, noise_sigma, crops)


def crop_maps(canvas_shape: tuple[int, int], picture: tuple[int, int], shifts: torch.Tensor, shape: ViewShape,
              generator: torch.Generator, device) -> torch.Tensor:
    """Each view's affine map (copies, 2, 3), drawn from `generator`: a crop whose area is uniform
    between crop_min² and the whole short-side square, stretched by up to crop_aspect, turned by
    up to `turn` degrees either way, mirrored half the time when `flip`, placed anywhere in the
    picture, then shifted by the jitter; the first `whole` views are the whole short side, unturned
    and unmirrored, placed and shifted alike (the same draws are made, so the other views are
    those of a run without them). Built in float64 and returned as float32: the maps are
    small, and a whole-picture crop must land on pixel centres exactly."""
    copies = shifts.shape[1]
    u = torch.rand(6, copies, generator=generator, device=device, dtype=torch.float64)
    height, width = picture
    canvas_h, canvas_w = canvas_shape
    side = min(height, width)
    scale = (shape.crop_min ** 2 + u[0] * (1 - shape.crop_min ** 2)).sqrt() * side
    stretch = ((2 * u[1] - 1) * math.log(shape.crop_aspect)).exp().sqrt()
    angle = (2 * u[2] - 1) * math.radians(shape.turn)
    mirror = torch.where(u[3] < 0.5, -1.0, 1.0).to(u) if shape.flip else torch.ones_like(u[3])
    whole = min(shape.whole, copies)  # the whole short side, unstretched, unturned, unmirrored
    scale[:whole], stretch[:whole], angle[:whole], mirror[:whole] = side, 1.0, 0.0, 1.0
    w, h = scale * stretch, scale / stretch
    top, left = ((c - v) // 2 for c, v in zip(canvas_shape, picture))
    # Anywhere the crop fits in the picture (centred where it does not), then the jitter's shift.
    cx = left + w / 2 + u[4] * (width - w).clamp(min=0) - shifts[1].to(u)
    cy = top + h / 2 + u[5] * (height - h).clamp(min=0) - shifts[0].to(u)
    cos, sin = angle.cos(), angle.sin()
    maps = torch.stack([
        torch.stack([w * mirror * cos / canvas_w, -h * sin / canvas_w, 2 * cx / canvas_w - 1], -1),
        torch.stack([w * mirror * sin / canvas_h, h * cos / canvas_h, 2 * cy / canvas_h - 1], -1),
    ], 1)
    return maps.float()


def jittered_windows(canvas: torch.Tensor, resolution: int | tuple[int, int], shifts: torch.Tensor) -> torch.Tensor:
    """Square windows of the visible part's short side, one per column of `shifts` (2, copies).

    For a square image every window is centred, then shifted, which equals the references'
    circular roll by (dy, dx) followed by cropping the margin: the margin is at least the largest
    shift, so wrapped pixels never reach the window. For an image of another shape (`resolution`
    = (height, width)) the windows are spread evenly along the long side, first to last edge, so
    together the copies cover the whole picture.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    side, copies = min(height, width), shifts.shape[1]
    top, left = ((c - v) // 2 for c, v in zip(canvas.shape[-2:], (height, width)))
    device = canvas.device
    span = torch.arange(side, device=device)
    rows = (top + spread(height - side, copies, device) - shifts[0]).unsqueeze(1) + span  # (copies, side)
    cols = (left + spread(width - side, copies, device) - shifts[1]).unsqueeze(1) + span
    views = canvas[0][:, rows[:, :, None], cols[:, None, :]]  # (3, copies, side, side)
    return views.transpose(0, 1)


def sampled_views(canvas: torch.Tensor, resolution: int | tuple[int, int], maps: torch.Tensor) -> torch.Tensor:
    """Views of the short side's size sampled (bilinearly) through each view's affine map; a view
    reaching past the canvas sees it mirrored."""
    import torch.nn.functional as F

    side = min((resolution, resolution) if isinstance(resolution, int) else resolution)
    copies = maps.shape[0]
    grid = F.affine_grid(maps.to(canvas.dtype), [copies, canvas.shape[1], side, side], align_corners=False)
    return F.grid_sample(canvas.expand(copies, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def spread(room: int, copies: int, device) -> torch.Tensor | int:
    """Offsets of `copies` windows spread evenly over `room` px (0 when there is none)."""
    if room == 0:
        return 0
    if copies == 1:
        return room // 2
    return torch.linspace(0, room, copies, device=device).round().long()


def apply(canvas: torch.Tensor, draws: AugmentDraws, *, resolution: int | tuple[int, int],
          out_size: int = 224) -> torch.Tensor:
    """A CLIP-normalised batch (copies, 3, out_size, out_size) of `canvas`'s views made with `draws`."""
    if draws.crops is None:
        views = jittered_windows(canvas, resolution, draws.shifts)
    else:
        views = sampled_views(canvas, resolution, draws.crops)
    views = normalize(views)
    if draws.colour is not None:
        # Per-copy, per-channel affine: x * exp(u1) + u2 with u1, u2 ~ U[-c, c].
        u = (draws.colour * 2 - 1) * draws.colour_range
        views = views * u[0].exp() + u[1]
    if draws.noise is not None:
        views = views + draws.noise_sigma * draws.noise
    return resize(views, out_size, "bilinear", antialias=True)
