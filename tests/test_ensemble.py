"""Encoder ensembles: several CLIPs (OpenAI's and open_clip's) guide one run, each with a weight."""

from __future__ import annotations

import pytest
import torch

from das_ag.cli import main
from das_ag.clip_models import encoder_problems, parse_encoder
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.errors import ConfigError, WeightsError
from das_ag.models import load_models
from das_ag.png import read_recipe
from das_ag.prompts import Prompt, tokenize
from das_ag.schedules import Schedule


def test_specs_and_their_weights():
    assert parse_encoder("ViT-B/32").weight == 1 and parse_encoder("ViT-B/32:0.5").weight == 0.5
    spec = parse_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k:2")
    assert (spec.source, spec.weight, spec.is_open_clip) == ("open_clip:ViT-B-32@laion2b_s34b_b79k", 2.0, True)
    assert parse_encoder("C:/models/clip.pt").source == "C:/models/clip.pt"  # a colon in a path is no weight
    with pytest.raises(ConfigError, match="finite number >= 0"):
        parse_encoder("ViT-B/32:-1")
    assert "needs a weight above 0" in encoder_problems(("ViT-B/32:0", "ViT-L/14:0"))[0]
    assert "open_clip:ARCH@PRETRAINED" in encoder_problems(("open_clip:ViT-B-32",))[0]


def test_an_ensemble_embedding_is_the_weighted_mean_of_its_encoders_similarities(tiny_clip_path, tiny_open_clip,
                                                                                  head_path):
    models = load_models([f"{tiny_clip_path}:3", f"{tiny_open_clip}:1"], str(head_path), "cpu")
    assert [e.width for e in models.encoders] == [768, 512] and models.width == 1280
    assert [e.kind for e in models.encoders] == ["openai", "open_clip"]
    assert models.encoders[1].fast  # open_clip's ViT runs on das-ag's fast encoder too
    views = torch.randn(2, 3, models.input_resolution, models.input_resolution)
    image, text = models.encode_images(views), models.encode_texts(tokenize(["a red kite", "a boat"])[0])
    assert torch.allclose(image.norm(dim=-1), torch.ones(2), atol=1e-5)
    each = [e.encode_images(views) @ e.encode_texts(tokenize(["a red kite", "a boat"])[0]).t() for e in models.encoders]
    assert torch.allclose(image @ text.t(), 0.75 * each[0] + 0.25 * each[1], atol=1e-5)
    identities = models.identities()
    assert [e["weight"] for e in identities["encoders"]] == [3.0, 1.0]
    assert identities["encoders"][1]["name"].startswith("open_clip:das-ag-random-open-clip")
    assert len(identities["encoders"][1]["sha256"]) == 64 and identities["aesthetic"]["name"] == head_path.name


def test_a_two_encoder_run_moves_both_similarities(tiny_clip_path, tiny_open_clip, head_path):
    # The tiny OpenAI CLIP's gradients are the weaker of the two: weight 3 gives it a say. (In a
    # 1:1 ensemble its similarity rose by 0.003, by 0.017 alone; here by 0.013, the other's by 0.03.)
    ensemble = (f"{tiny_clip_path}:3", tiny_open_clip)
    models = load_models(list(ensemble), str(head_path), "cpu")
    # The whole-picture views: 20 steps of crops and turns are too few for the random tiny CLIP's
    # weak gradient to show (its similarity then moved by -0.001); what is tested is the ensemble.
    config = GenerationConfig(prompts=(Prompt("a red kite"),), resolution=64, steps=20, augment_copies=4, device="cpu", clip_models=ensemble, terms={"aesthetic": {"guidance": "off"}},
                              crop_min=1.0, view_turn=0.0, view_flip=False)
    result = synthesize(config, models).run()
    names = [e.identity.name for e in models.encoders]
    for name in names:
        start, end = result.initial_scores.values[f"clip_positive@{name}"], result.scores.values[f"clip_positive@{name}"]
        assert end > start + 0.008, (name, start, end)


