"""CLIP features of prompts and of finished 8-bit images, unaugmented: what the terms compare
against and what scoring measures with. It sits below both, so neither imports the other."""

from __future__ import annotations

import math

import torch
from PIL import Image

from .augment import normalize, spread
from .canvases.base import from_pil
from .models import ModelBundle
from .prompts import Prompt, tokenize
from .resample import resize


def encode_text_prompts(models: ModelBundle, prompts: tuple[Prompt, ...]) -> tuple[torch.Tensor, list[str]]:
    """Normalised text features for `prompts` (one row each) and any truncation warnings."""
    tokens, warnings = tokenize([p.text for p in prompts])
    return models.encode_texts(tokens), warnings


def embed_image(models: ModelBundle, image: Image.Image) -> torch.Tensor:
    """The fp32 CLIP embedding (1, D) of an 8-bit image, unaugmented (see picture_views)."""
    return joined(models.encode_images(picture_views(models, image)))


def picture_views(models: ModelBundle, image: Image.Image) -> torch.Tensor:
    """An 8-bit image as CLIP-normalised input views, unaugmented: the image itself, or for an
    image that is not square, squares of its short side spread along the long side (as few as
    cover it; their embeddings are averaged and normalised again)."""
    pixels = from_pil(image).to(models.device)
    height, width = pixels.shape[-2:]
    side = min(height, width)
    if height != width:
        count = math.ceil(max(height, width) / side)
        starts = spread(max(height, width) - side, count, pixels.device).tolist()
        windows = [pixels[..., a:a + side, :] if height > width else pixels[..., :, a:a + side] for a in starts]
        pixels = torch.cat(windows)
    return resize(normalize(pixels), models.input_resolution, "bilinear", antialias=True)


def joined(embeddings: torch.Tensor) -> torch.Tensor:
    """One embedding (1, D) of an image seen as several views: their normalised mean."""
    if len(embeddings) == 1:
        return embeddings
    return torch.nn.functional.normalize(embeddings.float().mean(dim=0, keepdim=True), dim=-1)
