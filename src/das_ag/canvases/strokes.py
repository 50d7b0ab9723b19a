"""The strokes canvas: a drawing of Bézier strokes, rendered differentiably, saved as an SVG.

Each stroke is an open path of `segments` joined cubics with a width, a colour and an opacity,
all learnt by Adam at the anchors' rates (CLIPDraw, CLIPasso, pixray, DiffSketcher all use points
1 px/step, width 0.1 px/step, colour 0.01/step). Stroke 0 is painted first; the SVG lists the
strokes in the same order, so an SVG viewer paints what the run optimised.

The edge softness is scheduled from soft (a wide gradient basin while strokes find their place)
to a fifth of a pixel (closest to what an anti-aliased SVG edge looks like) and held there for the last
tenth of the run, so the strokes settle at the look the SVG will have. The saved PNG is always
rendered at the final softness: it is the SVG's picture, whenever the run stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..colours import parse_hex, parse_palette
from ..errors import ConfigError, DasAgError
from ..schedules import Schedule, is_finite_number
from ..pictures import start_picture
from ..settings import PartSettings, setting, whole_number_in
from ..svg import stroke_svg
from .base import Canvas, geometry, to_pil
from .rasterise import render

MAX_STROKES, MAX_SEGMENTS = 4096, 16
MAX_WIDTH = 256.0
COLOUR_MODES = ("full", "palette", "mono")
STROKE_LAYOUTS = ("random", "clipdraw", "image")
STROKE_BETAS = (0.9, 0.999)  # Adam's defaults, as every stroke anchor uses (not the pixels' 0.5)
PALETTE_LR = 0.1  # palette choices are logits: they need larger steps than colours to switch
HOLD_FINAL_SOFTNESS = 0.1
RESEED_UNTIL = 0.8  # no re-seeding in the last fifth of a run: new strokes need time to find a place
MIN_VISIBLE_OPACITY = 0.05  # VectorFusion's threshold  # the last tenth of the run draws at the final softness
# How strongly a start picture's edges attract strokes: CLIPasso uses 0.3 on a saliency map; on
# plain edge strength that leaves a third of the strokes on flat ground, 0.15 about 2%.
EDGE_TEMPERATURE = 0.15


@dataclass(frozen=True)
class StrokeSettings(PartSettings):
    count: int = setting(64, group="strokes", minimum=1, maximum=MAX_STROKES, flag="--strokes", label="Strokes",
                         help="number of strokes")
    segments: int = setting(2, group="strokes", minimum=1, maximum=MAX_SEGMENTS, flag="--segments",
                            label="Segments per stroke", help="cubic Bézier segments per stroke")
    width: float = setting(2.0, group="strokes", minimum=0.1, maximum=MAX_WIDTH, flag="--stroke-width",
                           label="Start width (px)", help="stroke width at the start, in pixels")
    width_min: float = setting(1.0, group="strokes", minimum=0.1, maximum=MAX_WIDTH, flag="--stroke-width-min",
                               label="Thinnest (px)", help="the thinnest a stroke may become, in pixels")
    width_max: float = setting(12.0, group="strokes", minimum=0.1, maximum=MAX_WIDTH, flag="--stroke-width-max",
                               label="Widest (px)", help="the widest a stroke may become (equal to the thinnest: fixed width)")
    colour: str = setting("full", group="strokes", choices=COLOUR_MODES, flag="--stroke-colour",
                          help="full colour, a palette's colours only, or mono (black ink)")
    palette: str = setting("#1d3557,#457b9d,#a8dadc,#f1faee,#e63946", group="strokes", flag="--palette",
                           metavar="#RRGGBB,...",
                           help="the palette of --stroke-colour palette: hex colours separated by commas")
    opacity: float = setting(1.0, group="strokes", minimum=0.0, maximum=1.0, flag="--opacity", step=0.05,
                             label="Start opacity", help="stroke opacity at the start")
    learn_opacity: bool = setting(True, group="strokes", flag="--learn-opacity", label="Learn opacity",
                                  help="let the run change each stroke's opacity")
    background: str = setting("#ffffff", group="strokes", flag="--background", metavar="#RRGGBB", help="the paper's colour (hex)")
    # Was `init`, a name the start picture's term also has: `--stroke-init` and recipes' `init` still work.
    layout: str = setting("random", group="strokes", choices=STROKE_LAYOUTS, flag="--stroke-layout",
                          aliases=("--stroke-init",), was=("init",), label="Layout",
                          help="random short curves, CLIPDraw's random walks, or image: the edges and colours of "
                               "--init-image (what a start picture always gives)")
    point_lr: float = setting(1.0, group="strokes", minimum=0.0, maximum=100.0, flag="--point-lr", step=0.1,
                              label="Point rate (px/step)", help="Adam's rate for control points, in pixels per step")
    width_lr: float = setting(0.1, group="strokes", minimum=0.0, maximum=10.0, flag="--width-lr", step=0.01,
                              label="Width rate (px/step)", help="Adam's rate for widths")
    colour_lr: float = setting(0.01, group="strokes", minimum=0.0, maximum=1.0, flag="--colour-lr", step=0.001,
                               format="%.3f", label="Colour rate", help="Adam's rate for colours and opacities")
    softness: Schedule = setting(Schedule("linear", 1.0, 0.2), group="strokes", flag="--softness",
                                 label="Edge softness (px)", minimum=0.05, maximum=10.0, help="edge softness in pixels over the run (held at its end for the last tenth)")
    samples: int = setting(16, group="strokes", minimum=2, maximum=64, flag="--curve-samples", label="Curve samples",
                           help="line segments each cubic is drawn with")
    reseed_every: int = setting(100, group="strokes", minimum=0, maximum=100_000, flag="--reseed-every",
                                label="Re-seed every (steps)",
                                help="every N steps, until four fifths of the run, strokes that became invisible "
                                     "start again elsewhere; 0: never")
    # A drawing to go on from: the strokes of an SVG das-ag drew (an animation's next frame starts
    # from the last frame's strokes, moved with the camera), instead of a start of its own.
    drawing: str = setting("", group="strokes", flag="--stroke-start", metavar="DRAWING.svg", studio=False,
                           help="start from the strokes of this SVG das-ag drew (--strokes is then its count)")
    drawing_sha256: str = setting("", group="strokes", flag="", studio=False, checksum_of="drawing",
                                  help="the start drawing's sha256")

    def __post_init__(self):
        self.fill_checksums()  # the start drawing's

    @classmethod
    def files_in(cls, values: dict) -> list[str]:
        return [str(values["drawing"])] if values.get("drawing") else []

    def problems(self) -> list[str]:
        p: list[str] = []
        for words, v, lo, hi in (("the number of strokes", self.count, 1, MAX_STROKES),
                                 ("segments per stroke", self.segments, 1, MAX_SEGMENTS),
                                 ("curve samples", self.samples, 2, 64), ("re-seed every", self.reseed_every, 0, 100_000)):
            whole_number_in(p, words, v, lo, hi)
        widths = (self.width, self.width_min, self.width_max)
        if not all(is_finite_number(w) and 0.1 <= w <= MAX_WIDTH for w in widths):
            p.append(f"stroke widths must be from 0.1 to {MAX_WIDTH:g} px, not {widths!r}")
        elif not self.width_min <= self.width <= self.width_max:
            p.append(f"the start width {self.width:g} px must lie between the thinnest ({self.width_min:g}) "
                     f"and the widest ({self.width_max:g})")
        if self.colour not in COLOUR_MODES:
            p.append(f"stroke colour must be one of {', '.join(COLOUR_MODES)}, not {self.colour!r}")
        try:  # even when another colour mode leaves it unused: a typo is said, not carried in recipes
            parse_palette(self.palette)
        except ConfigError as exc:
            p.append(str(exc))
        try:
            parse_hex(self.background)
        except ConfigError as exc:
            p.append(f"background: {exc}")
        if not is_finite_number(self.opacity) or not 0 <= self.opacity <= 1:
            p.append(f"opacity must be from 0 to 1, not {self.opacity!r}")
        for name in ("point_lr", "width_lr", "colour_lr"):
            if not is_finite_number(getattr(self, name)) or getattr(self, name) < 0:
                p.append(f"{name.replace('_', ' ')} must be a finite number >= 0")
        p.extend(self.softness.problems("softness") if isinstance(self.softness, Schedule) else ["softness must be a schedule"])
        if isinstance(self.softness, Schedule) and not self.softness.problems("softness"):
            if min(self.softness.start, self.softness.end) < 0.05:
                p.append("softness must stay at 0.05 px or more (sharper edges have no gradient)")
        if self.layout not in STROKE_LAYOUTS:
            p.append(f"stroke layout must be one of {', '.join(STROKE_LAYOUTS)}, not {self.layout!r}")
        if self.drawing and not p:
            p.extend(self._drawing_problems())
        return p

    def _drawing_problems(self) -> list[str]:
        from ..svg import read_drawing
        from ..weights import file_sha256

        try:
            drawing = read_drawing(self.drawing)
        except (DasAgError, OSError, ValueError, AttributeError, TypeError) as exc:
            return [f"start drawing {self.drawing} is not an SVG das-ag drew ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]
        strokes = drawing["strokes"]
        if self.drawing_sha256 and file_sha256(self.drawing) != self.drawing_sha256:
            return [f"start drawing {self.drawing} has changed since these settings were made (its checksum differs)"]
        if len(strokes) != self.count:
            return [f"start drawing {self.drawing} has {len(strokes)} strokes, not the {self.count} of --strokes"]
        if any(len(stroke["points"]) != 3 * self.segments + 1 for stroke in strokes):
            return [f"start drawing {self.drawing}'s strokes are not of {self.segments} segments (--segments)"]
        return []

    def unused(self) -> dict[str, str]:
        """Settings that these settings' other values leave unread, with why (see Canvas.Settings)."""
        unused = {}
        if self.colour != "palette":
            unused["palette"] = "only the palette colour mode draws with the palette"
        if self.width_min == self.width_max:
            unused["width_lr"] = "the width is fixed (the thinnest equals the widest)"
        return unused


