"""Single-file Stable Diffusion checkpoints, the form model sites distribute: SD 1.x, 2.x and SDXL
base load with the configs das-ag writes (their tokenizers are CLIP's own), other families with
--config, and a file of a family das-ag cannot configure is refused in one line."""

from __future__ import annotations

import gc
import json
import shutil

import pytest
import torch

from das_ag.cli import main
from das_ag.clip_package import clip_module
from das_ag.errors import DasAgError

pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")

from das_ag.slider.base import load_base  # noqa: E402
from das_ag.slider.random_sd import random_pipeline, save_single_file  # noqa: E402
from das_ag.slider.single_file import (SD2_BASE_FINAL_STEP, CheckpointFacts, checkpoint_family,  # noqa: E402
                                      prediction_for, write_configs)
from das_ag.slider.lora import read_lora  # noqa: E402
from das_ag.weights import sha256_file  # noqa: E402

PARTS = ("unet", "vae", "text_encoder")
# Real-shape single files in half precision: SD 1.5, SD 2.x and SDXL base.
FILE_BYTES = {"sd15": 2_130_000_000, "sd2": 2_610_000_000, "sdxl": 6_940_000_000}


@pytest.fixture
def big_files(tmp_path):
    """tmp_path for a multi-GB file, which is deleted after the test (pytest keeps the last three
    runs' tmp_path: 30 GB of them otherwise)."""
    yield tmp_path
    for file in tmp_path.glob("*.safetensors"):
        file.unlink()


