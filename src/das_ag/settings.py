"""One description of every setting, read by the CLI, the studio's form and plans alike.

A setting is a dataclass field (of GenerationConfig, or of a term's own Settings) whose metadata
holds a `Setting`: what it means, where it belongs, its range or choices, its flag. The CLI makes
its flags from these, the studio its controls, plans accept the field names: adding a setting is
writing its field once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .schedules import SCHEDULE_KINDS, Schedule, is_finite_number


PICTURE_SUFFIXES = ("png", "jpg", "jpeg", "webp")  # what the studio takes as a picture upload


@dataclass(frozen=True)
class Upload:
    """A setting that names a file a studio visitor uploads: how the page asks for it."""
    label: str  # the uploader's label
    kind: str  # what the file is, in messages ("picture", "style list")
    suffixes: tuple[str, ...]  # the file types the uploader accepts


@dataclass(frozen=True)
class Setting:
    help: str
    group: str  # where it is shown: "optimisation", "augmentation", "canvas", "regularisers", "device", ...
    label: str = ""  # the studio's label (default: the field name in words)
    flag: str | None = None  # the CLI flag (default: --field-name); "" for none
    aliases: tuple[str, ...] = ()  # older flags that still work, with a note naming the new one
    was: tuple[str, ...] = ()  # older names of the field in recipes and plans, read as this one
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    step: float | None = None
    format: str | None = None  # the studio's number format, e.g. "%.4f"
    studio: bool = True  # False: the studio lays it out by hand (or not at all)
    metavar: str | None = None  # the CLI's placeholder for the value (default: by kind)
    checksum_of: str | None = None  # this field is the checksum of the file(s) that field names
    upload: Upload | None = None  # the studio takes this file as an upload (the path is not typed)
    repeat: str = ""  # the flag may be given again and again; its values are joined with this separator

    def label_for(self, name: str) -> str:
        return self.label or name.replace("_", " ").capitalize()


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **describe: Any):
    """A dataclass field described for the CLI, the studio and plans."""
    kwargs = {"metadata": {"setting": Setting(**describe)}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, **kwargs)
    return dataclasses.field(default=default, **kwargs)


@dataclass(frozen=True)
class PartSettings:
    """The base of every canvas's and term's own settings: besides their fields (each a
    `setting`), what they may say about themselves. Each hook's default says nothing."""

    def problems(self) -> list[str]:
        """Why these settings cannot run, one sentence each (empty when they can)."""
        return []

    def unused(self) -> dict[str, str]:
        """The settings that the others leave unread, with why (the studio greys them out)."""
        return {}

    def fill_checksums(self) -> None:
        """Give each checksum setting (Setting.checksum_of) whose file is named but whose checksum
        is empty the file's sha256, so a recipe notices a file that changed. For __post_init__."""
        from .weights import file_sha256

        for f, s in described(type(self)):
            if s.checksum_of and getattr(self, s.checksum_of) and not getattr(self, f.name):
                object.__setattr__(self, f.name, file_sha256(getattr(self, s.checksum_of)) or "")

    @classmethod
    def files_in(cls, values: dict) -> list[str]:
        """The local files these settings' values (as a form gives them, unchecked) would make
        das-ag read: by default, the values of the settings taken as uploads."""
        return [str(values[f.name]) for f, s in described(cls) if s.upload is not None and values.get(f.name)]


def check_settings_class(part: type) -> None:
    """Refuse, at registration, a canvas or term whose Settings are not a frozen PartSettings
    dataclass: the CLI, the studio, plans and recipes read them through its hooks and fields."""
    settings = getattr(part, "Settings", None)
    if settings is None:
        return
    if not (isinstance(settings, type) and issubclass(settings, PartSettings) and dataclasses.is_dataclass(settings)
            and settings.__dataclass_params__.frozen):
        raise TypeError(f"{part.__name__}.Settings must be a frozen dataclass deriving from das_ag.settings.PartSettings")


def described(cls: type) -> list[tuple[dataclasses.Field, Setting]]:
    """The described fields of a dataclass, in declaration order."""
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def kind_of(f: dataclasses.Field) -> str:
    """bool, int, float, str, schedule, optional_int, optional_float or optional_bool (None: decided
    at run time, e.g. compile on a GPU only), from the field's annotation."""
    # A string under `from __future__ import annotations`, else the type itself.
    annotation = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))).replace(" ", "")
    if not isinstance(f.type, str) and type(f.type).__name__ == "UnionType":
        annotation = str(f.type).replace(" ", "")
    for kind, names in (("schedule", ("Schedule",)), ("optional_int", ("int|None",)), ("optional_bool", ("bool|None",)),
                        ("optional_float", ("float|None",)), ("bool", ("bool",)),
                        ("int", ("int",)), ("float", ("float",)), ("str", ("str",))):
        if annotation in names:
            return kind
    raise TypeError(f"setting {f.name} has an annotation the settings description cannot handle: {f.type}")


