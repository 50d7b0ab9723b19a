"""A start picture: the canvas begins as a picture, and its strength keeps the run near it.

`--init-image photo.jpg` makes every canvas start from the picture (the pyramid holds it across
its levels, strokes are placed along its edges in its colours); `--init-strength S` adds
S x the mean squared difference between the visible image and the picture to the loss, so the
picture survives at a high strength and is free to change at 0. Style transfer ("this photo as
an oil painting") and "make this photo more (or less) beautiful" (`--clip-weight 0`) are then
one command each.

The term lives here because the picture is one setting read by two parts: the canvas that
starts from it and the loss that holds the run to it. Its checksum goes into the recipe, so a
re-run notices a picture that changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..settings import PICTURE_SUFFIXES, PartSettings, Upload, setting
from .base import Term, TermInputs

MAX_STRENGTH = 10_000.0


@dataclass(frozen=True)
class StartPictureSettings(PartSettings):
    image: str = setting("", group="start", flag="--init-image", studio=False, metavar="PICTURE",
                         upload=Upload("Start picture", "picture", PICTURE_SUFFIXES),
                         help="start from this picture (the pyramid holds it; strokes follow its edges and colours)")
    # Filled in from the file: a recipe that starts from a picture notices when it changed.
    sha256: str = setting("", group="start", flag="", studio=False, checksum_of="image",
                          help="the start picture's sha256")
    strength: float = setting(0.0, group="start", minimum=0.0, maximum=MAX_STRENGTH, step=1.0, flag="--init-strength",
                              label="Keep near the picture",
                              help="how strongly the run stays near the start picture (0: free to move away; "
                                   "without a start picture it does nothing)")

    def __post_init__(self):
        if self.image and not self.sha256:
            from ..weights import file_sha256

            object.__setattr__(self, "sha256", file_sha256(self.image) or "")

    def unused(self) -> dict[str, str]:
        return {} if self.image else {"strength": "it holds the run near a start picture, and none is given"}

    def problems(self) -> list[str]:
        from ..pictures import picture_problems

        p = []
        if not isinstance(self.strength, (int, float)) or isinstance(self.strength, bool) \
                or not math.isfinite(self.strength) or not 0 <= self.strength <= MAX_STRENGTH:
            p.append(f"init strength must be from 0 to {MAX_STRENGTH:g}, not {self.strength!r}")
        if self.image:
            p.extend(picture_problems(self.image, self.sha256, "init image"))
        return p


class StartPictureTerm(Term):
    """Holds the visible image near the start picture; measures how far it moved either way."""

    name = "init"
    title = "Start picture (init image)"
    chart_title = "mean difference from the start picture"
    labels = {"distance": "from start"}
    Settings = StartPictureSettings

    @classmethod
    def active(cls, config):
        return bool(config.term_settings(cls.name).image)

    def __init__(self, config, models):
        super().__init__(config, models)
        from ..pictures import start_picture

        self.picture = start_picture(config).to(models.device)
        self.holds = self.settings.strength != 0
        self.strength = self.number(self.settings.strength)

    def loss(self, inputs: TermInputs):
        difference = inputs.picture.float() - self.picture
        distance = difference.abs().mean()  # in [0, 1]: the share of full brightness it moved, on average
        if not self.holds:
            return torch.zeros((), device=distance.device), {"distance": distance}
        return self.strength * difference.square().mean(), {"distance": distance}
