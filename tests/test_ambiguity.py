"""The style-ambiguity term (DAS-CAN) and the centroids of a user's pictures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.experiments import build_plan, parse_method
from das_ag.objectives.ambiguity import style_entropy, style_kl
from das_ag.png import read_recipe
from das_ag.prompts import Prompt, tokenize
from das_ag.schedules import Schedule
from das_ag.embedding import embed_image
from das_ag.styles import WIKIART_STYLES, Centroids, build_centroids, embed_folder, kmeans, load_labels


COLOURS = ("red", "green", "blue", "yellow", "purple", "white")


def ambiguity(**settings) -> dict:
    return {"ambiguity": settings}


def small(**changes) -> GenerationConfig:
    base = dict(prompts=(Prompt("a red apple"),), steps=20, augment_copies=4, resolution=64, device="cpu")
    return GenerationConfig(**{**base, **changes})


# -- the objective, without models ------------------------------------------------------------
def test_uniform_styles_cost_nothing_and_pull_nowhere():
    logits = torch.zeros(3, 7, requires_grad=True)
    kl = style_kl(torch.log_softmax(logits, -1)).sum()
    (grad,) = torch.autograd.grad(kl, logits)
    assert float(kl.detach()) == pytest.approx(0, abs=1e-6) and grad.abs().max() < 1e-6
    # The other argument order, CE(p, U), is a constant: it could never steer anything.
    logits = torch.randn(3, 7, requires_grad=True)
    p = torch.softmax(logits, -1)
    reversed_order = -(p * math.log(1 / 7)).sum(-1).sum()
    (grad,) = torch.autograd.grad(reversed_order, logits)
    assert grad.abs().max() < 1e-6


def test_a_step_down_the_loss_spreads_or_concentrates_the_styles():
    logits = torch.tensor([[3.0, 0.5, -1.0, 0.0]])
    for loss, moves in ((style_kl, "spreads"), (style_entropy, "concentrates")):
        x = logits.clone().requires_grad_()
        (grad,) = torch.autograd.grad(loss(torch.log_softmax(x, -1)).sum(), x)
        before = float(style_entropy(torch.log_softmax(logits, -1)))
        after = float(style_entropy(torch.log_softmax(logits - 0.1 * grad, -1)))
        assert (after > before) == (moves == "spreads")


def test_labels_come_built_in_or_from_a_file(tmp_path):
    assert load_labels("wikiart") == list(WIKIART_STYLES) and len(WIKIART_STYLES) == 27
    path = tmp_path / "moods.txt"
    path.write_text("# my styles\ncalm\n\nstormy\ncalm\n")
    assert load_labels(str(path)) == ["calm", "stormy"]
    path.write_text("calm\n")
    with pytest.raises(ConfigError, match="needs at least two"):
        load_labels(str(path))


def test_kmeans_is_seeded_and_finds_the_groups():
    g = torch.Generator().manual_seed(0)
    groups = torch.cat([torch.randn(20, 8, generator=g) * 0.05 + c for c in (torch.eye(8)[0], torch.eye(8)[3], -torch.eye(8)[5])])
    a, labels, inertia = kmeans(groups, 3, seed=1)
    b, _, _ = kmeans(groups, 3, seed=1)
    assert torch.equal(a, b)
    assert sorted(torch.bincount(labels).tolist()) == [20, 20, 20]
    assert all(len(set(labels[i:i + 20].tolist())) == 1 for i in (0, 20, 40))


# -- runs on the tiny CLIP and the real head -------------------------------------------------------
def test_reward_spreads_the_styles_penalty_concentrates_them_whatever_the_aesthetic_sign(models, tmp_path):
    labels = tmp_path / "styles.txt"
    labels.write_text("\n".join(["watercolour", "oil painting", "pencil sketch", "photograph", "mosaic"]))
    runs = {}
    for aesthetic in ("reward", "penalty"):
        for styles in ("reward", "penalty"):
            config = small(terms={**ambiguity(guidance=styles, weight=1.0, styles=str(labels)), "aesthetic": {"guidance": aesthetic, "weight": Schedule.constant(3.0)}})
            runs[aesthetic, styles] = synthesize(config, models).run()
    start = runs["reward", "reward"].initial_scores.values["style_entropy"]
    for aesthetic in ("reward", "penalty"):
        spread, focused = runs[aesthetic, "reward"].scores, runs[aesthetic, "penalty"].scores
        assert spread.values["style_entropy"] > start > focused.values["style_entropy"]
    for styles in ("reward", "penalty"):
        assert runs["reward", styles].scores.aesthetic > runs["penalty", styles].scores.aesthetic
    assert {r.config.method for r in runs.values()} == {"DAS-AG-CAN", "DAS-AG-rCAN", "DAS-rAG-CAN", "DAS-rAG-rCAN"}


def test_the_style_distribution_is_live_and_saved(models):
    config = small(steps=4, terms=ambiguity(guidance="reward"))
    run = synthesize(config, models)
    events = list(run)
    metrics = events[-1].metrics["ambiguity"]
    shares = {k[2:]: v for k, v in metrics.items() if k.startswith("p:")}
    assert set(shares) == set(WIKIART_STYLES) and sum(shares.values()) == pytest.approx(1, abs=1e-4)
    assert 0 <= metrics["entropy"] <= math.log(27) + 1e-6
    recipe = read_recipe(run.result().files()[".png"])
    top = recipe["scores"]["styles"]
    assert len(top) == 5 and top[0]["p"] >= top[-1]["p"] and recipe["scores"]["style_entropy"] > 0
    assert recipe["config"]["terms"]["ambiguity"]["guidance"] == "reward" and recipe["method"] == "DAS-AG-CAN"


def test_a_comparison_measures_the_styles_of_every_method(models, tmp_path):
    assert parse_method("DAS-CAN").marks == (("ambiguity", "-CAN"),) and parse_method("DAS-AG").guidance == "reward"
    plan = build_plan([("apple", (Prompt("a red apple"),))], [0], dict(steps=2, augment_copies=2, resolution=64,
                      device="cpu"), tmp_path, methods=("DAS", "DAS-AG", "DAS-CAN"))
    assert [i.method for i in plan.items] == ["DAS", "DAS-AG", "DAS-CAN"]
    baseline = plan.items[0].config.term_settings("ambiguity")
    assert baseline.guidance == "off" and baseline.measure  # off, but its entropy is in the table
    with pytest.raises(Exception, match="unknown method"):
        parse_method("DAS-XYZ")


def test_compare_with_das_can_has_an_entropy_column(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "cmp"
    assert main(["compare", "--prompt", "a kite", "--methods", "DAS,DAS-CAN", "--steps", "2", "--copies", "2",
                 "--resolution", "64", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "scores.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"DAS", "DAS-CAN"}
    assert all(r["style_entropy"] is not None for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| style entropy |" in summary and "DAS-CAN" in summary


# -- the toy CLIPs: what a person would see ----------------------------------------------------------
def hue_entropy(image: Image.Image) -> float:
    """Entropy of the hues in a picture, each pixel counted by its saturation (grey counts nothing)."""
    hsv = np.asarray(image.convert("HSV"), dtype=float) / 255
    counts = np.bincount((hsv[..., 0].ravel() * 12).astype(int) % 12, weights=hsv[..., 1].ravel(), minlength=12)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_colour_styles_spread_or_gather_the_colours_a_judge_sees(toy_models, tmp_path):
    """The six colour captions of one shape as the styles, no prompt: reward spreads the colours
    of the picture, penalty gathers them into one, as the other toy CLIP and the hues both say."""
    maker, judge = toy_models
    captions = [f"a {c} circle" for c in COLOURS]
    styles = tmp_path / "colours.txt"
    styles.write_text("\n".join(captions))
    text = judge.encode_texts(tokenize(captions)[0])
    for seed in (1, 2):
        seen = {}
        for sign in ("reward", "penalty"):
            config = GenerationConfig(prompts=(), resolution=64, steps=60, augment_copies=8, device="cpu", seed=seed, terms={**ambiguity(guidance=sign, weight=1.0, styles=str(styles), temperature=0.05), "text": {"weight": 0.0}, "aesthetic": {"guidance": "off"}})
            image = synthesize(config, maker).run().image
            p = torch.softmax(10 * (embed_image(judge, image) @ text.t())[0], 0)  # a softened judge
            seen[sign] = (float(-(p * p.log()).sum()), hue_entropy(image))
        assert seen["reward"][0] > seen["penalty"][0] + 0.3, seen
        assert seen["reward"][1] > seen["penalty"][1], seen


# -- centroids -------------------------------------------------------------------------------------
@pytest.fixture
def picture_folder(models, tmp_path):
    """das-ag PNGs made here (two prompts, three seeds), plus a file that is not a picture."""
    folder = tmp_path / "mine"
    for i, prompt in enumerate(("a red apple", "a blue sea")):
        for seed in range(3):
            result = synthesize(small(prompts=(Prompt(prompt),), steps=3, seed=seed), models).run()
            result.save(folder / f"{i}-{seed}.png")
    (folder / "notes.png").write_text("not a picture")
    return folder


def test_centroids_are_repeatable_cached_and_tied_to_their_clip(picture_folder, models, tmp_path, tiny_clip_path,
                                                                   head_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    first, again = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["centroids", "build", str(picture_folder), "--k", "2", "--out", str(first), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "encoded 6" in out and "0 from the cache" in out
    assert "skipped 1 file(s)" in err and err.count("\n") == 1
    assert main(["centroids", "build", str(picture_folder), "--k", "2", "--out", str(again), "--quiet"]) == 0
    assert "encoded 0" in capsys.readouterr().out  # every embedding came from the cache
    assert first.read_bytes() == again.read_bytes()
    centroids = Centroids.load(first)
    assert centroids.k == 2 and centroids.images == 6 and sum(centroids.sizes) == 6 and min(centroids.sizes) > 0

    config = small(steps=3, terms=ambiguity(guidance="reward", centroids=str(first)))
    result = synthesize(config, models).run()
    assert [s["label"] for s in result.scores.values["styles"]] in (["cluster 1", "cluster 2"], ["cluster 2", "cluster 1"])

    other = Centroids(centroids.centroids, {"name": "ViT-B-32.pt", "sha256": "0" * 64})
    stranger = tmp_path / "other.npz"
    other.save(stranger)
    with pytest.raises(ConfigError, match="were made with CLIP ViT-B-32.pt"):
        synthesize(small(terms=ambiguity(guidance="reward", centroids=str(stranger))), models)


def test_embeddings_come_from_the_run_s_own_preprocessing(picture_folder, models, tmp_path):
    points, hashes, report = embed_folder(picture_folder, models, cache_dir=tmp_path / "cache")
    assert points.shape == (6, 768) and report.embedded == 6 and len(report.skipped) == 1
    picture = Image.open(sorted(picture_folder.glob("0-0.png"))[0])
    assert torch.allclose(points[0], embed_image(models, picture.convert("RGB"))[0], atol=1e-5)
    built = build_centroids(points, hashes, 3, models.identities()["clip"], seed=0)
    assert built.centroids.shape == (3, 768)


@pytest.mark.parametrize("make, args, words", [
    (lambda d: None, ["--k", "2"], "does not exist"),
    (lambda d: d.mkdir(), ["--k", "2"], "holds no pictures"),
    (lambda d: (d.mkdir(), (d / "x.png").write_text("no")), ["--k", "2"], "could be read as a picture"),
    (lambda d: (d.mkdir(), Image.new("RGB", (8, 8)).save(d / "a.png"), Image.new("RGB", (8, 8), "red").save(d / "b.png")),
     ["--k", "3"], "more than the 2 different pictures"),
])
def test_bad_folders_and_ks_get_one_line(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys, make, args, words):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    folder = tmp_path / "pics"
    make(folder)
    assert main(["centroids", "build", str(folder), "--out", str(tmp_path / "c.npz"), "--quiet", *args]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "c.npz").exists()


def test_bad_style_sources_get_one_line(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    one = tmp_path / "one.txt"
    one.write_text("impressionism\n")
    flat = tmp_path / "flat.npz"
    np.savez(flat, centroids=np.zeros(768, dtype=np.float32), meta=np.array(json.dumps({"clip": {}})))
    junk = tmp_path / "junk.npz"
    junk.write_text("not numpy")
    for args, words in ((["--styles", str(one)], "has 1 label(s)"), (["--centroids", str(flat)], "of shape (768,)"),
                        (["--centroids", str(junk)], "is not a centroid file"), (["--styles", "nowhere.txt"], "does not exist"),
                        (["--style-template", "a painting"], "must contain {label}")):
        assert main(["generate", "--prompt", "a kite", "--ambiguity", "reward", "--steps", "2", "--quiet", *args]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, (args, err)


def test_a_centroid_file_that_unpacks_without_bound_is_refused_before_loading(tmp_path):
    # A few hundred KB of deflated zeros that np.load would unpack to 200 MB (or any size): the
    # zip's directory says how large each member is, and that is checked first.
    import zipfile

    from das_ag.errors import ConfigError
    from das_ag.styles import Centroids

    bomb = tmp_path / "styles.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("centroids.npy", bytes(200 * 2**20))
        archive.writestr("meta.npy", b"")
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ConfigError, match="unpacks to 200 MB; a centroid file holds at most 64 MB"):
        Centroids.load(bomb)
    with pytest.raises(ConfigError, match="not a regular file"):
        Centroids.load("/dev/zero")
