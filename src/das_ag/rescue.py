"""Where a finished result goes when its own place cannot be written.

An image can take an hour on a CPU and a LoRA longer on a GPU; a full disk or a read-only folder
at the moment of saving must not lose it. The result is written under the temporary folder
instead (often another filesystem: a tmpfs, or the system disk beside a full data disk), and
the one-line error says where.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from .errors import WriteError


def rescue_folder() -> Path:
    return Path(tempfile.gettempdir()) / "das-ag-rescued"


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
        spare = rescue_path(path)
        try:
            kept = save(spare)
        except WriteError as again:
            raise WriteError(path, f"{exc.reason}; nor could {what} be kept in {spare.parent} ({again.reason}), "
                                   "so it is lost") from None
        return kept, f"{exc}; {what} is kept at {kept} instead"
