"""Pictures a user names in settings (a stroke drawing's start, an image prompt): checked in
words before a run, and recognised by their checksum in a recipe."""

from __future__ import annotations

import io
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# The most pixels das-ag decodes from any picture: a 48-megapixel photo fits, a few-KB PNG that
# claims 13000 x 13000 does not. The size is read from the header, before a pixel is decoded.
MAX_PIXELS = 64 * 2**20
# Pillow's own fence, for any path that opens a picture without `opened`: it refuses twice this
# with DecompressionBombError (not an OSError), and warns above it.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class PictureError(ValueError):
    """A picture that cannot be read, or is too large to read; its message is one line."""


class PictureTooLarge(PictureError):
    """A picture over MAX_PIXELS, found from its header."""


@contextmanager
def opened(source: str | Path | bytes, what: str = "the picture", kind: str = "picture"):
    """`source` (a path or the bytes of an upload) opened as a picture whose size has been checked
    from its header; any failure is a PictureError that says what is wrong in one line (a file
    that is not one is "not a readable {kind}")."""
    try:
        with warnings.catch_warnings():  # Pillow warns above MAX_PIXELS; das-ag refuses it below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise PictureError(f"{what} does not exist") from None
    except Image.DecompressionBombError:  # over twice MAX_PIXELS: Pillow refuses it on opening
        raise PictureTooLarge(f"{what} is too large: das-ag reads pictures of at most "
                           f"{MAX_PIXELS / 2**20:.0f} megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PictureError(f"{what} is not a readable {kind} ({_reason(exc)})") from None
    with image:
        if image.width * image.height > MAX_PIXELS:
            raise PictureTooLarge(f"{what} is too large ({image.width} x {image.height} pixels): das-ag reads "
                               f"pictures of at most {MAX_PIXELS / 2**20:.0f} megapixels")
        try:
            yield image
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise PictureError(f"{what} is not a readable {kind} ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def picture_problems(path: str, sha256: str, what: str) -> list[str]:
    """Why `path` cannot serve as `what` ("init image", "image prompt"), in plain words."""
    from .weights import file_sha256

    if not path:
        return [f"the {what} needs a file"]
    if not os.path.isfile(path):
        return [f"{what} {path} does not exist"]
    try:
        with opened(path, f"{what} {path}") as image:
            image.verify()
    except PictureTooLarge as exc:
        return [str(exc)]
    except PictureError:
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
    from .errors import ConfigError

    try:
        with opened(path, f"{what} {path}") as image:
            image = image.convert("RGB")
    except PictureError as exc:
        raise ConfigError(str(exc)) from None
    return load_picture_image(image, width, height)


def load_picture_image(image: Image.Image, width: int, height: int):
    """An RGB image centre-cropped to the aspect of `width` x `height` and resized to it (Lanczos):
    (1, 3, height, width) floats in [0, 1]."""
    from .canvases.base import from_pil

    # The largest centred box of the target's aspect (exact for a square: the shorter side).
    scale = min(image.width / width, image.height / height)
    w, h = round(width * scale), round(height * scale)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    image = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.LANCZOS)
    return from_pil(image)


def painted(image: Image.Image) -> Image.Image:
    """Where a mask is painted, as an 8-bit L image (255: painted): its opaque pixels where it has
    transparency (a drawing over a picture), else its light ones (white on black)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha.point(lambda a: 255 if a > 127 else 0)
    return image.convert("L").point(lambda v: 255 if v > 127 else 0)


def mask_problems(mask: str, picture: str) -> list[str]:
    """Why `mask` cannot mask the start picture `picture`: another size, or nothing painted."""
    try:
        with opened(mask, f"mask {mask}") as image:
            size, region = image.size, painted(image)
        with opened(picture, f"init image {picture}") as start:
            start_size = start.size
    except PictureError as exc:
        return [str(exc)]
    if size != start_size:
        return [f"the mask is {size[0]}x{size[1]} but the start picture is {start_size[0]}x{start_size[1]}; "
                "paint the mask at the start picture's size"]
    if region.getextrema()[1] == 0:
        return ["the mask paints nothing, so nothing could change: paint the region to repaint (white, or opaque)"]
    return []


def start_mask(config):
    """Where `config`'s run may change the start picture, (1, 1, H, W) in [0, 1] at the image's size
    (1: free, 0: kept; a ramp of `mask_edge` px inside the painted region), or None for no mask."""
    import torch
    import torch.nn.functional as F

    from .errors import ConfigError

    settings = config.term_settings("init")
    if not settings.mask:
        return None
    height, width = config.image_shape
    try:
        with opened(settings.mask, f"mask {settings.mask}") as image:
            region = painted(image)
    except PictureError as exc:
        raise ConfigError(str(exc)) from None
    # Cropped and resized as the start picture is, so the mask lies where it was painted.
    hard = (load_picture_image(region.convert("RGB"), width, height)[:, :1] > 0.5).float()
    # A pixel d px inside the painted region (1: on its border) is free by min(d, edge) / edge: the
    # mean of the region eroded 0, 1, ... edge - 1 times. The kept side stays exactly 0.
    eroded, ramp = hard, torch.zeros_like(hard)
    for _ in range(settings.mask_edge):
        ramp += eroded
        eroded = -F.max_pool2d(-eroded, 3, stride=1, padding=1)
    return ramp / settings.mask_edge if settings.mask_edge else hard
