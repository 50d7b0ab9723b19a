"""The studio page through Streamlit's AppTest: the real script, the real engine, no browser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from das_ag.errors import DasAgError
from das_ag.studio import form
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.objectives import TERMS
from das_ag.png import encode_png, read_recipe
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule

from .conftest import REPO, small_config

GUIDANCE, CLIP_WEIGHT = form.term_key("aesthetic", "guidance"), form.term_key("text", "weight")

APP = str(REPO / "src" / "das_ag" / "app.py")


@pytest.fixture
def studio(tiny_clip_path, head_path, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    monkeypatch.setenv("DAS_AG_OUTPUT_DIR", str(tmp_path / "saved"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def problems(at: AppTest) -> list[str]:
    """The form's problems, shown in red under the Generate button."""
    return [c.value.removeprefix(":red[").removesuffix("]") for c in at.caption if c.value.startswith(":red[")]


def finish_job(at: AppTest) -> None:
    assert at.session_state["job"].join(120)
    at.run()


def quick_form(at: AppTest, prompt: str = "a red apple", steps: int = 4) -> None:
    at.text_input(key="pos_text_0").set_value(prompt)
    at.number_input(key="steps").set_value(steps)
    at.number_input(key="augment_copies").set_value(2)
    at.run()


NEED_A_PROMPT = "Write at least one prompt to steer towards, or set the CLIP weight to 0 to steer by the aesthetic score alone."


def test_an_empty_form_explains_and_cannot_generate(studio):
    assert NEED_A_PROMPT in problems(studio)
    # Generate stays clickable (a prompt typed just before the click must count) but starts nothing.
    button(studio, "Generate").click().run()
    assert studio.session_state["job"] is None
    assert any("Write at least one prompt" in e for e in errors(studio))
    quick_form(studio)
    assert problems(studio) == [] and not button(studio, "Generate").disabled


def test_a_negative_prompt_alone_is_not_enough(studio):
    button(studio, "Add negative prompt").click().run()
    studio.text_input(key=next(k.key for k in studio.text_input if k.label == "Negative prompt 1")).set_value("blurry").run()
    assert "Write at least one prompt to steer towards (a positive one)." in problems(studio)


def test_prompts_can_be_added_and_removed(studio):
    button(studio, "Add prompt").click().run()
    labels = [t.label for t in studio.text_input]
    assert "Prompt 1" in labels and "Prompt 2" in labels
    remove = [b for b in studio.button if b.help and b.help.startswith("remove prompt")]
    remove[-1].click().run()
    assert "Prompt 2" not in [t.label for t in studio.text_input]


def test_presets_set_the_published_values_and_keep_prompts(studio):
    quick_form(studio, "a koi pond")
    studio.selectbox(key="preset").set_value("paper").run()
    state = studio.session_state
    assert (state["resolution"], state["steps"], state["lr"], state["deterministic"]) == (448, 200, 0.05, True)
    assert (state["noise_kind"], state["noise_start"], state["noise_end"]) == ("exp_decay", 0.2, 0.5)
    assert state["pos_text_0"] == "a koi pond"
    assert studio.number_input(key="resolution").value == 448


def test_controls_that_do_not_apply_are_disabled_with_a_reason(studio):
    studio.radio(key=GUIDANCE).set_value("off").run()
    weight = studio.number_input(key=form.schedule_key(form.term_key("aesthetic", "weight"), "end"))
    assert weight.disabled and "off" in weight.help
    studio.selectbox(key="noise_kind").set_value("linear").run()
    assert studio.number_input(key="noise_rate").disabled
    assert "exponential" in studio.number_input(key="noise_rate").help
    studio.selectbox(key="noise_kind").set_value("constant").run()
    assert studio.number_input(key="noise_end").disabled


