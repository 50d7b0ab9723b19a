"""Random-weight Stable Diffusion checkpoints, built locally: for tests (tiny) and for benchmarks
of the real shape (sd15) where no weights can be downloaded. They are written in diffusers' folder
format, and `save_single_file` rewrites one as the single file that model sites distribute.

    save_random_sd("tiny-sd/", "tiny")
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import torch

from .single_file import CONFIGS, write_configs

# The tiny shape: (UNet channels), cross-attention heads' dim, (VAE channels), text encoder
# (width, layers, heads, MLP, vocabulary). "sd15" and "sd2" are those families' own configs
# (single_file.py).
TINY = dict(unet=(32, 64), head_dim=8, vae=(32, 64), text=(32, 5, 4, 37, 1000), sample=32)
FAMILY_OF_SHAPE = {"sd15": "v1", "sd2": "v2"}
SHAPES = ("tiny", *FAMILY_OF_SHAPE)


def save_random_sd(folder: str | Path, shape: str = "tiny", *, seed: int = 0) -> Path:
    """Write a random StableDiffusionPipeline of `shape` to `folder` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base"
    random_pipeline(shape, seed=seed, scratch=folder).save_pretrained(base)
    return base


def random_pipeline(shape: str = "tiny", *, seed: int = 0, scratch: str | Path):
    """A random StableDiffusionPipeline of `shape` in memory (its tokenizer's files go in `scratch`)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    torch.manual_seed(seed)
    if shape in FAMILY_OF_SHAPE:
        family = FAMILY_OF_SHAPE[shape]
        configs = CONFIGS[family]
        folder = write_configs(Path(scratch) / f"{family}-configs", family)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text_config = {k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "model_type")}
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        scheduler = DDIMScheduler.from_config(configs["scheduler"])  # SD 2.x's predicts v
    else:
        spec = TINY
        width, layers, heads, mlp, vocab_size = spec["text"]
        unet = UNet2DConditionModel(
            block_out_channels=spec["unet"], layers_per_block=2, sample_size=spec["sample"], in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=width,
            attention_head_dim=spec["head_dim"],
        )
        vae = AutoencoderKL(block_out_channels=list(spec["vae"]), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * len(spec["vae"]),
                            up_block_types=["UpDecoderBlock2D"] * len(spec["vae"]), layers_per_block=1)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=width, intermediate_size=mlp, num_attention_heads=heads,
                                                    num_hidden_layers=layers, vocab_size=vocab_size, bos_token_id=0,
                                                    eos_token_id=2, pad_token_id=1))
        tokenizer = letters_tokenizer(Path(scratch) / "vocabulary")
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def letters_tokenizer(folder: Path):
    """A small hand-written vocabulary (letters): enough to tokenise any prompt, no download."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def save_single_file(base, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """The pipeline `base` (or the diffusers folder of one) as one .safetensors in the original
    (LDM) layout of the SD 1.x files that model sites distribute: the UNet under
    model.diffusion_model., the VAE under first_stage_model., the text encoder under
    cond_stage_model.transformer. (SD 2.x's, whose cross-attention is 1024 wide: OpenCLIP's layout
    under cond_stage_model.model.) It is the inverse of diffusers' single-file import."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = base if isinstance(base, StableDiffusionPipeline) else \
        StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    state = {}
    text = (("cond_stage_model.model.", _open_clip_text(pipe.text_encoder)) if pipe.unet.config.cross_attention_dim == 1024
            else ("cond_stage_model.transformer.", _ldm_text(pipe.text_encoder)))
    for prefix, part in (("model.diffusion_model.", _ldm_unet(pipe.unet)), ("first_stage_model.", _ldm_vae(pipe.vae)), text):
        for name, value in part:
            state[prefix + name] = (value if dtype is None else value.to(dtype)).contiguous()
    out = Path(out)
    save_file(state, str(out))
    return out


def _ldm_text(text_encoder):
    """(LDM name, tensor) of the text encoder: Hugging Face's names under text_model., which newer
    transformers leaves out of its state dict."""
    for key, value in text_encoder.state_dict().items():
        yield (key if key.startswith("text_model.") else f"text_model.{key}"), value


