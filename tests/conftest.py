"""Shared fixtures: a tiny random CLIP in OpenAI's format and the real aesthetic head from ../shared
(a seeded random head in the same format where ../shared is absent, as in a user's clone).

Every test runs in its own working directory with its own cache and none of the user's weight
variables, so a developer's .env or cache can never change what a test sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from das_ag import determinism

# As das-ag does when it loads models: before any test starts CUDA, so that deterministic GPU
# tests can run after others have used the GPU (a no-op on machines without CUDA).
determinism.reserve_cuda_workspace()

REPO = Path(__file__).resolve().parents[1]
# DAS_AG_TEST_HEAD points the tests at another copy (say, on a machine without ../shared).
TOYCLIP = REPO.parent / "shared" / "data" / "toyclip"
SHARED_HEAD = Path(
    os.environ.get("DAS_AG_TEST_HEAD")
    or REPO.parent / "shared" / "data" / "aesthetic" / "sac+logos+ava1-l14-linearMSE.pth"
)
HEAD_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"

USER_VARIABLES = (
    "CLIP_MODEL_PATH",
    "AESTHETIC_PREDICTOR_PATH",
    "DAS_AG_CACHE_DIR",
    "DAS_AG_CLIP_URL",
    "DAS_AG_AESTHETIC_URL",
    "DAS_AG_OUTPUT_DIR",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # Every test draws the same numbers in any order and on any machine: a test that forgets its
    # own generator still sees one sequence (an unseeded picture once failed on one CPU only).
    import random

    import numpy
    import torch

    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAS_AG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> Path:
    """A random 3.5 M-parameter CLIP saved as a TorchScript archive, as OpenAI ships theirs."""
    from das_ag.random_clip import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.pt", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> str:
    """A random tiny open_clip model (512-d, 64 px input), as its --clip-model spec."""
    from das_ag.random_clip import save_random_open_clip

    return save_random_open_clip(tmp_path_factory.mktemp("open-clip"))


@pytest.fixture(scope="session")
def real_head_path() -> Path:
    """LAION's head itself, for the tests of its own numbers and checksum: they skip without it."""
    if not SHARED_HEAD.is_file():
        pytest.skip("the real aesthetic head is not in ../shared/data/aesthetic (a user's clone)")
    return SHARED_HEAD


@pytest.fixture(scope="session")
def head_path(tmp_path_factory) -> Path:
    """The real head where ../shared has it; in a user's clone, a seeded random head of the same
    shape saved as LAION saved theirs (a state dict in a .pth), which das-ag loads through the
    same loader: what a test needs of *a* head is its shape and its gradient, not its taste."""
    if SHARED_HEAD.is_file():
        return SHARED_HEAD
    import torch

    from das_ag.models import AestheticHead

    with torch.random.fork_rng():
        torch.manual_seed(0)
        head = AestheticHead().eval()
    # LAION's head is affine (no activations): score = b + w.e with |w| ~ 18 and b ~ 5.24. A
    # random one of default init has |w| ~ 0.02, so every step the tests expect of a head would
    # move its score a thousand times less. Scale its last layer to the published map's size.
    with torch.no_grad():
        last = head.layers[7]
        norm = torch.linalg.matrix_norm(torch.func.jacrev(head)(torch.zeros(768)).reshape(1, -1))
        last.weight.mul_(17.996 / norm)
        last.bias.add_(5.2366 - head(torch.zeros(768)))
    path = tmp_path_factory.mktemp("head") / SHARED_HEAD.name
    torch.save(head.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def head_sha256(head_path) -> str:
    from das_ag.weights import sha256_file

    return HEAD_SHA256 if head_path == SHARED_HEAD else sha256_file(head_path)


@pytest.fixture(scope="session")
def toy_models(head_path):
    """The two toy CLIPs of ../shared/data/toyclip (30 coloured shapes): one to make images with,
    one to judge them (README there)."""
    from das_ag.models import load_models

    if not (TOYCLIP / "toyclip-shapes.pt").is_file():
        pytest.skip("the toy CLIPs are not in ../shared/data/toyclip (a user's clone)")
    return (load_models(str(TOYCLIP / "toyclip-shapes.pt"), str(head_path), "cpu"),
            load_models(str(TOYCLIP / "toyclip-shapes-judge.pt"), str(head_path), "cpu"))


@pytest.fixture(scope="session")
def models(tiny_clip_path, head_path):
    from das_ag.models import load_models

    return load_models(str(tiny_clip_path), str(head_path), "cpu")


def small_config(**changes):
    """A fast config for the tiny model: 224 px, 4 copies, few steps."""
    from das_ag.config import GenerationConfig
    from das_ag.prompts import Prompt

    base = dict(prompts=(Prompt("a red apple on a wooden table"),), steps=12, augment_copies=4, device="cpu")
    return GenerationConfig(**{**base, **changes})


@pytest.fixture
def weights_env(tiny_clip_path, head_path, monkeypatch):
    """The command line's weights: the tiny CLIP and the real head, through the environment."""
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))


def cli_env(tiny_clip_path, head_path) -> dict[str, str]:
    return {**os.environ, "CLIP_MODEL_PATH": str(tiny_clip_path), "AESTHETIC_PREDICTOR_PATH": str(head_path)}


@pytest.fixture
def broken_head_path(tmp_path) -> Path:
    """A real head file, of the right shape, whose score is infinite: every loss goes non-finite."""
    import torch

    from das_ag.models import AestheticHead

    head = AestheticHead()
    with torch.no_grad():
        head.layers[7].bias.fill_(float("inf"))
    path = tmp_path / "broken-head.pth"
    torch.save(head.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion in diffusers' folder format (UNet, VAE, CLIP text encoder, a
    tokenizer with a hand-written vocabulary, DDIM), built here: nothing comes from a hub."""
    pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")
    from das_ag.slider.random_sd import save_random_sd

    return save_random_sd(tmp_path_factory.mktemp("tiny-sd"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory) -> Path:
    """A tiny random SDXL in diffusers' folder format: two text towers (the second projecting a
    pooled embedding), a UNet conditioned on both and on the picture's size, built here."""
    pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")
    from das_ag.slider.random_sd import save_random_sd

    return save_random_sd(tmp_path_factory.mktemp("tiny-sdxl"), "tiny-xl", seed=0)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims `width` x `height` pixels: a decompression
    bomb's header (decoding it would fail, or take gigabytes; das-ag must refuse it before)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)
