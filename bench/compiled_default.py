"""Is the compiled step robust enough to be the default on a GPU? Issue 24, item 1.

    python bench/compiled_default.py --clip CLIP.pt --head HEAD.pth --png /tmp/a.png           # a cold cache
    python bench/compiled_default.py --clip CLIP.pt --head HEAD.pth --same-as /tmp/a.png       # again: cached

One process, one `paper` image (deterministic, compiled), made twice:
- the first step's wait, which is the compile (cold when TORCHINDUCTOR_CACHE_DIR is empty, cached
  when an earlier process filled it), and each run's wall time;
- whether the two runs give the same PNG bytes, and (--same-as) the same bytes as another process;
- whether the step ran compiled whole: dynamo's graphs and graph breaks, the steps inductor would
  not record as CUDA graphs, and per step the kernels launched one by one against CUDA-graph
  replays (profiler, a few steps of a third run);
- any warning the result carries (a fallback to eager says so there).
Ends with one line, `verdict: ...`. A random CLIP of the shape and a random head: only shapes
cost time, and the compiler sees the same graph as with real weights.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from das_ag import GenerationConfig, Prompt, load_models, synthesize  # noqa: E402

PROMPTS = (Prompt("a photorealistic illustration of a lighthouse in a storm"), Prompt("blurry, dull", -1.0))


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_run(config, models, device) -> tuple[float, float, object]:
    """(seconds to the first step's numbers, seconds for the whole run, result)."""
    sync(device)
    start = time.perf_counter()
    first = None
    run = synthesize(config, models)
    for _ in run:
        if first is None:
            sync(device)
            first = time.perf_counter() - start
    sync(device)
    return first, time.perf_counter() - start, run.result()


def launches_per_step(config, models, device, steps: int = 6) -> tuple[float, float]:
    """Kernel launches one by one and CUDA-graph replays, per step, over `steps` steps of a warm
    compiled run (the profiler counts the runtime calls the host makes)."""
    from torch.profiler import ProfilerActivity, profile

    run = iter(synthesize(config.replace(steps=steps + 3), models))
    for _ in range(2):
        next(run)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            next(run)
        sync(device)
    counts = {e.key: e.count for e in prof.key_averages()}
    single = sum(n for k, n in counts.items() if k in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"))
    graphs = sum(n for k, n in counts.items() if k in ("cudaGraphLaunch", "cuGraphLaunch"))
    return single / steps, graphs / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True, help="a CLIP checkpoint (e.g. a random one of ViT-L/14's shape)")
    parser.add_argument("--head", required=True, help="an aesthetic head's weights")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=None, help="steps per image (default: the preset's 200)")
    parser.add_argument("--png", help="write the image here")
    parser.add_argument("--same-as", help="a PNG an earlier process made: are the bytes the same?")
    args = parser.parse_args()

    from torch._dynamo.utils import counters

    load_start = time.perf_counter()
    models = load_models(args.clip, args.head, args.device)
    device = models.device
    print(f"models loaded in {time.perf_counter() - load_start:.1f} s", flush=True)
    paper = GenerationConfig.from_preset("paper", prompts=PROMPTS, device=args.device, compile=True)
    if args.steps:
        paper = paper.replace(steps=args.steps)
    counters.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first_step, first_total, first = timed_run(paper, models, device)
    print(f"run 1: first step {first_step:.1f} s (the compile), whole run {first_total:.2f} s", flush=True)
    _, again_total, again = timed_run(paper, models, device)
    print(f"run 2: whole run {again_total:.2f} s ({again_total / paper.steps * 1000:.1f} ms/step)", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    single, replays = launches_per_step(paper, models, device)

    graphs = counters["stats"]["unique_graphs"]
    breaks = sum(counters["graph_break"].values())
    skips = counters["inductor"]["cudagraph_skips"]  # each logged with its reason under TORCH_LOGS=perf_hints
    hits = counters["inductor"]["fxgraph_cache_hit"]
    misses = counters["inductor"]["fxgraph_cache_miss"]
    a, b = png_bytes(first.image), png_bytes(again.image)
    same = a == b
    digest = hashlib.sha256(a).hexdigest()[:16]
    warned = sorted({*first.warnings, *again.warnings})
    print(f"dynamo graphs {graphs}, graph breaks {breaks} {dict(counters['graph_break']) or ''}")
    print(f"inductor: fx graph cache hits {hits}, misses {misses}; graphs not recorded as CUDA graphs: {skips}")
    print(f"per step: {single:.0f} kernels launched one by one, {replays:.1f} CUDA-graph replays")
    print(f"same PNG twice: {same} (sha256 {digest}); peak {peak:.2f} GiB; dtype {first.dtype}; "
          f"status {first.status} / {again.status}; warnings: {warned or 'none'}")
    across = None
    if args.same_as:
        across = Path(args.same_as).read_bytes() == a
        print(f"same PNG as {args.same_as}: {across}")
    if args.png:
        Path(args.png).write_bytes(a)
    robust = (same and across is not False and not warned and breaks == 0 and not skips
              and first.status == again.status == "completed" and (device.type != "cuda" or replays >= 1))
    print(f"verdict: {'robust' if robust else 'NOT robust'}: compile {first_step:.1f} s, "
          f"{again_total:.2f} s/image after it, same PNG {same}{'' if across is None else f', across processes {across}'}, "
          f"graph breaks {breaks}, CUDA-graph skips {skips}, warnings {len(warned)}", flush=True)
    return 0 if robust else 1


if __name__ == "__main__":
    sys.exit(main())
