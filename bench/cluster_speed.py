"""What does Ray cost? The same plan made by the local batch and on a local Ray cluster.

    uv run --extra cluster python bench/cluster_speed.py                 # this machine's CPUs
    uv run --extra cluster python bench/cluster_speed.py --device cuda   # one GPU worker

A random CLIP of a real shape (no download), DAS (no aesthetic head needed), a plan of prompts x
seeds in batches of --images-per-step. The local run loads the models and runs run_plan; the Ray
run starts a local cluster whose one worker uses the same torch threads (so the files must be the
same bytes, which is checked), then run_plan_on_ray. Printed: each phase's seconds, images per
minute once the models are loaded (the plan itself) and end to end, and Ray's overhead against
the local run (the target is <= 10% on the plan). Run it alone: another torch process on the same
cores makes every figure wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from das_ag.cluster import WorkerSpec, run_plan_on_ray  # noqa: E402
from das_ag.experiments import build_plan, run_plan  # noqa: E402
from das_ag.models import load_models  # noqa: E402
from das_ag.prompts import Prompt  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402

PROMPTS = ["a lighthouse on a cliff at dawn", "a red kite over a field", "a bowl of lemons", "a quiet harbour"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="ViT-B/32", help="the random CLIP's shape (ViT-B/32, ViT-L/14, tiny)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt (4 prompts)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images-per-step", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="das-ag-bench-") as scratch:
        measure(args, Path(scratch))


def plan_in(folder: Path, args: argparse.Namespace):
    base = dict(steps=args.steps, device=args.device, resolution=224, augment_copies=8, compile=False)
    return build_plan([(f"p{i}", (Prompt(text),)) for i, text in enumerate(PROMPTS)], list(range(args.seeds)), base, folder,
                      methods=("DAS",))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    import ray

    clip = save_random_clip(tmp / "clip.pt", args.shape, seed=0)
    threads = torch.get_num_threads()
    local_plan, ray_plan = plan_in(tmp / "local", args), plan_in(tmp / "ray", args)
    n = len(local_plan.items)
    print(f"{n} images, {args.shape} (random weights), {args.steps} steps, {args.images_per_step} per step, "
          f"{args.device}, {threads} torch threads")

    finished = {"local": [], "ray": []}  # when each image was written
    t0 = time.perf_counter()
    models = load_models(str(clip), None, args.device, need_head=False)
    t1 = time.perf_counter()
    run_plan(local_plan, models, images_per_step=args.images_per_step,
             on_item=lambda item, status: finished["local"].append(time.perf_counter()))
    t2 = time.perf_counter()
    local = {"start": t1 - t0, "plan": t2 - t1}

    t0 = time.perf_counter()
    ray.init(num_cpus=threads, num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    t1 = time.perf_counter()
    ready = []
    spec = WorkerSpec(str(clip), None, need_head=False, gpus=1.0 if args.device == "cuda" else 0.0,
                      cpus=1 if args.device == "cuda" else threads)
    run_plan_on_ray(ray_plan, spec, images_per_step=args.images_per_step,
                    on_progress=lambda p: ready or (p.workers and ready.append(time.perf_counter())),
                    on_item=lambda item, status: finished["ray"].append(time.perf_counter()))
    t2 = time.perf_counter()
    ray.shutdown()
    remote = {"cluster": t1 - t0, "start": ready[0] - t1, "plan": t2 - ready[0]}

    same = all(local_plan.path(a).read_bytes() == ray_plan.path(b).read_bytes()
               for a, b in zip(local_plan.items, ray_plan.items))
    print(f"{'':<8} {'start s':>8} {'plan s':>8} {'img/min (plan)':>15} {'img/min (all)':>14}")
    for name, t in (("local", local), ("ray", remote)):
        start = t["start"] + t.get("cluster", 0)
        print(f"{name:<8} {start:8.1f} {t['plan']:8.1f} {60 * n / t['plan']:15.1f} {60 * n / (start + t['plan']):14.1f}")
    print(f"ray start = cluster {remote['cluster']:.1f} s + worker {remote['start']:.1f} s (a new process imports torch "
          "and loads the models)")
    # After the first batch, which pays a new process's first forwards and backwards (torch's lazy set-up).
    steady = {name: (times[-1] - times[args.images_per_step - 1]) for name, times in finished.items()}
    print(f"Ray's overhead on the plan: {100 * (remote['plan'] / local['plan'] - 1):+.1f}%; after the first batch: "
          f"{100 * (steady['ray'] / steady['local'] - 1):+.1f}%; end to end: "
          f"{100 * ((sum(remote.values())) / sum(local.values()) - 1):+.1f}%; files byte-identical: {same}")


if __name__ == "__main__":
    main()