def test_an_encoder_of_weight_0_serves_the_head_only_on_its_steps(tiny_clip_path, tiny_open_clip, head_path):
    """The fast path: guide by a small CLIP every step, score with ViT-L/14 every Nth step only."""
    models = load_models([tiny_open_clip, f"{tiny_clip_path}:0"], str(head_path), "cpu")
    assert models.head_is_separate and models.width == 512
    scores = {}
    for guidance in ("reward", "penalty"):
        config = GenerationConfig(prompts=(Prompt("a red kite"),), resolution=64, steps=20, augment_copies=4, device="cpu", clip_models=(tiny_open_clip, f"{tiny_clip_path}:0"), terms={"aesthetic": {"every": 5, "guidance": guidance, "weight": Schedule.constant(3.0)}})
        run = synthesize(config, models)
        measured = [event.step for event in run if "score" in event.metrics.get("aesthetic", {})]
        assert measured == [1, 6, 11, 16]  # steps 0, 5, 10, 15 (0-based): only when the term is applied
        scores[guidance] = run.result().scores.values["aesthetic"]
    assert scores["reward"] > scores["penalty"]


def test_ensembles_from_the_command_line(tiny_clip_path, tiny_open_clip, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "two.png"
    common = ["--steps", "3", "--copies", "2", "--resolution", "64", "--device", "cpu", "--quiet"]
    assert main(["generate", "--prompt", "a kite", "--clip-model", str(tiny_clip_path),
                 "--clip-model", f"{tiny_open_clip}:0.5", "--out", str(out), *common]) == 0
    recipe = read_recipe(out)
    assert recipe["config"]["clip_models"] == [str(tiny_clip_path), f"{tiny_open_clip}:0.5"]
    assert [e["weight"] for e in recipe["models"]["encoders"]] == [1.0, 0.5]
    assert any(k.startswith("clip_positive@open_clip:") for k in recipe["scores"])
    again = tmp_path / "again.png"  # the recipe alone names its encoders
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()

    for spec, words in (("open_clip:no-such-model@x", "is not an open_clip model"),
                        (tiny_open_clip.rsplit("@", 1)[0] + "@no-such-tag", "neither a file nor a pretrained tag"),
                        ("open_clip:ViT-B-32", "open_clip:ARCH@PRETRAINED"),
                        (f"{tiny_clip_path}:-2", "finite number >= 0")):
        assert main(["generate", "--prompt", "x", "--clip-model", spec, *common]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err


def test_guidance_off_needs_no_head_and_any_width(tiny_open_clip, tmp_path, monkeypatch, capsys):
    """Plain DAS on a 512-d open_clip model, with no aesthetic head anywhere."""
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(tmp_path / "absent.pth"))
    out = tmp_path / "das.png"
    common = ["--steps", "2", "--copies", "2", "--resolution", "64", "--device", "cpu", "--quiet"]
    assert main(["generate", "--prompt", "a kite", "--guidance", "off", "--clip-model", tiny_open_clip,
                 "--out", str(out), *common]) == 0
    recipe = read_recipe(out)
    assert "aesthetic" not in recipe["models"] and "aesthetic" not in recipe["scores"]
    assert main(["generate", "--prompt", "a kite", "--clip-model", tiny_open_clip, *common]) != 0
    assert "aesthetic head" in capsys.readouterr().err


def test_an_open_clip_model_with_its_own_normalisation_sees_the_same_pixels(tiny_open_clip, head_path):
    """Views are normalised with OpenAI's mean and std; a model trained with others gets its own."""
    import dataclasses

    from das_ag.augment import normalize

    models = load_models(tiny_open_clip, None, "cpu", need_head=False)
    encoder = dataclasses.replace(models.encoders[0], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), _encoders={})
    pixels = torch.rand(1, 3, 64, 64)
    ours = encoder.encode_images(normalize(pixels))
    theirs = encoder.model.visual((pixels - 0.5) / 0.5).float()
    assert torch.allclose(ours, theirs / theirs.norm(dim=-1, keepdim=True), atol=1e-5)


def test_an_ensemble_without_a_vit_l_cannot_reward(tiny_open_clip, head_path):
    with pytest.raises(WeightsError, match="add --clip-model ViT-L/14:0"):
        load_models(tiny_open_clip, str(head_path), "cpu")