def test_hand_laid_controls_take_their_limits_and_words_from_the_settings_description(studio):
    """The controls laid out by hand (guidance, schedules, jitter margin, device) read the same
    description as the CLI's flags and plans: one list of limits and help, not two."""
    from das_ag.settings import described

    settings = {f.name: s for f, s in described(GenerationConfig)}
    aesthetic = {f.name: s for f, s in described(TERMS["aesthetic"].Settings)}
    text = {f.name: s for f, s in described(TERMS["text"].Settings)}
    for prefix, described_as in (("noise", settings["noise"]), ("colour_shift", settings["colour_shift"]), ("jitter", settings["jitter"]),
                                 (form.term_key("aesthetic", "weight"), aesthetic["weight"])):
        for part in ("start", "end"):
            widget = studio.number_input(key=f"{prefix}_{part}")
            assert (widget.min, widget.max) == (described_as.minimum, described_as.maximum), (prefix, part)
    assert studio.selectbox(key="noise_kind").label == "Noise sigma schedule"
    assert studio.radio(key=GUIDANCE).help == aesthetic["guidance"].help
    assert studio.number_input(key=CLIP_WEIGHT).help == text["weight"].help
    assert studio.selectbox(key="compile_choice").help == settings["compile"].help


@pytest.mark.parametrize("choice", [None, True, False], ids=["auto", "on", "off"])
def test_compile_offers_auto_on_and_off_and_restores_each(studio, choice):
    """Compile is three-way: the default leaves it to the device (on a GPU only), as the CLI does
    when neither --compile nor --no-compile is given; a restored recipe's choice is shown."""
    widget = studio.selectbox(key="compile_choice")
    assert widget.value == "auto" and widget.options == ["auto: on a GPU, not on the CPU", "on", "off"]
    config = GenerationConfig(prompts=(Prompt("a kite"),), steps=3, device="cpu", compile=choice)
    for key, value in form.config_to_state(config).items():
        studio.session_state[key] = value
    studio.run()
    assert not studio.exception
    assert studio.selectbox(key="compile_choice").value == {None: "auto", True: "on", False: "off"}[choice]
    assert form.state_to_config(dict(studio.session_state))[0].compile is choice


def test_a_canvas_schedule_gets_the_widgets_every_schedule_gets(studio):
    """The strokes canvas's edge softness, a schedule of the canvas's own settings, is shown in the
    sidebar as four widgets with its described label and limits; what they are set to is what the
    run is given."""
    from das_ag.canvases.strokes import StrokeSettings
    from das_ag.settings import described

    softness = next(s for f, s in described(StrokeSettings) if f.name == "softness")
    studio.selectbox(key="canvas").set_value("strokes").run()
    key = form.canvas_key("strokes", "softness")
    assert studio.selectbox(key=form.schedule_key(key, "kind")).label == "Edge softness (px) schedule"
    start = studio.number_input(key=form.schedule_key(key, "start"))
    assert (start.min, start.max) == (softness.minimum, softness.maximum)
    assert studio.number_input(key=form.canvas_key("strokes", "samples")).value == 16
    studio.selectbox(key=form.schedule_key(key, "kind")).set_value("constant").run()
    studio.number_input(key=form.schedule_key(key, "start")).set_value(0.5)
    quick_form(studio, "a red kite", steps=2)
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert studio.session_state["job"].snapshot().results[0].config.canvas_settings.softness == \
        Schedule("constant", 0.5, 0.5, StrokeSettings().softness.rate)


def test_restoring_from_a_png_sets_every_control(studio, models, tmp_path):
    config = GenerationConfig(prompts=(Prompt("a koi pond", 1.5), Prompt("murky water", -0.7)), steps=3, augment_copies=2, seed=77, resolution=192, canvas_settings={"interpolation": "bicubic"}, device="cpu", noise=Schedule.constant(0.1), terms={"aesthetic": {"guidance": "penalty", "weight": Schedule("linear", 0.5, 2.5)}})
    result = synthesize(config, models).run()
    png = encode_png(result.image, result.recipe())
    studio.file_uploader(key="restore_png").set_value(("koi.png", png, "image/png")).run()
    assert not studio.exception
    expected = form.config_to_state(config)
    shown = {key: studio.session_state[key] for key in expected}
    assert shown == expected  # every control shows the recipe's value
    assert form.state_to_config(shown) == (config, [])
    assert any("Restored every setting from koi.png" in s.value for s in studio.success)
    assert studio.text_input(key="pos_text_0").value == "a koi pond"
    assert studio.radio(key=GUIDANCE).value == "penalty"


