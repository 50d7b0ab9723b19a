"""Comparisons and batch plans: many runs, resumable, and tables rebuilt from the PNGs themselves.

A Plan is a list of items (prompt set x variant x method x seed), each with its config and file.
Running it skips every item whose PNG already holds a completed run of exactly that config with
the same models, so an interrupted plan resumes where it stopped. The tables are rebuilt from the
recipes inside the PNGs, so they can never disagree with the images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import re
import statistics
import tomllib
from argparse import ArgumentTypeError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import PRESETS, GenerationConfig, merged_terms, settings_over, upgraded
from .durable import check_writable, write_atomic
from .methods import GUIDANCE, METHOD_NAMES, METHOD_ORDER
from .errors import ConfigError, DasAgError, WriteError
from .evaluators import TRAINING_COLUMNS
from .png import read_recipe

MANIFEST = "plan.json"


@dataclass(frozen=True)
class PlanItem:
    prompt_set: str  # a short name for the prompts, used in file names and tables
    variant: str  # "" or the name of a [[variants]] entry
    seed: int
    config: GenerationConfig
    motion: Any = None  # an animate.Motion: the item is a video of frames that start from the last one
    video: str = ""  # the video's suffix (.gif, .webp, .mp4) when it is one

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def filename(self) -> str:
        variant = f"-{self.variant}" if self.variant else ""
        return f"{self.prompt_set}{variant}-{self.method}-seed{self.seed}{self.video or '.png'}"

    @property
    def last_frame(self) -> str:
        """A video's last frame, relative to the plan's images: the PNG its row is read from."""
        from .animate import FRAME_NAME, frames_folder

        return str(frames_folder(self.filename) / (FRAME_NAME.format(self.motion.frames - 1) + ".png"))


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]
    out_dir: Path
    evaluators: tuple[str, ...] = ()
    published: dict | None = None  # the paper's numbers, shown beside ours for --prompts reference

    @property
    def image_dir(self) -> Path:
        return self.out_dir / "images"

    def path(self, item: PlanItem) -> Path:
        return self.image_dir / item.filename

    def manifest(self) -> dict:
        # A video's row is its last frame's (a PNG with the recipe and scores); the video is beside it.
        return {
            "items": [
                {"file": f"images/{i.last_frame if i.motion else i.filename}", "prompt_set": i.prompt_set,
                 "variant": i.variant, "method": i.method, "seed": i.seed,
                 **({"video": f"images/{i.filename}"} if i.motion else {})}
                for i in self.items
            ],
            "evaluators": list(self.evaluators),
            "published": self.published,
        }


SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")  # a name that is also a safe file name


def slug(text: str, length: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].rstrip("-") or "prompt"


def build_plan(
    prompt_sets: list[tuple[str, tuple]],
    seeds: list[int],
    base: dict[str, Any],
    out_dir: Path,
    *,
    methods: tuple[str, ...] = METHOD_ORDER,
    variants: list[tuple[str, dict[str, Any]]] | None = None,
    evaluators: tuple[str, ...] = (),
    published: dict | None = None,
    animation: dict[str, Any] | None = None,
) -> Plan:
    """Every combination, each method with identical settings and seeds. With `animation` (the
    Motion's settings and the video's `format`; a variant's own `animation` table changes some of
    them) every item is a video."""
    if not prompt_sets:
        raise ConfigError("a plan needs at least one prompt")
    if not seeds:
        raise ConfigError("a plan needs at least one seed")
    names = [name for name, _ in prompt_sets]
    if len(set(names)) != len(names):
        raise ConfigError(f"prompt set names must differ: {', '.join(names)}")
    parsed = [parse_method(m) for m in methods]
    # A term some method marks is measured in the others too, so their tables have its columns.
    marked = list(dict.fromkeys(term for m in parsed for term, _ in m.marks))
    items = []
    base = upgraded(base)  # a plan written for an older release keeps working
    variants = variants or [("", {})]
    videos = [_video(animation, overrides.get("animation"), name) for name, overrides in variants]
    variants = [(name, _upgraded_overrides(base, {k: v for k, v in overrides.items() if k != "animation"}))
                for name, overrides in variants]
    for name, prompts in prompt_sets:
        for (variant, overrides), (motion, suffix) in zip(variants, videos):
            for method in parsed:
                for seed in seeds:
                    terms = merged_terms(base.get("terms", {}), overrides.get("terms", {}))
                    terms = merged_terms(terms, {"aesthetic": {"guidance": method.guidance}})
                    config = GenerationConfig(**{**base, **overrides, **_merged_canvas_settings(base, overrides),
                                                 "prompts": prompts, "terms": terms, "seed": seed})
                    for term in marked:
                        config = _with_mark(config, term, dict(method.marks).get(term, ""))
                    if motion is not None:
                        from .animate import check

                        check(config, motion)
                    items.append(PlanItem(name, variant, seed, config, motion, suffix))
    return Plan(tuple(items), Path(out_dir), tuple(evaluators), published)


def _video(animation: dict[str, Any] | None, changes: dict[str, Any] | None, variant: str) -> tuple[Any, str]:
    """(Motion, suffix) of a plan's videos, a variant's changes applied; (None, "") for images."""
    if changes is not None and animation is None:
        raise ConfigError(f"variant {variant!r} changes the animation, but the plan has no [animation] table")
    if animation is None:
        return None, ""
    from .animate import Motion
    from .animation import check_format

    where = f"the plan's animation{f' in variant {variant!r}' if variant else ''}"
    table = {**animation, **(changes or {})}
    suffix = "." + str(table.pop("format", "gif")).lower().lstrip(".")
    check_format(suffix)
    try:
        motion = Motion.from_dict(_schedules(Motion, table))
    except (ArgumentTypeError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    problems = motion.problems()
    if problems:
        raise ConfigError(f"{where}: {problems[0]}")
    return motion, suffix


def _schedules(cls: type, table: dict[str, Any]) -> dict[str, Any]:
    """A plan's schedule settings of `cls` as Schedules: a number is a constant, a string is
    KIND:START:END[:RATE] as on the command line (a table is read by settings_from_table)."""
    from .schedules import Schedule
    from .settings import described, kind_of, parse_schedule

    out = dict(table)
    for f, _ in described(cls):
        value = out.get(f.name)
        if kind_of(f) != "schedule" or isinstance(value, (dict, bool)) or value is None:
            continue
        if isinstance(value, (int, float)):
            out[f.name] = Schedule.constant(float(value))
        elif isinstance(value, str):
            out[f.name] = parse_schedule(value, f.name.replace("_", " "))
    return out


def _upgraded_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A variant's settings in today's shape, read against the canvas the variant runs."""
    canvas = overrides.get("canvas", base.get("canvas", "pyramid"))
    out = upgraded({**overrides, "canvas": canvas})
    if "canvas" not in overrides:
        del out["canvas"]
    return out


