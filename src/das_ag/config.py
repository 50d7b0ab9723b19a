"""GenerationConfig: every knob of a run in one frozen, validated dataclass with a JSON round trip.

The defaults are the DAS-AG reference app's UI defaults; `PRESETS` hold the published ("paper")
settings and a fast "quick" look. A config is all that is needed, with the models, to make an image
again: it is what a PNG recipe stores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import InitVar, dataclass
from typing import Any

from .errors import ConfigError
from .prompts import Prompt
from .schedules import Schedule, is_finite_number
from .settings import (described, kind_of, number_in, replace_settings, setting, whole_number_in,
                       with_current_names)

# Re-exported: the method names lived here before methods.py.
from .methods import GUIDANCE, METHOD_NAMES, METHOD_ORDER  # noqa: E402,F401

DTYPES = ("auto", "float32", "bfloat16", "float16")
MIN_RESOLUTION, MAX_RESOLUTION = 32, 2048
MAX_STEPS, MAX_COPIES = 100_000, 256
MAX_ASPECT = 4.0  # the long side at most four times the short one: CLIP sees squares of the short side

SCHEDULE_FIELDS = ("noise", "colour_shift", "jitter")
# The views of releases before crops, stretches, turns and flips: a recipe without these settings
# was made with them (their defaults may differ), so it makes the same image again.
LEGACY_VIEWS = (1.0, 1.0, 0.0, False, 0)
VIEW_FIELDS = ("crop_min", "crop_aspect", "view_turn", "view_flip", "whole_views")


@dataclass(frozen=True)
class GenerationConfig:
    prompts: tuple[Prompt, ...] = ()
    steps: int = setting(100, group="optimisation", minimum=1, maximum=MAX_STEPS, step=10, help="optimisation steps")
    augment_copies: int = setting(8, group="optimisation", minimum=1, maximum=MAX_COPIES, flag="--copies",
                                  aliases=("--batch",), label="Augmented copies", help="augmented views of the image per step")
    lr: float = setting(0.1, group="optimisation", minimum=1e-4, maximum=10.0, step=0.01, format="%.4f",
                        label="Learning rate", help="Adam's learning rate (cosine-annealed to a hundredth)")
    resolution: int = setting(224, group="optimisation", minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION, step=32,
                              label="Resolution (px)", help="the image's side in pixels (its long side when it is not square)")
    # A picture that is not square: its width and height in px (both, or neither: then it is
    # `resolution` square). The CLI's --size WxH sets them; a square size becomes `resolution`.
    width: int | None = setting(None, group="optimisation", minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION, flag="",
                                studio=False, help="the image's width in px (with height; default: the resolution)")
    height: int | None = setting(None, group="optimisation", minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION, flag="",
                                 studio=False, help="the image's height in px (with width; default: the resolution)")
    # Jitter margin in pixels; None means the short side // 14 (16 at 224, 32 at 448, as published).
    jitter_margin: int | None = setting(None, group="augmentation", minimum=0, maximum=MAX_RESOLUTION // 2, studio=False,
                                        help="jitter margin in px (default: the short side / 14)")
    # Noise sigma and colour-shift range are in CLIP-normalised units, as in the references. The
    # noise rises late, to 0.35: the last steps (at a low learning rate) refine what the guiding
    # CLIP sees, and rising to 0.5, as releases before did, drowned that refinement. On
    # bench/transfer.py's 180 images the guide named 96.1% of them right against 92.2%, and the
    # unseen judge 85.6% against 86.1% (note/transfer.md, seventh round).
    noise: Schedule = setting(Schedule("exp_warmup", 0.2, 0.35, 0.03), group="augmentation", studio=False,
                              label="Noise sigma", minimum=0.0, maximum=5.0, help="Gaussian noise sigma over the run (CLIP-normalised units)")
    # Was `colour`, a name the strokes' colour mode also has: `--colour` and recipes' `colour` still work.
    colour_shift: Schedule = setting(Schedule("exp_warmup", 0.05, 0.30, 0.03), group="augmentation", studio=False,
                                     aliases=("--colour",), was=("colour",), label="Colour shift", minimum=0.0,
                                     maximum=5.0, help="colour-shift range over the run (CLIP-normalised units)")
    # Jitter as a fraction of the margin, so schedules survive a change of resolution.
    jitter: Schedule = setting(Schedule.constant(1.0), group="augmentation", studio=False,
                               label="Jitter (fraction of margin)", minimum=0.0, maximum=1.0, help="jitter over the run, as a fraction of the margin")
    # Views of other sizes, shapes and turns than the whole picture shifted: what makes an image
    # that other CLIPs recognise too (bench/transfer.py, note/transfer.md: crops from half the
    # side, flips and turns of 15 degrees took the judge from 79% to 87% at the same time). The
    # "legacy" values (1, 1, 0, off) make exactly the views of releases before them; `paper` keeps them.
    crop_min: float = setting(0.5, group="views", minimum=0.1, maximum=1.0, step=0.05, label="Smallest view",
                              help="the smallest view's side as a fraction of the picture's short side: each step's "
                                   "views are random crops from this size up to the whole picture (1: every view is "
                                   "the whole picture, shifted)")
    crop_aspect: float = setting(1.0, group="views", minimum=1.0, maximum=2.0, step=0.05, label="View stretch",
                                 help="how far a view may be stretched or squeezed (1: never; 1.3: up to 1.3x)")
    view_turn: float = setting(15.0, group="views", minimum=0.0, maximum=180.0, step=1.0, label="View turn (degrees)",
                               help="views are turned by up to this many degrees either way (0: never)")
    view_flip: bool = setting(True, group="views", label="Flip views",
                              help="half the views, at random, are mirrored left to right")
    whole_views: int = setting(0, group="views", minimum=0, maximum=MAX_COPIES, label="Whole views",
                               help="how many of each step's views show the picture's whole short side, never "
                                    "cropped, turned or flipped (the others vary as set above; more than the views "
                                    "a step: all of them)")
    seed: int = setting(42, group="reproducibility", minimum=0, maximum=2**63 - 1, studio=False,
                        help="the seed of the start image and every augmentation")
    deterministic: bool = setting(False, group="device", studio=False,
                                  help="bit-for-bit repeatable on CUDA too (the CPU always is)")
    device: str = setting("auto", group="device", studio=False, metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda or cuda:N")
    # Encoder precision. auto: bfloat16 where the hardware computes it natively (about 2x faster
    # than float32 on a CPU with AVX512-BF16, 2x on an H100), else float32. float32 is the
    # bit-exact mode.
    dtype: str = setting("auto", group="device", choices=DTYPES, studio=False,
                         help="encoder precision (default auto: bfloat16 where native)")
    # torch.compile the whole step's forward (canvas, augmentation, encoders, terms) and with it
    # the backward; on a GPU its graphs are replayed as CUDA graphs. None (the default) compiles
    # on a GPU and not on the CPU: on an H200 the paper preset took 2.6 s an image compiled
    # against 13 s eager, after a one-off compile of ~50 s (~10 s once cached, in any later
    # process); on the CPU the eager encoder already runs its matmuls on prepacked oneDNN
    # weights and compiling gains little. The recipe records what ran.
    compile: bool | None = setting(None, group="device", studio=False,
                                   help="torch.compile the step (default: on a GPU, not on the CPU): the first "
                                        "run waits for the compiler (about a minute, seconds once cached), then "
                                        "steps are several times faster on a GPU")
    # How the image encoder runs on the CPU (cpu_routes.py): its matmuls on prepacked oneDNN
    # weights or through aten, its attention in groups of heads or through torch's SDPA. Which is
    # fastest depends on the CPU (packed was 2.4x aten's float32 speed on an AMD EPYC, 23% slower
    # on an Intel Ice Lake), so "auto" measures it the first time a shape runs on a CPU and caches
    # the choice. Routes sum in different orders: a recipe records the route taken, and a re-run
    # from it takes the same one.
    cpu_route: str = setting("auto", group="device", studio=False, metavar="auto|ROUTE",
                             help="how the encoder runs on the CPU: auto (this CPU's fastest, measured once "
                                  "and cached) or a route such as packed+blocked-16 or aten+sdpa (one per "
                                  "encoder of an ensemble, comma-separated)")
    # What is optimised: a registered canvas (das_ag.canvases); its settings are its own.
    canvas: str = setting("pyramid", group="canvas", studio=False,
                          help="what is optimised: pyramid (pixels) or strokes (a drawing saved as SVG too)")
    # A seamless tile: the canvas wraps around (its margin is its other side), so copies of the
    # picture laid side by side show no seam.
    tile: bool = setting(False, group="canvas", label="Seamless tile",
                         help="make a picture that tiles without a seam: the canvas wraps around, and the "
                              "scores measure the seam")
    # The canvas's own settings (a canvas's `Settings` dataclass), None for its defaults.
    canvas_settings: Any = None
    # Settings of terms that declare their own (objectives.Term.Settings), by term name, sorted:
    # the text term's weight, the aesthetic term's guidance and weight, the regularisers' weights...
    terms: tuple[tuple[str, Any], ...] = ()
    # An ensemble of CLIPs, "SPEC[:WEIGHT]" each (clip_models.py); empty: the one CLIP of
    # --clip-model / CLIP_MODEL_PATH (ViT-L/14), which a recipe records among its models.
    clip_models: tuple[str, ...] = ()
    # False builds a draft: normalised but not validated, for a form that lists every problem at
    # once (`draft.problems()`) or a command line that applies its flags before checking. Not a
    # setting: recipes, equality and copies never see it, and `replace` validates again.
    check: InitVar[bool] = True

    def __post_init__(self, check: bool = True):
        # Accept lists and dicts (from JSON or callers) but store tuples so the config stays hashable.
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "clip_models", tuple(self.clip_models))
        if isinstance(self.canvas_settings, dict):
            canvas_settings, terms = lift_start_picture(self.canvas_settings, self.terms)
            object.__setattr__(self, "canvas_settings", canvas_settings)
            object.__setattr__(self, "terms", terms)
        terms = self.terms.items() if isinstance(self.terms, dict) else self.terms
        terms = [(str(k), term_settings_from_dict({k: v})[0][1] if isinstance(v, dict) else v) for k, v in terms]
        object.__setattr__(self, "terms", tuple(sorted(terms, key=lambda kv: kv[0])))
        if isinstance(self.canvas_settings, dict):  # a table, as callers and presets may give it
            object.__setattr__(self, "canvas_settings", canvas_settings_from_dict(self.canvas, self.canvas_settings))
        if self.width is not None and self.width == self.height and _valid_side(self.width):  # a square is written one way only
            object.__setattr__(self, "resolution", self.width)
            object.__setattr__(self, "width", None)
            object.__setattr__(self, "height", None)
        elif _valid_side(self.width) and _valid_side(self.height):
            # The resolution of another shape is its long side.
            object.__setattr__(self, "resolution", max(self.width, self.height))
        self._drop_defaults()
        if check:
            problems = self.problems()
            if problems:
                raise ConfigError(problems[0])

    def _drop_defaults(self) -> None:
        """Settings equal to a part's defaults are left out, so two configs that mean the same run
        compare equal (a form always sends every term's settings; a recipe may not)."""
        from .canvases import canvas_class
        from .objectives import term_class

        canvas = canvas_class(self.canvas) if isinstance(self.canvas, str) else None
        own = canvas.Settings if canvas is not None else None
        given = self.canvas_settings
        # The canvas's settings are always there, its defaults where none were given; another
        # canvas's settings that say nothing but their defaults (a config whose canvas was
        # replaced) are none.
        if own is not None and (given is None or (dataclasses.is_dataclass(given) and not isinstance(given, own)
                                                 and given == type(given)())):
            object.__setattr__(self, "canvas_settings", own())
        kept = []
        for name, settings in self.terms:
            cls = term_class(name)
            if not (cls is not None and cls.Settings is not None and settings == cls.Settings()):
                kept.append((name, settings))
        object.__setattr__(self, "terms", tuple(kept))

    # -- derived geometry -------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the image in px."""
        return (self.height, self.width) if self.width is not None else (self.resolution, self.resolution)

    @property
    def short_side(self) -> int:
        """The side of the square views CLIP sees (the whole image when it is square)."""
        return min(self.image_shape)

    @property
    def margin(self) -> int:
        return default_margin(self.short_side) if self.jitter_margin is None else self.jitter_margin

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """(height, width): per side, the smallest power of two that holds the image plus its
        jitter margin on each side."""
        return tuple(1 << math.ceil(math.log2(side + 2 * self.margin)) for side in self.image_shape)

    @property
    def canvas_size(self) -> int:
        """The canvas's longer side (its only one for a square image)."""
        return max(self.canvas_shape)

    @property
    def canvas_options(self) -> Any:
        """Deprecated: `canvas_settings`, which now always holds the canvas's settings."""
        warnings.warn("GenerationConfig.canvas_options is deprecated; canvas_settings always holds the canvas's "
                      "settings now", DeprecationWarning, stacklevel=2)
        return self.canvas_settings

    def term_settings(self, name: str) -> Any:
        """The settings of term `name` in this config (its defaults when the config gives none)."""
        for key, value in self.terms:
            if key == name:
                return value
        from .objectives import term_class

        cls = term_class(name)
        if cls is None or cls.Settings is None:
            raise ConfigError(f"term {name!r} has no settings of its own")
        return cls.Settings()

    @property
    def start_picture(self) -> str:
        """The picture the canvas starts from ("" for none): the init term's, which also holds
        the run near it."""
        return self.term_settings("init").image

    @property
    def guidance(self) -> str:
        """The aesthetic term's sign by name, reward, penalty or off: what names the method."""
        return self.term_settings("aesthetic").guidance

    @property
    def guidance_sign(self) -> int:
        return GUIDANCE[self.guidance]

    def with_term(self, name: str, **changes: Any) -> GenerationConfig:
        """This config with some of term `name`'s settings changed."""
        return self.replace(terms={**dict(self.terms), name: replace_settings(self.term_settings(name), changes)})

    def with_guidance(self, guidance: str) -> GenerationConfig:
        """The same run by another method: DAS (off), DAS-AG (reward) or DAS-rAG (penalty)."""
        return self.with_term("aesthetic", guidance=guidance)

    @property
    def method(self) -> str:
        """DAS, DAS-AG or DAS-rAG by the aesthetic sign, with the marks of other signed terms
        (DAS-CAN: the style-ambiguity reward)."""
        from .objectives import TERMS

        return METHOD_NAMES[self.guidance] + "".join(cls.method_mark(self) for cls in TERMS.values())

    @property
    def positive_prompts(self) -> tuple[Prompt, ...]:
        return tuple(p for p in self.prompts if not p.is_negative)

    @property
    def negative_prompts(self) -> tuple[Prompt, ...]:
        return tuple(p for p in self.prompts if p.is_negative)

    # -- validation -------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every reason this config cannot run, in plain words (empty when it can)."""
        p: list[str] = []
        parts = self._part_problems()
        # Whether a term besides the text and aesthetic ones steers the run (an image prompt, style
        # ambiguity), so that it needs no text prompt: asked once every term's settings are of its type.
        from .objectives import TERMS

        typed = all(name in TERMS and TERMS[name].Settings is not None and isinstance(settings, TERMS[name].Settings)
                    for name, settings in self.terms)
        steered = typed and any(cls.steers(self) for cls in TERMS.values())
        if self.prompts and not self.positive_prompts:
            p.append("write at least one prompt to steer towards (a positive one)")
        elif typed and not self.prompts and not steered and (
                not is_finite_number(clip_weight := self.term_settings("text").weight) or clip_weight > 0):
            p.append("write at least one prompt to steer towards, or set the CLIP weight to 0 to steer by the "
                     "aesthetic score alone")
        elif typed and not self.prompts and self.term_settings("aesthetic").guidance == "off" and not steered:
            p.append("with no prompt and guidance off there is nothing to steer by; give a prompt or choose reward or penalty")
        for prompt in self.prompts:
            if not isinstance(prompt, Prompt) or not str(prompt.text).strip():
                p.append("every prompt needs some text")
            else:
                p.extend(prompt.problems())
        _choice(p, "dtype", self.dtype, DTYPES)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            p.append(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        whole_number_in(p, "steps", self.steps, 1, MAX_STEPS)
        whole_number_in(p, "augmentation copies", self.augment_copies, 1, MAX_COPIES)
        whole_number_in(p, "resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION)
        if (self.width is None) != (self.height is None):
            p.append("give the image's width and height together (--size WxH), or neither")
        elif self.width is not None:
            whole_number_in(p, "width", self.width, MIN_RESOLUTION, MAX_RESOLUTION)
            whole_number_in(p, "height", self.height, MIN_RESOLUTION, MAX_RESOLUTION)
            if _valid_side(self.width) and _valid_side(self.height) and max(self.width, self.height) > MAX_ASPECT * min(self.width, self.height):
                p.append(f"a {self.width}x{self.height} image is too narrow: the long side may be at most "
                         f"{MAX_ASPECT:g} times the short one")
        if self.jitter_margin is not None:
            whole_number_in(p, "jitter margin", self.jitter_margin, 0, MAX_RESOLUTION // 2)
        whole_number_in(p, "seed", self.seed, 0, 2**63 - 1)
        for f, s in described(GenerationConfig):  # the views' bounds are their settings' own
            if f.name in VIEW_FIELDS and kind_of(f) == "float":
                number_in(p, f.name.replace("_", " "), getattr(self, f.name), s.minimum, s.maximum)
        if not isinstance(self.view_flip, bool):
            p.append("view flip must be true or false")
        whole_number_in(p, "whole views", self.whole_views, 0, MAX_COPIES)
        if not is_finite_number(self.lr) or self.lr <= 0:
            p.append(f"learning rate must be a positive finite number, not {self.lr!r}")
        for name in SCHEDULE_FIELDS:
            sched = getattr(self, name)
            if not isinstance(sched, Schedule):
                p.append(f"{name} must be a schedule")
                continue
            p.extend(sched.problems(name))
            if not sched.problems(name) and min(sched.start, sched.end) < 0:
                p.append(f"{name} values must be >= 0")
        if isinstance(self.jitter, Schedule) and is_finite_number(self.jitter.start) and is_finite_number(self.jitter.end):
            if max(self.jitter.start, self.jitter.end) > 1:
                p.append("jitter is a fraction of the margin and must not exceed 1")
        if not isinstance(self.deterministic, bool):
            p.append("deterministic must be true or false")
        if self.compile is not None and not isinstance(self.compile, bool):
            p.append("compile must be true, false or left out (on a GPU only)")
        try:
            from .cpu_routes import parse_routes

            parse_routes(self.cpu_route)
        except ValueError as exc:
            p.append(f"cpu route: {exc}")
        if self.clip_models:
            from .clip_models import encoder_problems

            p.extend(encoder_problems(tuple(self.clip_models)))
        p.extend(parts)
        return p

    def _part_problems(self) -> list[str]:
        """What the named canvas and the terms say about this config (their registries load torch)."""
        from .canvases import CANVASES
        from .objectives import TERMS

        p: list[str] = []
        _choice(p, "canvas", self.canvas, CANVASES)
        canvas = CANVASES.get(self.canvas)
        if canvas is not None and self.canvas_settings is not None:
            if canvas.Settings is None:
                p.append(f"the {self.canvas} canvas has no settings of its own; leave canvas_settings out")
            elif not isinstance(self.canvas_settings, canvas.Settings):
                p.append(f"settings of the {self.canvas} canvas must be a {canvas.Settings.__name__}")
        if canvas is not None and not p and canvas.Settings is not None:
            p.extend(self.canvas_settings.problems())
        if canvas is not None and not p:
            p.extend(canvas.problems(self))
        for name, settings in self.terms:
            cls = TERMS.get(name)
            if cls is None or cls.Settings is None:
                p.append(f"unknown term {name!r} in the settings; is the module that defines it loaded?")
            elif not isinstance(settings, cls.Settings):
                p.append(f"settings of term {name!r} must be a {cls.Settings.__name__}")
        if not p:
            for cls in TERMS.values():
                p.extend(cls.problems(self))
        return p

    @classmethod
    def problems_of(cls, **settings: Any) -> list[str]:
        """Every problem `settings` have, without raising: for forms that show them all at once."""
        return cls(**settings, check=False).problems()

    # -- copies and JSON --------------------------------------------------------------------
    def replace(self, **changes: Any) -> GenerationConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["prompts"] = [{"text": p.text, "weight": dataclasses.asdict(p.weight) if p.scheduled else p.weight}
                        for p in self.prompts]
        # Every term that takes part in the run is written out in full, as the canvas's settings
        # are, so a recipe makes the same image after a release that changes a default.
        from .objectives import TERMS

        given = dict(self.terms)
        taking_part = [name for name, cls in TERMS.items() if cls.Settings is not None and cls.active(self)]
        d["terms"] = {name: dataclasses.asdict(self.term_settings(name)) for name in sorted({*given, *taking_part})}
        if self.clip_models:
            d["clip_models"] = list(self.clip_models)
        else:
            del d["clip_models"]  # one CLIP: recipes stay as they were
        if self.canvas_settings is None:
            del d["canvas_settings"]  # recipes of canvases without settings stay as they were
        else:
            d["canvas_settings"] = dataclasses.asdict(self.canvas_settings)  # in full: defaults may change
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        if not isinstance(data, dict):
            raise ConfigError("a config must be a JSON object of settings")
        known = {f.name for f in dataclasses.fields(cls)} | set(MOVED)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; was this made by a newer das-ag?")
        kwargs = upgraded(data)
        for name, legacy in zip(VIEW_FIELDS, LEGACY_VIEWS):
            kwargs.setdefault(name, legacy)
        try:
            if "prompts" in kwargs:
                kwargs["prompts"] = tuple(prompt_from_dict(p) for p in kwargs["prompts"])
            for name in SCHEDULE_FIELDS:
                if name in kwargs and isinstance(kwargs[name], dict):
                    kwargs[name] = Schedule(**kwargs[name])
            if "terms" in kwargs:
                kwargs["terms"] = term_settings_from_dict(kwargs["terms"])
            if kwargs.get("canvas_settings") is not None:
                kwargs["canvas_settings"] = canvas_settings_from_dict(kwargs.get("canvas", "pyramid"), kwargs["canvas_settings"])
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"malformed prompts, schedule or term settings in config: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GenerationConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**settings_over(PRESETS[name], overrides))


def _accepting_old_names(init):
    """GenerationConfig's constructor, also taking the names settings had before their parts owned
    them (guidance=, aesthetic=, clip_weight=, tv_weight=, l1_weight=, levels=, init=, ...):
    deprecated, kept for one release, converted by `upgraded` as recipes are."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        old = sorted(set(kwargs) & set(MOVED))
        if old:
            now = "; ".join(f"{name} is {_now_called(name)}" for name in old)
            warnings.warn(f"GenerationConfig({', '.join(old)}=...) is deprecated: {now} now "
                          "(config.with_term(...), config.with_guidance(...))", DeprecationWarning, stacklevel=3)
            kwargs = upgraded(kwargs, old_names_win=True)  # replace(guidance=...) changes the guidance
        init(self, *args, **kwargs)

    return __init__


GenerationConfig.__init__ = _accepting_old_names(GenerationConfig.__init__)


PRESETS: dict[str, dict[str, Any]] = {
    # The settings behind the published DAS-AG numbers (reference-algorithm.md, section 4).
    "paper": dict(
        resolution=448,
        steps=200,
        augment_copies=8,
        lr=0.05,
        noise=Schedule("exp_decay", 0.2, 0.5, 0.03),
        colour_shift=Schedule("exp_decay", 0.05, 0.30, 0.03),
        terms={"text": {"weight": 5.0}, "aesthetic": {"weight": Schedule("exp_decay", 0.0, 3.0, 0.06)},
               "tv": {"weight": 1e-8}, "l1": {"weight": 0.0}},
        seed=42,
        deterministic=True,
        # The published views: the whole picture, shifted (no crops, stretches, turns or flips).
        crop_min=1.0, crop_aspect=1.0, view_turn=0.0, view_flip=False, whole_views=0,
    ),
    # A fast first look: fewer steps and copies at 224 px, the app's warm-up schedules.
    "quick": dict(
        resolution=224,
        steps=50,
        augment_copies=4,
        lr=0.1,
        terms={"aesthetic": {"weight": Schedule("exp_decay", 0.0, 3.0, 0.1)}},
    ),
    # For a CPU without fast bf16, where a ViT-L/14 step takes seconds: ViT-B/32 guides every step
    # (about 15x cheaper here) and ViT-L/14 runs for the aesthetic head on every 10th step only
    # (bench/ensemble_speed.py: 0.16-0.20x the default's step time on this machine's CPU).
    "fast-cpu": dict(
        clip_models=("ViT-B/32", "ViT-L/14:0"),
        terms={"aesthetic": {"every": 10}},
        resolution=224,
        steps=100,
        augment_copies=8,
    ),
    # A line sketch in the manner of CLIPasso: a few black strokes of one fixed width.
    "sketch": dict(
        canvas="strokes",
        canvas_settings=dict(count=32, segments=2, width=3.0, width_min=3.0, width_max=3.0, colour="mono",
                             opacity=1.0, learn_opacity=False, layout="random"),
        resolution=224,
        steps=300,
        augment_copies=8,
        terms={"tv": {"weight": 0.0}},  # the stroke anchors use no pixel regulariser: strokes are smooth already
    ),
    # A colour drawing in the manner of CLIPDraw: many strokes of free width, colour and opacity.
    "clipdraw": dict(
        canvas="strokes",
        canvas_settings=dict(count=256, segments=2, width=2.0, width_min=1.0, width_max=12.0, colour="full",
                             learn_opacity=True, layout="clipdraw"),
        resolution=224,
        steps=300,
        augment_copies=8,
        terms={"tv": {"weight": 0.0}},  # the stroke anchors use no pixel regulariser: strokes are smooth already
    ),
}


def canvas_settings_from_dict(canvas: Any, data: Any) -> Any:
    """A canvas's settings from a recipe's or plan's table of {setting: value}."""
    from .canvases import canvas_class
    from .settings import settings_from_table

    cls = canvas_class(canvas) if isinstance(canvas, str) else None
    if cls is None or cls.Settings is None:
        raise ConfigError(f"canvas {canvas!r} takes no canvas_settings (unknown canvas, or one without settings)")
    if not isinstance(data, dict):
        raise ConfigError(f"the {canvas} canvas's settings must be a table of setting -> value")
    return settings_from_table(cls.Settings, data, f"the {canvas} canvas's settings")


# Settings that were top-level fields before the pyramid owned them: old name -> its setting now.
MOVED_TO_PYRAMID = {"levels": "levels", "init": "fill", "combine": "combine", "interpolation": "interpolation"}
# ... and before the terms owned theirs: old name -> (term, its setting now).
MOVED_TO_TERMS = {"clip_weight": ("text", "weight"), "guidance": ("aesthetic", "guidance"),
                  "aesthetic": ("aesthetic", "weight"), "tv_weight": ("tv", "weight"), "l1_weight": ("l1", "weight")}
# ... and settings renamed where they are (Setting.was).
RENAMED = {old: f.name for f, s in described(GenerationConfig) for old in s.was}
MOVED = (*MOVED_TO_PYRAMID, *MOVED_TO_TERMS, *RENAMED)


def _now_called(old: str) -> str:
    """Where an older top-level setting lives now, as a caller writes it."""
    if old in MOVED_TO_TERMS:
        term, name = MOVED_TO_TERMS[old]
        return f"terms={{{term!r}: {{{name!r}: ...}}}}"
    if old in MOVED_TO_PYRAMID:
        return f"canvas_settings={{{MOVED_TO_PYRAMID[old]!r}: ...}}"
    return RENAMED[old]


def upgraded(data: dict[str, Any], *, old_names_win: bool = False) -> dict[str, Any]:
    """A recipe's or plan's settings in today's shape, whatever release wrote them: the one place
    where older shapes are converted. The pyramid's settings move from the top level into its
    canvas_settings (for another canvas they were unread and are dropped); the text, aesthetic
    and regularisers' settings move into their terms'; a start picture kept in the strokes'
    settings moves to the init term. A setting in both places keeps its value in the new one,
    unless `old_names_win` (keywords given to replace a config's setting)."""
    data = with_current_names(GenerationConfig, data, old_names_win=old_names_win)
    for old, (term, new) in MOVED_TO_TERMS.items():
        if old in data:
            given = {term: {new: data.pop(old)}}
            terms = data.get("terms", {})
            data["terms"] = merged_terms(terms, given) if old_names_win else merged_terms(given, terms)
    moved = {new: data.pop(old) for old, new in MOVED_TO_PYRAMID.items() if old in data}
    if moved and data.get("canvas", "pyramid") == "pyramid":
        own = data.get("canvas_settings")
        own = dataclasses.asdict(own) if dataclasses.is_dataclass(own) else dict(own or {})
        data["canvas_settings"] = {**own, **moved} if old_names_win else {**moved, **own}
    if isinstance(data.get("canvas_settings"), dict):
        data["canvas_settings"], terms = lift_start_picture(data["canvas_settings"], data.get("terms", {}))
        if terms or "terms" in data:
            data["terms"] = terms
    return data


def settings_over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Settings `changes` (in any release's shape) on top of `base`: top-level settings replaced,
    term settings merged term by term, so a preset's aesthetic weight yields to a plan's older
    top-level `aesthetic` and its other terms stay."""
    base, changes = upgraded(base), upgraded(changes)
    terms = merged_terms(base.get("terms", {}), changes.get("terms", {}))
    return {**base, **changes, **({"terms": terms} if terms else {})}


def merged_terms(base: Any, changes: Any) -> dict:
    """Term settings of `base` with `changes` on top, term by term (a term in both: its settings
    in `changes`, setting by setting where both are tables)."""
    out = {term: _table(values) for term, values in (base.items() if isinstance(base, dict) else base)}
    for term, values in (changes.items() if isinstance(changes, dict) else changes):
        old, values = out.get(term), _table(values)
        out[term] = {**old, **values} if isinstance(old, dict) and isinstance(values, dict) else values
    return out


def _table(settings: Any) -> Any:
    """A settings dataclass as a table of its fields (values kept as they are), else `settings`."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return settings


def lift_start_picture(canvas_settings: dict, terms: Any) -> tuple[dict, Any]:
    """Recipes from before the start picture was shared by every canvas kept it in the strokes'
    settings (init_image, init_image_sha256): move it to the init term, where it is now."""
    if "init_image" not in canvas_settings and "init_image_sha256" not in canvas_settings:
        return canvas_settings, terms
    canvas_settings = dict(canvas_settings)
    image, sha256 = canvas_settings.pop("init_image", ""), canvas_settings.pop("init_image_sha256", "")
    terms = dict(terms.items() if isinstance(terms, dict) else terms)
    if image and "init" not in terms:
        terms["init"] = {"image": image, "sha256": sha256}
    return canvas_settings, terms


def term_settings_from_dict(data: Any) -> tuple[tuple[str, Any], ...]:
    """Term settings from a recipe's or plan's table of term name -> {setting: value}."""
    from .objectives import TERMS
    from .settings import settings_from_table

    if not isinstance(data, dict):
        raise ConfigError("term settings must be a table of term name -> settings")
    out = []
    for name, values in data.items():
        cls = TERMS.get(name)
        if cls is None or cls.Settings is None:
            raise ConfigError(f"unknown term {name!r}; was this made by a newer das-ag or with a plugin?")
        out.append((name, settings_from_table(cls.Settings, values, f"the {name} term's settings")))
    return tuple(out)


def default_margin(short_side: int) -> int:
    """The jitter margin unless one is set: 1/14 of the short side (16 px at 224, 32 at 448, as published)."""
    return short_side // 14


def prompt_from_dict(table: dict) -> Prompt:
    """A prompt as recipes and plans write it: {"text", "weight"}, the weight a number or a schedule's table."""
    weight = table.get("weight", 1.0)
    return Prompt(str(table["text"]), Schedule(**weight) if isinstance(weight, dict) else weight)


def _valid_side(v: object) -> bool:
    return _whole(v) and MIN_RESOLUTION <= v <= MAX_RESOLUTION


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(problems: list[str], name: str, value: object, allowed) -> None:
    if value not in allowed:
        problems.append(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