def test_a_restored_recipe_is_made_again_by_the_cpu_route_its_run_took(studio, models):
    """A recipe made by another route than this machine takes for the tiny CLIP (aten+sdpa) is
    re-made by that route, to the same bytes; once a setting is changed the run is a new one and
    takes this machine's own route."""
    config = small_config(prompts=(Prompt("a koi pond"),), steps=3, augment_copies=2, seed=5, resolution=64)
    made = synthesize(config, models, cpu_route="aten+sdpa").run()
    assert made.cpu_route == "aten+sdpa"
    png = encode_png(made.image, made.recipe())
    studio.file_uploader(key="restore_png").set_value(("koi.png", png, "image/png")).run()
    button(studio, "Generate").click().run()
    finish_job(studio)
    again = studio.session_state["job"].snapshot().results[0]
    assert again.cpu_route == "aten+sdpa" and encode_png(again.image, again.recipe()) == png
    studio.number_input(key="steps").set_value(4).run()
    button(studio, "Generate").click().run()
    finish_job(studio)
    changed = studio.session_state["job"].snapshot().results[0]
    assert changed.cpu_route == synthesize(changed.config, models).run().cpu_route != "aten+sdpa"


def test_the_page_hides_error_details_however_the_server_was_started(tiny_clip_path, head_path, monkeypatch, tmp_path):
    """Started outside the project folder, Streamlit reads no .streamlit/config.toml: the page
    itself turns error details off, so an unexpected error never shows a visitor a traceback."""
    from streamlit import config

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    monkeypatch.setenv("DAS_AG_OUTPUT_DIR", str(tmp_path / "saved"))
    monkeypatch.chdir(tmp_path)
    config.set_option("client.showErrorDetails", "full")
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception
        assert config.get_option("client.showErrorDetails") == "none"
    finally:
        config.set_option("client.showErrorDetails", "none")


def test_a_picture_bomb_is_refused_in_one_line_without_a_traceback(studio):
    from das_ag.studio.files import save_upload

    from .conftest import png_claiming

    bomb = png_claiming(13000, 13000)
    studio.file_uploader(key="restore_png").set_value(("bomb.png", bomb, "image/png")).run()
    assert not studio.exception
    assert any("is too large" in e and "64 megapixels" in e for e in errors(studio)), errors(studio)
    with pytest.raises(DasAgError, match="is too large"):
        save_upload("bomb.png", bomb, kind="picture")


def test_a_png_without_a_recipe_is_refused_politely(studio):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    studio.file_uploader(key="restore_png").set_value(("plain.png", buffer.getvalue(), "image/png")).run()
    assert not studio.exception
    assert any("no das-ag recipe" in e for e in errors(studio))


def test_an_oversized_upload_is_refused_politely(studio):
    studio.file_uploader(key="restore_png").set_value(("huge.png", b"\0" * (21 * 2**20), "image/png")).run()
    assert not studio.exception
    assert any("is over 20 MB" in e for e in errors(studio))


def test_generate_watch_and_save(studio, tmp_path):
    quick_form(studio, "a lighthouse at dusk", steps=5)
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert "Finished" in [s.value for s in studio.subheader]
    assert len(studio.session_state["gallery"]) == 1
    button(studio, "Save PNG").click().run()
    saved = list((tmp_path / "saved").glob("*.png"))
    assert [p.name for p in saved] == ["a-lighthouse-at-dusk-DAS-AG-seed42.png"]
    recipe = read_recipe(saved[0])
    assert recipe["config"]["prompts"] == [{"text": "a lighthouse at dusk", "weight": 1.0}]
    assert recipe["config"]["steps"] == 5
    assert any("Saved" in s.value for s in studio.success)


