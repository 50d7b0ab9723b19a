"""A start picture: the canvas begins as a picture, and its strength keeps the run near it.

`--init-image photo.jpg` makes every canvas start from the picture (the pyramid holds it across
its levels, strokes are placed along its edges in its colours); `--init-strength S` adds
S x the mean squared difference between the visible image and the picture to the loss, so the
picture survives at a high strength and is free to change at 0. Style transfer ("this photo as
an oil painting") and "make this photo more (or less) beautiful" (`--clip-weight 0`) are then
one command each.

`--mask mask.png` repaints part of the start picture and keeps the rest: the canvas shows the
picture wherever the mask is not painted (canvases/masked.py), so only the painted region can
change, with a soft edge of `--mask-edge` pixels inside it.

The term lives here because the picture is one setting read by several parts: the canvas that
starts from it, the mask that keeps it, and the loss that holds the run to it. The checksums of
the picture and the mask go into the recipe, so a re-run notices a file that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pictures import mask_problems
from ..schedules import is_finite_number
from ..settings import PICTURE_SUFFIXES, PartSettings, Upload, setting
from .base import Term, TermInputs

MAX_STRENGTH = 10_000.0
MAX_EDGE = 64


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

    mask: str = setting("", group="start", flag="--mask", studio=False, metavar="PICTURE",
                        upload=Upload("Mask (white or opaque: repaint)", "mask", PICTURE_SUFFIXES),
                        help="repaint only where this picture is painted (white, or opaque where it has "
                             "transparency) and keep the start picture elsewhere; the start picture's size")
    mask_sha256: str = setting("", group="start", flag="", studio=False, checksum_of="mask", help="the mask's sha256")
    mask_edge: int = setting(4, group="start", minimum=0, maximum=MAX_EDGE, step=1, label="Mask edge (px)",
                             help="the painted region blends into the kept picture over this many pixels")

    def __post_init__(self):
        self.fill_checksums()  # the picture's and the mask's

    def unused(self) -> dict[str, str]:
        unread = {} if self.mask else {"mask_edge": "it softens a mask's edge, and no mask is given"}
        if not self.image:
            unread["strength"] = "it holds the run near a start picture, and none is given"
        return unread

    def problems(self) -> list[str]:
        from ..pictures import picture_problems

        p = []
        if not is_finite_number(self.strength) or not 0 <= self.strength <= MAX_STRENGTH:
            p.append(f"init strength must be from 0 to {MAX_STRENGTH:g}, not {self.strength!r}")
        if self.image:
            p.extend(picture_problems(self.image, self.sha256, "init image"))
        if not isinstance(self.mask_edge, int) or isinstance(self.mask_edge, bool) or not 0 <= self.mask_edge <= MAX_EDGE:
            p.append(f"mask edge must be a whole number of pixels from 0 to {MAX_EDGE}, not {self.mask_edge!r}")
        if self.mask:
            if not self.image:
                p.append("a mask keeps part of a start picture: give one with --init-image")
            found = picture_problems(self.mask, self.mask_sha256, "mask")
            p.extend(found or ([] if p else mask_problems(self.mask, self.image)))
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
