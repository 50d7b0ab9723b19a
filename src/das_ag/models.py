"""The frozen models a run reads: CLIP (through the `clip` package) and the aesthetic head.

`load_models` loads each pair once per process and device and hands the same ModelBundle to every
later caller (the app, batch runs), which is what keeps a second generation instant.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Collection, Sequence

import torch
from torch import nn

from . import determinism, weights
from .clip_models import CLIP_MEAN, CLIP_STD, in_cache, load_open_clip, parse_encoder, preprocessing
from .cpu_routes import CpuRoute
from .encoder import speed_up_image_encoder, speed_up_open_clip_encoder, with_cpu_route, with_matmul_weights_in
from .resample import resize
from .errors import DeviceError, WeightsError, first_line

EMBED_DIM = 768  # ViT-L/14's projection width, which the aesthetic head was trained on


def per_channel(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`values` as a (1, C, 1, 1) tensor on `device`. Eagerly it is made once: made at every step,
    it would be copied from the host each time, and a blocking copy makes the host wait for the
    GPU. Traced into a compiled step, it is filled on the device, and the compiler folds the
    numbers into its kernels (see resample_matrix_on for why not a constant the graph holds)."""
    if torch.compiler.is_compiling():
        return torch.stack([torch.full((), v, device=device, dtype=dtype) for v in values]).view(1, -1, 1, 1)
    return _per_channel(values, device, dtype)


