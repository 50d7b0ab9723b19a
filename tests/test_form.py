import pytest

from das_ag.studio import form
from das_ag.config import PRESETS, GenerationConfig
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule

PROMPTS = (Prompt("a koi pond", 1.5), Prompt("a tea house", 1.0), Prompt("blurry", -0.5))


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_config_survives_the_form(preset):
    config = GenerationConfig.from_preset(preset, prompts=PROMPTS) if preset else GenerationConfig(prompts=PROMPTS)
    back, problems = form.state_to_config(form.config_to_state(config))
    assert problems == [] and back == config


def test_every_setting_survives_the_form():
    config = GenerationConfig(prompts=PROMPTS, steps=17, augment_copies=3, lr=0.02, resolution=320, jitter_margin=9, canvas_settings={"levels": "all", "fill": "zeros", "combine": "sum", "interpolation": "bicubic", "coarse_lr": 2.5}, noise=Schedule("linear", 0.1, 0.3), colour_shift=Schedule.constant(0.2), jitter=Schedule("exp_decay", 1.0, 0.5, 0.1), seed=123, deterministic=True, device="cpu", dtype="bfloat16", terms={"aesthetic": {"guidance": "penalty", "weight": Schedule("cosine", 1.0, 4.0)}, "text": {"weight": 2.5}, "tv": {"weight": 0.001}, "l1": {"weight": 0.01}})
    assert form.state_to_config(form.config_to_state(config)) == (config, [])


def test_negative_rows_hold_strengths_and_empty_rows_are_skipped():
    state = form.config_to_state(GenerationConfig(prompts=PROMPTS))
    assert state["pos_rows"] == [0, 1] and state["neg_rows"] == [0]
    assert state["neg_weight_0"] == 0.5
    state["pos_rows"].append(7)
    state["pos_text_7"] = "   "
    assert form.prompts_from_state(state) == PROMPTS


def test_no_positive_prompt_is_a_problem_not_an_exception():
    state = form.config_to_state(GenerationConfig(prompts=PROMPTS))
    state["pos_text_0"] = state["pos_text_1"] = ""
    config, problems = form.state_to_config(state)
    assert config is None and problems == ["Write at least one prompt to steer towards (a positive one)."]


def test_all_problems_are_listed_at_once():
    state = form.config_to_state(GenerationConfig(prompts=PROMPTS))
    state.update(steps=0, lr=0.0, resolution=8)
    config, problems = form.state_to_config(state)
    assert config is None and len(problems) == 3
    assert all(p[0].isupper() and p.endswith(".") for p in problems)


def test_a_constant_schedule_ignores_a_stale_end():
    state = form.config_to_state(GenerationConfig(prompts=PROMPTS))
    state.update(noise_kind="constant", noise_start=0.3, noise_end=0.9)
    config, _ = form.state_to_config(state)
    assert config.noise == Schedule("constant", 0.3, 0.3, state["noise_rate"])


def test_a_canvas_schedule_survives_the_form_and_its_widgets_set_it():
    """The strokes canvas's edge softness is a schedule: the studio shows it as four widgets (as
    every described schedule), and what they hold is the drawing's softness."""
    from das_ag.canvases.strokes import StrokeSettings

    config = GenerationConfig(prompts=PROMPTS, canvas="strokes",
                              canvas_settings=StrokeSettings(softness=Schedule("cosine", 2.0, 0.5), samples=24))
    state = form.config_to_state(config)
    key = form.canvas_key("strokes", "softness")
    assert state[form.schedule_key(key, "kind")] == "cosine" and state[form.schedule_key(key, "start")] == 2.0
    assert form.state_to_config(state) == (config, [])
    state.update({form.schedule_key(key, "kind"): "constant", form.schedule_key(key, "start"): 0.8})
    back, problems = form.state_to_config(state)
    assert problems == [] and back.canvas_settings.softness == Schedule("constant", 0.8, 0.8, Schedule().rate)
    state[form.schedule_key(key, "start")] = 0.01
    assert form.state_to_config(state)[1] == ["Softness must stay at 0.05 px or more (sharper edges have no gradient)."]


def test_a_term_s_unread_settings_are_found_without_reading_a_stranger_s_file(tmp_path):
    """The page greys out what a term's other values leave unread; a path that is not an upload
    (a restored recipe's) is not hashed to find out."""
    state = form.config_to_state(GenerationConfig(prompts=PROMPTS))
    no_mask = {"mask_edge": "it softens a mask's edge, and no mask is given"}
    assert form.term_unused(state, "init") == {"strength": "it holds the run near a start picture, and none is given",
                                               **no_mask}
    state[form.term_key("init", "image")] = "/dev/zero"
    assert form.term_unused(state, "init") == {}


def test_a_restored_recipe_naming_a_server_file_is_refused_before_it_is_read():
    """A start drawing (strokes) or a mask in a visitor's recipe is a path on the server: the studio
    reads only its own uploads, so either is refused before any settings object hashes it."""
    recipe = {"config": {"canvas": "strokes", "canvas_settings": {"count": 3, "drawing": "/etc/passwd"},
                         "terms": {"init": {"image": "", "mask": "/etc/shadow"}}}}
    problems = form.foreign_files(form.recipe_term_state(recipe))
    assert sorted(p.split()[0] for p in problems) == ["/etc/passwd", "/etc/shadow"]
    assert all("is not a file uploaded to this studio" in p for p in problems)


def test_the_video_settings_round_trip_and_say_their_problems():
    from das_ag.animate import Motion
    from das_ag.schedules import Schedule

    motion = Motion(frames=5, frame_steps=7, zoom=Schedule("linear", 1.0, 1.1), turn=Schedule.constant(-3.0), fps=8.0)
    assert form.motion_from_state(form.motion_to_state(motion)) == (motion, [])
    state = form.motion_to_state(motion)
    state[form.schedule_key(form.VIDEO + "zoom", "start")] = 0.0
    assert form.motion_from_state(state)[1] == [
        "A zoom of 0 would shrink the picture to nothing: zoom must be above 0 (1: no zoom)."]
