"""The frozen models a run reads: CLIP (through the `clip` package) and the aesthetic head.

`load_models` loads each pair once per process and device and hands the same ModelBundle to every
later caller (the app, batch runs), which is what keeps a second generation instant.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import determinism, weights
from .encoder import packing_available, speed_up_image_encoder, with_matmul_weights_in, with_packed_matmul_weights
from .errors import DeviceError, WeightsError, first_line

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EMBED_DIM = 768  # ViT-L/14's projection width, which the aesthetic head was trained on


class AestheticHead(nn.Module):
    """LAION's "improved aesthetic predictor": five linear layers on a normalised CLIP embedding.

    It has no activations, so it is affine: score = bias + w . e. Dropout is kept in the layer list
    only so that the published state-dict keys (layers.0/2/4/6/7) load unchanged; das-ag always
    runs it in eval mode, fixing the references' noisy train-mode scores.
    """

    def __init__(self, input_size: int = EMBED_DIM):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding).squeeze(-1)


@dataclass(frozen=True)
class ModelIdentity:
    """What a recipe records about a weight file, so a result can be traced to exact weights."""

    name: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


@dataclass(frozen=True, eq=False)
class ModelBundle:
    clip: nn.Module
    aesthetic_head: AestheticHead
    device: torch.device
    clip_identity: ModelIdentity
    aesthetic_identity: ModelIdentity
    _encoders: dict = field(default_factory=dict, repr=False)  # (dtype, compiled, packed) -> image encoder

    def identities(self) -> dict[str, dict[str, str]]:
        """What a recipe records about the weights: name and sha256 of each file."""
        return {"clip": self.clip_identity.to_dict(), "aesthetic": self.aesthetic_identity.to_dict()}

    @property
    def input_resolution(self) -> int:
        return int(self.clip.visual.input_resolution)

    def encode_images(
        self,
        normalized: torch.Tensor,
        *,
        compiled: bool = False,
        dtype: torch.dtype = torch.float32,
        packed: bool = False,
    ) -> torch.Tensor:
        """L2-normalised embeddings of a CLIP-normalised batch (N, 3, 224, 224).

        Below float32 the encoder runs under autocast in `dtype`, with its matmul weights already
        in that dtype; `packed` asks for the encoder an optimisation loop runs (see `image_encoder`).
        """
        encoder = self.image_encoder(dtype, compiled=compiled, packed=packed)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            e = encoder(normalized).float()
        return e / e.norm(dim=-1, keepdim=True)

    def image_encoder(
        self, dtype: torch.dtype = torch.float32, *, compiled: bool = False, packed: bool = False
    ) -> nn.Module:
        """The image encoder for runs in `dtype`, made once per bundle (a copy, or a compile, is slow).

        `packed`, on the CPU: its matmuls run on weights prepacked for oneDNN (encoder.FrozenLinear),
        which pays over an optimisation loop's many forwards and backwards but costs 1.2 GB more
        for ViT-L/14 in bf16, 2.4 GB in float32; a one-off encoding (scoring an image) leaves it off.
        Otherwise, below float32, its matmul weights are a copy stored in `dtype`, so autocast does
        not cast them again on every step.
        `compiled` wraps that same encoder in torch.compile (the packed products run as they are,
        between compiled graphs); on CUDA it also records CUDA graphs ("reduce-overhead"): eager
        ViT-L/14 spends most of a step launching ~1,000 small kernels from Python, which a graph
        replays at once.
        """
        packed = packed and self.device.type == "cpu" and packing_available(dtype)
        key = (dtype, compiled, packed)
        if key not in self._encoders:
            visual = self.clip.visual
            if compiled:
                use_compile_cache()
                mode = "reduce-overhead" if self.device.type == "cuda" else None
                self._encoders[key] = torch.compile(self.image_encoder(dtype, packed=packed), mode=mode)
            elif packed:
                self._encoders[key] = with_packed_matmul_weights(visual, dtype)
            elif dtype == torch.float32:
                self._encoders[key] = visual
            else:
                self._encoders[key] = with_matmul_weights_in(visual, dtype)
        return self._encoders[key]

    @torch.no_grad()
    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.clip.encode_text(tokens.to(self.device)).float()
        return t / t.norm(dim=-1, keepdim=True)

    def aesthetic_score(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.aesthetic_head(embedding.float())


_COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_compile_cache() -> Path:
    """Keep torch.compile's artefacts in das-ag's cache folder (a TORCHINDUCTOR_CACHE_DIR the user
    set wins), so a second process or a restarted studio reuses the compiled kernels instead of
    waiting for the compiler again; torch's default, a folder in /tmp, is lost on reboot."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # torch writes its /tmp default into the environment the first time it looks (importing
    # torchvision does): that value is torch's, not the user's.
    chosen = os.environ.get(_COMPILE_CACHE_ENV)
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ[_COMPILE_CACHE_ENV] = str(weights.cache_dir() / "torch-compile")
    return Path(os.environ[_COMPILE_CACHE_ENV])


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} was asked for but this torch sees no CUDA GPU; use --device cpu or auto")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def load_models(
    clip_source: str | None = None,
    aesthetic_source: str | None = None,
    device: str = "auto",
    *,
    download: bool = True,
) -> ModelBundle:
    """CLIP and the aesthetic head on `device`, frozen; the same bundle for the same files and device.

    `clip_source` is a model name (downloaded into the cache and verified) or a checkpoint path;
    unset, CLIP_MODEL_PATH and then ViT-L/14 are used. `aesthetic_source` is a path; unset,
    AESTHETIC_PREDICTOR_PATH and then the verified cached download are used.
    """
    weights.load_environment()
    dev = resolve_device(device)
    if dev.type == "cuda":
        determinism.reserve_cuda_workspace()  # before CUDA starts, so deterministic runs stay possible
    clip_name = weights.clip_source(clip_source)
    clip_path = weights.resolve_clip(clip_name, download=download)
    head_path = weights.resolve_aesthetic(aesthetic_source, download=download)
    return _load_bundle(clip_name, clip_path.resolve(), head_path.resolve(), dev)


