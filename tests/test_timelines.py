"""Prompt timelines: a prompt's weight follows a schedule over the run, so a run can move from one
prompt to another. Parsed from the CLI and plans, kept in recipes, set per row in the studio."""

from __future__ import annotations

import pytest

from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.embedding import embed_image
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.png import read_recipe
from das_ag.prompts import Prompt, parse_prompt, tokenize
from das_ag.schedules import Schedule
from das_ag.studio import form


def test_a_weight_may_be_a_schedule():
    assert parse_prompt("a red circle:linear:1:0") == Prompt("a red circle", Schedule("linear", 1.0, 0.0))
    assert parse_prompt("a red circle:exp_warmup:0:2:0.05") == Prompt("a red circle", Schedule("exp_warmup", 0.0, 2.0, 0.05))
    assert parse_prompt("blurry:cosine:0:0.5", negative=True) == Prompt("blurry", Schedule("cosine", -0.0, -0.5))
    assert parse_prompt("a photo: linear").text == "a photo: linear"  # no numbers: still text
    fading = parse_prompt("a cat:linear:2:0")
    assert [fading.weight_at(t, 4) for t in range(4)] == [2.0, 1.5, 1.0, 0.5] and not fading.is_negative
    assert fading.at(1, 4) == Prompt("a cat", 1.5)


@pytest.mark.parametrize("spec, said", [("a cat:linear:1:-1", "stay on one side of 0"),
                                        ("a cat:linear:0:0", "not be 0 throughout"),
                                        ("a cat:exp_decay:1:0:1.5", "rate must lie strictly between 0 and 1")])
def test_a_schedule_that_cannot_be_a_weight_is_refused_in_a_line(spec, said):
    with pytest.raises(ConfigError, match=said) as caught:
        parse_prompt(spec)
    assert "\n" not in str(caught.value) and spec in str(caught.value)


def test_a_timeline_survives_recipes_and_the_studio_form():
    prompts = (Prompt("a red circle", Schedule("linear", 1.0, 0.0)), Prompt("a blue square", Schedule("exp_warmup", 0.0, 1.5, 0.05)),
               Prompt("blurry", Schedule("cosine", -0.5, 0.0)), Prompt("dull", -0.3))
    config = GenerationConfig(prompts=prompts)
    assert GenerationConfig.from_dict(config.to_dict()) == config
    assert form.prompts_from_state(form.prompts_to_state(prompts)) == prompts
    state = form.prompts_to_state(prompts)
    assert state[form.prompt_key("pos", 1, "timeline")] == "exp_warmup" and state[form.prompt_key("neg", 0, "end")] == 0.0


def test_the_cli_runs_a_timeline_and_its_png_makes_itself_again(weights_env, tmp_path):
    out, again = tmp_path / "t.png", tmp_path / "again.png"
    assert main(["generate", "--prompt", "a red circle:linear:1:0", "--prompt", "a blue square:linear:0:1",
                 "--steps", "4", "--copies", "2", "--resolution", "64", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert read_recipe(out)["config"]["prompts"][1] == {"text": "a blue square",
                                                        "weight": {"kind": "linear", "start": 0.0, "end": 1.0, "rate": 0.03}}
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_crossing_timeline_on_the_command_line_is_one_line(weights_env, capsys):
    assert main(["generate", "--prompt", "a cat:linear:1:-1", "--steps", "2", "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip()
    assert "stay on one side of 0" in err and "Traceback" not in err


def test_a_timelines_prompt_loses_early_and_wins_late(toy_models):
    """Red fades out early while blue fades in: a judge that never guided the run sees red a sixth
    of the way in and blue at the end. (The learning rate anneals, so a hand-over must come early
    in the run to move the picture far: a linear cross at the middle moves it only part way.)"""
    maker, judge = toy_models
    config = GenerationConfig(prompts=(parse_prompt("a red circle:exp_decay:1:0:0.05"), parse_prompt("a blue circle:linear:0:1")),
                              steps=150, augment_copies=8, resolution=64, device="cpu", seed=3,
                              terms={"aesthetic": {"guidance": "off"}})
    run, seen = synthesize(config, maker, preview_every=25), {}
    for event in run:
        if event.preview is not None:
            seen[event.step] = event.preview
    texts = judge.encode_texts(tokenize(["a red circle", "a blue circle"])[0])

    def red_minus_blue(image):
        red, blue = (embed_image(judge, image) @ texts.t())[0].tolist()
        return red - blue

    assert red_minus_blue(seen[25]) > 0 > red_minus_blue(seen[150])


def test_an_image_prompts_weight_may_be_a_schedule_too(tmp_path):
    from PIL import Image

    from das_ag.objectives.image_prompt import ImagePromptSettings, parse_entries

    picture = tmp_path / "red.png"
    Image.new("RGB", (32, 32), "red").save(picture)
    assert parse_entries(f"{picture}:linear:0:1|{picture}:-0.5") == [(str(picture), Schedule("linear", 0.0, 1.0)),
                                                                      (str(picture), -0.5)]
    assert ImagePromptSettings(f"{picture}:linear:0:1").problems() == []
    assert "stay on one side of 0" in ImagePromptSettings(f"{picture}:linear:1:-1").problems()[0]
    config = GenerationConfig(terms={"image_prompt": {"images": f"{picture}:cosine:0:1"}}, steps=3, resolution=64)
    assert GenerationConfig.from_dict(config.to_dict()) == config
