"""Single-file checkpoints: what family a file holds, and the configs it does not carry.

A `.safetensors` from a model site holds weights only; diffusers reads the architecture from a
diffusers folder, and offline it cannot fetch one from the hub. SD 1.x (1.4, 1.5 and the many
fine-tunes of them) share one architecture, SD 2.x another and SDXL base (and its fine-tunes) a
third, so das-ag writes their configs itself: the numbers are theirs, and the tokenizers are
CLIP's own byte-pair vocabulary, which the `clip` package ships (the OpenCLIP text towers of SD 2.x
and SDXL use the same). A checkpoint of another family needs `--config`, a diffusers folder of that
family.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DasAgError
from . import one_line, quiet_libraries

UNET = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 64,  # latents of 512 px pictures
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,  # in SD 1.x this is the number of heads (a historical misnomer)
    "cross_attention_dim": 768,  # CLIP ViT-L/14's text width
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
}

VAE = {
    "_class_name": "AutoencoderKL",
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "scaling_factor": 0.18215,
}

# CLIP ViT-L/14's text tower. eos_token_id 2 is the legacy value that makes transformers pool at
# the highest token id (the end-of-text token), as SD 1.x was trained.
TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

TOKENIZER = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "do_lower_case": True,
}

# SD 1.x's training schedule; das-ag swaps the sampler for DDIM on the same betas.
SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}

PIPELINE = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
}


# SD 2.x: OpenCLIP ViT-H/14's text tower without its last layer (SD 2.x conditions on the
# penultimate one), linear projections in the transformers, heads of 64 channels.
SD2_UNET = {**UNET, "sample_size": 96, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "use_linear_projection": True,
            "upcast_attention": True}  # SD 2.1's attention overflows in half precision otherwise
SD2_VAE = {**VAE, "sample_size": 768}
SD2_TEXT_ENCODER = {**TEXT_ENCODER, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                    "num_hidden_layers": 23, "hidden_act": "gelu", "projection_dim": 512}
SD2_TOKENIZER = {**TOKENIZER, "pad_token": "!"}
# The 768 px models (2.0-v, 2.1) predict v; the 512 px "base" ones predict the noise, and a
# .safetensors does not say which (see prediction_for).
SD2_SCHEDULER = {**SCHEDULER, "prediction_type": "v_prediction"}


# SDXL base: a UNet of three levels whose cross-attention reads both text towers' penultimate
# layers side by side (768 + 1280 = 2048 wide), and whose time embedding adds the pooled,
# projected embedding of the second tower and six size numbers (original size, crop corner,
# target size: 1280 + 6 x 256 = 2816); OpenCLIP ViT-bigG/14's whole text tower, with its
# projection; a VAE like SD's with its own scale. No attention upcast: SDXL's VAE is the part
# that overflows in float16, and the slider trains in float32 or bfloat16.
XL_UNET = {
    **{k: v for k, v in UNET.items() if k != "attention_head_dim"},
    "sample_size": 128,  # latents of 1024 px pictures
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "attention_head_dim": [5, 10, 20],  # heads of 64 channels
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
XL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
XL_TEXT_ENCODER_2 = {**TEXT_ENCODER, "architectures": ["CLIPTextModelWithProjection"], "hidden_size": 1280,
                     "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
                     "hidden_act": "gelu", "projection_dim": 1280}
XL_SCHEDULER = {**SCHEDULER, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}
XL_PIPELINE = {  # SD's, less its safety checker, plus the second tower and its tokenizer
    **{k: v for k, v in PIPELINE.items() if k not in ("safety_checker", "requires_safety_checker")},
    "_class_name": "StableDiffusionXLPipeline",
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "force_zeros_for_empty_prompt": True,
}

CONFIGS = {
    "v1": {"unet": UNET, "vae": VAE, "text_encoder": TEXT_ENCODER, "tokenizer": TOKENIZER, "scheduler": SCHEDULER,
           "pipeline": PIPELINE},
    "v2": {"unet": SD2_UNET, "vae": SD2_VAE, "text_encoder": SD2_TEXT_ENCODER, "tokenizer": SD2_TOKENIZER,
           "scheduler": SD2_SCHEDULER, "pipeline": PIPELINE},
    "xl_base": {"unet": XL_UNET, "vae": XL_VAE, "text_encoder": TEXT_ENCODER, "tokenizer": TOKENIZER,
                "text_encoder_2": XL_TEXT_ENCODER_2, "tokenizer_2": SD2_TOKENIZER, "scheduler": XL_SCHEDULER,
                "pipeline": XL_PIPELINE},
}
# The pipelines das-ag trains, by the class name in a diffusers folder's model_index.json
PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
# diffusers' names of the families a single file may hold, as a user knows them
FAMILY_NAMES = {"v1": "an SD 1.x", "v2": "an SD 2.x", "inpainting": "an SD 1.x inpainting",
                "inpainting_v2": "an SD 2.x inpainting", "xl_base": "an SDXL", "xl_refiner": "an SDXL refiner",
                "xl_inpaint": "an SDXL inpainting", "upscale": "an SD upscaler"}


def clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """CLIP's token ids and merge rules, from the byte-pair file the `clip` package ships: the
    vocabulary is every byte, every byte ending a word, each merge's result, then the two markers."""
    from ..clip_package import clip_module

    clip_module()  # imports the package quietly, then its tokenizer module
    from clip.simple_tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # CLIP uses the first 48894 merges of the file
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_configs(folder: str | Path, family: str = "v1") -> Path:
    """A diffusers folder of `family`'s configs and tokenizers ("v1", "v2" or "xl_base"), without
    weights. (What a file's UNet predicts is set on its scheduler once loaded: load_single_file.)"""
    folder = Path(folder)
    configs = CONFIGS[family]
    parts = {"unet/config.json": configs["unet"], "vae/config.json": configs["vae"],
             "scheduler/scheduler_config.json": configs["scheduler"], "model_index.json": configs["pipeline"]}
    towers = [suffix for suffix in ("", "_2") if f"text_encoder{suffix}" in configs]
    for suffix in towers:
        parts[f"text_encoder{suffix}/config.json"] = configs[f"text_encoder{suffix}"]
        parts[f"tokenizer{suffix}/tokenizer_config.json"] = configs[f"tokenizer{suffix}"]
    for name, config in parts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(config, indent=2))
    vocabulary, merges = clip_vocabulary()
    for suffix in towers:  # both of SDXL's towers read CLIP's byte pairs
        (folder / f"tokenizer{suffix}/vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False))
        (folder / f"tokenizer{suffix}/merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def checkpoint_shapes(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """The tensors' names and shapes in a single-file checkpoint, as empty tensors on the meta
    device, read without loading the weights (a .safetensors header, or a memory-mapped .ckpt),
    and the training step a .ckpt records (None where the file says none)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}, None
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    saved = saved if isinstance(saved, dict) else {}
    state, step = saved.get("state_dict", saved), saved.get("global_step")
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in state.items() if isinstance(v, torch.Tensor)}
    return shapes, int(step) if isinstance(step, (int, torch.Tensor)) else None


