"""The seam of a tile: how much the picture jumps where one copy meets the next.

A measure, not a pull (its loss is 0): the difference between the first and last columns (and
rows), over the mean difference between neighbouring columns (and rows) inside the picture. A
seamless tile scores about 1, as its seam is like any other line of it; a picture that does not
wrap scores well above 1 where its opposite edges differ. Active in every `--tile` run, so the
scores and the live curves show it.
"""

from __future__ import annotations

import torch

from .base import Term, TermInputs


def seam(picture: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> the mean jump across the wrap over the mean jump between neighbours inside."""
    across = torch.cat([(picture[..., :, 0] - picture[..., :, -1]).abs().flatten(),
                        (picture[..., 0, :] - picture[..., -1, :]).abs().flatten()]).mean()
    inside = torch.cat([(picture[..., :, 1:] - picture[..., :, :-1]).abs().flatten(),
                        (picture[..., 1:, :] - picture[..., :-1, :]).abs().flatten()]).mean()
    return across / inside.clamp(min=1e-6)


class SeamTerm(Term):
    name = "seam"
    title = "Seamless tile"
    chart_title = "the jump across the tile's edges over the jumps inside (1: no seam)"
    labels = {"seam": "seam"}
    score_labels = {"seam": "seam"}
    score_descriptions = {"seam": "the jump across the tile's edges over those inside (about 1: seamless)"}

    @classmethod
    def active(cls, config):
        return bool(config.tile)

    def loss(self, inputs: TermInputs):
        return inputs.picture.new_zeros(()), {"seam": seam(inputs.picture.float())}

    def picture_scores(self, picture):
        return {"seam": float(seam(picture))}
