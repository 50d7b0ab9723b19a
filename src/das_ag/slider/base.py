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
from . import existing, one_line, quiet_libraries
from .single_file import load_single_file, pipeline_class, pipeline_options

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")
# The precisions the slider trains and samples in. Half precision with float16 needs loss scaling
# (its gradients underflow); bfloat16 has float32's range, so it needs none.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_precision(name: str, device: torch.device) -> str:
    """"auto": bfloat16 on a GPU that has it (half the memory, its fast path), float32 otherwise."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be auto, {' or '.join(PRECISIONS)}, not {name!r}")
    return name


PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class BaseModel:
    pipe: object  # a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline
    path: Path
    sha256: str
    note: str = ""  # what loading assumed, for the user to check (an SD 2.x file's prediction type)

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def precision(self) -> str:
        dtype = self.pipe.unet.dtype
        return next((k for k, v in PRECISIONS.items() if v == dtype), str(dtype).removeprefix("torch."))

    def to_precision(self, precision: str) -> None:
        """The frozen models in `precision` (fp32 or bf16), cast in place."""
        if self.pipe.unet.dtype != PRECISIONS[precision]:
            with quiet_libraries():  # it warns that it casts models it was asked to cast
                self.pipe.to(dtype=PRECISIONS[precision])

    @property
    def native_resolution(self) -> int:
        """The side of the pictures the base model was made for: 512 for SD 1.x, 768 for SD 2.x-768,
        1024 for SDXL (its UNet's latent size times the VAE's scale)."""
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    @property
    def prediction_type(self) -> str:
        return self.pipe.scheduler.config.prediction_type

    @property
    def is_xl(self) -> bool:
        return type(self.pipe).__name__ == "StableDiffusionXLPipeline"

    def identity(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "prediction_type": self.prediction_type,
                "pipeline": type(self.pipe).__name__}


def base_sha256(path: Path) -> str:
    """One checksum of a checkpoint: of its file, or of its folder's weight and config files."""
    if path.is_file():
        return verified_sha256(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.suffix == ".json")):
        h.update(f"{file.relative_to(path).as_posix()} {verified_sha256(file)}\n".encode())
    return h.hexdigest()


def load_base(path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32,
              config: str | Path | None = None, prediction_type: str | None = None) -> BaseModel:
    """The pipeline of a local checkpoint, frozen, on `device`. A single file carries no configs:
    das-ag supplies SD 1.x's and 2.x's, and any other family needs `config`, a local diffusers
    folder of the same family (offline, diffusers would otherwise look for them on the hub).
    `prediction_type` overrides what the UNet is taken to predict (epsilon or v_prediction)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import diffusers
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import DDIMScheduler

    # das-ag draws its own progress; the libraries' loading bars would only clutter it.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    path = existing(path, "base checkpoint", folder_ok=True)
    if prediction_type not in (None, *PREDICTION_TYPES):
        raise ConfigError(f"prediction type must be {' or '.join(PREDICTION_TYPES)}, not {prediction_type!r}")
    note = ""
    options = dict(dtype=dtype, local_files_only=True)
    try:
        if path.is_dir():
            kind = pipeline_class(path)
            pipe = getattr(diffusers, kind).from_pretrained(path, **pipeline_options(kind, options))
        elif path.suffix.lower() in (".safetensors", ".ckpt"):
            pipe, note = load_single_file(path, config, options, prediction_type)
        else:
            raise DasAgError(f"{path} is not a Stable Diffusion checkpoint (a diffusers folder or a .safetensors file)")
    except DasAgError:
        raise
    except Exception as exc:  # diffusers raises many kinds for a file it cannot read
        raise DasAgError(f"{path} could not be loaded as a Stable Diffusion checkpoint ({one_line(exc)})") from None
    if pipe.unet.config.in_channels != pipe.vae.config.latent_channels:
        # An inpainting (or depth, or instruct) UNet also reads a mask or a picture beside the latent.
        raise DasAgError(f"{path} is a UNet of {pipe.unet.config.in_channels} input channels (an inpainting or other "
                         f"conditioned model); the slider trains text-to-image models of {pipe.vae.config.latent_channels}")
    # DDIM: deterministic steps (eta 0), the scheduler the slider's loop and the samples share.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config,
                                               **({"prediction_type": prediction_type} if prediction_type else {}))
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if part is None:
            continue
        part.requires_grad_(False)
        part.eval()
    return BaseModel(pipe, path, base_sha256(path), note)