@functools.lru_cache(maxsize=64)
def _per_channel(values, device, dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)


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
class ClipEncoder:
    """One CLIP of a run: the frozen model, its weight in the ensemble, where it came from.

    `kind` is "openai" (the `clip` package's models) or "open_clip" (open-clip-torch's). `fast`:
    its vision tower runs on encoder.py's fast blocks (every OpenAI ViT, and open_clip's ViTs with
    CLIP's blocks); any other open_clip architecture runs as open_clip built it.
    """

    model: nn.Module
    identity: ModelIdentity
    weight: float = 1.0
    kind: str = "openai"
    device: torch.device = torch.device("cpu")
    fast: bool = True
    # What its images are normalised with, when not OpenAI's (some open_clip models).
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    _encoders: dict = field(default_factory=dict, repr=False)  # (dtype, CPU route) -> image encoder

    @property
    def input_resolution(self) -> int:
        size = getattr(self.model.visual, "input_resolution", None) or self.model.visual.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def width(self) -> int:
        """The embedding width (768 for ViT-L/14, the aesthetic head's)."""
        out = getattr(self.model.visual, "output_dim", None)
        return int(out) if out is not None else int(self.model.text_projection.shape[1])

    def encode_images(self, normalized: torch.Tensor, *, dtype: torch.dtype = torch.float32,
                      route: CpuRoute | None = None) -> torch.Tensor:
        """L2-normalised fp32 embeddings of a CLIP-normalised batch, resized to this encoder's input."""
        normalized = resize(normalized, self.input_resolution, "bilinear", antialias=True)
        if (self.mean, self.std) != (CLIP_MEAN, CLIP_STD):  # from OpenAI's normalisation to this model's
            old_mean, old_std, new_mean, new_std = (per_channel(tuple(v), normalized.device, normalized.dtype)
                                                    for v in (CLIP_MEAN, CLIP_STD, self.mean, self.std))
            normalized = (normalized * old_std + old_mean - new_mean) / new_std
        encoder = self.image_encoder(dtype, route=route)
        if not self.fast and self.device.type == "cpu":
            # An architecture the fast encoder does not cover: under CPU autocast it recasts every
            # weight each step, and open_clip's ViT-B-32 ran at half its float32 speed that way.
            dtype = torch.float32
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            e = encoder(normalized).float()
        return e / e.norm(dim=-1, keepdim=True)

    def image_encoder(self, dtype: torch.dtype = torch.float32, *, route: CpuRoute | None = None) -> nn.Module:
        """The image encoder for runs in `dtype`, made once (a copy is slow).

        `route`, on the CPU: the way an optimisation loop's steps run (cpu_routes.py), say its
        matmuls on weights prepacked for oneDNN (encoder.FrozenLinear), which pays over the loop's
        many forwards and backwards but costs 1.2 GB more for ViT-L/14 in bf16, 2.4 GB in float32;
        a one-off encoding (scoring an image) gives none. Otherwise, below float32, its matmul
        weights are a copy stored in `dtype`, so autocast does not cast them again on every step.
        An encoder that is not `fast` runs as loaded. (A compiled run compiles its whole step,
        this encoder inside it: engine.compiled_step.)
        """
        fast = self.fast
        route = route if fast and self.device.type == "cpu" else None
        key = (dtype, route)
        if key not in self._encoders:  # (what a route needs is made once, not at every step)
            visual = self.model.visual
            if route is not None:
                self._encoders[key] = with_cpu_route(visual, route, dtype)
            elif dtype == torch.float32 or not fast:
                self._encoders[key] = visual
            else:
                self._encoders[key] = with_matmul_weights_in(visual, dtype)
        return self._encoders[key]

    @torch.no_grad()
    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.model.encode_text(tokens.to(self.device)).float()
        return t / t.norm(dim=-1, keepdim=True)


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """The encoders of a run and the aesthetic head.

    With one encoder (the usual ViT-L/14) its embeddings are what every term reads. With an
    ensemble, the embedding of an image is the concatenation of each guiding encoder's (weight
    > 0) unit embedding scaled by sqrt(its share of the weights): still a unit vector, and its dot
    product with a text's embedding made the same way is the weighted mean of the encoders'
    similarities. So every term that compares embeddings (text, image prompts, styles) works on an
    ensemble unchanged. The aesthetic head reads its own ViT-L/14's part (`head_embedding`); an
    encoder of weight 0 serves the head alone and runs only when the aesthetic term does.
    """

    encoders: tuple[ClipEncoder, ...]
    aesthetic_head: AestheticHead | None
    device: torch.device
    aesthetic_identity: ModelIdentity | None

    # -- the first encoder, as a single-CLIP run knows it ------------------------------------
    @property
    def clip(self) -> nn.Module:
        return self.encoders[0].model

    @property
    def clip_identity(self) -> ModelIdentity:
        return self.encoders[0].identity

    @property
    def width(self) -> int:
        """The width of the embeddings the terms read (an ensemble's parts together)."""
        return sum(g.width for g in self.guides)

    @functools.cached_property
    def guides(self) -> tuple[ClipEncoder, ...]:
        """The encoders whose embeddings the terms read (weight > 0)."""
        return tuple(e for e in self.encoders if e.weight > 0)

    @functools.cached_property
    def head_encoder(self) -> ClipEncoder | None:
        """The encoder the aesthetic head reads (a 768-d ViT-L/14), when there is a head."""
        if self.aesthetic_head is None:
            return None
        # An encoder of weight 0 is there for the head alone; else the one named ViT-L/14; else
        # the first 768-d one (a checkpoint path says nothing of its architecture).
        fits = [e for e in self.encoders if e.width == EMBED_DIM]
        ranked = sorted(fits, key=lambda e: (e.weight > 0, not any(n in e.identity.name for n in ("L/14", "L-14"))))
        return ranked[0] if ranked else None

    def identities(self) -> dict:
        """What a recipe records about the weights: name and sha256 of each file (and each
        encoder's weight, for an ensemble)."""
        out: dict = {"clip": self.clip_identity.to_dict()}
        if self.aesthetic_identity is not None:
            out["aesthetic"] = self.aesthetic_identity.to_dict()
        if len(self.encoders) > 1:
            out["encoders"] = [{**e.identity.to_dict(), "weight": e.weight} for e in self.encoders]
        return out

    @property
    def input_resolution(self) -> int:
        """The side views are made at: the largest input of the guiding encoders (each resizes)."""
        return max(e.input_resolution for e in (self.guides or self.encoders))

    def encode_images(self, normalized: torch.Tensor, *, dtype: torch.dtype = torch.float32,
                      routes: dict | None = None) -> torch.Tensor:
        """Unit embeddings of a CLIP-normalised batch (N, 3, R, R): one encoder's, or the
        ensemble's concatenation (see the class). `routes`: each encoder's CPU route in a loop."""
        return self._joined([g.encode_images(normalized, dtype=dtype, route=(routes or {}).get(g))
                             for g in self.guides])

    @property
    def loop_encoders(self) -> tuple[ClipEncoder, ...]:
        """The encoders an optimisation step may run: the guides, and the head's own."""
        head = self.head_encoder
        return self.guides + ((head,) if head is not None and head not in self.guides else ())

    def make_image_encoders(self, dtype: torch.dtype, *, routes: dict | None = None) -> None:
        """Make every image encoder a step in `dtype` may run, now: a compiled step must find
        them made (making one, a weight copy or prepacking, cannot be traced)."""
        for encoder in self.loop_encoders:
            encoder.image_encoder(dtype, route=(routes or {}).get(encoder))

    @torch.no_grad()
    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._joined([g.encode_texts(tokens) for g in self.guides])

    def _joined(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if len(parts) == 1:
            return parts[0]
        total = sum(g.weight for g in self.guides)
        return torch.cat([p * math.sqrt(g.weight / total) for p, g in zip(parts, self.guides)], dim=-1)

    def parts(self, embedding: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each guiding encoder's unit embedding inside an ensemble's, by encoder name."""
        out, start = [], 0
        for g in self.guides:
            part = embedding[..., start:start + g.width]
            out.append((g.identity.name, part / part.norm(dim=-1, keepdim=True)))
            start += g.width
        return out

    def head_embedding(self, embedding: torch.Tensor, views: torch.Tensor | None = None, **encode) -> torch.Tensor:
        """The head encoder's unit embedding of the images of `embedding`: its part of it when it
        guides, else its own forward of `views` (with `encode`'s dtype and options)."""
        head = self.head_encoder
        if head is None:
            raise WeightsError("the aesthetic head needs a ViT-L/14 among the CLIP models")
        if head.weight > 0:
            if len(self.guides) == 1:
                return embedding
            return dict(self.parts(embedding))[head.identity.name]
        if views is None:
            raise ValueError("the aesthetic head's encoder runs on its own: it needs the views")
        dtype, routes = encode.get("dtype", torch.float32), encode.get("routes") or {}
        return head.encode_images(views, dtype=dtype, route=routes.get(head))

    @property
    def head_is_separate(self) -> bool:
        """Whether the aesthetic score costs a forward of its own (its encoder has weight 0)."""
        head = self.head_encoder
        return head is not None and head.weight == 0

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
    clip_source: str | Sequence[str] | None = None,
    aesthetic_source: str | None = None,
    device: str = "auto",
    *,
    download: bool | Collection[str] = True,
    need_head: bool = True,
) -> ModelBundle:
    """The CLIP(s) and the aesthetic head on `device`, frozen; the same bundle for the same files.

    `clip_source` is a CLIP (clip_models: a name downloaded into the cache and verified, a
    checkpoint path, or open_clip:ARCH@PRETRAINED), each optionally :WEIGHT, or a list of them
    for an ensemble; unset, CLIP_MODEL_PATH and then ViT-L/14 are used. `aesthetic_source` is a
    path; unset, AESTHETIC_PREDICTOR_PATH and then the verified cached download are used.
    `download`: whether a model absent from the cache may be downloaded, or the CLIP names that
    may (the studio's allow-list: a visitor must not make the server fetch gigabytes). The
    head reads a 768-d ViT-L/14: without one the bundle has no head, which only a run with
    guidance off accepts (`need_head=False`, when a missing head file is no error either).
    """
    weights.load_environment()
    dev = resolve_device(device)
    if dev.type == "cuda":
        determinism.reserve_cuda_workspace()  # before CUDA starts, so deterministic runs stay possible
    members, head_path = _resolve_files(clip_source, aesthetic_source, download, need_head)
    bundle = _load_bundle(members, head_path, dev)
    if need_head and bundle.aesthetic_head is None:
        widths = ", ".join(f"{e.identity.name} {e.width}-d" for e in bundle.encoders)
        raise WeightsError(f"the aesthetic head reads ViT-L/14's 768-d embeddings and no CLIP here gives them ({widths}); "
                           "add --clip-model ViT-L/14:0 for the head alone, or use --guidance off")
    return bundle


def missing_weights(clip_source: str | Sequence[str] | None = None, aesthetic_source: str | None = None, *,
                    need_head: bool = True) -> str | None:
    """What this machine lacks to load these models without downloading, in a line (None when it
    has them all, verified): what each node of a cluster is asked before a plan starts there."""
    weights.load_environment()
    try:
        _resolve_files(clip_source, aesthetic_source, False, need_head)
    except WeightsError as exc:
        return str(exc)
    return None


def _resolve_files(clip_source, aesthetic_source, download: bool | Collection[str], need_head: bool):
    """The (source, file, weight) of each CLIP and the head's file, as load_models reads them."""
    sources = [clip_source] if clip_source is None or isinstance(clip_source, str) else list(clip_source)
    members = []
    for text in sources:
        spec = parse_encoder(weights.clip_source(text))
        allowed = download if isinstance(download, bool) else spec.source in download
        if not allowed and not in_cache(spec.source, weights.cache_dir()):
            offered = "downloads are off" if download is False else (
                f"this server downloads only {', '.join(sorted(download)) or 'none'} for the studio; choose another CLIP")
            raise WeightsError(f"CLIP model {spec.source} is not in the cache {weights.cache_dir()}, and {offered}")
        if spec.is_open_clip:
            members.append((spec.source, None, spec.weight))
        else:
            members.append((spec.source, weights.resolve_clip(spec.source, download=allowed).resolve(), spec.weight))
    head_path = None
    try:
        # The head is the default CLIP's partner: a server that downloads anything downloads it.
        head_path = weights.resolve_aesthetic(aesthetic_source, download=bool(download) and need_head).resolve()
    except WeightsError:
        if need_head:
            raise
    return tuple(members), head_path


@functools.lru_cache(maxsize=4)
def _load_bundle(members: tuple[tuple[str, Path | None, float], ...], head_path: Path | None,
                 device: torch.device) -> ModelBundle:
    encoders = [_load_encoder(source, path, weight, device) for source, path, weight in members]
    head = aesthetic_identity = None
    if head_path is not None and any(e.width == EMBED_DIM for e in encoders):
        head = load_aesthetic_head(head_path).to(device)
        aesthetic_identity = ModelIdentity(head_path.name, weights.verified_sha256(head_path))
    return ModelBundle(encoders=tuple(encoders), aesthetic_head=head, device=device,
                       aesthetic_identity=aesthetic_identity)


def _load_encoder(source: str, path: Path | None, weight: float, device: torch.device) -> ClipEncoder:
    if path is None:  # open_clip:ARCH@PRETRAINED
        model, path, name = load_open_clip(source, weights.cache_dir())
        model = _frozen(model.float())
        fast = speed_up_open_clip_encoder(model.visual)  # a ViT of CLIP's blocks: the fast encoder
        mean, std = preprocessing(model)
        return ClipEncoder(model.to(device), ModelIdentity(name, weights.verified_sha256(path)), weight, "open_clip",
                           device, fast, mean=mean, std=std)
    is_named = weights.clip_weight_file(source) is not None
    identity = ModelIdentity(source if is_named else path.name, weights.verified_sha256(path))
    return ClipEncoder(load_clip(path).to(device), identity, weight, "openai", device)


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

