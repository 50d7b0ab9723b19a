"""Steps of the base model's sampler that the slider's loop and the latent scorer share: the
prompt's embedding, a starting latent, a guided UNet call, the no-gradient part of the way, and
the clean latent an output predicts."""

from __future__ import annotations

import torch

from ..errors import DasAgError


def encode_prompt(pipe, prompts: list[str]) -> torch.Tensor:
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(pipe.device)
    with torch.no_grad():
        return pipe.text_encoder(tokens)[0]


def starting_latent(unet, scheduler, side: int, generator: torch.Generator, device) -> torch.Tensor:
    """A fresh latent to denoise, drawn on the CPU (so a seed gives the same one on any device), in
    the UNet's dtype and the scheduler's scale."""
    latents = torch.randn(1, unet.config.in_channels, side, side, generator=generator)
    return latents.to(device, unet.dtype) * scheduler.init_noise_sigma


def guided_prediction(unet, latents, t, conditions, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: one UNet call on (unconditional, conditional). What it predicts
    (noise, v or the clean latent) is the scheduler's prediction_type."""
    doubled = torch.cat([latents, latents])
    output = unet(doubled, t, encoder_hidden_states=conditions).sample
    uncond, cond = output.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def denoised_part_way(unet, scheduler, latents, conditions, k: int, guidance_scale: float) -> torch.Tensor:
    """The latent after the scheduler's first k steps, without gradient."""
    with torch.no_grad():
        for t in scheduler.timesteps[:k]:
            output = guided_prediction(unet, latents, t, conditions, guidance_scale)
            latents = scheduler.step(output, t, latents).prev_sample
    return latents


def predicted_clean(scheduler, output: torch.Tensor, latents: torch.Tensor, t) -> torch.Tensor:
    """The final latent that a UNet output at step t predicts, for each kind of model: SD 1.x and
    2.x-base predict the noise, SD 2.x-768 predicts v (a mix of noise and image)."""
    a = scheduler.alphas_cumprod.to(latents.device)[t]
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (latents - (1 - a).sqrt() * output) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * latents - (1 - a).sqrt() * output
    if kind == "sample":
        return output
    raise DasAgError(f"the base model predicts {kind!r}, which the slider does not know how to train")
