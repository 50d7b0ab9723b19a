"""The slider's training step: image-space score (VAE decode + CLIP + head) against a latent scorer.

    uv run --extra slider python bench/slider_speed.py                          # CPU: tiny models, 64 px
    uv run --extra slider python bench/slider_speed.py --device cuda --shape sd15 --clip ViT-L/14 --resolution 512

Random weights of the chosen shapes (no download): a Stable Diffusion (tiny, or SD 1.5's shape), a
CLIP (tiny or ViT-L/14's shape) and an aesthetic head. For each scoring mode: seconds per training
step (median after a warm-up) and peak memory (GPU: allocated; CPU: the process's peak resident
size, which only grows, so the image-space mode is measured second). Ratios from this one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from das_ag.slider.base import load_base  # noqa: E402
from das_ag.slider.latent_scorer import LatentScorer, save_scorer  # noqa: E402
from das_ag.slider.random_sd import save_random_sd  # noqa: E402
from das_ag.slider.train import SliderSettings, train  # noqa: E402
from step_speed import peak_memory_gib, random_models, reset_peak_memory  # noqa: E402


def step_seconds(base_path, models, settings, out, device) -> tuple[float, float]:
    base = load_base(base_path, device)
    reset_peak_memory(device)
    times, last = [], [time.perf_counter()]

    def on_step(report):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train(base, models, settings, out, on_step=on_step)
    return statistics.median(times[1:]), peak_memory_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="tiny", choices=["tiny", "sd15"])
    parser.add_argument("--clip", default="tiny", help="tiny or ViT-L/14")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_path = save_random_sd(tmp / "sd", args.shape)
        models = random_models(tmp, args.clip, device)
        scorer_path = save_scorer(tmp / "scorer.safetensors", LatentScorer(), {"base": {}})
        common = dict(steps=args.steps, resolution=args.resolution, inference_steps=10, checkpoint_every=10_000)
        print(f"device {device}, SD shape {args.shape}, CLIP {args.clip}, {args.resolution} px", flush=True)
        latent = step_seconds(base_path, models, SliderSettings(scorer=str(scorer_path), **common), tmp / "a.safetensors",
                              device)
        print(f"  latent scorer: {latent[0] * 1000:.0f} ms/step, peak {latent[1]:.2f} GiB", flush=True)
        image = step_seconds(base_path, models, SliderSettings(**common), tmp / "b.safetensors", device)
        print(f"  image space:   {image[0] * 1000:.0f} ms/step, peak {image[1]:.2f} GiB", flush=True)
    print(f"\nimage-space / latent-scorer step time: {image[0] / latent[0]:.2f}x; peak memory {image[1]:.2f} vs "
          f"{latent[1]:.2f} GiB")


if __name__ == "__main__":
    main()