class StrokeCanvas(Canvas):
    """Strokes of cubic Béziers over a plain background."""

    name = "strokes"
    title = "strokes (an SVG drawing)"
    Settings = StrokeSettings
    files = (".svg",)
    ignores = {"lr": "strokes learn at their own rates (point, width and colour rates: --point-lr, --width-lr, --colour-lr)"}

    @classmethod
    def problems(cls, config) -> list[str]:
        if config.canvas_settings.layout == "image" and not config.start_picture:
            return ["a stroke start from an image needs a start picture (--init-image, or the studio's Start picture)"]
        return []

    @classmethod
    def from_config(cls, config, generator: torch.Generator) -> StrokeCanvas:
        size, resolution = geometry(config)
        return cls(size, resolution, config.canvas_settings, generator=generator, seed=config.seed,
                   picture=start_picture(config), wrap=config.tile)

    def __init__(self, size: int | tuple[int, int], resolution: int | tuple[int, int], settings: StrokeSettings, *,
                 generator: torch.Generator | None = None, seed: int = 0, picture: torch.Tensor | None = None,
                 wrap: bool = False):
        """Sizes are a square's side or (height, width). `picture` (1, 3, h, w) in [0, 1]: strokes
        start along its edges, in its colours. `wrap`: a seamless tile, where a stroke that leaves
        one side enters the other (it is drawn again one tile over, in each of the 8 directions)."""
        super().__init__()
        self.size, self.resolution, self.settings, self._seed = size, resolution, settings, seed
        self.wrap = wrap
        self.start_picture = picture  # re-seeded strokes start from it too
        s = settings
        points, colours = _start(s, self.shape, self.visible, generator, picture)
        widths = torch.full((s.count,), float(s.width))
        if s.learn_opacity and s.layout == "clipdraw":
            opacity = torch.rand(s.count, generator=generator)  # CLIPDraw starts every stroke's alpha at random
        else:
            opacity = torch.full((s.count,), float(s.opacity))
        if s.drawing:  # going on from a drawing: its strokes replace the start's (drawn all the same, for the seeds)
            points, widths, colours, opacity = _from_drawing(s.drawing, self.offsets)
            widths = widths.clamp(s.width_min, s.width_max)
        self.points = nn.Parameter(points)  # (strokes, 3 * segments + 1, 2) in canvas pixels
        self.widths = nn.Parameter(widths)
        self.opacities = nn.Parameter(opacity, requires_grad=s.learn_opacity)
        self.register_buffer("background", torch.tensor(parse_hex(s.background)))
        if s.colour == "palette":
            self.register_buffer("palette", torch.tensor(parse_palette(s.palette)))
            nearest = torch.cdist(colours, self.palette).argmin(1)
            self.choice = nn.Parameter(F.one_hot(nearest, len(self.palette)).float() * 2)  # logits
        elif s.colour == "mono":
            self.register_buffer("ink", torch.zeros(s.count, 3))
        else:
            self.rgb = nn.Parameter(colours)
        self.softness = s.softness.at(0, 1)
        self.final_softness = s.softness.end

    # -- the protocol ------------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """The stroke rates of the settings; the run's pixel learning rate does not apply."""
        s = self.settings
        groups = [{"params": [self.points], "lr": s.point_lr}]
        if s.width_max > s.width_min:
            groups.append({"params": [self.widths], "lr": s.width_lr})
        colour = [self.opacities] if s.learn_opacity else []
        if s.colour == "full":
            colour.append(self.rgb)
        if colour:
            groups.append({"params": colour, "lr": s.colour_lr})
        if s.colour == "palette":
            groups.append({"params": [self.choice], "lr": PALETTE_LR})
        return [{**g, "betas": STROKE_BETAS} for g in groups]

    def maintain_(self, step: int, steps: int, optimizer: torch.optim.Optimizer) -> None:
        """Re-seed strokes that became invisible, as VectorFusion and SVGDreamer do: every
        `reseed_every` steps until 80% of the run, a stroke that is nearly transparent or lies
        wholly outside the visible window starts again from the run's start procedure, and its
        Adam moments are cleared so it is not pushed back where it came from."""
        every = self.settings.reseed_every
        if not every or step % every or step > RESEED_UNTIL * steps:
            return
        with torch.no_grad():
            lost = self.invisible()
            if not lost.any():
                return
            generator = torch.Generator().manual_seed(hash((self._seed, step)) & (2**63 - 1))
            points, colours = _start(self.settings, self.shape, self.visible, generator, self.start_picture)
            index = lost.nonzero().squeeze(1).cpu()
            fresh = {self.points: points[index], self.widths: torch.full((len(index),), float(self.settings.width)),
                     self.opacities: torch.full((len(index),), float(self.settings.opacity))}
            if self.settings.colour == "full":
                fresh[self.rgb] = colours[index]
            for parameter, values in fresh.items():
                parameter[lost] = values.to(parameter.device, parameter.dtype)
                state = optimizer.state.get(parameter, {})
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in state:
                        state[name][lost] = 0

    @torch.no_grad()
    def invisible(self) -> torch.Tensor:
        """(strokes,) True where a stroke shows nothing: nearly transparent, or outside the view."""
        (top, left), (h, w) = self.offsets, self.visible
        start = self.points.new_tensor([left, top])  # points are (x, y)
        end = start + self.points.new_tensor([w, h])
        reach = self.widths[:, None] / 2
        low = self.points.amin(dim=1) - reach
        high = self.points.amax(dim=1) + reach
        outside = ((high < start) | (low > end)).any(dim=1) & (not self.wrap)  # a tile's strokes always show
        return outside | (self.opacities < MIN_VISIBLE_OPACITY)

    def at_step(self, step: int, steps: int) -> None:
        hold = max(1, math.ceil(steps * (1 - HOLD_FINAL_SOFTNESS)))
        self.softness = self.settings.softness.at(min(step, hold), hold)
        # What the last tenth of the run draws with (an exponential schedule stops short of `end`).
        self.final_softness = self.settings.softness.at(hold, hold)

    def colours(self) -> torch.Tensor:
        """(strokes, 3) in [0, 1]. A palette's strokes show exactly one of its colours; the
        gradient reaches the choice through the soft mix (a straight-through estimate)."""
        if self.settings.colour == "mono":
            return self.ink
        if self.settings.colour == "palette":
            soft = torch.softmax(self.choice, dim=1)
            hard = F.one_hot(soft.argmax(1), len(self.palette)).to(soft.dtype)
            return (hard + soft - soft.detach()) @ self.palette
        return self.rgb

    # A compiled step runs this as it is, between its graphs: binning strokes into tiles gives
    # shapes that change with the strokes at every step (traced, a 40-step run of the tiny model
    # compiled 76 graphs, 31x the eager run's time), and the softness follows a schedule.
    @torch.compiler.disable
    def forward(self, softness: float | None = None) -> torch.Tensor:
        points, widths, colours, opacities = self.points, self.widths, self.colours(), self.opacities
        if self.wrap:
            # Each stroke nine times, at its place and one tile over in every direction, the copies
            # of a stroke side by side in the z-order; the tiles cull the copies that miss the canvas.
            shifts = self._tile_shifts()
            points = (points[:, None] + shifts[None, :, None]).flatten(0, 1)
            widths, colours, opacities = (t.repeat_interleave(len(shifts), dim=0) for t in (widths, colours, opacities))
        return render(points[None], widths[None], colours[None], opacities[None],
                      self.background, self.shape, softness=softness or self.softness, samples=self.settings.samples)

    def _tile_shifts(self) -> torch.Tensor:
        """(9, 2) (x, y) shifts by a tile's width and height: none first, then the 8 neighbours."""
        height, width = self.shape
        steps = [(0, 0)] + [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
        return self.points.new_tensor([[dx * width, dy * height] for dx, dy in steps])

    @torch.no_grad()
    def clamp_(self) -> None:
        height, width = self.shape
        if self.wrap:
            # A stroke whose start left the tile comes back from the other side, its shape kept.
            size = self.points.new_tensor([width, height])
            self.points.sub_(torch.div(self.points[:, :1], size, rounding_mode="floor") * size)
        else:
            self.points[..., 0].clamp_(0, width)
            self.points[..., 1].clamp_(0, height)
        self.widths.clamp_(self.settings.width_min, self.settings.width_max)
        self.opacities.clamp_(0, 1)
        if self.settings.colour == "full":
            self.rgb.clamp_(0, 1)

    @torch.no_grad()
    def image(self) -> Image.Image:
        """The SVG's picture: drawn at the run's final softness, whenever the run stopped."""
        return to_pil(self.crop(self.forward(self.final_softness)))

    def exports(self) -> dict:
        drawing = self.drawing()
        return {".svg": lambda recipe: stroke_svg(drawing, recipe)}

    @torch.no_grad()
    def drawing(self) -> dict:
        """The strokes as plain numbers, in the visible window's pixels: what the SVG writes."""
        (top, left), (height, width) = self.offsets, self.visible
        offset = torch.tensor([left, top])
        return {
            "width": width,
            "height": height,
            "background": self.background.tolist(),
            # A tile's strokes with their copies one tile over, so the SVG tiles as the PNG does.
            "strokes": [
                {"points": (p + shift - offset).tolist(), "width": float(w), "colour": c.tolist(), "opacity": float(a)}
                for p, w, c, a in zip(self.points.cpu(), self.widths.cpu(), self.colours().cpu(), self.opacities.cpu())
                for shift in (self._tile_shifts().cpu() if self.wrap else torch.zeros(1, 2))
                if not self.wrap or _reaches(p + shift, float(w), width, height)
            ],
        }


# -- the start -------------------------------------------------------------------------------
def _from_drawing(path: str, offsets: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """The strokes of an SVG das-ag drew, in canvas pixels: points (strokes, k, 2), widths,
    colours (strokes, 3) and opacities."""
    from ..svg import read_drawing

    strokes = read_drawing(path)["strokes"]
    top, left = offsets
    points = torch.tensor([s["points"] for s in strokes], dtype=torch.float32) + torch.tensor([float(left), float(top)])
    return (points, torch.tensor([float(s["width"]) for s in strokes]), torch.tensor([s["colour"] for s in strokes]),
            torch.tensor([float(s["opacity"]) for s in strokes]))


def _start(s: StrokeSettings, size: tuple[int, int], visible: tuple[int, int], generator,
           picture: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points (strokes, 3n+1, 2) as (x, y) canvas pixels and colours (strokes, 3) to start
    from: along the edges of `picture` (1, 3, h, w) when there is one. Sizes are (height, width)."""
    n, k = s.count, 3 * s.segments + 1
    (height, width), (h, w) = size, visible
    offset = torch.tensor([(width - w) / 2, (height - h) / 2])
    extent = torch.tensor([float(w), float(h)])  # where points may start: the visible part
    resolution = min(h, w)  # lengths scale with the short side
    colours = torch.rand(n, 3, generator=generator)
    if picture is not None:
        first, direction, colours = _edge_starts(picture, n, generator)
        points = _arcs(first + offset, direction, 0.05 * resolution, k, generator)
    elif s.layout == "clipdraw":
        # CLIPDraw: a start point anywhere in view, each next point within +-5% of the side.
        steps = (torch.rand(n, k - 1, 2, generator=generator) - 0.5) * 0.1 * resolution
        first = torch.rand(n, 1, 2, generator=generator) * extent + offset
        points = torch.cat([first, first + torch.cumsum(steps, dim=1)], dim=1)
    else:
        first = torch.rand(n, 2, generator=generator) * extent + offset
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        direction = torch.stack([angle.cos(), angle.sin()], dim=1)
        length = (0.05 + 0.1 * torch.rand(n, 1, generator=generator)) * resolution
        points = _arcs(first, direction, length, k, generator)
    if s.colour == "mono":
        colours = torch.zeros(n, 3)
    points = torch.minimum(points.clamp(min=0), torch.tensor([float(width), float(height)]))
    return points.float(), colours.float()


def _arcs(first, direction, length, k, generator) -> torch.Tensor:
    """Gently bent curves of `k` control points from `first` along `direction`, `length` long."""
    t = torch.linspace(0, 1, k)[None, :, None]
    normal = torch.stack([-direction[:, 1], direction[:, 0]], dim=1)
    length = torch.as_tensor(length, dtype=torch.float32).reshape(-1, 1, 1)
    bend = (torch.rand(first.shape[0], 1, 1, generator=generator) - 0.5) * 0.5 * length
    return first[:, None] + direction[:, None] * length * t + normal[:, None] * bend * (4 * t * (1 - t))


def _edge_starts(picture: torch.Tensor, n: int, generator):
    """Start points drawn where the picture has edges (CLIPasso/DiffSketcher style), the stroke
    direction along each edge, and the picture's colour there. picture: (1, 3, h, w)."""
    grey = picture.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = F.conv2d(grey, sobel.view(1, 1, 3, 3), padding=1)[0, 0]
    gy = F.conv2d(grey, sobel.t().reshape(1, 1, 3, 3), padding=1)[0, 0]
    magnitude = (gx**2 + gy**2).sqrt()
    magnitude = magnitude / magnitude.max().clamp(min=1e-6)
    weights = torch.softmax(magnitude.flatten() / EDGE_TEMPERATURE, dim=0)
    index = torch.multinomial(weights, n, replacement=True, generator=generator)
    w = picture.shape[-1]
    y, x = index // w, index % w
    first = torch.stack([x, y], dim=1).float() + 0.5
    # Along the edge: perpendicular to the brightness gradient (any direction where it is flat).
    g = torch.stack([gx[y, x], gy[y, x]], dim=1)
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    fallback = torch.stack([angle.cos(), angle.sin()], dim=1)
    along = torch.stack([-g[:, 1], g[:, 0]], dim=1)
    norm = along.norm(dim=1, keepdim=True)
    direction = torch.where(norm > 1e-6, along / norm.clamp(min=1e-6), fallback)
    return first, direction, picture[0, :, y, x].t()


def _reaches(points: torch.Tensor, width: float, tile_width: int, tile_height: int) -> bool:
    """Whether a stroke of control points (k, 2) and `width` px may touch a tile at the origin
    (a Bezier lies inside the hull of its control points)."""
    low, high = points.amin(0) - width / 2, points.amax(0) + width / 2
    return bool(high[0] >= 0 and high[1] >= 0 and low[0] <= tile_width and low[1] <= tile_height)
