import pytest

from das_ag.errors import ConfigError
from das_ag.prompts import CONTEXT_LENGTH, Prompt, parse_prompt, tokenize


def test_text_and_weight():
    assert parse_prompt("a cat:0.5") == Prompt("a cat", 0.5)
    assert parse_prompt("a cat") == Prompt("a cat", 1.0)
    assert parse_prompt("main subject:-0.3") == Prompt("main subject", -0.3)


def test_a_colon_without_a_number_is_text():
    assert parse_prompt("a photo: sunset over water") == Prompt("a photo: sunset over water", 1.0)


def test_negative_prompts_repel_with_a_positive_strength():
    assert parse_prompt("blurry", negative=True) == Prompt("blurry", -1.0)
    assert parse_prompt("blurry:0.3", negative=True) == Prompt("blurry", -0.3)
    with pytest.raises(ConfigError, match="minus is implied"):
        parse_prompt("blurry:-0.3", negative=True)


@pytest.mark.parametrize("spec", ["", "   ", ":2", "cat:0", "cat:nan", "cat:inf"])
def test_bad_prompts(spec):
    with pytest.raises(ConfigError):
        parse_prompt(spec)


def test_long_prompts_are_truncated_with_a_warning_not_a_crash():
    long_text = "a very detailed painting of " + "many colourful birds and " * 40
    tokens, warnings = tokenize(["short prompt", long_text])
    assert tokens.shape == (2, CONTEXT_LENGTH)
    assert len(warnings) == 1 and "truncated" in warnings[0]
    assert tokens[1, -1] != 0  # the end-of-text marker survives at the last position