def test_compare_and_plans_take_an_ensemble(tiny_clip_path, tiny_open_clip, head_path, monkeypatch, tmp_path):
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    ensemble = [str(tiny_clip_path), f"{tiny_open_clip}:0.5"]
    out = tmp_path / "cmp"
    assert main(["compare", "--prompt", "a kite", "--seeds", "0", "--steps", "2", "--copies", "2", "--device", "cpu",
                 "--resolution", "64", "--quiet", "--clip-model", ensemble[0], "--clip-model", ensemble[1],
                 "--out", str(out)]) == 0
    recipes = [read_recipe(p) for p in sorted((out / "images").glob("*.png"))]
    assert len(recipes) == 3 and all(r["config"]["clip_models"] == ensemble for r in recipes)
    plan = tmp_path / "plan.toml"
    models = ", ".join(f'"{m}"' for m in ensemble)
    plan.write_text(f'seeds = [0]\nmethods = ["DAS"]\n[settings]\nsteps = 2\naugment_copies = 2\nresolution = 64\n'
                    f'device = "cpu"\nclip_models = [{models}]\n[[prompts]]\ntext = "a kite"\n')
    assert main(["batch", str(plan), "--out", str(tmp_path / "plan"), "--quiet"]) == 0
    made = list((tmp_path / "plan" / "images").glob("*.png"))
    assert len(made) == 1 and read_recipe(made[0])["config"]["clip_models"] == ensemble


def test_a_wide_image_from_a_start_picture_on_an_ensemble_with_a_separate_head(tiny_clip_path, tiny_open_clip,
                                                                               head_path, tmp_path):
    """The new parts together: a 2:1 image, a start picture, an open_clip guide and a ViT-L/14-
    shaped encoder for the head alone; the final scores see the whole picture with both."""
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.new("RGB", (200, 100), (40, 90, 200)).save(picture)
    ensemble = (tiny_open_clip, f"{tiny_clip_path}:0")
    models = load_models(list(ensemble), str(head_path), "cpu")
    config = GenerationConfig(prompts=(Prompt("a kite"),), width=128, height=64, steps=4, augment_copies=2,
                              device="cpu", clip_models=ensemble, terms={"init": {"image": str(picture), "strength": 50.0}})
    result = synthesize(config, models).run()
    assert result.image.size == (128, 64) and result.status == "completed"
    assert result.scores.aesthetic is not None and result.initial_scores.aesthetic is not None
    assert result.initial_scores.aesthetic != result.scores.aesthetic  # the head scored the finished picture
    pixels = torch.tensor(list(result.image.getpixel((64, 32))), dtype=torch.float32)
    assert (pixels - torch.tensor([40.0, 90.0, 200.0])).abs().max() < 40  # held near the start picture


def test_an_open_clip_tag_counts_as_cached_where_open_clips_download_would_find_it(tmp_path):
    # The studio's allow-list lets a visitor use a model the server already has without letting
    # them make it download one: "already has" must be where open_clip itself would look.
    from das_ag.clip_models import in_cache

    source = "open_clip:ViT-B-32@laion2b_s34b_b79k"  # open_clip gets it from the hub
    assert not in_cache(source, tmp_path)
    repo = tmp_path / "open_clip" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "open_clip_model.safetensors").write_bytes(b"weights")
    assert in_cache(source, tmp_path)
    assert not in_cache("open_clip:ViT-B-16@laion2b_s34b_b88k", tmp_path)  # another model's tag
    assert not in_cache("ViT-B/32", tmp_path)  # OpenAI's: the file in das-ag's cache
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    assert in_cache("ViT-B/32", tmp_path)


def test_a_model_off_the_allow_list_is_never_downloaded(tiny_clip_path, head_path, tmp_path, monkeypatch):
    import urllib.request

    from das_ag.errors import WeightsError

    monkeypatch.setenv("DAS_AG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    for source in ("ViT-B/32", "open_clip:ViT-B-32@laion2b_s34b_b79k"):
        with pytest.raises(WeightsError, match="downloads only ViT-L/14 for the studio"):
            load_models([source], str(head_path), "cpu", download=frozenset({"ViT-L/14"}))
        with pytest.raises(WeightsError, match="downloads are off"):
            load_models([source], str(head_path), "cpu", download=False, need_head=False)
    # Files and names off the list that need no download load as before.
    models = load_models([str(tiny_clip_path)], str(head_path), "cpu", download=frozenset())
    assert models.aesthetic_head is not None
