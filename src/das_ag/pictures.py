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
        return [f"{what} {path} is not a readable image"]
    if sha256 and file_sha256(path) != sha256:
        return [f"{what} {path} has changed since these settings were made (its checksum differs)"]
    return []
