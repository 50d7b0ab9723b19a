"""How much does drawing with strokes cost, against the ViT-L/14 step it feeds?

    uv run python bench/strokes_speed.py                 # CPU
    uv run python bench/strokes_speed.py --device cuda   # on a GPU

All in one run, on a random-weight CLIP of ViT-L/14's shape (no download):
1. the engine's step with the pixel pyramid (224 px, 8 copies, default precision): the yardstick;
2. the rasteriser alone, forward + backward, for 32 / 128 / 256 strokes at 224 and 448 px, as
   drawn at the start (short strokes, 2 px) and grown (three times longer, 8 px wide: more tiles
   per stroke, as late in a run), each as a share of the step (targets: 128 strokes at 224 px
   <= 25% of the CPU step, <= 10% on a GPU);
3. the tiled rasteriser against the dense one (every stroke on every pixel) for the same strokes;
4. the engine's whole step with 128 strokes against the pyramid's step.
Medians of a few timings after a warm-up; the table is printed last.
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

from das_ag import GenerationConfig  # noqa: E402
from das_ag.canvases.rasterise import render, render_dense  # noqa: E402
from das_ag.canvases.strokes import StrokeCanvas, StrokeSettings  # noqa: E402
from step_speed import PROMPTS, engine_step_seconds, random_models, sync  # noqa: E402

STROKES = (32, 128, 256)
RESOLUTIONS = (224, 448)


def stroke_inputs(count: int, resolution: int, grown: bool, device: torch.device):
    """A strokes canvas's parameters at the start of a run, or grown as they get late in one."""
    config = GenerationConfig(prompts=PROMPTS, canvas="strokes", resolution=resolution,
                              canvas_settings=StrokeSettings(count=count))
    canvas = StrokeCanvas.from_config(config, torch.Generator().manual_seed(0))
    points, widths = canvas.points.detach(), canvas.widths.detach()
    if grown:
        centre = points.mean(dim=1, keepdim=True)
        points, widths = (centre + 3 * (points - centre)).clamp(0, canvas.size), torch.full_like(widths, 8.0)
    tensors = [points[None], widths[None], canvas.rgb.detach()[None], canvas.opacities.detach()[None]]
    return [t.to(device).requires_grad_() for t in tensors], canvas.background.to(device), canvas.size


def render_seconds(draw, inputs, background, size, device, repeats: int) -> float:
    def once():
        sync(device)
        start = time.perf_counter()
        image = draw(*inputs, background, size, softness=0.5)
        torch.autograd.grad(image.mean(), inputs)
        sync(device)
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="engine steps timed per figure")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        models = random_models(Path(tmp), "ViT-L/14", device)

        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        step = engine_step_seconds(models, args.steps, augment_copies=8, resolution=224)
        print(f"pyramid step (ViT-L/14, 224 px, 8 copies): {step * 1000:.0f} ms", flush=True)

        rows = []
        for resolution in RESOLUTIONS:
            for count in STROKES:
                for grown in (False, True):
                    inputs, background, size = stroke_inputs(count, resolution, grown, device)
                    seconds = render_seconds(render, inputs, background, size, device, args.repeats)
                    rows.append((resolution, count, "grown" if grown else "start", seconds))
                    print(f"  render {count:3d} strokes at {resolution} px ({rows[-1][2]}): {seconds * 1000:7.1f} ms"
                          f" = {seconds / step:6.1%} of the step", flush=True)

        inputs, background, size = stroke_inputs(32, 224, True, device)
        tiled = render_seconds(render, inputs, background, size, device, args.repeats)
        dense = render_seconds(render_dense, inputs, background, size, device, args.repeats)
        print(f"dense / tiled, 32 grown strokes at 224 px: {dense / tiled:.1f}x", flush=True)

        stroke_step = engine_step_seconds(models, args.steps, augment_copies=8, resolution=224, canvas="strokes",
                                          canvas_settings={"count": 128})
        print(f"strokes step (128 strokes): {stroke_step * 1000:.0f} ms", flush=True)

    print("\n| strokes | px | strokes as drawn | render fwd+bwd (ms) | share of the ViT-L/14 step |")
    print("|---|---|---|---|---|")
    for resolution, count, state, seconds in rows:
        print(f"| {count} | {resolution} | {state} | {seconds * 1000:.1f} | {seconds / step:.1%} |")
    print(f"\nViT-L/14 pyramid step {step * 1000:.0f} ms; the engine's step with 128 strokes "
          f"{stroke_step * 1000:.0f} ms ({stroke_step / step:.2f}x); dense/tiled rasteriser {dense / tiled:.1f}x")


if __name__ == "__main__":
    main()
