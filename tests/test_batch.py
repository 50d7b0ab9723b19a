"""Several images sharing each step's encoder forward: each gets what its recipe promises."""

from __future__ import annotations

import dataclasses

import pytest

from das_ag.cli import main
from das_ag.engine import auto_images_per_step, plan_batches, synthesize
from das_ag.errors import ConfigError
from das_ag.png import batch_from_recipe, config_from_png, read_recipe
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule

from .conftest import small_config
from .test_engine import png_bytes


def test_a_batch_of_three_gives_each_image_what_its_recipe_promises(models, tmp_path, monkeypatch, tiny_clip_path, head_path):
    configs = [
        small_config(seed=1, steps=6, terms={"aesthetic": {"guidance": "reward"}}),
        small_config(seed=2, steps=6, prompts=(Prompt("a blue boat"), Prompt("fog", -0.5)), terms={"aesthetic": {"guidance": "penalty"}}),
        small_config(seed=3, steps=6, lr=0.05, terms={"aesthetic": {"guidance": "off", "weight": Schedule.constant(1.0)}}),
    ]
    run = synthesize(configs, models)
    events = list(run)
    assert [len(e.images) for e in events] == [3] * 6
    assert "clip_negative" in events[0].images[1].metrics["text"] and "clip_negative" not in events[0].images[0].metrics["text"]
    assert events[0].images[2].lr == pytest.approx(0.05) and events[0].images[0].lr == pytest.approx(0.1)
    paths = []
    for i, result in enumerate(run.results()):
        assert result.config == configs[i] and result.status == "completed"
        path = result.save(tmp_path / f"img{i}.png")
        assert config_from_png(path) == configs[i]
        batch, index = batch_from_recipe(read_recipe(path))
        assert batch == tuple(configs) and index == i
        paths.append(path)
    # Each image re-made from its PNG alone: the CLI re-runs its batch and keeps its image.
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    for i, path in enumerate(paths):
        again = tmp_path / f"again{i}.png"
        assert main(["generate", "--from-png", str(path), "--quiet", "--out", str(again)]) == 0
        assert again.read_bytes() == path.read_bytes()


def test_signs_in_one_batch_move_the_score_their_own_ways(models):
    base = small_config(steps=30, seed=3, terms={"text": {"weight": 0.0}, "aesthetic": {"weight": Schedule.constant(3.0)}})
    reward, penalty = synthesize([base.with_guidance("reward"), base.with_guidance("penalty")], models).run()
    start = reward.initial_scores.aesthetic
    assert penalty.initial_scores.aesthetic == start  # same seed, same start
    assert reward.scores.aesthetic > start + 0.1
    assert penalty.scores.aesthetic < start - 0.1


def test_a_batched_image_matches_the_same_image_made_alone_on_this_cpu(models):
    # Not promised (recipes re-create their batch instead), but on the CPU every row of the
    # encoder is computed alone, so batching should not change a bit: a change here is worth knowing.
    configs = [small_config(seed=s, steps=4) for s in (7, 8)]
    together = synthesize(configs, models).run()
    alone = [synthesize(c, models).run() for c in configs]
    assert [png_bytes(r.image) for r in together] == [png_bytes(r.image) for r in alone]


def test_images_that_cannot_share_a_step_are_refused(models):
    with pytest.raises(ConfigError, match="must share steps"):
        synthesize([small_config(steps=3), small_config(steps=4)], models)


def test_plans_group_what_can_share_and_respect_the_size():
    configs = [small_config(seed=s, steps=3 if s % 2 else 4) for s in range(5)]
    assert plan_batches(configs, 2) == [[0, 2], [4], [1, 3]]
    assert plan_batches(configs, 16) == [[0, 2, 4], [1, 3]]
    with pytest.raises(ConfigError):
        plan_batches(configs, 0)


