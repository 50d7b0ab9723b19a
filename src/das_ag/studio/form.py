"""The studio's form state <-> GenerationConfig, with no Streamlit in it.

The app keeps every control's value in a flat dict of widget keys (Streamlit's session state).
These functions turn a config (a preset, a PNG recipe) into those values and the values back into
a validated config, so the app itself holds no knowledge of settings beyond laying them out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError, DasAgError
from ..config import SCHEDULE_FIELDS, GenerationConfig
from ..settings import PartSettings, described, kind_of, replace_settings
from ..prompts import Prompt
from ..schedules import Schedule

# Scalar settings whose widget key is the config field's name: every described one but the margin
# (shown as "automatic" plus a number) and the schedules (four widgets each).
SCALAR_FIELDS = tuple(
    f.name for f, _ in described(GenerationConfig) if kind_of(f) in ("bool", "optional_bool", "int", "float", "str")
)
SCHEDULE_PARTS = ("kind", "start", "end", "rate")
# Only the exponential forms read `rate`; a constant schedule has no `end`.
RATE_KINDS = ("exp_decay", "exp_warmup")


def prompt_key(group: str, row: int, part: str) -> str:
    """Widget key of one prompt row: group 'pos' or 'neg', part 'text', 'weight' or its timeline's
    'timeline' (a schedule kind), 'end' and 'rate'."""
    return f"{group}_{part}_{row}"


# The studio's shapes, width:height; "Resolution" is then the long side.
ASPECTS = {"1:1 square": (1, 1), "4:3": (4, 3), "3:2": (3, 2), "16:9 wide": (16, 9), "3:4": (3, 4), "2:3": (2, 3),
           "9:16 tall": (9, 16)}


def aspect_size(long_side: int, aspect: str) -> tuple[int, int]:
    """(width, height) of `aspect` (a key of ASPECTS, or "WxH" exactly) with `long_side` px."""
    if aspect not in ASPECTS:
        width, _, height = aspect.partition("x")
        return int(width), int(height)
    a, b = ASPECTS[aspect]
    short = max(32, round(long_side * min(a, b) / max(a, b) / 8) * 8)  # a multiple of 8, as encoders like
    return (long_side, short) if a >= b else (short, long_side)


def aspect_of(config: GenerationConfig) -> str:
    """The studio's aspect for `config`: a listed one that gives its exact size, else "WxH"."""
    if config.width is None:
        return "1:1 square"
    for name in ASPECTS:
        if aspect_size(config.resolution, name) == (config.width, config.height):
            return name
    return f"{config.width}x{config.height}"


VIDEO = "video_"  # the prefix of the video's (Motion's) widget keys


def motion_to_state(motion) -> dict[str, Any]:
    """The widget values of a video's settings (animate.Motion), keys prefixed "video_"."""
    state: dict[str, Any] = {}
    for f, _ in described(type(motion)):
        value = getattr(motion, f.name)
        if kind_of(f) == "schedule":
            state.update(schedule_to_state(VIDEO + f.name, value))
        else:
            state[VIDEO + f.name] = float(value) if kind_of(f) == "float" else value
    return state


def motion_from_state(state: dict[str, Any]):
    """The video's settings the widgets hold, and every problem they have in plain words."""
    from ..animate import Motion

    values = {}
    for f, _ in described(Motion):
        if kind_of(f) == "schedule":
            if (sched := schedule_from_state(state, VIDEO + f.name)) is not None:
                values[f.name] = sched
        elif VIDEO + f.name in state:
            value = state[VIDEO + f.name]
            values[f.name] = int(value) if kind_of(f) == "int" and float(value).is_integer() else value
    motion = Motion(**values)
    return motion, [sentence(p) for p in motion.problems()]


def schedule_key(name: str, part: str) -> str:
    return f"{name}_{part}"


def schedule_to_state(prefix: str, sched: Schedule) -> dict[str, Any]:
    """The four widget values of a schedule whose widget keys start with `prefix`."""
    return {schedule_key(prefix, part): getattr(sched, part) if part == "kind" else float(getattr(sched, part))
            for part in SCHEDULE_PARTS}


