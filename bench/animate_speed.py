"""Seconds per frame of a moving video, and what the move, the tile and the mask cost.

    uv run python bench/animate_speed.py                 # CPU (ViT-B/32 shape: minutes)
    uv run python bench/animate_speed.py --shape ViT-L/14 --device cuda

On a random-weight CLIP of the given shape (no download), 224 px, 8 copies, default precision:
1. `das_ag.animate` of 6 frames (a first frame of --first-steps steps, then --frame-steps each,
   zoom 1.03, a pan and a turn), for the pixel pyramid and for 64 strokes: seconds per frame after
   the first, and the share of a frame spent outside its steps (warping, files, encoding);
2. one run of --frame-steps steps alone, plain, with --tile, and with a mask over half the picture:
   their ratios to the plain run.
The table is printed last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from das_ag import GenerationConfig  # noqa: E402
from das_ag.animate import Motion, animate  # noqa: E402
from das_ag.engine import synthesize  # noqa: E402
from das_ag.schedules import Schedule  # noqa: E402
from step_speed import PROMPTS, random_models  # noqa: E402


def run_seconds(config, models) -> float:
    start = time.perf_counter()
    synthesize(config, models).run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ViT-B/32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--first-steps", type=int, default=20)
    parser.add_argument("--frame-steps", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        models = random_models(Path(folder), args.shape, args.device)
        base = GenerationConfig(prompts=PROMPTS, steps=args.first_steps, device=args.device, compile=False)
        motion = Motion(frames=6, frame_steps=args.frame_steps, zoom=Schedule.constant(1.03),
                        pan_x=Schedule.constant(2.0), turn=Schedule.constant(1.0))
        for name, config in (("pixels", base), ("64 strokes", base.replace(canvas="strokes", canvas_settings={"count": 64}))):
            run_seconds(config.replace(steps=2), models)  # warm-up
            done = []
            animate(config, motion, models, Path(folder) / f"{name.replace(' ', '-')}.gif", on_frame=done.append)
            later = [d.seconds for d in done[1:]]
            steps_alone = run_seconds(config.replace(steps=args.frame_steps), models)
            per_frame = sum(later) / len(later)
            rows.append((f"animate, {name}: s a frame after the first", f"{per_frame:.2f} s",
                         f"{args.frame_steps} steps alone {steps_alone:.2f} s; the rest {1 - steps_alone / per_frame:+.0%}"))
        picture, mask = Path(folder) / "start.png", Path(folder) / "mask.png"
        Image.new("RGB", (224, 224), (40, 90, 160)).save(picture)
        half = Image.new("L", (224, 224), 0)
        half.paste(255, (112, 0, 224, 224))
        half.save(mask)
        plain = base.replace(steps=args.frame_steps)
        variants = {"plain": plain, "--tile": plain.replace(tile=True),
                    "--mask (half)": plain.replace(terms={"init": {"image": str(picture), "mask": str(mask)}}),
                    "start picture, no mask": plain.replace(terms={"init": {"image": str(picture)}})}
        times = {k: min(run_seconds(c, models) for _ in range(2)) for k, c in variants.items()}
        for name, seconds in times.items():
            rows.append((f"{args.frame_steps} steps, {name}", f"{seconds:.2f} s", f"x{seconds / times['plain']:.3f} of plain"))
    print(f"\n{args.shape} (random weights), 224 px, 8 copies, {args.device}, torch threads {torch.get_num_threads()}")
    for row in rows:
        print(f"  {row[0]:<48} {row[1]:>8}   {row[2]}")


if __name__ == "__main__":
    main()
