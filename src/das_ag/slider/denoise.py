"""Steps of the base model's sampler that the slider's loop and the latent scorer share: the
prompt's conditions, a starting latent, a guided UNet call, the no-gradient part of the way, and
the clean latent an output predicts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DasAgError
from . import quiet_libraries


@dataclass(frozen=True)
class Conditions:
    """What a guided UNet call is conditioned on: the unconditional and the conditional prompt's
    text states stacked (batch 2), and for SDXL the UNet's added conditions (the second tower's
    pooled embedding and the six size numbers), stacked the same way."""
    text: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def for_batch(self, n: int) -> "Conditions":
        """The same conditions for n latents at once: n unconditional, then n conditional."""
        if n == 1:
            return self
        return Conditions(self.text.repeat_interleave(n, 0),
                          None if self.added is None else {k: v.repeat_interleave(n, 0) for k, v in self.added.items()})


def prompt_conditions(pipe, prompt: str, resolution: int) -> Conditions:
    """`prompt` against the empty prompt, encoded by the pipeline's own encode_prompt, so the loop
    conditions the UNet exactly as sampling with that pipeline does (SDXL: both towers'
    penultimate layers, and zeros for the empty prompt, as its force_zeros_for_empty_prompt asks)."""
    # A prompt longer than the text encoder's 77 tokens is cut, as sampling cuts it; the libraries
    # would say so at every new prompt, through the progress bar (long_prompts says it once).
    with torch.no_grad(), quiet_libraries():
        encoded = pipe.encode_prompt(prompt, device=pipe.device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=True)
    if len(encoded) == 2:  # SD 1.x and 2.x: (prompt, empty prompt)
        return Conditions(torch.cat([encoded[1], encoded[0]]))
    text, empty, pooled, empty_pooled = encoded
    # SDXL's micro-conditioning: trained and sampled as a whole, uncropped picture of this size.
    sizes = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * 2, dtype=text.dtype,
                         device=text.device)
    return Conditions(torch.cat([empty, text]), {"text_embeds": torch.cat([empty_pooled, pooled]), "time_ids": sizes})


def starting_latent(unet, scheduler, side: int, generator: torch.Generator, device) -> torch.Tensor:
    """A fresh latent to denoise, drawn on the CPU (so a seed gives the same one on any device), in
    the UNet's dtype and the scheduler's scale."""
    latents = torch.randn(1, unet.config.in_channels, side, side, generator=generator)
    return latents.to(device, unet.dtype) * scheduler.init_noise_sigma


def guided_prediction(unet, latents, t, conditions: Conditions, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: one UNet call on (unconditional, conditional). What it predicts
    (noise, v or the clean latent) is the scheduler's prediction_type."""
    doubled = torch.cat([latents, latents])
    conditions = conditions.for_batch(latents.shape[0])
    output = unet(doubled, t, encoder_hidden_states=conditions.text, added_cond_kwargs=conditions.added).sample
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


def long_prompts(pipe, prompts) -> list[str]:
    """The prompts longer than the text encoder reads (77 tokens): their ends are cut."""
    tokenizer = pipe.tokenizer
    with quiet_libraries():  # (the tokenizer itself warns of a sequence too long)
        with_ends = tokenizer(list(prompts), truncation=False).input_ids if prompts else []
    return [p for p, ids in zip(prompts, with_ends) if len(ids) > tokenizer.model_max_length]