def _merged_canvas_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A variant's canvas settings on top of the base's (a variant changing the stroke count keeps
    the base's colours), when both are tables for the same canvas."""
    ours, theirs = base.get("canvas_settings"), overrides.get("canvas_settings")
    if not isinstance(theirs, dict) or ours is None or overrides.get("canvas", base.get("canvas")) != base.get("canvas"):
        return {}
    if not isinstance(ours, dict):
        ours = dataclasses.asdict(ours)
    return {"canvas_settings": {**ours, **theirs}}


def load_plan(path: str | Path, out_dir: str | Path | None = None) -> Plan:
    """A plan from TOML (see README, "Batch plans")."""
    from .prompts import parse_prompt

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DasAgError(f"plan {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise DasAgError(f"plan {path} is not valid TOML ({exc})") from None
    known = {"out", "preset", "seeds", "methods", "evaluators", "settings", "prompts", "variants", "animation"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DasAgError(f"plan {path} has unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    base = dict(PRESETS.get(data.get("preset", ""), {}))
    if "preset" in data and data["preset"] not in PRESETS:
        raise DasAgError(f"plan preset {data['preset']!r} is unknown; choose one of {', '.join(PRESETS)}")
    base = settings_over(base, _settings(data.get("settings", {}), "settings"))
    methods = tuple(data.get("methods", METHOD_ORDER))
    for name in methods:
        parse_method(name)  # says which name is wrong before anything runs
    seeds = data.get("seeds", [base.get("seed", 42)])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise DasAgError("plan seeds must be a list of whole numbers >= 0")
    prompt_sets = []
    for i, entry in enumerate(data.get("prompts", [])):
        texts = entry.get("text", [])
        texts = [texts] if isinstance(texts, str) else texts
        negatives = entry.get("negative", [])
        negatives = [negatives] if isinstance(negatives, str) else negatives
        prompts = tuple(parse_prompt(t) for t in texts) + tuple(parse_prompt(n, negative=True) for n in negatives)
        name = entry.get("name")
        if name is not None and not SAFE_NAME.fullmatch(str(name)):
            # It goes into file names: "../../x" would write outside the plan's folder.
            raise DasAgError(f"prompt set name {str(name)!r} must be letters, digits, '.', '_' or '-' "
                             "(not starting with '.'); it becomes part of file names")
        prompt_sets.append((str(name) if name else f"{i + 1:02d}-{slug(texts[0] if texts else '')}", prompts))
    variants = [(slug(v.get("name", f"variant-{i + 1}")),
                 {**_settings({k: x for k, x in v.items() if k not in ("name", "animation")}, "variant"),
                  **({"animation": _table(v["animation"], "a variant's animation")} if "animation" in v else {})})
                for i, v in enumerate(data.get("variants", []))]
    animation = _table(data["animation"], "animation") if "animation" in data else None
    out = Path(out_dir) if out_dir else (path.parent / data.get("out", path.stem))
    return build_plan(prompt_sets, seeds, base, out, methods=methods, variants=variants or None,
                      evaluators=tuple(data.get("evaluators", ())), animation=animation)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DasAgError(f"a plan's {where} must be a table (keys and values), not {value!r}")
    return value


@dataclass(frozen=True)
class Method:
    """What a method name asks for: the aesthetic sign and the marks of other signed terms."""

    guidance: str
    marks: tuple[tuple[str, str], ...] = ()  # (term name, mark), e.g. ("ambiguity", "-CAN")


def _marks() -> dict[str, str]:
    """Every mark a term defines (longest first), with its term."""
    from .objectives import TERMS

    marks = {mark: name for name, cls in TERMS.items() for mark in cls.method_marks if mark}
    return dict(sorted(marks.items(), key=lambda kv: -len(kv[0])))


def parse_method(name: str) -> Method:
    """A method from its name (DAS, DAS-AG, DAS-rAG, each optionally marked: DAS-CAN, DAS-AG-rCAN)
    or a guidance value (reward, penalty, off)."""
    if name in GUIDANCE:
        return Method(name)
    by_name = {v: k for k, v in METHOD_NAMES.items()}
    marks = _marks()
    for base in sorted(by_name, key=len, reverse=True):
        if not name.startswith(base):
            continue
        rest, found = name[len(base):], []
        while rest:
            mark = next((m for m in marks if rest.startswith(m)), None)
            if mark is None:
                break
            found.append((marks[mark], mark))
            rest = rest[len(mark):]
        if not rest:
            return Method(by_name[base], tuple(found))
    raise DasAgError(f"unknown method {name!r}; use {', '.join(by_name)} (or {', '.join(GUIDANCE)}), "
                     f"optionally followed by {' or '.join(marks)}")


def method_order(name: str) -> tuple:
    """Sort key: the published order of DAS, DAS-AG, DAS-rAG, then marks."""
    try:
        method = parse_method(name)
    except DasAgError:
        return (9, name)
    return (METHOD_ORDER.index(method.guidance), len(method.marks), name)


def _with_mark(config: GenerationConfig, term: str, mark: str) -> GenerationConfig:
    from .objectives import TERMS
    from .settings import replace_settings

    settings = replace_settings(config.term_settings(term), TERMS[term].method_marks[mark])
    return config.replace(terms={**dict(config.terms), term: settings})


def _settings(table: dict[str, Any], where: str) -> dict[str, Any]:
    from .config import SCHEDULE_FIELDS, term_settings_from_dict
    from .schedules import Schedule

    out = {}
    for key, value in table.items():
        if key in ("prompts", "guidance", "seed"):
            raise DasAgError(f"{key} is set by the plan itself, not in {where}")
        if key in SCHEDULE_FIELDS and isinstance(value, dict):
            value = Schedule(**value)
        elif key == "terms":
            if isinstance(value, dict) and "guidance" in (value.get("aesthetic") or {}):
                raise DasAgError(f"guidance is set by the plan's methods, not in {where}")
            value = term_settings_from_dict(value)
        out[key] = value
    return out


# -- running -----------------------------------------------------------------------------------
def is_complete(path: Path, config: GenerationConfig, model_identities: dict) -> bool:
    """True when `path` holds a finished run of exactly `config` with the same weights."""
    try:
        recipe = read_recipe(path)
        from .canvases import canvas_class

        # A drawing is complete with its other files too (the SVG beside the PNG).
        canvas = canvas_class(config.canvas)
        return (
            all(path.with_suffix(suffix).is_file() for suffix in canvas.files)
            and recipe.get("run", {}).get("status") == "completed"
            and GenerationConfig.from_dict(recipe["config"]) == config
            and recipe.get("models") == model_identities
        )
    except DasAgError:
        return False


def is_video_complete(path: Path, item: PlanItem, model_identities: dict) -> bool:
    """True when the video `path` was made and its last frame finishes exactly `item`'s animation
    with the same weights (every frame before it was checked against it as it was made)."""
    from .animate import animation_from_recipe

    frame = path.parent / item.last_frame
    try:
        recipe = read_recipe(frame)
        return (path.is_file() and recipe.get("run", {}).get("status") == "completed"
                and recipe.get("models") == model_identities
                and recipe["animation"].get("frame") == item.motion.frames - 1
                and animation_from_recipe(recipe) == (item.config, item.motion))
    except (DasAgError, KeyError, TypeError, AttributeError):
        return False


def run_plan(plan: Plan, models, *, on_item: Callable[[PlanItem, str], None] | None = None,
             on_step: Callable[[Any], None] | None = None, images_per_step: int | None = None) -> tuple[int, int]:
    """Make every item not already complete, several images per step. Returns (made, skipped).

    `images_per_step` None means auto (as many as fit in memory). DAS, DAS-AG and DAS-rAG of one
    seed differ only in the aesthetic sign, so a comparison's images share one encoder batch.
    """
    identities = models.identities()
    check_writable(plan.image_dir / "probe.png")  # before any image is made
    plan.image_dir.mkdir(parents=True, exist_ok=True)
    with plan_lock(plan.out_dir):
        return _run_plan_locked(plan, models, identities, on_item, on_step, images_per_step)


@contextlib.contextmanager
def plan_lock(out_dir: Path):
    """Hold the plan's folder for this process: a second process on the same plan would delete
    this one's temporary files (as leftovers of a killed run) and make the same images twice.
    The lock goes with the process, however it ends."""
    path = Path(out_dir) / ".das-ag-plan.lock"
    handle = open(path, "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DasAgError(f"another das-ag process is running the plan in {out_dir}; wait for it to end, "
                             "or give this run another --out") from None
        yield
    finally:
        handle.close()


def _run_plan_locked(plan: Plan, models, identities, on_item, on_step, images_per_step) -> tuple[int, int]:
    from .engine import choose_images_per_step, synthesize

    todo, skipped = plan_todo(plan, identities, on_item)
    videos, todo = [i for i in todo if i.motion], [i for i in todo if not i.motion]
    made = 0
    for item in videos:
        made += make_video(plan, item, models, on_item, on_step)
    if not todo:
        return made, skipped
    for items in item_batches(todo, choose_images_per_step(models, [item.config for item in todo], images_per_step)):
        run = synthesize([item.config for item in items], models)
        for event in run:
            if on_step:
                on_step(event)
        made += save_batch(plan, list(zip(items, run.results())), on_item)
    return made, skipped


def plan_todo(plan: Plan, identities: dict, on_item=None) -> tuple[list[PlanItem], int]:
    """Ready the plan's folder (a killed run's temporary files gone, the manifest written) and
    return the items still to make, with how many were already complete. A seed's methods come
    side by side, so that they share a batch whatever its size."""
    for leftover in plan.image_dir.glob("**/.*.partial"):
        leftover.unlink()  # a temporary file of a run that was killed mid-write; never a result
    write_atomic(plan.out_dir / MANIFEST, json.dumps(plan.manifest(), indent=2).encode(), overwrite=True)
    todo = []
    skipped = 0
    for item in plan.items:
        path = plan.path(item)
        if is_video_complete(path, item, identities) if item.motion else is_complete(path, item.config, identities):
            skipped += 1
            if on_item:
                on_item(item, "skipped")
        else:
            todo.append(item)
    todo.sort(key=lambda item: (item.prompt_set, item.variant, item.seed))
    return todo, skipped


def make_video(plan: Plan, item: PlanItem, models, on_item=None, on_step=None) -> int:
    """Make (or go on making, from its frames on disk) one video of the plan."""
    from .animate import animate

    animate(item.config, item.motion, models, plan.path(item), on_step=(lambda k, event: on_step(event)) if on_step else None)
    if on_item:
        on_item(item, "completed")
    return 1


def item_batches(todo: list[PlanItem], images_per_step: int) -> list[list[PlanItem]]:
    """The images that run together: wherever a plan runs, the same batches, so that each
    recipe names the batch that re-creates its bytes."""
    from .engine import plan_batches

    return [[todo[i] for i in indices] for indices in plan_batches([item.config for item in todo], images_per_step)]


def save_batch(plan: Plan, done: list, on_item=None) -> int:
    """Write each (item, result) of a finished batch into the plan's folder; a result is anything
    with `save(path, overwrite=)` and `status`. Returns how many were written."""
    for k, (item, result) in enumerate(done):
        # Atomic replace: an older or unfinished file with this name is swapped whole; an
        # interruption before this line leaves nothing that could count as done.
        try:
            result.save(plan.path(item), overwrite=True)
        except WriteError as exc:
            raise _rescue_batch(exc, plan, done[k:]) from None
        if on_item:
            on_item(item, result.status)
    return len(done)


def _rescue_batch(exc: WriteError, plan: Plan, unsaved: list) -> WriteError:
    """Keep a batch's images that could not be saved (a full disk) in the rescue folder; the
    error that says where, and that the plan goes on from its finished images."""
    from .rescue import rescue_folder, rescue_path

    try:
        for item, result in unsaved:
            result.save(rescue_path(plan.path(item)))
    except WriteError as again:
        return WriteError(exc.path, f"{exc.reason}; nor could this batch's images be kept in {rescue_folder(make=False)} "
                                    f"({again.reason}); finished images stay in {plan.image_dir}: free some space "
                                    "and run the same command again to continue")
    return WriteError(exc.path, f"{exc.reason}; this batch's {len(unsaved)} unsaved image(s) are kept in "
                                f"{rescue_folder(make=False)}; finished images stay in {plan.image_dir}: free some space and run "
                                "the same command again to continue")


# -- tables ------------------------------------------------------------------------------------
def read_manifest(out_dir: Path) -> dict:
    """The plan's manifest in `out_dir`, or {} for a plain folder of PNGs."""
    path = Path(out_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}




def collect_rows(out_dir: Path, evaluators: list | None = None) -> list[dict[str, Any]]:
    """One row per PNG, numbers from its recipe (and from each extra evaluator, on its pixels).

    The plan's manifest, when present, names each file's prompt set and variant; without one
    (any folder of das-ag PNGs) the first prompt stands for the prompt set.
    """
    from PIL import Image

    from .scoring import Scores

    out_dir = Path(out_dir)
    entries = read_manifest(out_dir).get("items")
    if entries is not None:
        files = [(out_dir / e["file"], e) for e in entries if (out_dir / e["file"]).is_file()]
    else:
        files = [(p, {}) for p in sorted(out_dir.glob("**/*.png"))]
    rows, row_prompts = [], []
    for path, entry in files:
        try:
            recipe = read_recipe(path)
        except DasAgError:
            continue  # not a das-ag image
        config = GenerationConfig.from_dict(recipe["config"])
        row_prompts.append(config.prompts)
        rows.append(
            {
                "file": str(path.relative_to(out_dir)),
                "prompt_set": entry.get("prompt_set") or slug(config.positive_prompts[0].text if config.positive_prompts else "aesthetic"),
                "variant": entry.get("variant", ""),
                "method": config.method,
                "seed": config.seed,
                "status": recipe["run"]["status"],
                **({"video": entry["video"]} if entry.get("video") else {}),
                **Scores(recipe["scores"]).numbers(),
            }
        )
    for evaluator in evaluators or []:
        images = [Image.open(out_dir / r["file"]).convert("RGB") for r in rows]
        for row, scores in zip(rows, evaluator.score(images, row_prompts) if rows else []):
            row.update(scores)
    return rows


def score_columns(rows: list[dict[str, Any]], exclude: set[str] = frozenset()) -> list:
    """The training columns the rows have: the long-standing ones first, then any other term's."""
    from .evaluators import Column

    known = [c for c in TRAINING_COLUMNS if any(c.name in r for r in rows)]
    fixed = {"file", "video", "prompt_set", "variant", "method", "seed", "status", *(c.name for c in TRAINING_COLUMNS)}
    extra = sorted({k for r in rows for k in r if k not in fixed and k not in exclude})
    return known + [Column(k, f"{k} (a term of the run, training models)", False) for k in extra]


def summarize(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation per (variant, method), methods in the published order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["method"]), []).append(row)
    summary = []
    for (variant, method), members in sorted(groups.items(), key=lambda kv: (kv[0][0], method_order(kv[0][1]))):
        entry: dict[str, Any] = {"variant": variant, "method": method, "n": len(members)}
        for column in columns:
            values = [m[column] for m in members if m.get(column) is not None]
            entry[column] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
            }
        summary.append(entry)
    return summary
