"""Pictures a user names in settings (a stroke drawing's start, an image prompt): checked in
words before a run, and recognised by their checksum in a recipe."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError


def picture_problems(path: str, sha256: str, what: str) -> list[str]:
    """Why `path` cannot serve as `what` ("init image", "image prompt"), in plain words."""
    from .weights import file_sha256

    if not path:
        return [f"the {what} needs a file"]
    if not os.path.isfile(path):
        return [f"{what} {path} does not exist"]
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if path.lower().endswith(".svg"):  # a drawing: das-ag wrote its PNG beside it
            return [f"{what} {path} is an SVG; give a raster picture (PNG, JPEG, WebP), e.g. the PNG saved beside a drawing"]
        return [f"{what} {path} is not a readable image"]
    if sha256 and file_sha256(path) != sha256:
        return [f"{what} {path} has changed since these settings were made (its checksum differs)"]
    return []


def start_picture(config):
    """The start picture of `config` at its image's size, (1, 3, H, W) in [0, 1], or None."""
    if not config.start_picture:
        return None
    height, width = config.image_shape
    return load_picture(config.start_picture, width, height)


def load_picture(path: str, width: int, height: int, what: str = "init image"):
    """The picture at `path`, centre-cropped to the aspect of `width` x `height` and resized to
    it (Lanczos): (1, 3, height, width) floats in [0, 1]. Problems are one-line ConfigErrors."""
    from .canvases.base import from_pil
    from .errors import ConfigError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path} is not a readable image ({exc})") from None
    # The largest centred box of the target's aspect (exact for a square: the shorter side).
    scale = min(image.width / width, image.height / height)
    w, h = round(width * scale), round(height * scale)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    image = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.LANCZOS)
    return from_pil(image)
