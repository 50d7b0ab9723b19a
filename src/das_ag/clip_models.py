"""Which CLIPs a run uses: `--clip-model SPEC[:WEIGHT]`, repeatable, and loading open_clip's.

A SPEC is one of
- an OpenAI CLIP name the `clip` package knows (ViT-L/14, ViT-B/32, ...), downloaded into das-ag's
  cache and checked against the sha256 in OpenAI's address, or a path to such a checkpoint;
- `open_clip:ARCH@PRETRAINED`: an open-clip-torch model, ARCH one of `open_clip.list_models()`
  (or a path to a model-config .json of your own) and PRETRAINED one of its tags (downloaded by
  open_clip into das-ag's cache) or a path to a weights file.

WEIGHT (default 1) is the encoder's share of the ensemble. 0 loads an encoder for the aesthetic
head alone: `--clip-model ViT-B/32 --clip-model ViT-L/14:0` guides by ViT-B/32 and scores with
ViT-L/14 only when the aesthetic term is applied (see --aesthetic-every).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .errors import ConfigError, WeightsError, first_line

# OpenAI CLIP's image normalisation, which most open_clip models share.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

OPEN_CLIP = "open_clip:"


@dataclass(frozen=True)
class EncoderSpec:
    source: str  # an OpenAI name or path, or open_clip:ARCH@PRETRAINED
    weight: float = 1.0

    @property
    def is_open_clip(self) -> bool:
        return self.source.startswith(OPEN_CLIP)

    def text(self) -> str:
        return self.source if self.weight == 1 else f"{self.source}:{self.weight:g}"


def parse_encoder(text: str) -> EncoderSpec:
    """"ViT-B/32", "ViT-B/32:0.5" or "open_clip:ViT-B-32@laion2b_s34b_b79k:2" -> EncoderSpec."""
    text = str(text).strip()
    source, sep, weight = text.rpartition(":")
    if sep and source:
        try:
            value = float(weight)
        except ValueError:
            return EncoderSpec(text)  # a colon that is part of the name
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"the weight of CLIP model {source} must be a finite number >= 0, not {weight}")
        return EncoderSpec(source, value)
    if not text:
        raise ConfigError("a CLIP model needs a name or a path")
    return EncoderSpec(text)


def encoder_problems(specs: tuple[str, ...]) -> list[str]:
    """Why a config's list of CLIP models cannot be an ensemble, in words."""
    p = []
    try:
        parsed = [parse_encoder(s) for s in specs]
    except ConfigError as exc:
        return [str(exc)]
    if parsed and not any(s.weight > 0 for s in parsed):
        p.append("at least one CLIP model needs a weight above 0 (weight 0 serves the aesthetic head alone)")
    for s in parsed:
        if s.is_open_clip and "@" not in s.source:
            p.append(f"{s.source}: name the weights as open_clip:ARCH@PRETRAINED (a tag or a file)")
    return p


