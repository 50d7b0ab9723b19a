"""The slider's LoRA: where it sits in the UNet, and its files (diffusers' format with das-ag's
recipe in the metadata, and the kohya format that ComfyUI and AUTOMATIC1111 load)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..durable import write_atomic
from ..errors import DasAgError
from . import existing

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as ReFL's and LECO's LoRAs
ADAPTER = "slider"
RECIPE_KEY = "das-ag:slider"


def add_lora(unet, rank: int, alpha: float) -> list[torch.nn.Parameter]:
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)),
                     adapter_name=ADAPTER)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # float32 whatever the base's precision (peft computes in the LoRA's dtype)
        p.data = p.data.float()
    return params


def lora_state(unet) -> dict[str, torch.Tensor]:
    """The LoRA in diffusers' file format ("unet." + diffusers key names), as loaders expect."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
    return {f"unet.{k}": v.detach().float().cpu().contiguous() for k, v in state.items()}


def save_lora(path: Path, unet, recipe: dict) -> Path:
    from safetensors.torch import save

    data = save(lora_state(unet), metadata={RECIPE_KEY: json.dumps(recipe, sort_keys=True)})
    return write_atomic(path, data, overwrite=True)


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A slider LoRA's tensors and its recipe (an empty one for LoRAs from elsewhere)."""
    from safetensors import SafetensorError, safe_open

    path = existing(path, "LoRA")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DasAgError(f"{path} is not a readable .safetensors LoRA ({exc})") from None
    recipe = json.loads(metadata[RECIPE_KEY]) if RECIPE_KEY in metadata else {}
    return tensors, recipe


def sgm_key(key: str, layers_per_block: int) -> str:
    """A diffusers-named UNet LoRA key ("unet.down_blocks.1.attentions.0....lora_A.weight") under
    the original SGM name kohya's SDXL LoRAs use ("unet.input_blocks.4.1....lora_A.weight")."""
    from .ldm_names import ldm_unet_name

    module, _, tensor = key.removeprefix("unet.").rpartition(".lora_")
    return f"unet.{ldm_unet_name(module, layers_per_block)}.lora_{tensor}"


def export_kohya(lora: str | Path, out: str | Path) -> Path:
    """The LoRA in the kohya format that ComfyUI and AUTOMATIC1111 load: diffusers' module names
    for SD 1.x and 2.x (as kohya's sd-scripts write them), the original SGM names for SDXL (as
    sd-scripts' SDXL trainer writes them, and AUTOMATIC1111 reads SDXL LoRAs)."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from safetensors.torch import save

    tensors, recipe = read_lora(lora)
    # Our file's diffusers names (".lora.down/.up") as peft's (".lora_A/.lora_B"), which the
    # kohya converter reads.
    peft = {k.replace(".lora.down.weight", ".lora_A.weight").replace(".lora.up.weight", ".lora_B.weight"): v
            for k, v in tensors.items()}
    if recipe.get("base", {}).get("pipeline") == "StableDiffusionXLPipeline":
        peft = {sgm_key(k, recipe["lora"].get("layers_per_block", 2)): v for k, v in peft.items()}
    kohya = convert_state_dict_to_kohya(peft)
    alpha = recipe.get("lora", {}).get("alpha")
    if alpha is not None:  # the converter assumes alpha = rank; keep the trained scale
        kohya = {k: torch.tensor(float(alpha)) if k.endswith(".alpha") else v for k, v in kohya.items()}
    metadata = {"ss_network_dim": str(recipe.get("settings", {}).get("rank", "")),
                "ss_network_alpha": str(recipe.get("settings", {}).get("alpha", "")), RECIPE_KEY: json.dumps(recipe)}
    return write_atomic(Path(out), save({k: v.contiguous() for k, v in kohya.items()}, metadata=metadata), overwrite=True)
