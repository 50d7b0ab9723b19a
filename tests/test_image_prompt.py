"""Image prompts: pictures to steer towards (or away from), signed like text prompts."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from das_ag.cli import main
from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.errors import ConfigError
from das_ag.png import read_recipe
from das_ag.prompts import tokenize
from das_ag.embedding import embed_image




def yellow_circle(path, size=64):
    picture = Image.new("RGB", (size, size), (30, 30, 30))
    ImageDraw.Draw(picture).ellipse((14, 14, size - 14, size - 14), fill=(240, 220, 20))
    picture.save(path)
    return path


def test_an_image_prompt_raises_the_similarity_to_its_picture(models, tmp_path):
    picture = yellow_circle(tmp_path / "circle.png")
    config = GenerationConfig(prompts=(), steps=15, augment_copies=4, resolution=64, device="cpu",
                              terms={"image_prompt": {"images": f"{picture}:1"}})
    result = synthesize(config, models).run()
    start, end = result.initial_scores.values["image_prompt_similarity"], result.scores.values["image_prompt_similarity"]
    assert end > start + 0.05, (start, end)
    repelled = synthesize(config.replace(terms={"image_prompt": {"images": f"{picture}:1|{tmp_path / 'circle.png'}:-2"}}),
                          models)  # the same picture both ways: the stronger (repelling) weight wins
    assert repelled.run().scores.values["image_prompt_similarity"] < end


def test_a_picture_of_a_yellow_circle_pulls_towards_yellow(toy_models, tmp_path):
    maker, judge = toy_models
    picture = yellow_circle(tmp_path / "circle.png")
    config = GenerationConfig(prompts=(), resolution=64, steps=100, augment_copies=8, device="cpu", terms={"image_prompt": {"images": f"{picture}:1"}, "aesthetic": {"guidance": "off"}})
    image = synthesize(config, maker).run().image
    colours = ["red", "green", "blue", "yellow", "purple", "white"]
    captions = [f"a {c} {s}" for c in colours for s in ("circle", "square", "triangle", "cross", "ring")]
    text = judge.encode_texts(tokenize(captions)[0])
    seen = captions[int((embed_image(judge, image) @ text.t())[0].argmax())]
    assert seen.split()[1] == "yellow", seen


def test_image_prompts_from_the_command_line(weights_env, tmp_path, capsys):
    picture = yellow_circle(tmp_path / "circle.png")
    common = ["--steps", "3", "--copies", "2", "--resolution", "64", "--device", "cpu", "--quiet"]
    out = tmp_path / "out.png"
    assert main(["generate", "--image-prompt", f"{picture}:0.5", "--out", str(out), *common]) == 0
    settings = read_recipe(out)["config"]["terms"]["image_prompt"]
    assert settings["images"] == f"{picture}:0.5" and len(settings["sha256"]) == 64
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()

    for args, words in ((["--image-prompt", str(tmp_path / "missing.png")], "does not exist"),
                        (["--image-prompt", str(tmp_path / "out.png") + ":0"], "non-zero finite weight")):
        assert main(["generate", "--prompt", "x", *args, *common]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    assert main(["generate", "--image-prompt", str(notes), *common]) != 0
    assert "is not a readable image" in capsys.readouterr().err

    Image.new("RGB", (8, 8), "blue").save(picture)  # the picture changed: its recipe notices
    with pytest.raises(ConfigError, match="has changed"):
        GenerationConfig.from_dict(read_recipe(out)["config"])
