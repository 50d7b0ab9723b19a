"""Golden recipes: configs as das-ag has written them, in every shape it has written, each re-run.

tests/golden/recipes.json holds recipe configs exactly as released code wrote them (pyramid,
strokes, a wide image, an ensemble, every term, and older formats such as a start picture kept in
the strokes' settings). Moving a setting from one place to another must leave each loading, and
making the same image. The image's bytes depend on the CPU and torch (floating-point sums), so
each golden keeps the sha256 of its pixels per machine ("fingerprint"); on a machine it has a
record for, the pixels must match it bit for bit; on any machine, the config must survive its
JSON round trip and the recipe's run must repeat.

    DAS_AG_RECORD_GOLDEN=1 uv run pytest tests/test_golden.py   # record this machine's pixels
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
from operator import attrgetter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.models import load_models

GOLDEN = Path(__file__).parent / "golden" / "recipes.json"
RECORD = os.environ.get("DAS_AG_RECORD_GOLDEN") == "1"


def goldens() -> list[dict]:
    return json.loads(GOLDEN.read_text())


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


@pytest.fixture(scope="module")
def fingerprint(tiny_clip_path, head_path) -> str:
    """What the pixels depend on besides the code: torch, the CPU, the models' bytes."""
    import torch

    from das_ag.weights import sha256_file

    return "|".join((torch.__version__, platform.machine(), cpu_model(),
                     sha256_file(tiny_clip_path)[:12], sha256_file(head_path)[:12]))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, str]:
    """The pictures golden recipes name ({picture}, {prompt_picture}), drawn the same way each time."""
    folder = tmp_path_factory.mktemp("golden-pictures")
    start = Image.new("RGB", (96, 64), "#204060")
    ImageDraw.Draw(start).ellipse((20, 10, 70, 55), fill="#e0a030")
    prompt = Image.new("RGB", (64, 64), "#f0f0f0")
    ImageDraw.Draw(prompt).rectangle((16, 16, 48, 48), fill="#c02020")
    paths = {"picture": folder / "start.png", "prompt_picture": folder / "prompt.png"}
    start.save(paths["picture"])
    prompt.save(paths["prompt_picture"])
    return {k: str(v) for k, v in paths.items()}


def filled(value, pictures: dict[str, str]):
    """The golden's config with its picture placeholders replaced by this run's paths."""
    if isinstance(value, dict):
        return {k: filled(v, pictures) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, pictures) for v in value]
    if isinstance(value, str):
        return value.format(**pictures) if "{" in value else value
    return value


def pixels_sha256(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.size}{image.mode}".encode() + image.tobytes()).hexdigest()


@pytest.mark.parametrize("golden", goldens(), ids=lambda g: g["name"])
def test_a_golden_recipe_loads_and_makes_the_same_image(golden, tiny_clip_path, tiny_open_clip, head_path, fingerprint, pictures):
    data = filled(copy.deepcopy(golden["config"]), pictures)
    if golden.get("ensemble"):
        data["clip_models"] = [f"{tiny_clip_path}:1", f"{tiny_open_clip}:0.5"]
    config = GenerationConfig.from_dict(data)
    assert GenerationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for key, value in filled(golden.get("expect", {}), pictures).items():  # what an old format's setting became
        assert attrgetter(key)(config) == value, key
    models = load_models(list(config.clip_models) or str(tiny_clip_path), str(head_path), "cpu")
    image = synthesize(config, models).run().image
    again = synthesize(GenerationConfig.from_dict(config.to_dict()), models).run().image
    assert pixels_sha256(again) == pixels_sha256(image)  # the recipe's run repeats
    recorded = golden.get("pixels", {})
    if RECORD:
        recorded[fingerprint] = pixels_sha256(image)
        record(golden["name"], recorded)
    elif fingerprint in recorded:
        assert pixels_sha256(image) == recorded[fingerprint], "this golden recipe makes another image than it did"


def record(name: str, pixels: dict) -> None:
    everything = goldens()
    next(g for g in everything if g["name"] == name)["pixels"] = pixels
    GOLDEN.write_text(json.dumps(everything, indent=1) + "\n")
