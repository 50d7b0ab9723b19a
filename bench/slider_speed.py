"""The slider's training step: image-space score (VAE decode + CLIP + head) against a latent scorer,
and the image-space step in bf16 and with gradient checkpointing.

    uv run --extra slider python bench/slider_speed.py                          # CPU: tiny models, 64 px
    uv run --extra slider python bench/slider_speed.py --device cuda --shape sd15 --clip ViT-L/14 --resolution 512

Random weights of the chosen shapes (no download): a Stable Diffusion (tiny, tiny-xl, or the shape
of SD 1.5, SD 2.x or SDXL, e.g. --shape sdxl --resolution 1024), a
CLIP (tiny or ViT-L/14's shape) and an aesthetic head. For each mode: seconds per training step
(median after a warm-up) and peak memory (GPU: allocated; CPU: the peak resident size of a fresh
process per mode, models included, since a process keeps the memory it once used). Ratios from
this one run; the modes run one after another, never two at once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from das_ag.slider.base import PRECISIONS, load_base  # noqa: E402
from das_ag.slider.latent_scorer import LatentScorer, save_scorer  # noqa: E402
from das_ag.slider.random_sd import SHAPES, save_random_sd  # noqa: E402
from das_ag.slider.train import SliderOutOfMemory, SliderSettings, train  # noqa: E402
from step_speed import peak_memory_gib, random_models, reset_peak_memory  # noqa: E402


def step_seconds(base_path, models, settings, out, device, checkpointing: bool = False) -> tuple[float, float]:
    base = load_base(base_path, device, PRECISIONS[settings.precision])
    reset_peak_memory(device)
    times, last = [], [time.perf_counter()]

    def on_step(report):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train(base, models, settings, out, on_step=on_step, gradient_checkpointing=checkpointing)
    return statistics.median(times[1:]), peak_memory_gib(device)


def run_mode(tmp: Path, clip: str, device_name: str, name: str, settings: SliderSettings, checkpointing: bool,
             models=None):
    """One mode, in the process it is called in (a fresh one for the CPU's memory figure)."""
    device = torch.device(device_name)
    models = models or random_models(tmp / "clip", clip, device)
    return step_seconds(tmp / "sd" / "base", models, settings, tmp / f"{name}.safetensors", device, checkpointing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="tiny", choices=SHAPES)
    parser.add_argument("--clip", default="tiny", help="tiny or ViT-L/14")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_random_sd(tmp / "sd", args.shape)
        (tmp / "clip").mkdir()
        scorer_path = save_scorer(tmp / "scorer.safetensors", LatentScorer(), {"base": {}})
        common = dict(steps=args.steps, resolution=args.resolution, inference_steps=10, checkpoint_every=10_000)
        modes = [  # (name, settings, gradient checkpointing)
            ("latent scorer", SliderSettings(scorer=str(scorer_path), **common), False),
            ("image, fp32", SliderSettings(**common), False),
            ("image, bf16", SliderSettings(precision="bf16", **common), False),
            ("image, bf16 + ckpt", SliderSettings(precision="bf16", **common), True),
        ]
        print(f"device {device}, SD shape {args.shape}, CLIP {args.clip}, {args.resolution} px", flush=True)
        results = {}
        # On a GPU the modes share one process, and so one CLIP (a random ViT-L/14 takes a while to make).
        shared = random_models(tmp / "clip", args.clip, device) if device.type == "cuda" else None
        for name, settings, checkpointing in modes:
            job = (tmp, args.clip, args.device, name, settings, checkpointing)
            try:
                if device.type == "cpu":
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        results[name] = pool.submit(run_mode, *job).result()
                else:
                    results[name] = run_mode(*job, models=shared)
            except SliderOutOfMemory:  # a mode that does not fit says so; the others still run
                print(f"  {name:<20} out of memory", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            print(f"  {name:<20} {results[name][0] * 1000:8.0f} ms/step, peak {results[name][1]:.2f} GiB", flush=True)
    reference = next(iter(results.values()), None)
    if "image, fp32" in results:
        reference = results["image, fp32"]
    if reference is None:
        return
    print("\nagainst the image-space step in fp32 (or the first mode that fitted) (time, peak memory):")
    for name, (seconds, peak) in results.items():
        print(f"  {name:<20} {seconds / reference[0]:.2f}x, {peak / reference[1]:.2f}x")


if __name__ == "__main__":
    main()