@dataclass(frozen=True)
class CheckpointFacts:
    """What a single file says about itself, read without loading its weights."""
    family: str  # diffusers' name: "v1" (SD 1.x), "v2", "xl_base", "inpainting" ..., or "unknown"
    step: int | None = None  # the training step a .ckpt records
    marked_v: bool = False  # it holds a "v_pred" tensor: fine-tunes that predict v mark themselves so
    zero_snr: bool = False  # and a "ztsnr" one: trained with a noise schedule reaching pure noise


# The tensors v-prediction fine-tunes (SDXL ones above all) carry to say what they predict and
# how they were trained; ComfyUI and Forge read them as das-ag does.
V_PREDICTION_MARK, ZERO_SNR_MARK = "v_pred", "ztsnr"


def checkpoint_family(path: Path) -> CheckpointFacts:
    """The family of a single-file checkpoint ("unknown" when diffusers recognises none, where
    diffusers itself guesses "v1"), and what else the file says of what it predicts."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    shapes, step = checkpoint_shapes(path)
    family = infer_diffusers_model_type(shapes)
    if family == "v1" and CHECKPOINT_KEY_NAMES["v1"] not in shapes:
        family = "unknown"
    return CheckpointFacts(family, step, V_PREDICTION_MARK in shapes, ZERO_SNR_MARK in shapes)


# SD 2.0-base and 2.1-base finished training at this step; their .ckpt files record it (as
# diffusers' converter reads it): they predict the noise, the 768 px models predict v.
SD2_BASE_FINAL_STEP = 875000


def prediction_for(facts: CheckpointFacts, asked: str | None) -> tuple[str | None, str]:
    """What a file's UNet predicts: `asked`, else what the file and its family say (None: its
    family's config says); and a note for the user when it is an assumption (an SD 2.x
    .safetensors)."""
    if asked:
        return asked, ""
    if facts.marked_v:
        return "v_prediction", ""
    if facts.family != "v2":
        return None, ""
    if facts.step == SD2_BASE_FINAL_STEP:
        return "epsilon", ""
    return "v_prediction", ("an SD 2.x single file: assuming it predicts v, as the 768 px models do; "
                            "for a 512 px base model pass --prediction-type epsilon")


def load_single_file(path: Path, config, options: dict, prediction_type: str | None = None):
    """A single-file checkpoint loaded with the configs of `config` or, for SD 1.x, 2.x and SDXL
    base, das-ag's own, its scheduler set to what the UNet predicts (prediction_for); and the note
    prediction_for gave (empty when there is none)."""
    import diffusers

    facts = checkpoint_family(path)
    with tempfile.TemporaryDirectory(prefix="das-ag-sd-configs-") as scratch:
        configs = f"the configs of {config}"
        if config:
            kind = pipeline_class(Path(config))
        else:
            if facts.family == "unknown":
                raise DasAgError(f"{path} holds no Stable Diffusion architecture diffusers recognises; if it is "
                                 "one, pass --config, a local diffusers folder of its family")
            if facts.family not in CONFIGS:
                raise DasAgError(f"{path} holds {FAMILY_NAMES.get(facts.family, 'a ' + facts.family)} checkpoint; the "
                                 "slider trains SD 1.x, SD 2.x and SDXL base text-to-image models only")
            config = write_configs(scratch, facts.family)
            configs = f"{FAMILY_NAMES[facts.family].split(' ', 1)[1]}'s configs"
            kind = CONFIGS[facts.family]["pipeline"]["_class_name"]
        prediction_type, note = prediction_for(facts, prediction_type)
        try:
            with quiet_libraries():  # from_single_file casts its own models, then warns that it did
                pipe = getattr(diffusers, kind).from_single_file(str(path), config=str(config),
                                                                 **pipeline_options(kind, options))
        except Exception as exc:
            raise DasAgError(f"{path} could not be loaded as a Stable Diffusion checkpoint with {configs} "
                             f"({one_line(exc, 160)})") from None
    if prediction_type:
        pipe.scheduler.register_to_config(prediction_type=prediction_type)
    if facts.zero_snr:  # its last step starts from pure noise, as it was trained (trailing steps)
        pipe.scheduler.register_to_config(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return pipe, note


def pipeline_class(folder: Path) -> str:
    """The class name of the pipeline in a diffusers folder, if das-ag trains it; else one line."""
    index = folder / "model_index.json"
    if not index.is_file():
        # A download often nests the pipeline one folder down (a snapshot, an unpacked archive).
        inside = sorted(p.parent for p in folder.glob("*/model_index.json"))
        hint = f"; did you mean {inside[0]}?" if len(inside) == 1 else ""
        raise DasAgError(f"{folder} is not a diffusers Stable Diffusion folder (no model_index.json){hint}")
    try:
        kind = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise DasAgError(f"{index} could not be read ({one_line(exc)})") from None
    if kind not in PIPELINES:
        raise DasAgError(f"{folder} holds a {kind}; the slider trains {' and '.join(PIPELINES)} models "
                         "(SD 1.x, SD 2.x and SDXL base) only")
    return kind


def pipeline_options(kind: str, options: dict) -> dict:
    """`options` with what each pipeline class takes to stay quiet and offline: SD's safety
    checker left out, SDXL's invisible watermark off (das-ag's pictures carry their recipe)."""
    if kind == "StableDiffusionXLPipeline":
        return {**options, "add_watermarker": False}
    return {**options, "safety_checker": None, "requires_safety_checker": False}