def test_the_memory_an_image_needs_is_measured_and_predicts_a_batchs(models, monkeypatch):
    """"auto" images per step rests on what one image keeps for its backward, measured on real
    step forwards of one and two copies: it predicts what a batch of three images of five copies
    keeps (one forward, measured the same way) to 1%, and auto fits as many as half the free
    memory holds."""
    from das_ag import engine

    config = small_config(augment_copies=5)
    each = engine.step_activation_bytes(models, config)
    batch = engine.saved_bytes(models, [config.replace(seed=s) for s in (1, 2, 3)])
    assert batch == pytest.approx(3 * each, rel=0.01), (batch, each)
    assert engine.step_activation_bytes(models, config.replace(augment_copies=10)) > 1.5 * each

    monkeypatch.setattr(engine, "_free_memory", lambda device: int(each * 7))
    assert auto_images_per_step(models, config) == 3  # half of 7 images' worth
    monkeypatch.setattr(engine, "_free_memory", lambda device: 100 * 2**30)
    assert auto_images_per_step(models, config) == engine.AUTO_IMAGES_LIMIT
    monkeypatch.setattr(engine, "_free_memory", lambda device: 0)
    assert auto_images_per_step(models, config) == 1  # never none

    # DAS alone loads no aesthetic head (the studio, the CLI): the measurement runs without it.
    headless = dataclasses.replace(models, aesthetic_head=None, aesthetic_identity=None)
    assert 0 < engine.step_activation_bytes(headless, config.with_guidance("off")) <= each


def test_one_bad_image_stops_alone(models, broken_head_path, tiny_clip_path):
    from das_ag.models import load_models

    broken = load_models(str(tiny_clip_path), str(broken_head_path), "cpu")
    # The broken head's score is infinite: in the loss of the reward image from step 2 on (its
    # weight starts at 0), never in the loss of the off image, which must finish regardless.
    results = synthesize([small_config(steps=4, seed=1, terms={"aesthetic": {"guidance": "reward"}}),
                          small_config(steps=4, seed=2, terms={"aesthetic": {"guidance": "off"}})], broken).run()
    assert results[0].status == "non_finite" and results[0].steps_done == 1 and "non-finite" in results[0].message
    assert results[1].status == "completed" and results[1].steps_done == 4


def test_compare_runs_the_three_methods_of_a_seed_together(tiny_clip_path, head_path, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "cmp"
    assert main(["compare", "--prompt", "a kite", "--seeds", "0,1", "--steps", "3", "--copies", "2", "--device", "cpu",
                 "--quiet", "--images-per-step", "3", "--out", str(out)]) == 0
    recipes = [read_recipe(p) for p in sorted((out / "images").glob("*.png"))]
    assert len(recipes) == 6
    for recipe in recipes:
        batch = recipe["batch"]["configs"]
        assert {c["terms"]["aesthetic"]["guidance"] for c in batch} == {"off", "reward", "penalty"} and len({c["seed"] for c in batch}) == 1


def test_the_python_api_makes_any_number_of_images_several_to_a_step(models):
    """synthesize_all: images that can share a step are made together, at most images_per_step at
    a time, and come back in the order given, each what it would be alone (bit for bit on the CPU)."""
    import das_ag

    configs = [small_config(seed=s, steps=3 if s != 2 else 4) for s in range(5)]
    results = das_ag.synthesize_all(configs, models, images_per_step=2)
    assert [r.config for r in results] == configs
    assert [len(r.batch) for r in results] == [2, 2, 0, 2, 2]  # seed 2's step count lets it share with none
    assert results[3].batch == (configs[3], configs[4])
    alone = das_ag.synthesize(configs[1], models).run()
    assert png_bytes(alone.image) == png_bytes(results[1].image)
    assert [r.config for r in das_ag.synthesize_all(configs[:2], models)] == configs[:2]  # auto


def test_the_older_ways_in_still_work_and_say_what_replaces_them(models):
    import das_ag

    configs = [small_config(seed=s, steps=2) for s in range(2)]
    today = [png_bytes(r.image) for r in das_ag.synthesize(configs, models).run()]
    with pytest.warns(DeprecationWarning, match=r"synthesize\(config, models\)\.run\(\)"):
        assert png_bytes(das_ag.generate(configs[0], models).image) == today[0]
    with pytest.warns(DeprecationWarning, match="synthesize_all"):
        assert [png_bytes(r.image) for r in das_ag.generate_all(configs, models)] == today
    with pytest.warns(DeprecationWarning, match="run_all"):
        assert [png_bytes(r.image) for r in das_ag.synthesize(configs, models).run_all()] == today
