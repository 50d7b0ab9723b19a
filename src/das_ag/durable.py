"""Writes that are whole or absent, and renames that survive a crash.

A file written to a temporary name, fsynced and renamed into place is whole, but the rename
itself lives in the folder: until the folder is fsynced too, a power cut can leave the old name,
or none. Every atomic write of das-ag (results, recipes' manifests, downloads) ends here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError, DasAgError, WriteError


class OutputExistsError(DasAgError, FileExistsError):
    pass


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


def write_atomic(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write `data` to `path` through a temporary file: readers never see half a file. A file
    that cannot be written (a full disk, a read-only folder) raises WriteError, leaving nothing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or allow overwriting")
    try:
        return _write_atomic(path, data, overwrite)
    except OutputExistsError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from None


def write_files(path: str | Path, files: dict[str, bytes], *, overwrite: bool = False) -> Path:
    """Write a result's files (suffix -> bytes, ".png" among them) at `path` and beside it, each
    atomically; none is written when any is taken and `overwrite` is off."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"output {path} must end in .png")
    targets = {sfx: path if sfx == ".png" else path.with_suffix(sfx) for sfx in files}
    taken = [str(p) for p in targets.values() if p.exists()]
    if taken and not overwrite:
        raise OutputExistsError(f"{taken[0]} already exists; choose another name or allow overwriting")
    for sfx, data in files.items():
        write_atomic(targets[sfx], data, overwrite=overwrite)
    return path


def check_writable(path: str | Path) -> None:
    """Raise WriteError now, before a long run, if `path`'s folder could not be made or written
    (a file in the way, a read-only filesystem, no permission). Nothing is created: the probe
    goes into the deepest folder that exists. A full disk shows only when the file is written."""
    folder = Path(path).parent.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise WriteError(path, f"{existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".das-ag-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(path, exc) from None


def _write_atomic(path: Path, data: bytes, overwrite: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a result should get the mode any new file of the user gets.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create if absent": never clobbers a file made meanwhile
            except FileExistsError:
                raise OutputExistsError(f"{path} already exists; choose another name or allow overwriting") from None
            except OSError:
                os.replace(tmp, path)  # filesystems without hard links
        sync_folder(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # not Linux: set and restore at once
    os.umask(mask)
    return mask