def schedule_from_state(state: dict[str, Any], prefix: str) -> Schedule | None:
    """The schedule the four widgets under `prefix` show (None where they are not all there)."""
    parts = {part: state.get(schedule_key(prefix, part)) for part in SCHEDULE_PARTS}
    if any(v is None for v in parts.values()):
        return None
    if parts["kind"] == "constant":
        parts["end"] = parts["start"]  # a constant schedule shows no end; keep it consistent
    return Schedule(parts["kind"], float(parts["start"]), float(parts["end"]), float(parts["rate"]))


# The compile setting's three values as its select box shows them: Streamlit takes a None value
# for "nothing chosen" and would show a placeholder instead of "auto".
COMPILE_CHOICES = {"auto": None, "on": True, "off": False}


def config_to_state(config: GenerationConfig) -> dict[str, Any]:
    """Widget values that show `config`."""
    state: dict[str, Any] = {name: getattr(config, name) for name in SCALAR_FIELDS}
    state["compile_choice"] = next(k for k, v in COMPILE_CHOICES.items() if v is config.compile)
    for name in SCHEDULE_FIELDS:
        state.update(schedule_to_state(name, getattr(config, name)))
    state["jitter_margin_auto"] = config.jitter_margin is None
    state["jitter_margin"] = config.margin
    state["aspect"] = aspect_of(config)
    state["clip_models_text"] = "\n".join(config.clip_models)
    state.update(prompts_to_state(config.prompts))
    # Streamlit number inputs keep the type they were created with: floats stay floats.
    for f, _ in described(GenerationConfig):
        if kind_of(f) == "float":
            state[f.name] = float(state[f.name])
    state.update(term_settings_to_state(config))
    state.update(canvas_settings_to_state(config))
    return state


def canvas_key(canvas: str, name: str) -> str:
    """Widget key of a setting of a canvas that has settings of its own."""
    return f"canvas:{canvas}:{name}"


def _base_key(canvas: str) -> str:
    # The canvas's settings as restored: fields without a widget are kept from it.
    return f"canvas_base:{canvas}"


def _scalar(f) -> bool:
    return kind_of(f) in ("bool", "int", "float", "str", "optional_float", "optional_int")


def canvas_settings_to_state(config: GenerationConfig) -> dict[str, Any]:
    from ..canvases import CANVASES

    state: dict[str, Any] = {}
    for canvas, cls in CANVASES.items():
        if cls.Settings is None:
            continue
        settings = config.canvas_settings if config.canvas == canvas else cls.Settings()
        state[_base_key(canvas)] = settings
        for f, _ in described(cls.Settings):
            value = getattr(settings, f.name)
            if _scalar(f):
                state[canvas_key(canvas, f.name)] = float(value) if kind_of(f) == "float" else value
            elif kind_of(f) == "schedule":
                state.update(schedule_to_state(canvas_key(canvas, f.name), value))
    return state


def canvas_settings_from_state(state: dict[str, Any], canvas: str) -> Any:
    """The chosen canvas's settings from the form (None for a canvas without settings)."""
    from ..canvases import canvas_class

    cls = canvas_class(canvas)
    if cls is None or cls.Settings is None:
        return None
    base = state.get(_base_key(canvas))
    if not isinstance(base, cls.Settings):
        base = cls.Settings()
    values = {}
    for f, _ in described(cls.Settings):
        key = canvas_key(canvas, f.name)
        if _scalar(f) and key in state:
            value = state[key]
            if kind_of(f) == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
            values[f.name] = value
        elif kind_of(f) == "schedule" and (sched := schedule_from_state(state, key)) is not None:
            values[f.name] = sched
    changed = {k: v for k, v in values.items() if getattr(base, k) != v}
    return replace_settings(base, changed)


def term_key(term: str, name: str) -> str:
    """Widget key of a setting of a term that has settings of its own."""
    return f"term:{term}:{name}"


def term_settings_to_state(config: GenerationConfig) -> dict[str, Any]:
    from ..objectives import TERMS

    state: dict[str, Any] = {}
    for term, cls in TERMS.items():
        if cls.Settings is not None:
            settings = config.term_settings(term)
            for f, _ in described(cls.Settings):
                value = getattr(settings, f.name)
                if kind_of(f) == "schedule":  # four widgets
                    state.update(schedule_to_state(term_key(term, f.name), value))
                    continue
                numeric = kind_of(f) in ("float", "optional_float") and value is not None
                state[term_key(term, f.name)] = float(value) if numeric else value
    return state


