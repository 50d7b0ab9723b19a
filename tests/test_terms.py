"""A loss term defined here, in a test module alone, takes part everywhere: the engine's events,
the CLI's flags and progress, recipes, tables and the studio's form."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from das_ag.cli import main
from das_ag.engine import synthesize
from das_ag.objectives import TERMS, Term, register_term
from das_ag.png import config_from_png, read_recipe
from das_ag.report import write_report
from das_ag.settings import PartSettings, setting
from das_ag.studio import form

from .conftest import small_config


@dataclass(frozen=True)
class BrightnessSettings(PartSettings):
    weight: float = setting(0.0, group="regularisers", minimum=0, maximum=100.0, help="pull the pixels towards white")

    def problems(self):
        return [] if self.weight >= 0 else ["brightness weight must be >= 0"]


class BrightnessTerm(Term):
    name = "brightness"
    title = "Brightness (towards white)"
    chart_title = "mean brightness of the views"
    labels = {"mean": "bright"}
    score_labels = {"brightness_probe": "brightness probe"}
    Settings = BrightnessSettings

    @classmethod
    def active(cls, config):
        return config.term_settings(cls.name).weight > 0

    def loss(self, inputs):
        mean = inputs.views.mean()  # CLIP-normalised pixels: higher is brighter
        return -self.settings.weight * mean, {"mean": mean}

    def final_scores(self, embedding, views=None):
        return {"brightness_probe": float(embedding.abs().mean())}


@pytest.fixture
def brightness():
    register_term(BrightnessTerm)
    yield BrightnessSettings
    TERMS.pop("brightness")


def mean_pixel(image) -> float:
    from PIL import ImageStat

    return sum(ImageStat.Stat(image).mean) / 3


def test_a_registered_term_steers_and_reports_its_metrics(brightness, models):
    plain = small_config(steps=15, seed=5, terms={"aesthetic": {"guidance": "off"}, "text": {"weight": 0.0}})
    bright = plain.with_term("brightness", weight=20.0)
    run = synthesize(bright, models)
    events = list(run)
    assert all("brightness" in e.terms and set(e.metrics["brightness"]) == {"mean"} for e in events)
    assert events[-1].metrics["brightness"]["mean"] > events[0].metrics["brightness"]["mean"]
    result = run.result()
    assert mean_pixel(result.image) > mean_pixel(synthesize(plain, models).run().image) + 10
    recipe = result.recipe()
    terms = recipe["config"]["terms"]
    assert terms["brightness"] == {"weight": 20.0} and terms["aesthetic"]["guidance"] == "off"
    assert "brightness_probe" in recipe["scores"]


def test_an_inactive_term_costs_nothing_and_is_absent(brightness, models):
    events = list(synthesize(small_config(steps=2), models))
    assert all("brightness" not in e.terms and "brightness" not in e.metrics for e in events)


def test_the_cli_offers_its_settings_and_the_recipe_re_runs(brightness, tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "bright.png"
    assert main(["generate", "--prompt", "snow", "--brightness-weight", "2.5", "--steps", "3", "--copies", "2",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    config = config_from_png(out)
    assert config.term_settings("brightness") == brightness(weight=2.5)
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--quiet", "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    paths = write_report(tmp_path)
    summary = paths["summary_md"].read_text()
    assert "| brightness probe |" in summary and "- brightness probe: brightness_probe" in summary
    assert main(["generate", "--prompt", "snow", "--brightness-weight", "-1", "--quiet"]) != 0
    assert "--brightness-weight: weight must be from 0 to 100, got -1" in capsys.readouterr().err


def test_the_studio_form_carries_its_settings(brightness):
    config = small_config(terms={"brightness": brightness(weight=1.5)})
    state = form.config_to_state(config)
    assert state[form.term_key("brightness", "weight")] == 1.5
    state[form.term_key("brightness", "weight")] = 3.0
    again, problems = form.state_to_config(state)
    assert problems == [] and again.term_settings("brightness").weight == 3.0


def test_a_recipe_naming_an_unknown_term_is_refused_in_one_sentence(models, tmp_path):
    from das_ag.errors import ConfigError

    register_term(BrightnessTerm)
    try:
        path = synthesize(small_config(steps=1, terms={"brightness": BrightnessSettings(1.0)}), models).run().save(tmp_path / "b.png")
    finally:
        TERMS.pop("brightness")
    with pytest.raises(ConfigError, match="unknown term 'brightness'"):
        config_from_png(path)
    assert read_recipe(path)["config"]["terms"]["brightness"] == {"weight": 1.0}


def test_plans_carry_a_terms_settings(brightness, tmp_path):
    from das_ag.experiments import load_plan

    plan = tmp_path / "plan.toml"
    plan.write_text('seeds = [0]\nmethods = ["DAS"]\n[settings]\nsteps = 3\nterms = { brightness = { weight = 2.0 } }\n'
                    '[[prompts]]\ntext = "snow"\n')
    (item,) = load_plan(plan).items
    assert item.config.term_settings("brightness") == brightness(weight=2.0)


def test_the_studio_shows_its_title_settings_and_curves(brightness, tiny_clip_path, head_path, monkeypatch, tmp_path):
    # Nothing in the studio names the term: its expander, control and curves come from the class.
    from streamlit.testing.v1 import AppTest

    from .conftest import REPO

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    monkeypatch.setenv("DAS_AG_OUTPUT_DIR", str(tmp_path / "saved"))
    at = AppTest.from_file(str(REPO / "src" / "das_ag" / "app.py"), default_timeout=120).run()
    assert "Brightness (towards white)" in [e.label for e in at.expander]
    at.text_input(key="pos_text_0").set_value("snow")
    at.number_input(key="steps").set_value(3)
    at.number_input(key="augment_copies").set_value(2)
    at.number_input(key=form.term_key("brightness", "weight")).set_value(2.0)
    at.run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert at.session_state["job"].join(120)
    at.run()
    assert at.session_state["gallery"][-1]["config"].term_settings("brightness").weight == 2.0
    assert "mean brightness of the views" in [c.value for c in at.caption]
    assert any("- brightness probe: **" in m.value for m in at.markdown)  # its final score, by its label


def test_a_term_s_settings_say_what_they_can_through_the_base_class():
    """problems, unused and files_in are declared on PartSettings with defaults that say nothing,
    so the CLI, the studio and configs call them without asking whether they exist; a term whose
    Settings skip the base class is refused when it registers, not when a visitor finds the gap."""
    from das_ag.objectives.start_picture import StartPictureSettings

    assert BrightnessSettings(1.0).unused() == {} and BrightnessSettings(-1.0).problems() == ["brightness weight must be >= 0"]
    assert BrightnessSettings.files_in({"weight": 2.0}) == []
    # A setting declared as an upload is a file the studio checks before anything reads it.
    assert StartPictureSettings.files_in({"image": "/etc/passwd", "strength": 3}) == ["/etc/passwd"]

    @dataclass(frozen=True)
    class Loose:
        weight: float = 0.0

    class LooseTerm(BrightnessTerm):
        name = "loose"
        Settings = Loose

    with pytest.raises(TypeError, match="must be a frozen dataclass deriving from das_ag.settings.PartSettings"):
        register_term(LooseTerm)
    assert "loose" not in TERMS
