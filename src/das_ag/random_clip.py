"""Random-weight CLIP checkpoints in OpenAI's format, for tests and benchmarks without a download.

They load through the same `clip.load` path as the real files. Shapes keep what the real pipeline
depends on: 77-token context and the 49408-token vocabulary (so the real tokenizer works) and a
768-d embedding (so the real aesthetic head fits).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

# name -> (vision_width, vision_layers, patch, text_width, text_layers)
SHAPES = {
    "tiny": (64, 2, 32, 64, 2),
    "ViT-B/32": (768, 12, 32, 512, 12),
    "ViT-L/14": (1024, 24, 14, 768, 12),
}


def build_random_clip(shape: str = "tiny", *, seed: int = 0):
    from .clip_package import clip_module

    CLIP = clip_module().model.CLIP

    vision_width, vision_layers, patch, text_width, text_layers = SHAPES[shape]
    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=768,
        image_resolution=224,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=77,
        vocab_size=49408,
        transformer_width=text_width,
        transformer_heads=text_width // 64,
        transformer_layers=text_layers,
    )
    return model.eval()


def save_random_clip(path: str | Path, shape: str = "tiny", *, seed: int = 0, torchscript: bool = True) -> Path:
    """Write a random CLIP to `path`: a TorchScript archive in fp16 like OpenAI's, or a state dict."""
    path = Path(path)
    model = build_random_clip(shape, seed=seed).half()
    if torchscript:
        image = torch.zeros(1, 3, 224, 224, dtype=torch.half)
        text = torch.zeros(1, 77, dtype=torch.long)
        with torch.no_grad(), warnings.catch_warnings():
            # TorchScript is deprecated, but it is the format OpenAI shipped and clip.load reads.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.float(), (image.float(), text), check_trace=False).half()
            torch.jit.save(traced, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


def save_random_open_clip(folder: str | Path, *, seed: int = 1, embed_dim: int = 512, image_size: int = 64) -> str:
    """A random tiny open_clip model written the way a user's own would be: a model-config JSON
    and a weights file, loaded through open_clip's own create_model. Returns its --clip-model spec,
    open_clip:CONFIG.json@WEIGHTS.bin. Its width (512) and input side (64) differ from the tiny
    OpenAI CLIP's on purpose: an ensemble must handle both."""
    import json

    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"das-ag-random-open-clip-{seed}.json"
    config.write_text(json.dumps({
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(config.stem)
    weights = folder / f"{config.stem}.bin"
    torch.save(model.state_dict(), weights)
    return f"open_clip:{config}@{weights}"