OPEN_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def _open_clip_text(text_encoder):
    """(OpenCLIP name, tensor) of an SD 2.x text encoder: q, k and v fused into in_proj, and the
    tower's last layer, which SD 2.x files keep but never use (diffusers drops it), as zeros."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    yield "token_embedding.weight", state["embeddings.token_embedding.weight"]
    yield "positional_embedding", state["embeddings.position_embedding.weight"]
    yield "ln_final.weight", state["final_layer_norm.weight"]
    yield "ln_final.bias", state["final_layer_norm.bias"]
    layers = text_encoder.config.num_hidden_layers
    for i in range(layers + 1):
        source = f"encoder.layers.{min(i, layers - 1)}."
        take = (lambda name: state[source + name]) if i < layers else (lambda name: torch.zeros_like(state[source + name]))
        for kind in ("weight", "bias"):
            yield f"transformer.resblocks.{i}.attn.in_proj_{kind}", torch.cat(
                [take(f"self_attn.{p}_proj.{kind}") for p in "qkv"])
            for ours, theirs in OPEN_CLIP_LAYER.items():
                yield f"transformer.resblocks.{i}.{theirs}.{kind}", take(f"{ours}.{kind}")
    width = text_encoder.config.hidden_size
    yield "text_projection", torch.zeros(width, width)  # (width, embedding); SD 2.x ignores it


def _resnet(rest: str, names: dict[str, str]) -> str:
    first, _, tail = rest.partition(".")
    return f"{names.get(first, first)}.{tail}"


UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _ldm_unet(unet):
    """(LDM name, tensor) of a diffusers UNet: resnets and attentions numbered through
    input_blocks / middle_block / output_blocks, each down or up block using layers_per_block + 1
    slots (the last one holds the down- or upsampler)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    slots = unet.config.layers_per_block + 1
    attends = [hasattr(block, "attentions") for block in unet.up_blocks]
    for key, value in unet.state_dict().items():
        m = re.match(r"(down|up)_blocks\.(\d+)\.(\w+)\.(\d+)\.(.*)", key)
        if key in top:
            name = top[key]
        elif m:
            kind, b, part, i, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
            if kind == "down":
                name = {"resnets": f"input_blocks.{1 + b * slots + i}.0.{_resnet(rest, UNET_RESNET)}",
                        "attentions": f"input_blocks.{1 + b * slots + i}.1.{rest}",
                        "downsamplers": f"input_blocks.{(b + 1) * slots}.0.op.{rest.removeprefix('conv.')}"}[part]
            else:
                name = {"resnets": f"output_blocks.{b * slots + i}.0.{_resnet(rest, UNET_RESNET)}",
                        "attentions": f"output_blocks.{b * slots + i}.1.{rest}",
                        "upsamplers": f"output_blocks.{b * slots + slots - 1}.{2 if attends[b] else 1}.{rest}"}[part]
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
            name = (f"middle_block.{2 * int(m[2])}.{_resnet(m[3], UNET_RESNET)}" if m[1] == "resnets"
                    else f"middle_block.1.{m[3]}")
        else:
            raise ValueError(f"no LDM name for the UNet's {key}")
        yield name, value


VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def _ldm_vae(vae):
    """(LDM name, tensor) of a diffusers VAE: the decoder's up blocks count the other way, and the
    mid attention's projections are 1x1 convolutions."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    blocks = len(vae.config.up_block_types)
    shortcut = {"conv_shortcut": "nin_shortcut"}
    for key, value in vae.state_dict().items():
        if key in top:
            name = top[key]
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)", key):
            name = (f"encoder.down.{m[1]}.block.{m[3]}.{_resnet(m[4], shortcut)}" if m[2] == "resnets"
                    else f"encoder.down.{m[1]}.downsample.{m[4]}")
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", key):
            up = blocks - 1 - int(m[1])
            name = (f"decoder.up.{up}.block.{m[3]}.{_resnet(m[4], shortcut)}" if m[2] == "resnets"
                    else f"decoder.up.{up}.upsample.{m[4]}")
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet(m[3], shortcut)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+)\.(?:0\.)?(weight|bias)", key):
            name = f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and value.dim() == 2:
                value = value[:, :, None, None]
        else:
            raise ValueError(f"no LDM name for the VAE's {key}")
        yield name, value
