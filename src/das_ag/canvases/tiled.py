"""A seamless tile: the canvas wraps around, so copies of the picture laid side by side meet
without a seam.

The canvas inside renders the picture alone, periodic by construction (the pyramid upsamples its
levels as periodic signals; strokes that leave one side enter the other). This wrapper turns the
picture around by a random offset each step (a circular jitter over the whole tile, seeded) and
adds the jitter margin by wrapping it around: without the turn, the views, which are centred,
would meet the picture's edges only at their own edges, where CLIP looks least, and the seam
would stay the worst line of the picture. With it, the seam lies anywhere in a view, as any
other line of the tiled picture does.
"""

from __future__ import annotations

import torch

from .base import Canvas, Wrapper


class TiledCanvas(Wrapper):
    def __init__(self, inner: Canvas, margin: int, seed: int):
        super().__init__(inner)
        if inner.shape != inner.visible:
            raise ValueError("a tile's canvas is its picture: no margin of its own")
        if margin > min(inner.visible):
            raise ValueError(f"a {margin} px margin is wider than the {inner.visible} px tile")
        self.margin = margin
        height, width = inner.visible
        self.size = height + 2 * margin if height == width else (height + 2 * margin, width + 2 * margin)
        # Its own generator: the turns leave the run's augmentation draws as they were.
        self.generator = torch.Generator().manual_seed(seed)
        self._turn(0, 0)

    def _turn(self, dy: int, dx: int) -> None:
        """Index tensors for a turn by (dy, dx): where the canvas's rows and columns come from in
        the tile, and where the tile's own rows and columns lie in the canvas (for `crop`). New
        tensors each step, so a compiled step takes them as inputs rather than constants."""
        (height, width), m = self.inner.visible, self.margin
        device = next(self.inner.parameters()).device
        self.rows = (torch.arange(height + 2 * m, device=device) - m + dy) % height
        self.cols = (torch.arange(width + 2 * m, device=device) - m + dx) % width
        self.back_rows = (torch.arange(height, device=device) - dy) % height + m
        self.back_cols = (torch.arange(width, device=device) - dx) % width + m

    def at_step(self, step: int, steps: int) -> None:
        super().at_step(step, steps)
        height, width = self.inner.visible
        self._turn(int(torch.randint(height, (), generator=self.generator)),
                   int(torch.randint(width, (), generator=self.generator)))

    def forward(self) -> torch.Tensor:
        """The tile turned by this step's offset and wrapped around by the margin, in one gather."""
        return self.inner()[..., self.rows[:, None], self.cols[None, :]]

    def crop(self, canvas: torch.Tensor) -> torch.Tensor:
        """The tile as it is, unturned: what terms about the picture (its symmetry, its seam) read."""
        return canvas[..., self.back_rows[:, None], self.back_cols[None, :]]

    @torch.no_grad()
    def image(self):
        return self.inner.image()  # the tile itself, unturned (a stroke drawing at its final softness)
