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

from .ldm_names import ldm_unet_name, resnet_name
from .single_file import CONFIGS, write_configs

# The tiny shape: (UNet channels), cross-attention heads' dim, (VAE channels), text encoder
# (width, layers, heads, MLP, vocabulary). "tiny-xl" is SDXL's architecture at that size: a second,
# projecting text tower (ten layers, as SDXL files' tell-tale tensor names need, and wider than
# the first, which is how diffusers tells the towers of a single file apart), both towers'
# states side by side for cross-attention, the pooled embedding and size numbers added to the time
# embedding, and levels of 1 and 2 transformer layers. "sd15", "sd2" and "sdxl" are those families'
# own configs (single_file.py).
TINY = dict(unet=(32, 64), head_dim=8, vae=(32, 64), text=(32, 5, 4, 37, 1000), sample=32)
TINY_XL = dict(text_2=(48, 10, 4, 61, 1000), projection=24, time_dim=8, transformer_layers=(1, 2))
FAMILY_OF_SHAPE = {"sd15": "v1", "sd2": "v2", "sdxl": "xl_base"}
SHAPES = ("tiny", "tiny-xl", *FAMILY_OF_SHAPE)


def save_random_sd(folder: str | Path, shape: str = "tiny", *, seed: int = 0) -> Path:
    """Write a random Stable Diffusion (or SDXL) pipeline of `shape` to `folder` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base"
    random_pipeline(shape, seed=seed, scratch=folder).save_pretrained(base)
    return base


def _text_config(config: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})


def random_pipeline(shape: str = "tiny", *, seed: int = 0, scratch: str | Path):
    """A random pipeline of `shape` in memory (its tokenizers' files go in `scratch`):
    StableDiffusionPipeline, or StableDiffusionXLPipeline for the SDXL shapes."""
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    torch.manual_seed(seed)
    second = {}  # SDXL's second text tower and its tokenizer
    if shape in FAMILY_OF_SHAPE:
        family = FAMILY_OF_SHAPE[shape]
        configs = CONFIGS[family]
        folder = write_configs(Path(scratch) / f"{family}-configs", family)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text_encoder = CLIPTextModel(_text_config(configs["text_encoder"]))
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        if "text_encoder_2" in configs:
            second = dict(text_encoder_2=CLIPTextModelWithProjection(_text_config(configs["text_encoder_2"])),
                          tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"))
        scheduler = DDIMScheduler.from_config(configs["scheduler"])  # SD 2.x's predicts v
    else:
        spec, xl = TINY, shape == "tiny-xl"
        width, layers, heads, mlp, vocab_size = spec["text"]
        width_2, layers_2, heads_2, mlp_2, _ = TINY_XL["text_2"]
        unet_options = dict(cross_attention_dim=width)
        if xl:
            unet_options = dict(cross_attention_dim=width + width_2, addition_embed_type="text_time",
                                addition_time_embed_dim=TINY_XL["time_dim"], use_linear_projection=True,
                                projection_class_embeddings_input_dim=TINY_XL["projection"] + 6 * TINY_XL["time_dim"],
                                transformer_layers_per_block=TINY_XL["transformer_layers"])
        # Made in this order (UNet, VAE, text) so that the tiny shape's weights stay those of before.
        unet = UNet2DConditionModel(
            block_out_channels=spec["unet"], layers_per_block=2, sample_size=spec["sample"], in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=spec["head_dim"], **unet_options,
        )
        vae = AutoencoderKL(block_out_channels=list(spec["vae"]), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * len(spec["vae"]),
                            up_block_types=["UpDecoderBlock2D"] * len(spec["vae"]), layers_per_block=1,
                            **({"scaling_factor": 0.13025, "force_upcast": True} if xl else {}))
        tokens = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=2, pad_token_id=1)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=width, intermediate_size=mlp, num_attention_heads=heads,
                                                    num_hidden_layers=layers, **tokens))
        tokenizer = letters_tokenizer(Path(scratch) / "vocabulary")
        if xl:
            second = dict(text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(
                hidden_size=width_2, intermediate_size=mlp_2, num_attention_heads=heads_2, num_hidden_layers=layers_2,
                projection_dim=TINY_XL["projection"], hidden_act="gelu", **tokens)), tokenizer_2=tokenizer)
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1)
    if second:
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                         scheduler=scheduler, add_watermarker=False, **second)
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
    (LDM) layout that model sites distribute: the UNet under model.diffusion_model., the VAE under
    first_stage_model., and the text encoder under cond_stage_model.transformer. (SD 1.x), in
    OpenCLIP's layout under cond_stage_model.model. (SD 2.x, whose cross-attention is 1024 wide),
    or for SDXL both towers under conditioner.embedders.0.transformer. and, in OpenCLIP's layout,
    conditioner.embedders.1.model. It is the inverse of diffusers' single-file import."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    pipe = base if isinstance(base, DiffusionPipeline) else DiffusionPipeline.from_pretrained(base)
    if getattr(pipe, "text_encoder_2", None) is not None:
        texts = [("conditioner.embedders.0.transformer.", _ldm_text(pipe.text_encoder)),
                 ("conditioner.embedders.1.model.", _open_clip_text(pipe.text_encoder_2, unused_last_layer=False))]
    elif pipe.unet.config.cross_attention_dim == 1024:
        texts = [("cond_stage_model.model.", _open_clip_text(pipe.text_encoder))]
    else:
        texts = [("cond_stage_model.transformer.", _ldm_text(pipe.text_encoder))]
    state = {}
    for prefix, part in (("model.diffusion_model.", _ldm_unet(pipe.unet)), ("first_stage_model.", _ldm_vae(pipe.vae)),
                         *texts):
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


def _open_clip_text(text_encoder, unused_last_layer: bool = True):
    """(OpenCLIP name, tensor) of a text tower in OpenCLIP's layout: q, k and v fused into
    in_proj. SD 2.x files keep the tower's last layer, which SD 2.x never uses (diffusers drops it;
    written as zeros), and a projection it ignores; SDXL's second tower is whole, and its
    projection (width x embedding, the transpose of transformers') makes the pooled embedding."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    yield "token_embedding.weight", state["embeddings.token_embedding.weight"]
    yield "positional_embedding", state["embeddings.position_embedding.weight"]
    yield "ln_final.weight", state["final_layer_norm.weight"]
    yield "ln_final.bias", state["final_layer_norm.bias"]
    layers = text_encoder.config.num_hidden_layers
    for i in range(layers + int(unused_last_layer)):
        source = f"encoder.layers.{min(i, layers - 1)}."
        take = (lambda name: state[source + name]) if i < layers else (lambda name: torch.zeros_like(state[source + name]))
        for kind in ("weight", "bias"):
            yield f"transformer.resblocks.{i}.attn.in_proj_{kind}", torch.cat(
                [take(f"self_attn.{p}_proj.{kind}") for p in "qkv"])
            for ours, theirs in OPEN_CLIP_LAYER.items():
                yield f"transformer.resblocks.{i}.{theirs}.{kind}", take(f"{ours}.{kind}")
    width = text_encoder.config.hidden_size
    projection = state.get("text_projection.weight")
    yield "text_projection", torch.zeros(width, width) if projection is None else projection.t()


def _ldm_unet(unet):
    """(LDM name, tensor) of a diffusers UNet."""
    up_attends = [hasattr(block, "attentions") for block in unet.up_blocks]
    for key, value in unet.state_dict().items():
        yield ldm_unet_name(key, unet.config.layers_per_block, up_attends), value


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
            name = (f"encoder.down.{m[1]}.block.{m[3]}.{resnet_name(m[4], shortcut)}" if m[2] == "resnets"
                    else f"encoder.down.{m[1]}.downsample.{m[4]}")
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", key):
            up = blocks - 1 - int(m[1])
            name = (f"decoder.up.{up}.block.{m[3]}.{resnet_name(m[4], shortcut)}" if m[2] == "resnets"
                    else f"decoder.up.{up}.upsample.{m[4]}")
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet_name(m[3], shortcut)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+)\.(?:0\.)?(weight|bias)", key):
            name = f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and value.dim() == 2:
                value = value[:, :, None, None]
        else:
            raise ValueError(f"no LDM name for the VAE's {key}")
        yield name, value
