"""Where a finished result goes when its own place cannot be written.

An image can take an hour on a CPU and a LoRA longer on a GPU; a full disk or a read-only folder
at the moment of saving must not lose it. The result is written under the temporary folder
instead (often another filesystem: a tmpfs, or the system disk beside a full data disk), and
the one-line error says where.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import WriteError


def rescue_folder(*, make: bool = True) -> Path:
    """The user's own folder under the temporary folder, readable by them alone. A shared,
    predictable /tmp/das-ag-rescued would let another user read the rescued images or plant a
    link there first; a folder that exists but is not the user's alone is not used."""
    folder = Path(tempfile.gettempdir()) / f"das-ag-rescued-{os.getuid()}"
    if not make:
        return folder
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        raise WriteError(folder, exc) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WriteError(folder, "it exists but is not a folder of this user's alone")
    return folder


def rescue_path(path: str | Path) -> Path:
    """A free name for `path`'s file in the rescue folder, free for its SVG too (the file the
    strokes canvas writes beside its PNG), so that the two stay a pair."""
    path = Path(path)
    folder = rescue_folder()
    candidate, n = folder / path.name, 1
    while any(p.exists() for p in (candidate, candidate.with_suffix(".svg"))):
        candidate, n = folder / f"{path.stem}-{n}{path.suffix}", n + 1
    return candidate


def save_or_rescue(save: Callable[[Path], Path], path: str | Path, what: str = "it") -> tuple[Path, str]:
    """`save(path)`; where that cannot be written, `save` into the rescue folder. Returns where
    the file went and, after a rescue, the one line that says why and where ("" when all went
    well). Raises WriteError only when neither place could be written."""
    try:
        return save(Path(path)), ""
    except WriteError as exc:
        try:
            kept = save(rescue_path(path))
        except WriteError as again:
            raise WriteError(path, f"{exc.reason}; nor could {what} be kept in {rescue_folder(make=False)} "
                                   f"({again.reason}), so it is lost") from None
        return kept, f"{exc}; {what} is kept at {kept} instead"
