"""A colour palette: each pixel is pulled towards the nearest of the palette's colours."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..colours import parse_palette
from ..errors import ConfigError
from ..settings import PartSettings, setting
from .base import Term, TermInputs


def palette_distance(picture: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the distance from each pixel's colour to the nearest palette colour."""
    pixels = picture.reshape(3, -1).t()  # (pixels, 3)
    # Differences, not cdist's default |x|^2 + |y|^2 - 2xy: that cancels to a rounding error for
    # a pixel on the palette, and its square root (2e-4 on one CPU, 0 on another) then takes a
    # steep gradient where the pixel should feel none. A palette has a handful of colours.
    return torch.cdist(pixels, palette, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1).mean()


@dataclass(frozen=True)
class PaletteSettings(PartSettings):
    weight: float = setting(0.0, group="appearance", minimum=0.0, maximum=100.0, step=0.1,
                            help="pull every pixel towards the palette's nearest colour (0: off)")
    colours: str = setting("#1d3557,#457b9d,#a8dadc,#f1faee,#e63946", group="appearance", metavar="#RRGGBB,...",
                           help="the palette: hex colours separated by commas")

    def problems(self) -> list[str]:
        try:
            parse_palette(self.colours)
        except ConfigError as exc:
            return [f"palette term: {exc}"]
        return []


class PaletteTerm(Term):
    name = "palette"
    title = "Colour palette"
    labels = {"distance": "to palette"}
    Settings = PaletteSettings

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight > 0

    def __init__(self, config, models):
        super().__init__(config, models)
        self.palette = torch.tensor(parse_palette(self.settings.colours), device=models.device)
        self.weight = self.number(self.settings.weight)

    def loss(self, inputs: TermInputs):
        value = palette_distance(inputs.picture, self.palette.to(inputs.picture.dtype))
        return self.weight * value, {"distance": value}
