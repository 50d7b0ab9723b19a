"""The configs of Stable Diffusion 1.x, which a single-file checkpoint does not carry.

A `.safetensors` from a model site holds weights only; diffusers reads the architecture from a
diffusers folder, and offline it cannot fetch one from the hub. SD 1.x (1.4, 1.5 and the many
fine-tunes of them) share one architecture, so das-ag writes its configs itself: the numbers are
SD 1.x's, and the tokenizer is CLIP's own byte-pair vocabulary, which the `clip` package ships. A
checkpoint of another family still needs `--config`, a diffusers folder of that family.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

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


def write_sd1_configs(folder: str | Path) -> Path:
    """A diffusers folder of SD 1.x's configs and tokenizer, without weights, in `folder`."""
    folder = Path(folder)
    parts = {"unet/config.json": UNET, "vae/config.json": VAE, "text_encoder/config.json": TEXT_ENCODER,
             "tokenizer/tokenizer_config.json": TOKENIZER, "scheduler/scheduler_config.json": SCHEDULER,
             "model_index.json": PIPELINE}
    for name, config in parts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(config, indent=2))
    vocabulary, merges = clip_vocabulary()
    (folder / "tokenizer/vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False))
    (folder / "tokenizer/merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def checkpoint_shapes(path: Path) -> dict[str, torch.Tensor]:
    """The tensors' names and shapes in a single-file checkpoint, as empty tensors on the meta
    device, read without loading the weights (a .safetensors header, or a memory-mapped .ckpt)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return {k: torch.empty(v.shape, device="meta") for k, v in state.items() if isinstance(v, torch.Tensor)}


def checkpoint_family(path: Path) -> str:
    """diffusers' name for the family of a single-file checkpoint: "v1" for SD 1.x, "v2", "xl_base",
    "inpainting" ..., or "unknown" when it recognises none (where diffusers itself guesses "v1")."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    shapes = checkpoint_shapes(path)
    family = infer_diffusers_model_type(shapes)
    if family == "v1" and CHECKPOINT_KEY_NAMES["v1"] not in shapes:
        return "unknown"
    return family
