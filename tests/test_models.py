"""Model loading through the real clip.load path and the real aesthetic head."""

from __future__ import annotations

import pytest
import torch

from das_ag.errors import ConfigError, DeviceError, WeightsError
from das_ag.models import AestheticHead, load_aesthetic_head, load_clip, load_models, resolve_device
from das_ag.random_clip import save_random_clip



def test_bundle_is_frozen_and_cached(models, tiny_clip_path, head_path, head_sha256):
    assert all(not p.requires_grad for p in models.clip.parameters())
    assert all(not p.requires_grad for p in models.aesthetic_head.parameters())
    assert not models.clip.training and not models.aesthetic_head.training
    # Cached (the last four bundles): a second load of the same files is the same bundle.
    assert load_models(str(tiny_clip_path), str(head_path), "cpu") is load_models(str(tiny_clip_path), str(head_path), "cpu")
    assert models.aesthetic_identity.sha256 == head_sha256
    assert models.clip_identity.name == "tiny-clip.pt"


def test_state_dict_checkpoints_load_too(tmp_path):
    path = save_random_clip(tmp_path / "sd.pt", "tiny", seed=1, torchscript=False)
    model = load_clip(path)
    assert model.visual.input_resolution == 224 and next(model.parameters()).dtype == torch.float32


def test_head_scores_are_stable_in_eval_mode(models):
    e = torch.nn.functional.normalize(torch.randn(4, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
    first, second = models.aesthetic_score(e), models.aesthetic_score(e)
    assert torch.equal(first, second)  # dropout off: the references' scores jittered here


def test_head_is_the_published_affine_map(tiny_clip_path, real_head_path):
    # No activations: score(e) = bias + w.e, with |w| about 18 and bias about 5.24.
    head = load_models(str(tiny_clip_path), str(real_head_path), "cpu").aesthetic_head.layers
    w = torch.eye(768)
    b = torch.zeros(1, 768)
    for i in (0, 2, 4, 6, 7):
        w, b = head[i](w) - head[i].bias, head[i](b)
    assert w.norm().item() == pytest.approx(17.996, abs=0.01)
    assert b.item() == pytest.approx(5.2366, abs=0.001)


def test_corrupt_head_files_are_refused(tmp_path, head_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_aesthetic_head(garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(head_path.read_bytes()[: 100_000])
    with pytest.raises(WeightsError):
        load_aesthetic_head(truncated)


def test_wrong_shaped_heads_are_refused(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save(AestheticHead(input_size=512).state_dict(), wrong)
    with pytest.raises(WeightsError, match="not an improved-aesthetic-predictor head"):
        load_aesthetic_head(wrong)


def test_clip_files_that_are_not_clip_are_refused(tmp_path, head_path):
    with pytest.raises(WeightsError, match="not a loadable OpenAI CLIP checkpoint"):
        load_clip(head_path)


def test_a_clip_of_another_width_guides_plain_das_without_a_head(tmp_path, head_path):
    """The head reads ViT-L/14's 768-d embeddings: a 512-d CLIP serves DAS (guidance off) with no
    head at all, and a run that needs the head is told what to add."""
    from das_ag.clip_package import clip_module
    from das_ag.config import GenerationConfig
    from das_ag.engine import synthesize
    from das_ag.prompts import Prompt

    small = clip_module().model.CLIP(512, 64, 1, 64, 32, 77, 49408, 64, 1, 1)
    path = tmp_path / "clip512.pt"
    torch.save(small.state_dict(), path)
    with pytest.raises(WeightsError, match="768-d embeddings and no CLIP here gives them"):
        load_models(str(path), str(head_path), "cpu")
    models = load_models(str(path), str(tmp_path / "no-head-here.pth"), "cpu", need_head=False)
    assert models.aesthetic_head is None and models.width == 512 and "aesthetic" not in models.identities()
    config = GenerationConfig(prompts=(Prompt("a kite"),), resolution=64, steps=3, augment_copies=2, device="cpu", terms={"aesthetic": {"guidance": "off"}})
    result = synthesize(config, models).run()
    assert result.status == "completed" and "aesthetic" not in result.scores.values
    assert result.scores.values["clip_positive"] is not None
    with pytest.raises(ConfigError, match="needs the aesthetic head"):
        synthesize(config.with_guidance("reward"), models)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_but_absent():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_one_line_reports_survive_empty_messages():
    from das_ag.errors import first_line

    assert first_line(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")) == "CUDA out of memory."
    assert first_line(AssertionError()) == "AssertionError"
    assert first_line(ValueError("x" * 500), 20) == "x" * 20