def test_a_visitor_saves_inside_the_output_root_only(studio, tmp_path):
    quick_form(studio, "a lighthouse at dusk", steps=2)
    button(studio, "Generate").click().run()
    finish_job(studio)
    studio.text_input(key="output_subfolder").set_value(str(tmp_path / "elsewhere")).run()
    button(studio, "Save PNG").click().run()
    assert any("not an absolute path" in e for e in errors(studio))
    studio.text_input(key="output_subfolder").set_value("../escape").run()
    button(studio, "Save PNG").click().run()
    assert any("climbs out" in e for e in errors(studio))
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "escape").exists()
    studio.text_input(key="output_subfolder").set_value("dusk").run()
    button(studio, "Save PNG").click().run()
    assert [p.name for p in (tmp_path / "saved" / "dusk").glob("*.png")] == ["a-lighthouse-at-dusk-DAS-AG-seed42.png"]


def test_stop_keeps_the_image_made_so_far(studio):
    quick_form(studio, "a slow sunrise", steps=5000)
    button(studio, "Generate").click().run()
    job = studio.session_state["job"]
    import time

    while len(job.snapshot().metrics) < 3:
        time.sleep(0.05)
    button(studio, "Stop").click().run()
    finish_job(studio)
    assert "Stopped" in [s.value for s in studio.subheader]
    result = studio.session_state["gallery"][-1]["result"]
    assert result.status == "cancelled" and result.steps_done >= 3


def test_a_second_session_waits_its_turn(studio, tiny_clip_path, head_path):
    quick_form(studio, "the first session", steps=5000)
    button(studio, "Generate").click().run()
    first = studio.session_state["job"]
    import time

    while first.snapshot().state != "running":
        time.sleep(0.05)
    other = AppTest.from_file(APP, default_timeout=120)
    other.run()
    quick_form(other, "the second session", steps=3)
    button(other, "Generate").click().run()
    assert any("Waiting for cpu: 1 run is ahead of yours" in i.value for i in other.info), [i.value for i in other.info]
    button(studio, "Stop").click().run()
    finish_job(studio)
    finish_job(other)
    assert other.session_state["gallery"][-1]["result"].status == "completed"


def test_without_weights_the_page_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DAS_AG_CLIP_URL", "http://127.0.0.1:9/clip.pt")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    assert "The model weights are not available yet, so nothing can be generated." in errors(at)
    text = " ".join(m.value for m in at.markdown)
    assert "CLIP_MODEL_PATH" in text and "AESTHETIC_PREDICTOR_PATH" in text and "das-ag download" in text
    assert button(at, "Generate").disabled
    button(at, "Download the weights now").click().run()
    assert not at.exception
    assert any("could not download" in e for e in errors(at))
    # An operator who allows no downloads: the button refuses rather than fetching ViT-L/14.
    monkeypatch.setenv("DAS_AG_STUDIO_DOWNLOADS", "")
    button(at, "Download the weights now").click().run()
    assert any("does not download ViT-L/14 for visitors" in e for e in errors(at)), errors(at)


def test_the_same_settings_give_the_same_png_again(studio):
    quick_form(studio, "a paper boat", steps=4)
    for _ in range(2):
        button(studio, "Generate").click().run()
        finish_job(studio)
    first, second = studio.session_state["gallery"]
    assert first["png"] == second["png"]
    assert any("deterministic" in c.value for c in studio.caption)


