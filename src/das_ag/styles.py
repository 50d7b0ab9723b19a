"""Styles a style-ambiguity classifier can tell apart: text labels, or centroids of the CLIP image
embeddings of a user's own pictures (k-means), saved with the identity of the CLIP that made them.

    labels = load_labels("wikiart")                   # or a file, one label per line
    centroids = build_centroids("my-photos/", 5, models)   # das-ag centroids build
    centroids.save("styles.npz"); Centroids.load("styles.npz").check(models)

Embeddings are cached per file content and CLIP, so a second build (another k, a few more
pictures) only encodes what it has not seen. k-means is seeded k-means++ and Lloyd in float64 on
the CPU: the same pictures, k and seed give the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .durable import write_atomic
from .errors import ConfigError

# The 27 WikiArt styles as the paper's code lists them (wikiart.org slugs; "na-ve" is "naive").
WIKIART_STYLES = (
    "contemporary-realism", "art-nouveau-modern", "abstract-expressionism", "northern-renaissance",
    "mannerism-late-renaissance", "early-renaissance", "realism", "action-painting", "color-field-painting",
    "pop-art", "new-realism", "pointillism", "expressionism", "analytical-cubism", "symbolism", "fauvism",
    "minimalism", "cubism", "romanticism", "ukiyo-e", "high-renaissance", "synthetic-cubism", "baroque",
    "post-impressionism", "impressionism", "rococo", "na-ve-art-primitivism",
)
BUILT_IN_STYLES = {"wikiart": WIKIART_STYLES}
MAX_LABELS_BYTES = 2**20  # a style list's file
MAX_CENTROIDS_BYTES = 64 * 2**20  # a centroid file unpacked: 1000 styles x 1024 floats is 4 MB

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# How pictures become CLIP inputs, recorded in a centroid file: the same path the run's views take
# (das-ag's bilinear resize and CLIP's mean and std), after a centre crop to a square.
PREPROCESSING = "centre crop to a square, bilinear antialiased resize to the CLIP input, CLIP mean/std"
CENTROIDS_FORMAT = 1


def _check_unpacked_size(path: Path) -> None:
    """Refuse a centroid file whose members would unpack to more than MAX_CENTROIDS_BYTES, from
    the zip's own directory before anything is unpacked: a 20 MB file of deflated zeros expands
    without bound on np.load. (zipfile reads no member past the size its header gives.)"""
    _regular_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise OSError(f"not an .npz: {exc}") from None
    if unpacked > MAX_CENTROIDS_BYTES:
        raise OSError(f"it unpacks to {unpacked / 2**20:.0f} MB; a centroid file holds at most "
                      f"{MAX_CENTROIDS_BYTES // 2**20} MB")


def _regular_file(path: Path) -> None:
    """FileNotFoundError or OSError unless `path` is a regular file: /dev/zero or a FIFO named
    as a style list or centroid file would be read for ever."""
    if not path.is_file():
        if not path.exists():
            raise FileNotFoundError(path)
        raise OSError("not a regular file")


def load_labels(source: str) -> list[str]:
    """Style labels: a built-in set by name ("wikiart") or a text file, one label per line."""
    if source in BUILT_IN_STYLES:
        return list(BUILT_IN_STYLES[source])
    path = Path(source)
    try:
        _regular_file(path)
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise OSError(f"over {MAX_LABELS_BYTES // 2**20} MB; a style list is a few lines")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"style list {source} does not exist (use wikiart or a file of labels)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"style list {source} could not be read as text ({exc})") from None
    labels = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    labels = list(dict.fromkeys(labels))  # a repeated label would count twice in the softmax
    if len(labels) < 2:
        raise ConfigError(f"style list {source} has {len(labels)} label(s); ambiguity needs at least two")
    return labels


@dataclass
class Centroids:
    """k style centroids in a CLIP's image-embedding space, and how they were made."""

    centroids: np.ndarray  # (k, D) float32
    clip: dict  # the identity of the CLIP that embedded the pictures (models.identities()["clip"])
    images: int = 0
    images_sha256: str = ""  # of the sorted content hashes of the pictures
    seed: int = 0
    inertia: float = 0.0
    preprocessing: str = PREPROCESSING
    sizes: list[int] = field(default_factory=list)  # pictures per cluster

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def to_bytes(self) -> bytes:
        meta = {"format": CENTROIDS_FORMAT, "clip": self.clip, "k": self.k, "images": self.images,
                "images_sha256": self.images_sha256, "seed": self.seed, "inertia": self.inertia,
                "preprocessing": self.preprocessing, "sizes": self.sizes}
        buffer = io.BytesIO()
        np.savez(buffer, centroids=self.centroids.astype(np.float32), meta=np.array(json.dumps(meta, sort_keys=True)))
        return buffer.getvalue()

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_atomic(path, self.to_bytes(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Centroids:
        try:
            _check_unpacked_size(Path(path))
            with np.load(Path(path), allow_pickle=False) as data:
                centroids, meta = data["centroids"], json.loads(str(data["meta"]))
        except FileNotFoundError:
            raise ConfigError(f"centroid file {path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ConfigError(f"{path} is not a centroid file made by das-ag centroids build ({exc})") from None
        if centroids.ndim != 2 or centroids.shape[0] < 2 or not np.isfinite(centroids).all():
            raise ConfigError(f"centroid file {path} holds an array of shape {centroids.shape}; "
                              "it needs at least two finite centroids (k x embedding size)")
        if not isinstance(meta, dict) or not isinstance(meta.get("clip"), dict):
            raise ConfigError(f"centroid file {path} does not say which CLIP made it")
        return cls(centroids.astype(np.float32), meta["clip"], int(meta.get("images", 0)),
                   str(meta.get("images_sha256", "")), int(meta.get("seed", 0)), float(meta.get("inertia", 0.0)),
                   str(meta.get("preprocessing", PREPROCESSING)), list(meta.get("sizes", [])))

    def check(self, models, where: str = "the centroids") -> None:
        """Refuse centroids of another CLIP (or of another embedding size)."""
        ours = models.identities()["clip"]
        if self.clip.get("sha256") != ours.get("sha256"):
            raise ConfigError(f"{where} were made with CLIP {self.clip.get('name', '?')} "
                              f"(sha256 {str(self.clip.get('sha256', '?'))[:12]}), not the {ours.get('name', '?')} "
                              "this run uses; build them again with this CLIP")
        width = models.width
        if self.centroids.shape[1] != width:
            raise ConfigError(f"{where} have {self.centroids.shape[1]} numbers each; this CLIP's embeddings have {width}")


# -- k-means ----------------------------------------------------------------------------------------
def kmeans(points: torch.Tensor, k: int, *, seed: int = 0, iterations: int = 300) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Seeded k-means++ and Lloyd's iterations: (centroids (k, D), assignment (N,), inertia).

    In float64 on the CPU, so the same points, k and seed give the same centroids anywhere.
    """
    x = points.detach().to("cpu", torch.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k = {k} clusters need at least {k} pictures; there are {n}")
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    nearest = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0:  # fewer distinct points than k: take the next unused ones in order
            index = next(i for i in range(n) if not any(torch.equal(x[i], c) for c in centres))
        else:
            index = int(torch.multinomial(nearest / total, 1, generator=generator))
        centres.append(x[index])
        nearest = torch.minimum(nearest, ((x - x[index]) ** 2).sum(1))
    centroids = torch.stack(centres)
    assignment = None
    for _ in range(iterations):
        distances = torch.cdist(x, centroids) ** 2
        new = distances.argmin(1)
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        for j in range(k):
            members = x[assignment == j]
            if len(members):  # an empty cluster keeps its centre
                centroids[j] = members.mean(0)
    inertia = float((torch.cdist(x, centroids) ** 2).min(1).values.sum())
    return centroids, assignment, inertia


# -- building centroids from a folder ------------------------------------------------------------
def picture_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.exists():
        raise ConfigError(f"folder {folder} does not exist")
    if not root.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)


def picture_input(image: Image.Image, size: int) -> torch.Tensor:
    """A picture as the CLIP input a run's views are: centre-cropped square, CLIP-normalised."""
    from .augment import normalize
    from .canvases.base import from_pil
    from .resample import resize

    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    pixels = from_pil(image.crop((left, top, left + side, top + side)))
    return resize(normalize(pixels), size, "bilinear", antialias=True)


@dataclass
class EmbeddingReport:
    embedded: int = 0  # encoded now
    cached: int = 0  # found in the cache
    skipped: list[str] = field(default_factory=list)  # not readable as pictures
    seconds: float = 0.0  # spent encoding


def embed_folder(
    folder: str | Path, models, *, cache_dir: Path, batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, list[str], EmbeddingReport]:
    """Embeddings (N, D) of every picture under `folder`, their content hashes, and what was done.

    Each embedding is cached under `cache_dir` by CLIP and file content: renaming or moving a
    picture, or building again with another k, costs no encoder time.
    """
    import time

    files = picture_files(folder)
    if not files:
        raise ConfigError(f"folder {folder} holds no pictures ({', '.join(PICTURE_SUFFIXES)})")
    store = cache_dir / "embeddings" / models.identities()["clip"]["sha256"][:16]
    report = EmbeddingReport()
    found: dict[str, np.ndarray] = {}
    hashes: list[str] = []
    pending: list[tuple[str, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        start = time.perf_counter()
        with torch.no_grad():
            batch = torch.cat([t for _, t in pending]).to(models.device)
            vectors = models.encode_images(batch).float().cpu().numpy()
        report.seconds += time.perf_counter() - start
        store.mkdir(parents=True, exist_ok=True)
        for (digest, _), vector in zip(pending, vectors):
            found[digest] = vector
            np.save(store / f"{digest}.npy", vector)
        report.embedded += len(pending)
        pending.clear()

    for done, path in enumerate(files, 1):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in found:
            cached = store / f"{digest}.npy"
            if cached.is_file():
                found[digest] = np.load(cached)
                report.cached += 1
            elif not any(d == digest for d, _ in pending):
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        pending.append((digest, picture_input(image, models.input_resolution)))
                except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                    report.skipped.append(str(path))
                    continue
        hashes.append(digest)
        if len(pending) >= batch_size:
            flush()
        if progress:
            progress(done, len(files))
    flush()
    if not hashes:
        raise ConfigError(f"none of the {len(files)} files in {folder} could be read as a picture")
    return torch.from_numpy(np.stack([found[d] for d in hashes])), hashes, report


def build_centroids(points: torch.Tensor, hashes: list[str], k: int, clip: dict, *, seed: int = 0) -> Centroids:
    """k-means centroids of picture embeddings, with what a run needs to trust them."""
    if k < 2:
        raise ConfigError(f"k must be at least 2 (a single style cannot be ambiguous), not {k}")
    distinct = len(set(hashes))
    if k > distinct:
        raise ConfigError(f"k = {k} is more than the {distinct} different pictures found; use a smaller k")
    centroids, assignment, inertia = kmeans(points, k, seed=seed)
    sizes = torch.bincount(assignment, minlength=k).tolist()
    return Centroids(centroids.float().numpy(), clip, len(hashes),
                     hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest(), seed, inertia, PREPROCESSING, sizes)

