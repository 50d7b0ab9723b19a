"""Issue 10's GPU targets, eager against compiled: the `paper` preset per image alone and with 8
images sharing each step, a 3-method x 2-seed comparison as one batch, and the share of each
step the GPU is busy (profiler: kernel time over wall time).

    python bench/paper_speed.py --device cuda                          # the figures (a GPU)
    python bench/paper_speed.py --device cpu --shape tiny --steps 4    # a dry run

A random CLIP of the shape (no download) and a random aesthetic head: only their shapes cost
time. Targets (ViT-L/14 shape): <= 2.0 s/image alone, <= 1.5 s/image 8 to a step, the comparison
<= 15 s after warm-up, the GPU busy >= 70% of a step. Each mode is warmed up first (kernels, the
allocator, and for `compile` the compiler), so the times are those of a process already running.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from das_ag import GenerationConfig, Prompt, load_models, synthesize  # noqa: E402
from das_ag.models import AestheticHead  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402

PROMPTS = (Prompt("a photorealistic illustration of a lighthouse in a storm"), Prompt("blurry, dull", -1.0))
METHODS = ("off", "reward", "penalty")  # DAS, DAS-AG, DAS-rAG


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(configs, models, device: str) -> tuple[float, list]:
    sync(device)
    start = time.perf_counter()
    results = synthesize(configs, models).run()
    sync(device)
    return time.perf_counter() - start, results


def busy_fraction(configs, models, device: str, steps: int = 10) -> float | None:
    """Kernel time over wall time for `steps` steps of `configs` sharing each step, after two
    warm ones (CUDA only). Kernels of one stream do not overlap, so their sum is the busy time."""
    if not device.startswith("cuda"):
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    run = iter(synthesize([c.replace(steps=steps + 3) for c in configs], models))
    for _ in range(2):
        next(run)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            next(run)
        sync(device)
        wall = time.perf_counter() - start
    kernels_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA)
    return kernels_us / 1e6 / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="ViT-L/14")
    parser.add_argument("--steps", type=int, default=None, help="steps per image (default: the preset's 200)")
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--clip", help="a CLIP checkpoint to load (default: a random one of --shape, made here)")
    parser.add_argument("--head", help="an aesthetic head's weights (default: a random one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="das-ag-bench-") as scratch:  # a random ViT-L/14 is 0.8 GB
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, tmp: Path) -> int:
    head = args.head or tmp / "head.pth"
    if not args.head:
        torch.save(AestheticHead().state_dict(), head)
    clip_path = args.clip or save_random_clip(tmp / "clip.pt", args.shape, torchscript=False)
    models = load_models(str(clip_path), str(head), args.device)
    rows = []
    for mode in args.modes.split(","):
        paper = GenerationConfig.from_preset("paper", prompts=PROMPTS, device=args.device, compile=mode == "compile")
        if args.steps:
            paper = paper.replace(steps=args.steps)
        eight = [paper.replace(seed=s) for s in range(8)]
        compare = [paper.replace(seed=s).with_guidance(g) for g in METHODS for s in range(2)]
        # Warm-up: each batch shape once (a compiled step is compiled per kind of batch).
        for what, configs in (("1 image", [paper]), ("8 images", eight), ("compare 3x2", compare)):
            seconds, _ = timed([c.replace(steps=3) for c in configs], models, args.device)
            print(f"{mode}: warm-up of {what}, 3 steps: {seconds:.1f} s", flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()  # this mode's own peak
        alone, (result,) = timed([paper], models, args.device)
        together, _ = timed(eight, models, args.device)
        comparison, _ = timed(compare, models, args.device)
        busy, busy8 = busy_fraction([paper], models, args.device), busy_fraction(eight, models, args.device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        warned = "; ".join(result.warnings)
        rows.append((mode, result.dtype, alone, together / 8, comparison, busy, busy8, peak, warned))
        print(f"{mode}: alone {alone:.2f} s/image, 8 per step {together / 8:.2f} s/image, compare 3x2 {comparison:.2f} s"
              + (f", busy {busy:.0%} / {busy8:.0%}" if busy is not None else "") + (f" [{warned}]" if warned else ""), flush=True)
    if args.device.startswith("cuda"):
        # "--images-per-step auto" rests on a measurement of what one image keeps for its
        # backward; how it compares with the real peak of 8 images sharing an eager step.
        from das_ag.engine import auto_images_per_step, step_activation_bytes

        eager_paper = paper.replace(compile=False)
        predicted = step_activation_bytes(models, eager_paper)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        timed([eager_paper.replace(seed=s, steps=3) for s in range(8)], models, args.device)
        used = (torch.cuda.max_memory_allocated() - resident) / 8
        print(f"auto: {predicted / 2**30:.2f} GiB per image measured as kept for the backward; an eager step of 8 "
              f"peaked at {used / 2**30:.2f} GiB per image above the models ({used / predicted:.2f}x); auto picks "
              f"{auto_images_per_step(models, eager_paper)} images per step here", flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\n{name}, torch {torch.__version__}, {args.shape} shape, paper preset ({paper.steps} steps, "
          f"{paper.resolution} px, {paper.augment_copies} copies)")
    print(f"{'mode':8} {'dtype':9} {'alone s/img':>11} {'8/step s/img':>12} {'compare 3x2 s':>13} {'busy alone':>10} {'busy 8':>7} {'peak GiB':>8}")
    eager = next((r for r in rows if r[0] == "eager"), None)
    for mode, dtype, alone, per8, comparison, busy, busy8, peak, warned in rows:
        pct = lambda f: f"{f:.0%}" if f is not None else "-"  # noqa: E731
        ratio = f"  ({eager[2] / alone:.2f}x eager alone)" if eager and mode != "eager" else ""
        print(f"{mode:8} {dtype:9} {alone:11.2f} {per8:12.2f} {comparison:13.2f} {pct(busy):>10} {pct(busy8):>7} {peak:8.1f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