@functools.lru_cache(maxsize=4)
def _load_bundle(clip_name: str, clip_path: Path, head_path: Path, device: torch.device) -> ModelBundle:
    clip_model = load_clip(clip_path).to(device)
    head = load_aesthetic_head(head_path).to(device)
    is_named = weights.clip_weight_file(clip_name) is not None
    return ModelBundle(
        clip=clip_model,
        aesthetic_head=head,
        device=device,
        clip_identity=ModelIdentity(clip_name if is_named else clip_path.name, weights.verified_sha256(clip_path)),
        aesthetic_identity=ModelIdentity(head_path.name, weights.verified_sha256(head_path)),
    )


def load_clip(path: Path) -> nn.Module:
    """A frozen fp32 CLIP from an OpenAI checkpoint (TorchScript archive or state dict), on the CPU."""
    from .clip_package import clip_module

    clip = clip_module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = clip.load(str(path), device="cpu", jit=False)
    except Exception as exc:  # clip raises whatever torch.load or build_model raised
        raise WeightsError(f"{path} is not a loadable OpenAI CLIP checkpoint ({first_line(exc, 200)})") from None
    if not hasattr(model.visual, "proj"):
        raise WeightsError(f"{path} is a ResNet CLIP; das-ag needs a ViT CLIP such as ViT-L/14")
    width = model.text_projection.shape[1]
    if width != EMBED_DIM:
        raise WeightsError(
            f"{path} gives {width}-d embeddings but the aesthetic head needs ViT-L/14's {EMBED_DIM}-d"
        )
    model = _frozen(model.float())
    speed_up_image_encoder(model.visual)
    return model


def load_aesthetic_head(path: Path) -> AestheticHead:
    """The aesthetic head from a state dict, refusing anything that is not exactly that network."""
    try:
        # The published file was saved from cuda:0, so map it to the CPU; never unpickle code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a PyTorch checkpoint ({first_line(exc, 200)})") from None
    head = AestheticHead()
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    got = (
        {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state.items()}
        if isinstance(state, dict)
        else None
    )
    if got != expected:
        raise WeightsError(
            f"{path} is not an improved-aesthetic-predictor head (expected a 768-1024-128-64-16-1 linear state dict)"
        )
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return _frozen(head)


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module