def test_a_failure_mid_run_shows_a_message_and_keeps_the_image(tiny_clip_path, broken_head_path, monkeypatch):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(broken_head_path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    quick_form(at, "a broken dream", steps=5)
    button(at, "Generate").click().run()
    finish_job(at)
    assert not at.exception
    assert "Stopped" in [s.value for s in at.subheader]
    assert any("non-finite" in e for e in errors(at))
    assert at.session_state["gallery"][-1]["result"].image.size == (224, 224)
    assert not button(at, "Save PNG").disabled  # what was made can still be kept


def test_compare_mode_shows_the_three_methods_side_by_side(studio, tmp_path):
    quick_form(studio, "a glass teapot", steps=3)
    studio.toggle(key="compare_mode").set_value(True).run()
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert "Finished" in [s.value for s in studio.subheader]
    items = studio.session_state["last_items"]
    assert [i["result"].config.method for i in items] == ["DAS", "DAS-AG", "DAS-rAG"]
    assert len({i["result"].config.seed for i in items}) == 1
    assert {c.value for c in studio.caption} >= {"Same prompts, settings and seed (42); only the aesthetic guidance differs."}
    button(studio, "Save 3 PNGs").click().run()
    assert len(list((tmp_path / "saved").glob("*.png"))) == 3


def test_the_strokes_canvas_in_the_studio_draws_and_offers_the_svg(studio, tmp_path):
    studio.selectbox(key="canvas").set_value("strokes").run()
    assert studio.number_input(key="lr").disabled  # strokes have their own rates
    studio.number_input(key=form.canvas_key("strokes", "count")).set_value(12)
    quick_form(studio, "a paper boat")
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert [b.label for b in studio.button if b.label.startswith("Save")] == ["Save PNG + SVG"]
    button(studio, "Save PNG + SVG").click().run()
    saved = tmp_path / "saved"
    assert sorted(p.suffix for p in saved.iterdir()) == [".png", ".svg"]
    svg = next(saved.glob("*.svg"))
    assert svg.read_text().count("<path ") == 12 and read_recipe(svg)["config"]["canvas"] == "strokes"


def test_the_palette_is_greyed_until_the_palette_colour_mode_is_chosen(studio):
    studio.selectbox(key="canvas").set_value("strokes").run()
    palette = lambda: studio.text_input(key=form.canvas_key("strokes", "palette"))  # noqa: E731
    assert palette().disabled and "only the palette colour mode" in palette().help
    studio.selectbox(key=form.canvas_key("strokes", "colour")).set_value("palette").run()
    assert not palette().disabled
    studio.selectbox(key=form.canvas_key("strokes", "colour")).set_value("mono").run()
    assert palette().disabled


def test_restoring_from_an_svg_sets_the_stroke_controls(studio, models):
    config = GenerationConfig(prompts=(Prompt("a kite"),), canvas="strokes", steps=2, augment_copies=2, device="cpu",
                              resolution=64, canvas_settings={"count": 7, "colour": "mono", "softness": Schedule("linear", 2.0, 0.3)})
    result = synthesize(config, models).run()
    studio.file_uploader(key="restore_png").set_value(("kite.svg", result.files()[".svg"], "image/svg+xml")).run()
    assert not studio.exception
    assert studio.session_state["canvas"] == "strokes"
    assert studio.session_state[form.canvas_key("strokes", "count")] == 7
    restored, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and restored == config  # the softness schedule, which has no control, too


def test_the_aspect_makes_the_image_wide_or_tall(studio):
    quick_form(studio, "a harbour")
    studio.selectbox(key="aspect").set_value("16:9 wide").run()
    studio.number_input(key="resolution").set_value(160).run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and (config.width, config.height) == (160, 88)
    assert any("160 x 88 px" in c.value for c in studio.sidebar.caption)
    studio.selectbox(key="aspect").set_value("1:1 square").run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and config.width is None and config.resolution == 160


def test_an_ensemble_is_chosen_by_name_only(studio, tmp_path):
    quick_form(studio, "a harbour")
    studio.text_area(key="clip_models_text").set_value("ViT-B/32:1\nViT-L/14:0").run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and config.clip_models == ("ViT-B/32:1", "ViT-L/14:0")
    for text in (str(tmp_path / "any.pt"), "open_clip:ViT-B-32@/etc/passwd", "ViT-B/32:-1"):
        studio.text_area(key="clip_models_text").set_value(text).run()
        config, problems = form.state_to_config(dict(studio.session_state))
        assert config is None and len(problems) == 1, problems
    studio.text_area(key="clip_models_text").set_value("").run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and config.clip_models == ()


def test_a_start_picture_is_kept_under_the_output_root(studio, tmp_path):
    import io

    from PIL import Image

    strength = lambda: studio.number_input(key=form.term_key("init", "strength"))  # noqa: E731
    # Without a picture the strength is greyed out, saying why (the start picture's unused()).
    assert strength().disabled and strength().help == "it holds the run near a start picture, and none is given"
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture, format="PNG")
    studio.file_uploader(key="upload:init:image").set_value(("red.png", picture.getvalue(), "image/png")).run()
    assert not strength().disabled
    kept = studio.session_state[form.term_key("init", "image")]
    assert kept.startswith(str(tmp_path / "saved" / "uploads")) and Path(kept).read_bytes() == picture.getvalue()
    quick_form(studio, "a red kite")
    studio.number_input(key=form.term_key("init", "strength")).set_value(5.0).run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and config.start_picture == kept and config.term_settings("init").strength == 5.0
    for canvas in ("strokes", "pyramid"):  # both canvases start from it
        studio.selectbox(key="canvas").set_value(canvas).run()
        config, problems = form.state_to_config(dict(studio.session_state))
        assert problems == [] and config.canvas == canvas and config.start_picture == kept

    studio.file_uploader(key="upload:init:image").set_value(("notes.png", b"not a picture", "image/png")).run()
    assert any("not a readable picture" in e for e in errors(studio))
    studio.button(key="remove:init:image").click().run()
    config, problems = form.state_to_config(dict(studio.session_state))
    assert problems == [] and config.start_picture == ""
    assert strength().disabled


