"""The original (LDM / SGM) names of a diffusers UNet's tensors and modules: the names inside the
single files model sites distribute, and the names kohya's SDXL LoRAs use."""

from __future__ import annotations

import re
from collections.abc import Sequence

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def resnet_name(rest: str, names: dict[str, str]) -> str:
    first, _, tail = rest.partition(".")
    return f"{names.get(first, first)}.{tail}"


def ldm_unet_name(key: str, layers_per_block: int, up_attends: Sequence[bool] = ()) -> str:
    """The LDM name of a diffusers UNet tensor or module `key`: resnets and attentions are numbered
    through input_blocks / middle_block / output_blocks, each down or up block using
    layers_per_block + 1 slots (the last one holds the down- or upsampler). `up_attends` says which
    up blocks have attentions (it places their upsamplers); attention modules need only the first."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    # SDXL's added embedding (pooled text and sizes) is label_emb in its files
    top = {**DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"]}
    slots = layers_per_block + 1
    if key in top:
        return top[key]
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(\w+)\.(\d+)\.(.*)", key):
        kind, b, part, i, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        if kind == "down":
            names = {"resnets": lambda: f"input_blocks.{1 + b * slots + i}.0.{resnet_name(rest, UNET_RESNET)}",
                     "attentions": lambda: f"input_blocks.{1 + b * slots + i}.1.{rest}",
                     "downsamplers": lambda: f"input_blocks.{(b + 1) * slots}.0.op.{rest.removeprefix('conv.')}"}
        else:
            names = {"resnets": lambda: f"output_blocks.{b * slots + i}.0.{resnet_name(rest, UNET_RESNET)}",
                     "attentions": lambda: f"output_blocks.{b * slots + i}.1.{rest}",
                     "upsamplers": lambda: f"output_blocks.{b * slots + slots - 1}.{2 if up_attends[b] else 1}.{rest}"}
        if part in names:
            return names[part]()
    elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        return (f"middle_block.{2 * int(m[2])}.{resnet_name(m[3], UNET_RESNET)}" if m[1] == "resnets"
                else f"middle_block.1.{m[3]}")
    raise ValueError(f"no LDM name for the UNet's {key}")
