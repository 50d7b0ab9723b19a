"""CUDA determinism and paper-preset wall time, on a random CLIP of a real model's shape.

    python bench/cuda_determinism.py --head PATH/sac+logos+ava1-l14-linearMSE.pth [--shape ViT-L/14]

Runs the same short config twice per mode and says whether the PNG bytes match, then times one
`paper` preset image (448 px, 200 steps, 8 copies) in each precision, with and without
deterministic kernels and compilation. Prints a table last.
Needs a CUDA GPU; the CPU is always deterministic and is covered by the tests.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

from das_ag import GenerationConfig, Prompt, load_models, synthesize
from das_ag.random_clip import save_random_clip

PROMPTS = (Prompt("a photorealistic illustration of a lighthouse in a storm"), Prompt("blurry, dull", -1.0))


def png_bytes(result) -> bytes:
    buf = io.BytesIO()
    result.image.save(buf, format="PNG")
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", required=True)
    parser.add_argument("--shape", default="ViT-L/14")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="print the top CUDA ops of a deterministic bf16 paper step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here; nothing to measure", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = save_random_clip(Path(tmp) / "clip.pt", args.shape, torchscript=False)
        models = load_models(str(clip_path), args.head, "cuda")
    rows = []
    for deterministic, interpolation, compile_ in [(True, "bilinear", False), (True, "bicubic", False),
                                                   (False, "bilinear", False), (True, "bilinear", True)]:
        config = GenerationConfig(prompts=PROMPTS, steps=args.steps, device="cuda", compile=compile_,
                                  deterministic=deterministic, canvas_settings={"interpolation": interpolation}, seed=7)
        try:
            a, b = (synthesize(config, models).run() for _ in range(2))
            same = png_bytes(a) == png_bytes(b)
            rows.append((f"det={deterministic} {interpolation}{' compile' if compile_ else ''}", "identical PNG" if same else "PNG differs",
                         f"aesthetic {a.scores.aesthetic:.4f} / {b.scores.aesthetic:.4f}"))
        except Exception as exc:  # report, keep measuring the other modes
            rows.append((f"det={deterministic} {interpolation}{' compile' if compile_ else ''}", "error", str(exc).splitlines()[0][:90]))
        print(rows[-1], flush=True)  # as it goes: a time limit may end the run
    for dtype, deterministic, compile_ in [("float32", True, False), ("auto", True, False), ("auto", False, False),
                                           ("auto", False, True), ("auto", True, True)]:
        config = GenerationConfig.from_preset("paper", prompts=PROMPTS, device="cuda", dtype=dtype,
                                              deterministic=deterministic, compile=compile_)
        synthesize(config.replace(steps=5), models).run()  # warm-up: kernels, allocator, compilation
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = synthesize(config, models).run()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30
        label = f"paper {result.dtype}{' det' if deterministic else ''}{' compile' if compile_ else ''}"
        rows.append((label, f"{seconds:.2f} s/image", f"{seconds / config.steps * 1000:.1f} ms/step, peak {peak:.1f} GiB, aes {result.scores.aesthetic:.3f}"))
        print(rows[-1], flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        config = GenerationConfig.from_preset("paper", prompts=PROMPTS, device="cuda", dtype="auto", steps=6)
        run = synthesize(config, models)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in run:
                pass
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  shape {args.shape}")
    print(f"{'mode':28} {'result':18} detail")
    for mode, outcome, detail in rows:
        print(f"{mode:28} {outcome:18} {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