def load_open_clip(source: str, cache: Path) -> tuple[nn.Module, Path, str]:
    """An open_clip model from `open_clip:ARCH@PRETRAINED`, frozen fp32 on the CPU, with the file
    its weights came from and its name for the recipe. Every failure is a one-line WeightsError."""
    try:
        import open_clip
    except ImportError:
        raise WeightsError("open_clip models need open-clip-torch: uv sync (it is a dependency of das-ag)") from None
    arch, _, pretrained = source.removeprefix(OPEN_CLIP).partition("@")
    if arch.endswith(".json"):
        config = Path(arch).expanduser()
        if not config.is_file():
            raise WeightsError(f"open_clip model config {arch} does not exist")
        open_clip.add_model_config(config)
        arch = config.stem
    if arch not in open_clip.list_models():
        raise WeightsError(f"{arch} is not an open_clip model; `python -c \"import open_clip; "
                           f"print(open_clip.list_models())\"` lists them")
    tokenizer = open_clip.get_tokenizer(arch)
    if type(tokenizer).__name__ != "SimpleTokenizer" or getattr(tokenizer, "context_length", 77) != 77:
        raise WeightsError(f"open_clip model {arch} reads text with its own tokenizer; das-ag's prompts are "
                           "tokenised for CLIP's (77 tokens), so choose a model that uses it")
    path = Path(pretrained).expanduser()
    if not path.is_file():
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in tags:
            raise WeightsError(f"{pretrained or '(none)'} is neither a file nor a pretrained tag of open_clip's {arch}"
                               f" ({', '.join(tags) or 'it has none'})")
        try:
            downloaded = open_clip.download_pretrained(open_clip.get_pretrained_cfg(arch, pretrained),
                                                      cache_dir=str(cache / "open_clip"))
        except Exception as exc:  # no network, a hub error
            raise WeightsError(f"could not download open_clip {arch}@{pretrained} ({first_line(exc, 200)}); "
                               "download it where the network allows and give its path after @") from None
        if not downloaded:
            raise WeightsError(f"open_clip has no download for {arch}@{pretrained}")
        path = Path(downloaded)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_clip.create_model(arch, pretrained=str(path), device="cpu")
    except Exception as exc:
        raise WeightsError(f"{path} does not load as open_clip's {arch} ({first_line(exc, 200)})") from None
    name = f"{OPEN_CLIP}{arch}@{pretrained if not Path(pretrained).expanduser().is_file() else path.name}"
    return model, path, name


def in_cache(source: str, cache: Path) -> bool:
    """Whether loading `source` (a CLIP name, a path, open_clip:ARCH@PRETRAINED) needs no download:
    a file, or a name whose weights the cache holds. An unknown name counts as cached, so that
    loading it says what is wrong with it."""
    from .weights import clip_weight_file

    if not source.startswith(OPEN_CLIP):
        wf = clip_weight_file(source)
        return Path(source).expanduser().is_file() or wf is None or (cache / wf.filename).is_file()
    arch, _, pretrained = source.removeprefix(OPEN_CLIP).partition("@")
    if Path(pretrained).expanduser().is_file():
        return True
    try:
        import open_clip
        from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives, has_hf_hub
    except ImportError:
        return True
    cfg = open_clip.get_pretrained_cfg(arch, pretrained) if not arch.endswith(".json") else {}
    if not cfg or "file" in cfg:
        return True
    # Where open_clip.download_pretrained would put it: the hub's cache layout, else the URL's name.
    if cfg.get("hf_hub") and has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(cfg["hf_hub"])
        names = [*_get_safe_alternatives(filename or HF_WEIGHTS_NAME), filename or HF_WEIGHTS_NAME]
        return any(isinstance(try_to_load_from_cache(model_id, name, cache_dir=str(cache / "open_clip")), str)
                   for name in names)
    return bool(cfg.get("url")) and (cache / "open_clip" / os.path.basename(cfg["url"])).is_file()


def preprocessing(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std an open_clip model's images are normalised with (OpenAI's for most)."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))


def named_only_problems(specs: tuple[str, ...]) -> list[str]:
    """The studio takes CLIPs by name only (OpenAI's names, open_clip's ARCH@TAG): a page visitor
    must not make the server load whatever file a path names."""
    from .weights import known_clip_models

    p = []
    for text in specs:
        spec = parse_encoder(text)
        if spec.is_open_clip:
            arch, _, tag = spec.source.removeprefix(OPEN_CLIP).partition("@")
            if arch.endswith(".json") or "/" in tag or "\\" in tag or tag.endswith((".bin", ".pt", ".safetensors")):
                p.append(f"{spec.source}: the studio takes open_clip models by name and tag only, not files")
        elif spec.source not in known_clip_models():
            p.append(f"{spec.source}: the studio takes CLIP models by name only ({', '.join(known_clip_models())}, "
                     "or open_clip:ARCH@TAG); the server's own CLIP is the default")
    return p