def test_pure_aesthetic_needs_no_prompt_once_clip_weight_is_zero(studio):
    studio.number_input(key=CLIP_WEIGHT).set_value(0.0)
    studio.number_input(key="steps").set_value(3)
    studio.number_input(key="augment_copies").set_value(2)
    studio.run()
    assert problems(studio) == []
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert not studio.exception and errors(studio) == []
    result = studio.session_state["last_items"][0]["result"]
    assert result.scores.clip_positive is None and result.scores.aesthetic is not None
    assert read_recipe(result.files()[".png"])["config"]["prompts"] == []


def test_style_ambiguity_from_the_studio_shows_the_styles(studio):
    studio.selectbox(key=form.term_key("ambiguity", "guidance")).set_value("reward")
    quick_form(studio, "a harbour at dusk")
    button(studio, "Generate").click().run()
    finish_job(studio)
    assert not studio.exception
    item = studio.session_state["last_items"][0]
    assert item["config"].method == "DAS-AG-CAN"
    last = item["metrics"][-1][2]["ambiguity"]
    assert sum(v for k, v in last.items() if k.startswith("p:")) == pytest.approx(1, abs=1e-4)
    assert any("top styles:" in m.value for m in studio.markdown)
    charts = studio.get("vega_lite_chart")
    assert any(json.loads(c.proto.spec)["mark"]["type"] == "bar" for c in charts)  # the styles as bars


def test_style_centroids_can_be_uploaded_and_used(studio, models, tmp_path):
    import numpy as np

    from das_ag.styles import Centroids

    centres = np.random.default_rng(0).normal(size=(3, 768)).astype(np.float32) * 0.03
    data = Centroids(centres, models.identities()["clip"], images=9).to_bytes()
    studio.selectbox(key=form.term_key("ambiguity", "guidance")).set_value("reward").run()
    studio.file_uploader(key="upload:ambiguity:centroids").set_value(("mine.npz", data, "application/octet-stream")).run()
    kept = studio.session_state[form.term_key("ambiguity", "centroids")]
    assert kept.startswith(str(tmp_path / "saved" / "uploads")) and kept.endswith(".npz")
    quick_form(studio, "a harbour")
    button(studio, "Generate").click().run()
    finish_job(studio)
    result = studio.session_state["last_items"][0]["result"]
    assert {s["label"] for s in result.scores.values["styles"]} == {"cluster 1", "cluster 2", "cluster 3"}
    assert read_recipe(result.files()[".png"])["config"]["terms"]["ambiguity"]["centroids"] == kept

    # A style list of one label is kept, and the form says why it cannot run with it.
    studio.file_uploader(key="upload:ambiguity:centroids").set_value(None).run()
    studio.session_state[form.term_key("ambiguity", "centroids")] = ""
    studio.file_uploader(key="upload:ambiguity:styles").set_value(("one.txt", b"cubism\n", "text/plain")).run()
    assert any("has 1 label(s); ambiguity needs at least two" in p for p in problems(studio)), problems(studio)