def _term_values(state: dict[str, Any], term: str, settings: type) -> dict[str, Any]:
    """The values the form holds for a term's settings, by field name."""
    values = {}
    for f, _ in described(settings):
        key = term_key(term, f.name)
        if kind_of(f) == "schedule":
            if (sched := schedule_from_state(state, key)) is not None:
                values[f.name] = sched
        elif key in state:
            values[f.name] = state[key]
    return values


def recipe_term_state(recipe: dict) -> dict[str, Any]:
    """The term and canvas settings a recipe carries, as widget state, without making any
    settings object."""
    config = recipe.get("config") if isinstance(recipe.get("config"), dict) else {}
    terms = config.get("terms", {})
    state = {term_key(str(term), str(name)): value for term, values in terms.items() if isinstance(values, dict)
             for name, value in values.items()} if isinstance(terms, dict) else {}
    canvas = config.get("canvas_settings")
    if isinstance(canvas, dict):
        state.update({canvas_key(str(config.get("canvas", "pyramid")), str(name)): value for name, value in canvas.items()})
    return state


def foreign_files(state: dict[str, Any]) -> list[str]:
    """A problem for every file the form names that is not one of the studio's uploads (a typed
    path, or one a restored recipe carried), found before any settings object reads a file."""
    from ..canvases import CANVASES
    from ..objectives import TERMS
    from .files import outside_uploads

    named = [path for term, cls in TERMS.items() if cls.Settings is not None
             for path in cls.Settings.files_in(_term_values(state, term, cls.Settings))]
    for canvas, cls in CANVASES.items():  # a strokes start drawing
        if cls.Settings is not None:
            values = {f.name: state[canvas_key(canvas, f.name)] for f, _ in described(cls.Settings)
                      if canvas_key(canvas, f.name) in state}
            named += cls.Settings.files_in(values)
    return [f"{path} is not a file uploaded to this studio: the studio reads only its own uploads "
            f"(and built-in names such as wikiart); upload the file instead." for path in outside_uploads(named)]


def term_unused(state: dict[str, Any], term: str) -> dict[str, str]:
    """The settings of `term` that its other values in the form leave unread, with why (the
    page greys them out). Nothing for values the form will refuse anyway, and nothing read for a
    file that is not one of the studio's uploads: making the settings would hash it."""
    from ..objectives import TERMS
    from .files import outside_uploads

    cls = TERMS[term].Settings
    if cls.unused is PartSettings.unused:  # it never leaves a setting unread: nothing to build
        return {}
    values = _term_values(state, term, cls)
    try:
        if outside_uploads(cls.files_in(values)):
            return {}
        return cls(**values).unused()
    except (DasAgError, TypeError, ValueError):
        return {}


def term_settings_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """Settings of every term the form has controls for, as GenerationConfig.terms takes them."""
    from ..objectives import TERMS

    out = {}
    for term, cls in TERMS.items():
        if cls.Settings is None:
            continue
        values = _term_values(state, term, cls.Settings)
        if values:
            out[term] = dataclasses.replace(cls.Settings(), **values)
    return out


def prompt_row_state(group: str, row: int, prompt: Prompt | None = None) -> dict[str, Any]:
    """The widget values of one prompt row: its text, weight and timeline (a schedule's kind, the
    weight it ends at and its rate; "constant" for a plain weight). Weights are shown unsigned:
    the row's group says which way it pulls."""
    weight = Schedule.constant(1.0) if prompt is None else \
        prompt.weight if prompt.scheduled else Schedule.constant(prompt.weight)
    return {prompt_key(group, row, "text"): "" if prompt is None else prompt.text,
            prompt_key(group, row, "weight"): float(abs(weight.start)),
            prompt_key(group, row, "timeline"): weight.kind,
            prompt_key(group, row, "end"): float(abs(weight.end)),
            prompt_key(group, row, "rate"): float(weight.rate)}


