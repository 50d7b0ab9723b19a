"""Single-file Stable Diffusion checkpoints, the form model sites distribute: SD 1.x loads with the
configs das-ag writes (its tokenizer is CLIP's own), other families with --config, and a file of a
family das-ag cannot configure is refused in one line."""

from __future__ import annotations

import gc

import pytest
import torch

from das_ag.cli import main
from das_ag.clip_package import clip_module
from das_ag.errors import DasAgError

pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")

from das_ag.slider.base import load_base  # noqa: E402
from das_ag.slider.random_sd import random_pipeline, save_single_file  # noqa: E402
from das_ag.slider.sd1 import write_sd1_configs  # noqa: E402
from das_ag.slider.lora import read_lora  # noqa: E402
from das_ag.weights import sha256_file  # noqa: E402

PARTS = ("unet", "vae", "text_encoder")


def states(pipe, dtype=None) -> dict[str, dict[str, torch.Tensor]]:
    return {part: {k: v if dtype is None else v.to(dtype) for k, v in getattr(pipe, part).state_dict().items()}
            for part in PARTS}


def test_the_sd1_tokenizer_das_ag_writes_tokenises_as_clip_does(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_sd1_configs(tmp_path) / "tokenizer")
    prompts = ["a photo of a cat", "A Watercolour Painting of the Sea, at dusk!", "an astronaut riding a horse on mars",
               "portrait   of an old man, 85mm, f/1.8 -- highly detailed", "it's 3 o'clock; a café"]
    clip = clip_module()
    for prompt in prompts:
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        expected = clip.tokenize(prompt)[0].tolist()
        end = expected.index(49407) + 1
        assert ids[:end] == expected[:end], prompt
        assert ids[end:] == [49407] * (77 - end)  # SD 1.x pads with the end-of-text token


def test_a_single_file_of_the_tiny_model_loads_with_its_family_configs(tiny_sd_path, tiny_clip_path, head_path,
                                                                       monkeypatch, tmp_path, capsys):
    file = save_single_file(tiny_sd_path, tmp_path / "tiny.safetensors")
    folder = load_base(tiny_sd_path, torch.device("cpu"))
    single = load_base(file, torch.device("cpu"), config=tiny_sd_path)
    expected, got = states(folder.pipe), states(single.pipe)
    for part in PARTS:
        assert expected[part].keys() == got[part].keys(), part
        assert all(torch.equal(expected[part][k], got[part][k]) for k in expected[part]), part
    assert single.sha256 == sha256_file(file)

    with pytest.raises(DasAgError, match="no Stable Diffusion architecture diffusers recognises.*--config"):
        load_base(file, torch.device("cpu"))  # two blocks, not SD 1.x: das-ag's configs would not fit

    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny.ckpt"  # the older pickled form, weights under "state_dict"
    torch.save({"state_dict": load_file(file), "global_step": 0}, ckpt)
    from_ckpt = states(load_base(ckpt, torch.device("cpu"), config=tiny_sd_path).pipe)
    assert all(torch.equal(expected["unet"][k], from_ckpt["unet"][k]) for k in expected["unet"])
    with pytest.raises(DasAgError, match="no Stable Diffusion architecture diffusers recognises"):
        load_base(ckpt, torch.device("cpu"))

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "lora.safetensors"
    assert main(["slider", "train", "--base", str(file), "--config", str(tiny_sd_path), "--out", str(out),
                 "--steps", "2", "--resolution", "64", "--inference-steps", "3", "--device", "cpu", "--quiet"]) == 0
    assert read_lora(out)[1]["base"]["sha256"] == sha256_file(file)


def test_a_single_file_of_another_family_asks_for_its_configs(tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    from safetensors.torch import save_file

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
               "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1)}, sdxl)
    assert main(["slider", "train", "--base", str(sdxl), "--out", str(tmp_path / "x.safetensors"), "--steps", "1",
                 "--device", "cpu", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds an SDXL checkpoint" in err and "--config" in err, err
    assert not (tmp_path / "x.safetensors").exists()


def test_an_sd1_single_file_needs_no_configs(tmp_path):
    """SD 1.5's real shape (random weights, 1.07 G parameters, saved in half precision as model sites
    do): about 40 s and 7-11 GB of memory on the CPU."""
    pipe = random_pipeline("sd15", scratch=tmp_path)
    file = save_single_file(pipe, tmp_path / "sd15.safetensors", dtype=torch.float16)
    expected = states(pipe, torch.float16)
    del pipe
    gc.collect()
    base = load_base(file, torch.device("cpu"))
    got = states(base.pipe)
    for part in PARTS:
        assert expected[part].keys() == got[part].keys(), part
        assert all(torch.equal(expected[part][k].float(), got[part][k]) for k in expected[part]), part
    assert base.pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert base.pipe.unet.config.cross_attention_dim == 768 and base.pipe.vae.config.scaling_factor == 0.18215