def test_image_prompts_from_the_studio_need_no_text(studio, tmp_path):
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (240, 220, 20)).save(picture, format="PNG")
    studio.file_uploader(key="image_prompt_upload").set_value([("sun.png", picture.getvalue(), "image/png")]).run()
    assert any("Steering towards 1 picture(s): sun.png" in c.value for c in studio.caption)
    studio.number_input(key="steps").set_value(3)
    studio.number_input(key="augment_copies").set_value(2)
    studio.run()
    assert problems(studio) == []  # no text prompt needed
    button(studio, "Generate").click().run()
    finish_job(studio)
    result = studio.session_state["last_items"][0]["result"]
    assert result.scores.values["image_prompt_similarity"] is not None
    button(studio, "Clear").click().run()
    assert NEED_A_PROMPT in problems(studio)


def test_a_finished_run_offers_its_animation(studio):
    studio.number_input(key="preview_every").set_value(1)
    quick_form(studio, "a kite", steps=4)
    button(studio, "Generate").click().run()
    finish_job(studio)
    item = studio.session_state["last_items"][0]
    assert len(item["frames"]) == 5 and item["frames"][-1].tobytes() == item["result"].image.tobytes()
    assert any(b.label == "Download animation" for b in studio.get("download_button"))


def test_each_image_of_a_grid_and_the_gallery_offers_its_png_svg_and_animation(studio):
    studio.selectbox(key="canvas").set_value("strokes").run()
    studio.number_input(key=form.canvas_key("strokes", "count")).set_value(6)
    studio.number_input(key="preview_every").set_value(1)
    studio.number_input(key="variations").set_value(2)
    quick_form(studio, "a paper boat", steps=3)
    button(studio, "Generate").click().run()
    finish_job(studio)
    items = studio.session_state["last_items"]
    assert len(items) == 2
    downloads = studio.get("download_button")
    svg_urls = set()
    for item in items:
        r = item["result"]
        mine = {b.proto.label: b.proto for b in downloads
                if b.proto.id and f"compare_download_{r.config.method}_{r.config.seed}_" in b.proto.id}
        assert sorted(mine) == ["GIF", "PNG", "SVG"]
        assert item["files"][".svg"].count(b"<path ") == 6
        assert item["frames"][-1].tobytes() == r.image.tobytes() and len(item["frames"]) == 4
        svg_urls.add(mine["SVG"].url)
    assert len(svg_urls) == 2  # each image's button serves its own drawing
    # The session's gallery (shown from two images on) offers the same three for each.
    for number in (1, 2):
        assert sorted(b.proto.label for b in downloads if f"gallery_download_{number}_" in b.proto.id) == \
            ["GIF", "PNG", "SVG"]