# -- the command line ----------------------------------------------------------------------------
def flag_of(f: dataclasses.Field, s: Setting, prefix: str = "") -> str:
    return s.flag if s.flag is not None else "--" + (prefix + f.name).replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """One flag per described field of `cls`, grouped as the studio groups them. Unset flags stay None.
    `skip` names fields left out, by name or with the prefix ("aesthetic_guidance")."""
    groups: dict[str, Any] = {g.title: g for g in parser._action_groups}
    for f, s in described(cls):
        flag = flag_of(f, s, prefix)
        if not flag or f.name in skip or prefix + f.name in skip:
            continue
        if s.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group)
        group = groups[s.group]
        dest = (prefix + f.name).replace("-", "_")
        kind = kind_of(f)
        if kind in ("bool", "optional_bool"):  # --x / --no-x; neither leaves the default (None: decided at run time)
            group.add_argument(flag, *s.aliases, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=s.help)
            continue
        metavar = s.metavar or {"schedule": "KIND:START:END[:RATE]|VALUE", "int": "N", "optional_int": "N",
                                "float": "X", "optional_float": "X"}.get(kind)
        typed = dict(dest=dest, type=str if s.repeat else _parser_for(kind, f.name, s), default=None,
                     choices=s.choices or None, metavar=None if s.choices else metavar)
        group.add_argument(flag, help=s.help, action="append" if s.repeat else "store", **typed)
        if s.aliases:
            group.add_argument(*s.aliases, action=_OlderFlag, new_flag=flag, repeat=bool(s.repeat),
                               help=argparse.SUPPRESS, **typed)


class _OlderFlag(argparse.Action):
    """A flag's older name: it still works, and says once what the flag is called now."""

    def __init__(self, option_strings, dest, new_flag: str, repeat: bool = False, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag, self.repeat = new_flag, repeat

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"das-ag: note: {option_string} is now {self.new_flag}; the old name will go in a later release",
              file=sys.stderr)
        # A repeatable flag's older name adds to the same list, as the flag itself does.
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values] if self.repeat else values)


def values_from_arguments(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The described fields of `cls` the user gave flags for."""
    out = {}
    for f, s in described(cls):
        value = getattr(args, (prefix + f.name).replace("-", "_"), None)
        if value is not None:
            out[f.name] = s.repeat.join(value) if s.repeat else value
    return out


def number_in(problems: list[str], name: str, value: object, lo: float, hi: float) -> None:
    """Add why `value` is no number from lo to hi, if it is not: every part's settings say it alike."""
    if not is_finite_number(value) or not lo <= value <= hi:
        problems.append(f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}")


def whole_number_in(problems: list[str], name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.append(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")


def _number(value: float) -> str:
    """A bound as a person writes it: a seed's 9223372036854775807, not 9.22337e+18."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _parser_for(kind: str, name: str, s: Setting):
    def number(text: str, cast):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if cast is int else ''}number, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        in_range(value, value, text)
        return value

    def in_range(low: float, high: float, text: str) -> None:
        """Refuse values outside the described range, in the description's words."""
        if (s.minimum is not None and low < s.minimum) or (s.maximum is not None and high > s.maximum):
            bounds = (f"from {_number(s.minimum)} to {_number(s.maximum)}" if s.minimum is not None and s.maximum is not None
                      else f"{_number(s.minimum)} or more" if s.minimum is not None else f"at most {_number(s.maximum)}")
            raise argparse.ArgumentTypeError(f"{s.label_for(name).lower()} must be {bounds}, got {text}")

    if kind == "schedule":
        def schedule(text: str) -> Schedule:
            value = parse_schedule(text, name)
            in_range(min(value.start, value.end), max(value.start, value.end), text)
            return value

        return schedule
    if kind in ("int", "optional_int"):
        return lambda text: number(text, int)
    if kind in ("float", "optional_float"):
        return lambda text: number(text, float)
    return str


def parse_schedule(text: str, name: str = "schedule") -> Schedule:
    """"0.3" (constant) or "KIND:START:END[:RATE]", e.g. "exp_warmup:0.2:0.5:0.03"."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return Schedule.constant(float(parts[0]))
        if len(parts) in (3, 4) and parts[0] in SCHEDULE_KINDS:
            numbers = [float(p) for p in parts[1:]]
            return Schedule(parts[0], *numbers)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{name}: expected a number or KIND:START:END[:RATE] with KIND one of {', '.join(SCHEDULE_KINDS)}, got {text!r}"
    )


def replace_settings(settings: Any, changes: dict[str, Any]) -> Any:
    """A copy of a settings dataclass with `changes`. A checksum field (Setting.checksum_of) whose
    file field changes is emptied, so the settings fill it in again from the new file."""
    if not changes:
        return settings
    changes = dict(changes)
    for f, s in described(type(settings)):
        if s.checksum_of in changes and f.name not in changes:
            changes[f.name] = ""
    return dataclasses.replace(settings, **changes)


def with_current_names(cls: type, table: dict[str, Any], *, old_names_win: bool = False) -> dict[str, Any]:
    """`table` with the older names of `cls`'s settings (Setting.was) read as today's; where a
    table gives both, today's name wins, unless `old_names_win` (keywords given to replace)."""
    table = dict(table)
    for f, s in described(cls):
        for old in s.was:
            if old in table:
                value = table.pop(old)
                if old_names_win or f.name not in table:
                    table[f.name] = value
    return table


def settings_from_table(cls: type, table: dict[str, Any], where: str) -> Any:
    """An instance of a settings dataclass from a plan's or recipe's table, schedules included."""
    table = with_current_names(cls, table)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {where}")
    values = {k: Schedule(**v) if isinstance(v, dict) and kind_of(known[k]) == "schedule" else v for k, v in table.items()}
    return cls(**values)
