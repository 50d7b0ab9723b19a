"""A local Stable Diffusion checkpoint: a diffusers folder or a single .safetensors / .ckpt file.

Nothing is fetched from a hub (HF_HUB_OFFLINE is set while loading). The checkpoint is identified
by the sha256 of its files, so a LoRA's recipe says which base it was trained for.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DasAgError
from ..weights import verified_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")


def one_line(exc: BaseException, width: int = 200) -> str:
    """A library's (often multi-line) message as one short line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return (text or type(exc).__name__)[:width]


@dataclass
class BaseModel:
    pipe: object  # a diffusers StableDiffusionPipeline
    path: Path
    sha256: str

    @property
    def unet(self):
        return self.pipe.unet

    def identity(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256}


def base_sha256(path: Path) -> str:
    """One checksum of a checkpoint: of its file, or of its folder's weight and config files."""
    if path.is_file():
        return verified_sha256(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.suffix == ".json")):
        h.update(f"{file.relative_to(path).as_posix()} {verified_sha256(file)}\n".encode())
    return h.hexdigest()


def load_base(path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32,
              config: str | Path | None = None) -> BaseModel:
    """The pipeline of a local checkpoint, frozen, on `device`. A single-file checkpoint needs the
    configs of its architecture: `config`, a local diffusers folder of the same family (offline,
    diffusers would otherwise look for them on the hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    # das-ag draws its own progress; the libraries' loading bars would only clutter it.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"base checkpoint {path} does not exist")
    options = dict(safety_checker=None, requires_safety_checker=False, dtype=dtype, local_files_only=True)
    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise DasAgError(f"{path} is not a diffusers Stable Diffusion folder (no model_index.json)")
            pipe = StableDiffusionPipeline.from_pretrained(path, **options)
        elif path.suffix.lower() in (".safetensors", ".ckpt"):
            extra = {"config": str(config)} if config else {}
            try:
                pipe = StableDiffusionPipeline.from_single_file(str(path), **options, **extra)
            except Exception as exc:
                hint = "" if config else "; a single file also needs its configs: pass --config, a diffusers folder of its family"
                raise DasAgError(f"{path} could not be loaded as a Stable Diffusion checkpoint ({one_line(exc, 160)}){hint}") from None
        else:
            raise DasAgError(f"{path} is not a Stable Diffusion checkpoint (a diffusers folder or a .safetensors file)")
    except DasAgError:
        raise
    except Exception as exc:  # diffusers raises many kinds for a file it cannot read
        raise DasAgError(f"{path} could not be loaded as a Stable Diffusion checkpoint ({one_line(exc)})") from None
    # DDIM: deterministic steps (eta 0), the scheduler the slider's loop and the samples share.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
        part.eval()
    return BaseModel(pipe, path, base_sha256(path))