def needs_room(folder, shape: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < FILE_BYTES[shape] + 2**30:
        pytest.skip(f"a real-shape {shape} file needs {FILE_BYTES[shape] / 1e9 + 1:.0f} GB free on {folder}, "
                    f"which has {free / 1e9:.1f} GB")


def states(pipe, dtype=None) -> dict[str, dict[str, torch.Tensor]]:
    return {part: {k: v if dtype is None else v.to(dtype) for k, v in getattr(pipe, part).state_dict().items()}
            for part in PARTS}


def test_the_sd1_tokenizer_das_ag_writes_tokenises_as_clip_does(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_configs(tmp_path, "v1") / "tokenizer")
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

    with pytest.raises(DasAgError, match="no Stable Diffusion architecture diffusers recognises; if it is one, pass --config"):
        load_base(file, torch.device("cpu"))  # two blocks, not SD 1.x: das-ag's configs would not fit

    from safetensors.torch import load_file

    # The older pickled form, weights under "state_dict". The full ones (v1-5-pruned.ckpt) also
    # hold an EMA copy of the UNet under flattened names; AUTOMATIC1111 and ComfyUI load the main
    # weights, and so does das-ag, so a LoRA trained here fits the model those tools run.
    state = load_file(file)
    ema = {"model_ema." + "".join(k.split(".")[1:]): v + 1 for k, v in state.items() if k.startswith("model.diffusion_model.")}
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": {**state, **ema, "model_ema.decay": torch.tensor(0.9999)}, "global_step": 0}, ckpt)
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


def test_a_checkpoint_of_another_family_is_refused_in_one_line(tiny_sd_path, tiny_clip_path, head_path, monkeypatch,
                                                                tmp_path, capsys):
    from safetensors.torch import save_file

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    refiner = tmp_path / "refiner.safetensors"
    save_file({"model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
               "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1)}, refiner)
    assert main(["slider", "train", "--base", str(refiner), "--out", str(tmp_path / "x.safetensors"), "--steps", "1",
                 "--device", "cpu", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds an SDXL refiner checkpoint" in err and "SDXL base" in err, err
    assert not (tmp_path / "x.safetensors").exists()

    import shutil

    folder = shutil.copytree(tiny_sd_path, tmp_path / "refiner-folder")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    with pytest.raises(DasAgError, match="holds a StableDiffusionXLImg2ImgPipeline; the slider trains "
                                         "StableDiffusionPipeline and StableDiffusionXLPipeline"):
        load_base(folder, torch.device("cpu"))


def loaded_single_file(shape: str, tmp_path, **options):
    """A random pipeline of a real shape, saved as a half-precision single file as model sites do,
    loaded back with no configs; and the tensors it was saved with."""
    needs_room(tmp_path, shape)
    pipe = random_pipeline(shape, scratch=tmp_path)
    file = save_single_file(pipe, tmp_path / f"{shape}.safetensors", dtype=torch.float16)
    expected = states(pipe, torch.float16)
    del pipe
    gc.collect()
    base = load_base(file, torch.device("cpu"), **options)
    got = states(base.pipe)
    for part in PARTS:
        assert expected[part].keys() == got[part].keys(), part
        assert all(torch.equal(expected[part][k].float(), got[part][k]) for k in expected[part]), part
    return base, file


def test_an_sd1_single_file_needs_no_configs(big_files):
    """SD 1.5's real shape (random weights, 1.07 G parameters): about 25 s and 7-11 GB of memory
    on the CPU."""
    base, _ = loaded_single_file("sd15", big_files)
    assert base.pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert base.pipe.unet.config.cross_attention_dim == 768 and base.pipe.vae.config.scaling_factor == 0.18215
    assert base.prediction_type == "epsilon" and base.note == ""


def test_an_sd2_single_file_needs_no_configs_and_says_what_it_assumed(big_files):
    """SD 2.x's real shape (random weights, OpenCLIP's text tower in its own layout, as SD 2.x files
    keep it): every tensor comes back; a .safetensors is taken to predict v, and the note says how
    to load a 512 px base model instead."""
    base, file = loaded_single_file("sd2", big_files)
    assert base.pipe.unet.config.cross_attention_dim == 1024 and base.pipe.text_encoder.config.num_hidden_layers == 23
    assert base.prediction_type == "v_prediction" and "--prediction-type epsilon" in base.note
    ids = base.pipe.tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[7:] == [0] * 70  # SD 2.x pads with "!"
    del base
    gc.collect()
    epsilon = load_base(file, torch.device("cpu"), prediction_type="epsilon")
    assert epsilon.prediction_type == "epsilon" and epsilon.note == ""
    assert epsilon.identity()["prediction_type"] == "epsilon"  # and so the LoRA's recipe


def test_an_sd2_files_prediction_type_follows_what_the_file_records():
    assert prediction_for(CheckpointFacts("v2", SD2_BASE_FINAL_STEP), None) == ("epsilon", "")  # a base model's .ckpt
    assert prediction_for(CheckpointFacts("v2"), None)[0] == "v_prediction"
    assert prediction_for(CheckpointFacts("v2"), "epsilon") == ("epsilon", "")  # the user's word wins
    assert prediction_for(CheckpointFacts("v1"), None) == (None, "")  # SD 1.x's config says epsilon itself
    assert prediction_for(CheckpointFacts("xl_base", marked_v=True), None) == ("v_prediction", "")  # says so itself


def test_das_ag_writes_sdxl_base_configs_of_its_published_size(tmp_path):
    """The SDXL configs das-ag writes for a single file build SDXL base's parts with its published
    parameter counts (built on the meta device: no memory, no time), and its two tokenizers pad as
    SDXL's do."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = write_configs(tmp_path / "xl", "xl_base")
    with torch.device("meta"):
        parts = {"unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
                 "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
                 "text_encoder": CLIPTextModel(CLIPTextModel.config_class.from_pretrained(folder / "text_encoder")),
                 "text_encoder_2": CLIPTextModelWithProjection(
                     CLIPTextModelWithProjection.config_class.from_pretrained(folder / "text_encoder_2"))}
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    assert counts == {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                      "text_encoder_2": 694_659_840}, counts
    pads = [CLIPTokenizer.from_pretrained(folder / name)("a cat", padding="max_length", max_length=8).input_ids
            for name in ("tokenizer", "tokenizer_2")]
    assert pads == [[49406, 320, 2368, 49407] + [49407] * 4, [49406, 320, 2368, 49407] + [0] * 4]


def test_an_sdxl_single_file_loads_and_is_told_from_other_families(tiny_sdxl_path, tmp_path):
    """A tiny SDXL written as a model site's single file (SGM names, the second tower in OpenCLIP's
    layout under conditioner.embedders.1) is known for SDXL, and loads with its folder as --config
    with every tensor of both towers, the UNet and the VAE as saved. Without --config das-ag takes
    SDXL base's own configs, which a tiny file does not fit: one line says so."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    file = save_single_file(pipe, tmp_path / "tiny-xl.safetensors")
    assert checkpoint_family(file) == CheckpointFacts("xl_base")
    base = load_base(file, torch.device("cpu"), config=tiny_sdxl_path)
    assert base.is_xl and base.prediction_type == "epsilon"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        expected, got = getattr(pipe, part).state_dict(), getattr(base.pipe, part).state_dict()
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[k], got[k]) for k in expected), part
    with pytest.raises(DasAgError, match="with SDXL's configs") as failure:
        load_base(file, torch.device("cpu"))
    assert "\n" not in str(failure.value)

    # A v-prediction fine-tune marks itself with a "v_pred" tensor, and is trained as one.
    from safetensors.torch import load_file, save_file

    marked = tmp_path / "tiny-xl-vpred.safetensors"
    save_file({**load_file(file), "v_pred": torch.tensor([])}, marked)
    assert checkpoint_family(marked).marked_v
    assert load_base(marked, torch.device("cpu"), config=tiny_sdxl_path).prediction_type == "v_prediction"
    assert load_base(marked, torch.device("cpu"), config=tiny_sdxl_path, prediction_type="epsilon").prediction_type == "epsilon"
    save_file({**load_file(file), "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, marked)
    scheduler = load_base(marked, torch.device("cpu"), config=tiny_sdxl_path).pipe.scheduler
    assert scheduler.config.prediction_type == "v_prediction" and float(scheduler.alphas_cumprod[-1]) < 1e-6


def fingerprints(module) -> dict[str, tuple[float, float]]:
    """Per tensor, two sums that a wrong tensor, or the right one transposed or cut, would change:
    a real SDXL is too big to keep twice for torch.equal next to everything else. In float32, with
    one ramp for all tensors: the sums only need to match the same sums taken the same way, in one
    process, and float64 copies with a ramp built per tensor took 40 of the test's 100 s."""
    out, ramp = {}, torch.empty(0)
    for name, value in module.state_dict().items():
        flat = value.detach().float().flatten()
        if ramp.numel() < flat.numel():
            ramp = (torch.arange(flat.numel()) % 97).float()
        out[name] = (float(flat.sum()), float((flat * ramp[:flat.numel()]).sum()))
    return out


def test_an_sdxl_single_file_needs_no_configs(big_files):
    """SDXL base's real shape (random weights, 3.5 G parameters, made and saved in bfloat16:
    6.5 GB): it loads with the configs das-ag writes, and every tensor of both towers, the UNet
    and the VAE is as saved. About 95 s and a 9 GB peak on the CPU."""
    needs_room(big_files, "sdxl")
    parts = ("unet", "vae", "text_encoder", "text_encoder_2")
    torch.set_default_dtype(torch.bfloat16)
    try:
        pipe = random_pipeline("sdxl", scratch=big_files)
    finally:
        torch.set_default_dtype(torch.float32)
    expected = {part: fingerprints(getattr(pipe, part)) for part in parts}
    file = save_single_file(pipe, big_files / "sdxl.safetensors")
    del pipe
    gc.collect()
    base = load_base(file, torch.device("cpu"), torch.bfloat16)
    assert base.is_xl and base.native_resolution == 1024 and base.note == ""
    for part in parts:
        assert fingerprints(getattr(base.pipe, part)) == expected[part], part
    ids = base.pipe.tokenizer_2("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[7:] == [0] * 70  # pads with "!"