def test_a_typed_path_is_never_read_by_the_studio(studio, tmp_path):
    """A visitor who types a server path into the style-list box sees one refusal, the same for
    a file that exists and one that does not, and none of the file's lines."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-LINE\n")
    studio.selectbox(key=form.term_key("ambiguity", "guidance")).set_value("reward").run()
    shown = []
    for path in (str(secret), str(tmp_path / "absent.txt"), "/dev/zero"):
        studio.session_state[form.term_key("ambiguity", "styles")] = path
        studio.run()
        assert not studio.exception
        found = [p for p in problems(studio) if path in p]
        assert found and "is not a file uploaded to this studio" in found[0], problems(studio)
        shown.append(found[0].replace(path, "PATH"))
        in_use = [c.value for c in studio.caption if c.value.startswith("In use:")]
        assert in_use == ["In use: not an upload: refused"], in_use  # not the server file's name
    assert len(set(shown)) == 1  # whether it exists is not told
    page = " ".join(str(e.value) for e in (*studio.markdown, *studio.caption, *studio.error, *studio.info))
    assert "TOP-SECRET-LINE" not in page


def test_a_restored_recipe_naming_server_files_is_refused(studio, models, tmp_path):
    """A crafted recipe carries paths the page never shows (start picture, image prompts,
    centroids); the restore is refused in one line, before anything reads them."""
    import json

    from PIL import Image, PngImagePlugin

    from das_ag.png import RECIPE_KEY

    picture = tmp_path / "private.png"
    Image.new("RGB", (8, 8), "red").save(picture)
    recipe = synthesize(small_config(steps=1), models).run().recipe()
    messages = []
    for path in (str(picture), str(tmp_path / "absent.png")):
        recipe["config"]["terms"] = {"init": {"image": path, "sha256": "", "strength": 10000.0}}
        info = PngImagePlugin.PngInfo()
        info.add_itxt(RECIPE_KEY, json.dumps(recipe))
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
        studio.file_uploader(key="restore_png").set_value(("crafted.png", buffer.getvalue(), "image/png")).run()
        assert not studio.exception
        refused = [e for e in errors(studio) if "is not a file uploaded to this studio" in e]
        assert refused, errors(studio)
        messages.append(refused[0].replace(path, "PATH"))
        assert studio.session_state[form.term_key("init", "image")] == ""  # nothing was restored
    assert messages[0] == messages[1]


def test_a_second_generate_while_a_run_is_on_is_refused(studio, monkeypatch):
    """The button is disabled while a run is on, but a click on a page drawn just before (a double
    click, a second tab's stale page) still reaches the server: it must not replace the run, which
    could then never be stopped."""
    import dataclasses

    quick_form(studio, "a lighthouse at dusk", steps=5000)
    button(studio, "Generate").click().run()
    first = studio.session_state["job"]
    real = first.snapshot
    try:
        # A page drawn as if the run had not started yet, so its Generate button is enabled ...
        monkeypatch.setattr(first, "snapshot", lambda: dataclasses.replace(real(), state="finished"))
        studio.run()
        generate = button(studio, "Generate")
        assert not generate.disabled
        monkeypatch.setattr(first, "snapshot", real)
        generate.click().run()  # ... clicked while the run is on
        assert studio.session_state["job"] is first and first.snapshot().active
        assert any("still going" in e for e in errors(studio)), errors(studio)
    finally:
        first.stop()
        assert first.join(60)

def test_a_run_larger_than_the_operator_allows_is_refused(studio, monkeypatch):
    # One visitor's Generate spends the server's device for as long as it runs: the operator caps
    # steps x images x pixels, and a run above the cap is refused in one line before it starts.
    monkeypatch.setenv("DAS_AG_STUDIO_MAX_WORK", str(4 * 224 * 224 * 3 - 1))
    quick_form(studio, "a lighthouse", steps=4)
    studio.toggle(key="compare_mode").set_value(True).run()
    button(studio, "Generate").click().run()
    assert studio.session_state["job"] is None
    (message,) = errors(studio)
    assert "too large for this server" in message and "3 images x 4 steps x 224x224 px" in message
    studio.toggle(key="compare_mode").set_value(False).run()
    button(studio, "Generate").click().run()  # a third of it fits
    assert studio.session_state["job"] is not None
    finish_job(studio)
    assert studio.session_state["gallery"][-1]["result"].status == "completed"


def test_a_visitor_cannot_make_the_server_download_a_clip(studio, monkeypatch, tmp_path):
    # ViT-B/32 is a name the studio takes, but this server has no copy and allows downloads of
    # ViT-L/14 alone (the default): the run ends in one line, before any network is touched.
    import urllib.request

    monkeypatch.setenv("DAS_AG_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("the server downloaded"))
    quick_form(studio, "a harbour")
    studio.text_area(key="clip_models_text").set_value("ViT-B/32").run()
    button(studio, "Generate").click().run()
    finish_job(studio)
    message = errors(studio)[-1]
    assert "ViT-B/32 is not in the cache" in message and "downloads only ViT-L/14 for the studio" in message
