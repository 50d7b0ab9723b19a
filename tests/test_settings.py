"""The one description of every setting: flags and kinds, whatever way a settings class is written."""

import argparse
import dataclasses

import pytest

from das_ag.config import GenerationConfig
from das_ag.settings import add_arguments, kind_of, parse_schedule, setting, values_from_arguments
from das_ag.schedules import Schedule


@dataclasses.dataclass(frozen=True)
class PlainTypes:  # no `from __future__ import annotations` here: the fields' types are real types
    weight: float = setting(0.5, group="regularisers", minimum=0, help="a weight")
    every: int = setting(1, group="regularisers", minimum=1, help="how often")
    on: bool = setting(False, group="regularisers", help="a switch")
    margin: int | None = setting(None, group="regularisers", help="optional")


def test_kinds_come_from_real_types_and_from_strings():
    assert [kind_of(f) for f in dataclasses.fields(PlainTypes)] == ["float", "int", "bool", "optional_int"]
    kinds = {f.name: kind_of(f) for f in dataclasses.fields(GenerationConfig) if "setting" in f.metadata}
    assert (kinds["noise"], kinds["jitter_margin"], kinds["steps"], kinds["compile"]) == ("schedule", "optional_int", "int", "optional_bool")


def test_flags_parse_into_values_and_each_group_appears_once():
    parser = argparse.ArgumentParser()
    add_arguments(parser, PlainTypes, prefix="plain_")
    add_arguments(parser, GenerationConfig)
    titles = [g.title for g in parser._action_groups]
    assert len(titles) == len(set(titles))
    args = parser.parse_args(["--plain-weight", "2", "--plain-on", "--jitter", "cosine:1:0.2", "--copies", "3"])
    assert values_from_arguments(args, PlainTypes, prefix="plain_") == {"weight": 2.0, "on": True}
    assert values_from_arguments(args, GenerationConfig) == {"jitter": Schedule("cosine", 1.0, 0.2), "augment_copies": 3}


@pytest.mark.parametrize("text", ["fast", "exp_decay:1", "sideways:1:2", "linear:a:b"])
def test_a_bad_schedule_says_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="KIND:START:END"):
        parse_schedule(text)


@pytest.mark.parametrize("flag, text, words", [("--jitter", "linear:1:1.5", "jitter (fraction of margin) must be from 0 to 1"),
                                               ("--noise", "-0.1", "noise sigma must be from 0 to 5")])
def test_a_schedule_outside_its_described_range_is_refused_by_the_flag(flag, text, words, capsys):
    """A schedule's range lives in its description, which the studio's widgets read too (tested in
    test_app): the CLI refuses what the studio cannot be set to."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, GenerationConfig)
    with pytest.raises(SystemExit):
        parser.parse_args([flag, text])
    assert words in capsys.readouterr().err
    assert parser.parse_args([flag, "linear:0:1"]).__dict__[flag[2:]] == Schedule("linear", 0.0, 1.0)


def test_a_repeatable_flag_and_its_older_name_add_to_one_list(capsys):
    from das_ag.settings import PartSettings

    @dataclasses.dataclass(frozen=True)
    class Pictures(PartSettings):
        images: str = setting("", group="prompts", flag="--picture", aliases=("--img",), repeat="|", help="a picture")

    parser = argparse.ArgumentParser()
    add_arguments(parser, Pictures, prefix="pictures_")
    args = parser.parse_args(["--picture", "a.png", "--img", "b.png:-1", "--picture", "c.png"])
    assert values_from_arguments(args, Pictures, prefix="pictures_") == {"images": "a.png|b.png:-1|c.png"}
    assert capsys.readouterr().err.strip() == "das-ag: note: --img is now --picture; the old name will go in a later release"
