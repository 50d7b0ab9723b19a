"""Renames that survive a crash.

A file written to a temporary name, fsynced and renamed into place is whole, but the rename
itself lives in the folder: until the folder is fsynced too, a power cut can leave the old name,
or none. Every atomic write of das-ag (results, recipes' manifests, downloads) ends here.
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_folder(folder: str | Path) -> None:
    """fsync `folder`, so that names just made or replaced in it are on disk. Filesystems that
    cannot (some network mounts) are left as they are: the data itself was already synced."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