def prompts_to_state(prompts: tuple[Prompt, ...]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    positives = [p for p in prompts if not p.is_negative]
    negatives = [p for p in prompts if p.is_negative]
    state["pos_rows"] = list(range(max(1, len(positives))))
    state["neg_rows"] = list(range(len(negatives)))
    for group, items in (("pos", positives), ("neg", negatives)):
        for row, prompt in enumerate(items):
            state.update(prompt_row_state(group, row, prompt))
    if not positives:
        state.update(prompt_row_state("pos", 0))
    return state


def prompts_from_state(state: dict[str, Any]) -> tuple[Prompt, ...]:
    """The prompts the rows hold; empty rows are skipped, negative rows become negative weights,
    a row with a timeline a scheduled weight."""
    prompts = []
    for group, sign in (("pos", 1.0), ("neg", -1.0)):
        for row in state.get(f"{group}_rows", []):
            text = str(state.get(prompt_key(group, row, "text"), "")).strip()
            if not text:
                continue
            weight = sign * float(state.get(prompt_key(group, row, "weight"), 1.0))
            kind = state.get(prompt_key(group, row, "timeline"), "constant")
            if kind != "constant":
                end = sign * float(state.get(prompt_key(group, row, "end"), 1.0))
                weight = Schedule(kind, weight, end, float(state.get(prompt_key(group, row, "rate"), 0.03)))
            prompts.append(Prompt(text, weight))
    return tuple(prompts)


def sentence(problem: str) -> str:
    """A config problem ("steps must be ...") as the form shows it: capitalised, with a full stop."""
    return problem[0].upper() + problem[1:] + "."


def state_to_config(state: dict[str, Any]) -> tuple[GenerationConfig | None, list[str]]:
    """The config the form describes, or None and every problem in plain words."""
    prompts = prompts_from_state(state)
    problems = []
    if any(not p.scheduled and p.weight == 0 for p in prompts):
        problems.append("Prompt weights must be greater than 0; remove a prompt instead of zeroing it.")
    foreign = foreign_files(state)
    if foreign:  # before the terms' settings are made: making them reads their files
        return None, problems + foreign
    kwargs: dict[str, Any] = {name: state[name] for name in SCALAR_FIELDS if name in state}
    if state.get("compile_choice") in COMPILE_CHOICES:
        kwargs["compile"] = COMPILE_CHOICES[state["compile_choice"]]
    for name in SCHEDULE_FIELDS:
        if (sched := schedule_from_state(state, name)) is not None:
            kwargs[name] = sched
    if "jitter_margin_auto" in state:
        kwargs["jitter_margin"] = None if state["jitter_margin_auto"] else int(state["jitter_margin"])
    ensemble = tuple(line.strip() for line in str(state.get("clip_models_text", "")).splitlines() if line.strip())
    if ensemble:
        from ..clip_models import named_only_problems

        try:
            problems.extend(sentence(p) for p in named_only_problems(ensemble))
        except ConfigError as exc:
            problems.append(sentence(str(exc)))
        kwargs["clip_models"] = ensemble
    if state.get("aspect", "1:1 square") != "1:1 square" and isinstance(kwargs.get("resolution"), (int, float)):
        kwargs["width"], kwargs["height"] = aspect_size(int(kwargs["resolution"]), state["aspect"])
    for f, _ in described(GenerationConfig):
        if kind_of(f) == "int" and isinstance(kwargs.get(f.name), float) and kwargs[f.name].is_integer():
            kwargs[f.name] = int(kwargs[f.name])
    try:
        terms = term_settings_from_state(state)
    except (TypeError, ValueError) as exc:
        return None, [f"A term's settings are not valid: {exc}."]
    if terms:
        kwargs["terms"] = terms
    try:
        kwargs["canvas_settings"] = canvas_settings_from_state(state, kwargs.get("canvas", "pyramid"))
    except (TypeError, ValueError) as exc:
        return None, [f"The canvas's settings are not valid: {exc}."]
    if problems:
        return None, problems
    problems = GenerationConfig.problems_of(prompts=prompts, **kwargs)
    if problems:
        return None, [sentence(p) for p in problems]
    return GenerationConfig(prompts=prompts, **kwargs), []
