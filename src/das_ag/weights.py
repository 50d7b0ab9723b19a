"""Where model weights live: paths from the environment or .env, the cache, checksums, downloads.

Nothing here imports torch. A weight file is used only after its sha256 matches the published
value (for downloads and the cache) or after it is named explicitly by the user (a path).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from .durable import sync_folder
from .errors import WeightsError

DEFAULT_CLIP_MODEL = "ViT-L/14"

# Environment variables users set (directly or in .env); .env.example documents each.
ENV_CLIP = "CLIP_MODEL_PATH"
ENV_AESTHETIC = "AESTHETIC_PREDICTOR_PATH"
ENV_CACHE = "DAS_AG_CACHE_DIR"
ENV_CLIP_URL = "DAS_AG_CLIP_URL"  # a mirror of the official CLIP file (same bytes, same checksum)
ENV_AESTHETIC_URL = "DAS_AG_AESTHETIC_URL"  # a mirror of the official aesthetic head

OFFLINE_HINT = (
    f"set {ENV_CLIP} and {ENV_AESTHETIC} (in the environment or .env) to local copies, "
    "or run `das-ag download` where the network reaches them"
)


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: where it comes from and the checksum that proves it."""

    filename: str
    url: str
    sha256: str
    license: str


AESTHETIC_HEAD = WeightFile(
    filename="sac+logos+ava1-l14-linearMSE.pth",
    url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth",
    sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
    license="Apache-2.0",
)


def load_environment() -> None:
    """Load ./.env without overriding variables that are already set (the real environment wins)."""
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "das-ag"


def clip_weight_file(name: str) -> WeightFile | None:
    """The official file for a CLIP model name the `clip` package knows, or None."""
    from .clip_package import clip_module

    # The clip package's own table; OpenAI's URLs carry the file's sha256.
    url = clip_module().clip._MODELS.get(name)
    if url is None:
        return None
    # OpenAI's URLs are .../<sha256>/<file>.pt: the checksum is part of the address.
    return WeightFile(filename=url.rsplit("/", 1)[1], url=url, sha256=url.split("/")[-2], license="MIT")


def known_clip_models() -> list[str]:
    from .clip_package import clip_module

    return clip_module().available_models()


# -- resolving what to load ------------------------------------------------------------------
def clip_source(source: str | None = None) -> str:
    """Which CLIP to use: `source`, else CLIP_MODEL_PATH, else ViT-L/14."""
    return source or os.environ.get(ENV_CLIP) or DEFAULT_CLIP_MODEL


def resolve_clip(source: str | None = None, *, download: bool = True) -> Path:
    """A local CLIP checkpoint for `source` (a path or a model name), downloading a name if needed."""
    source = clip_source(source)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    wf = clip_weight_file(source)
    if wf is None:
        raise WeightsError(
            f"CLIP model {source} does not exist as a file and is not a known name "
            f"({', '.join(known_clip_models())}); check {ENV_CLIP} or --clip-model"
        )
    return ensure_cached(wf, os.environ.get(ENV_CLIP_URL), download=download)


def resolve_aesthetic(source: str | None = None, *, download: bool = True) -> Path:
    """A local aesthetic-head file: `source`, else the env var, else the verified cached download."""
    source = source or os.environ.get(ENV_AESTHETIC)
    if source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsError(f"aesthetic head {source} does not exist; check {ENV_AESTHETIC} or --aesthetic-model")
        return path
    return ensure_cached(AESTHETIC_HEAD, os.environ.get(ENV_AESTHETIC_URL), download=download)


def ensure_cached(wf: WeightFile, mirror: str | None = None, *, download: bool = True) -> Path:
    """The cached copy of `wf`, verified; fetched first when absent or corrupt and `download` allows."""
    target = cache_dir() / wf.filename
    if target.is_file():
        if verified_sha256(target) == wf.sha256:
            return target
        # Never use a file whose checksum is wrong: fetch it again, or refuse.
        if not download:
            raise WeightsError(f"cached {target} fails its sha256 check; delete it or run `das-ag download`")
    elif not download:
        raise WeightsError(f"{wf.filename} is not in the cache {cache_dir()}; {OFFLINE_HINT}")
    # Two studio sessions (or a session and `das-ag download`) asking at once: one downloads, the
    # other waits for it and then finds the verified file.
    with download_lock(target):
        if target.is_file() and verified_sha256(target) == wf.sha256:
            return target
        fetch(mirror or wf.url, target, wf.sha256)
    return target


@contextlib.contextmanager
def download_lock(target: Path) -> Iterator[None]:
    """Hold the kernel's lock on `target`'s lock file: across processes, and across threads too
    (each open() is its own lock holder). It goes with the process, so a crash leaves none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(target.with_name(f".{target.name}.lock"), "a+b")
    except OSError as exc:
        raise WeightsError(f"cannot write into the cache {target.parent} ({exc.strerror or exc})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# -- checksums --------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a user's file (a start picture, a centroid file), None when it cannot be read;
    remembered in this process by path, size and mtime, as configs ask for it often."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not S_ISREG(stat.st_mode):  # /dev/zero or a FIFO would never end
        return None
    return _remembered_sha256(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _remembered_sha256(path: str, mtime_ns: int, size: int) -> str | None:
    try:
        return sha256_file(Path(path))
    except OSError:
        return None


def verified_sha256(path: Path) -> str:
    """sha256 of `path`, remembered in the cache keyed by path, size and mtime.

    Hashing ViT-L/14 (890 MB) takes seconds; the remembered value makes later starts instant while
    any change to the file (size or modification time) forces a fresh hash. Nothing is written
    beside the user's own files.
    """
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = hashlib.sha1(str(path).encode()).hexdigest()
    sidecar = cache_dir() / "checksums" / f"{key}.json"
    try:
        saved = json.loads(sidecar.read_text())
        if {k: saved.get(k) for k in stamp} == stamp and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        _atomic_write_text(sidecar, json.dumps({**stamp, "sha256": digest}))
    except OSError:
        pass  # a read-only location only costs a re-hash next time
    return digest


# -- downloading ------------------------------------------------------------------------------
def fetch(url: str, target: Path, sha256: str, *, timeout: float = 30.0) -> Path:
    """Download `url` to `target` atomically; the file appears only once its sha256 matches."""
    from tqdm import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    partial = None
    try:
        # A temporary name of this download's own: two downloads never write into one file.
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        partial = Path(name)
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise WeightsError(
                f"download of {target.name} from {url} has sha256 {h.hexdigest()[:12]}..., "
                f"expected {sha256[:12]}...; the file was discarded"
            )
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide a shared cache from its other users
        os.replace(partial, target)
        sync_folder(target.parent)
        # What is under the name now is what gets used: check it, not the bytes that were sent.
        if verified_sha256(target) != sha256:
            target.unlink(missing_ok=True)
            raise WeightsError(f"{target} changed while it was being installed; it was discarded, try again")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"could not download {target.name} from {url} ({reason}); {OFFLINE_HINT}") from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    return target


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # one per writer
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
