"""Random-weight Stable Diffusion checkpoints in diffusers' folder format, built locally: for tests
(tiny) and for benchmarks of the real shape (sd15) where no weights can be downloaded.

    save_random_sd("tiny-sd/", "tiny")
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

# (UNet channels, cross-attention heads' dim, VAE channels, text width, layers, heads, MLP, vocabulary)
SHAPES = {
    "tiny": dict(unet=(32, 64), head_dim=8, vae=(32, 64), text=(32, 5, 4, 37, 1000), sample=32),
    "sd15": dict(unet=(320, 640, 1280, 1280), head_dim=8, vae=(128, 256, 512, 512), text=(768, 12, 12, 3072, 49408),
                 sample=64),
}


def save_random_sd(folder: str | Path, shape: str = "tiny", *, seed: int = 0) -> Path:
    """Write a random StableDiffusionPipeline of `shape` to `folder` and return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = SHAPES[shape]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    blocks = len(spec["unet"])
    width, layers, heads, mlp, vocab_size = spec["text"]
    unet = UNet2DConditionModel(
        block_out_channels=spec["unet"], layers_per_block=2, sample_size=spec["sample"], in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1) if shape == "tiny"
        else ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",) if shape == "tiny"
        else ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        cross_attention_dim=width, attention_head_dim=spec["head_dim"],
    )
    vae = AutoencoderKL(block_out_channels=list(spec["vae"]), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * len(spec["vae"]),
                        up_block_types=["UpDecoderBlock2D"] * len(spec["vae"]), layers_per_block=2 if shape != "tiny" else 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=width, intermediate_size=mlp, num_attention_heads=heads,
                                                num_hidden_layers=layers, vocab_size=vocab_size, bos_token_id=0,
                                                eos_token_id=2, pad_token_id=1))
    # A small hand-written vocabulary (letters): enough to tokenise any prompt, no download.
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokens = folder / "vocabulary"
    tokens.mkdir(exist_ok=True)
    (tokens / "vocab.json").write_text(json.dumps(vocab))
    (tokens / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tokens / "vocab.json"), str(tokens / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    base = folder / "base"
    pipe.save_pretrained(base)
    return base
