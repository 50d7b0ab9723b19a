"""Where the studio may write: only inside the output root the server was started with.

Anyone who can open the page can type into "Output folder", so that box names a folder *inside*
DAS_AG_OUTPUT_DIR (default ./outputs), never an absolute path or one that climbs out with `..` or
through a symbolic link. The server's owner chooses the root; a visitor only chooses a subfolder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..durable import write_atomic
from ..errors import DasAgError

OUTPUT_ROOT_ENV = "DAS_AG_OUTPUT_DIR"
DEFAULT_OUTPUT_ROOT = "outputs"
# Uploads are PNGs with recipes (a few MB at most); Streamlit's default allows 200 MB per file.
MAX_UPLOAD_MB = 20


def output_root() -> Path:
    """The folder the server's owner allows the studio to write into."""
    return Path(os.environ.get(OUTPUT_ROOT_ENV) or DEFAULT_OUTPUT_ROOT)


def output_folder(subfolder: str, root: Path | None = None) -> Path:
    """`root`/`subfolder`, refusing anything that would land outside `root`."""
    root = output_root() if root is None else Path(root)
    text = (subfolder or "").strip()
    if not text or text == ".":
        return root
    if Path(text).is_absolute() or PurePosixPath(text).is_absolute() or "\\" in text:
        raise DasAgError(f"the output folder must be a folder inside {root}, not an absolute path like {text!r}")
    if ".." in PurePosixPath(text).parts:
        raise DasAgError(f"the output folder must stay inside {root}; {text!r} climbs out with '..'")
    folder = root / text
    # A symbolic link inside the root could still point elsewhere: compare the real paths.
    real_root, real_folder = root.resolve(), folder.resolve()
    if real_folder != real_root and real_root not in real_folder.parents:
        raise DasAgError(f"the output folder {text!r} leads outside {root}; choose a folder inside it")
    return folder


UPLOADS = "uploads"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
UPLOAD_KINDS = {"picture": PICTURE_SUFFIXES, "mask": PICTURE_SUFFIXES, "style list": (".txt",), "centroid file": (".npz",)}


def outside_uploads(paths: list[str], root: Path | None = None) -> list[str]:
    """The paths among `paths` that are not files this studio received as uploads. A visitor may
    use only those (and built-in names): a typed or restored path elsewhere on the server is
    refused before anything reads it, with the same words whether or not it exists."""
    uploads = ((output_root() if root is None else Path(root)) / UPLOADS).resolve()
    outside = []
    for path in paths:
        try:
            inside = Path(path).resolve().parent == uploads  # the folder is flat: <sha256>.<suffix>
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
            inside = False
        if not inside:
            outside.append(path)
    return outside


def save_upload(name: str, data: bytes, root: Path | None = None, *, kind: str = "picture") -> Path:
    """Keep an uploaded file (a stroke drawing's start picture, a style list, style centroids)
    under the output root, named by its content: recipes refer to it by that path, and the same
    file is stored once. The settings that read it check its contents."""
    import hashlib

    suffixes = UPLOAD_KINDS[kind]
    suffix = Path(name).suffix.lower()
    if suffix not in suffixes:
        raise DasAgError(f"a {kind} must be one of {', '.join(suffixes)}, not {suffix or 'a file without one'}")
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise DasAgError(f"the {kind} is over {MAX_UPLOAD_MB} MB")
    if kind in ("picture", "mask"):
        from ..pictures import PictureError, opened

        try:
            with opened(data, "the file") as image:
                image.verify()
        except PictureError as exc:
            raise DasAgError(str(exc)) from None
    folder = (output_root() if root is None else Path(root)) / UPLOADS
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        write_atomic(path, data)
    return path
