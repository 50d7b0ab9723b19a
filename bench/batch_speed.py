"""Is making images together (one encoder batch of images x copies) faster per image than one by one?

    uv run python bench/batch_speed.py                          # CPU: ViT-B/32 and ViT-L/14 shapes
    uv run python bench/batch_speed.py --device cuda --images 1,3,8

Random-weight CLIPs of the real shapes (no download), 224 px, 8 copies, the default precision.
For each number of images per step, the median seconds of a step after a warm-up, and the time
per image against one image alone: below 1.00 batching pays, above it costs. Run it alone: another
torch process on the same cores makes every figure wrong.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from das_ag import GenerationConfig, Prompt, load_models, synthesize  # noqa: E402
from das_ag.models import AestheticHead  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402


def step_seconds(models, images: int, steps: int, device: str) -> float:
    configs = [GenerationConfig(prompts=(Prompt("a lighthouse on a cliff at dawn"),), steps=steps + 2, seed=i, device=device,
                                compile=False)  # the eager step's batching; a compiled batch is paper_speed.py's
               for i in range(images)]
    times, last = [], None
    for event in synthesize(configs, models):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        if last is not None and event.step > 2:  # the first steps warm caches and packed weights up
            times.append(now - last)
        last = now
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="ViT-B/32,ViT-L/14")
    parser.add_argument("--images", default="1,3", help="images per step to time, comma-separated")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement (the median is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="das-ag-bench-") as scratch:  # a random ViT-L/14 is 0.8 GB
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    head = tmp / "head.pth"
    torch.save(AestheticHead().state_dict(), head)  # random weights: only its shape costs time
    counts = [int(n) for n in args.images.split(",")]
    print(f"{'shape':<10} {'images':>6} {'s/step':>8} {'s/image':>8} {'vs alone':>8}")
    for shape in args.shapes.split(","):
        path = save_random_clip(tmp / f"{shape.replace('/', '-')}.pt", shape, torchscript=False)
        models = load_models(str(path), str(head), args.device)
        alone = None
        for n in counts:
            seconds = step_seconds(models, n, args.steps, args.device)
            per_image = seconds / n
            alone = alone or per_image
            print(f"{shape:<10} {n:>6} {seconds:>8.3f} {per_image:>8.3f} {per_image / alone:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
