"""The camera's move from one frame of an animation to the next: zoom, pan and turn.

A move is applied to the last frame's picture (and a stroke drawing's strokes) to give the next
frame's start. Pictures are resampled bilinearly in float64 on the CPU, past the edges mirrored,
so the same frame gives the same start on every machine. Directions are the camera's: a zoom
above 1 moves in (the picture grows), a pan to the right slides the picture left, a clockwise
turn turns it anticlockwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class Move:
    zoom: float = 1.0  # > 1: in
    pan_x: float = 0.0  # px, right
    pan_y: float = 0.0  # px, down
    turn: float = 0.0  # degrees, clockwise

    def matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where a point of the last frame lies in the next, about the picture's centre:
        next = A @ last + b, in pixels (x right, y down)."""
        angle = math.radians(-self.turn)  # the picture turns against the camera
        c, s = math.cos(angle), math.sin(angle)
        # With y down, [[c, -s], [s, c]] turns clockwise on screen for a positive angle.
        a = self.zoom * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        return a, torch.tensor([-self.pan_x, -self.pan_y], dtype=torch.float64)


def warp_picture(picture: Image.Image, move: Move) -> Image.Image:
    """The picture as the moved camera sees it: same size, 8-bit, edges mirrored."""
    from .canvases.base import from_pil, to_pil

    width, height = picture.size
    a, b = move.matrix()
    # grid_sample asks, for every output pixel, where to read: last = A^-1 (next - b). In its
    # normalised coordinates (pixel centres, -1..1 per axis) that is D^-1 A^-1 D and -D^-1 A^-1 b.
    d = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    inverse = torch.linalg.inv(a)
    theta = torch.cat([torch.linalg.inv(d) @ inverse @ d, (-torch.linalg.inv(d) @ inverse @ b)[:, None]], dim=1)
    grid = F.affine_grid(theta[None], [1, 3, height, width], align_corners=False)
    pixels = from_pil(picture).double()
    warped = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return to_pil(warped)


def warp_points(points: torch.Tensor, move: Move, width: float, height: float) -> torch.Tensor:
    """Points (..., 2) as (x, y) pixels of a `width` x `height` picture, moved with the camera."""
    a, b = move.matrix()
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    moved = (points.double() - centre) @ a.t() + b + centre
    return moved.to(points.dtype)
