"""What the CPU fast path costs in quality: --preset fast-cpu against the full ViT-L/14 run.

    uv run python bench/fast_path_quality.py --vit-l PATH --vit-b PATH [--steps 100] [--seeds 0,1]

Needs the real weights (paths, or the names ViT-L/14 and ViT-B/32 where they can be downloaded):
on random weights the scores mean nothing. For each prompt and seed it makes the image both ways
from the same settings and scores both finished images with the same ViT-L/14 and head: the
aesthetic score and the CLIP similarity to the prompt under ViT-L/14, so neither image is judged
by the encoder that made it. Prints the time to each image and the differences.
"""

from __future__ import annotations

import argparse
import statistics
import time

from das_ag.config import GenerationConfig
from das_ag.engine import synthesize
from das_ag.models import load_models
from das_ag.prompts import Prompt
from das_ag.scoring import score_image

PROMPTS = ("a lighthouse on a cliff at dawn", "a bowl of ripe fruit on a wooden table",
           "a portrait of an old fisherman", "a quiet mountain lake in autumn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vit-l", default="ViT-L/14")
    parser.add_argument("--vit-b", default="ViT-B/32")
    parser.add_argument("--aesthetic-model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    args = parser.parse_args()
    full = load_models(args.vit_l, args.aesthetic_model, args.device)
    fast = load_models([args.vit_b, f"{args.vit_l}:0"], args.aesthetic_model, args.device)
    rows = []
    for text in PROMPTS[: args.prompts]:
        for seed in (int(s) for s in args.seeds.split(",")):
            made = {}
            for name, models, preset in (("ViT-L/14", full, None), ("fast-cpu", fast, "fast-cpu")):
                settings = dict(prompts=(Prompt(text),), seed=seed, steps=args.steps, device=str(full.device))
                config = GenerationConfig.from_preset(preset, **settings) if preset else GenerationConfig(
                    **{**settings, "resolution": 224, "augment_copies": 8})
                start = time.perf_counter()
                image = synthesize(config, models).run().image
                seconds = time.perf_counter() - start
                judged = score_image(full, image, GenerationConfig(prompts=(Prompt(text),), device=str(full.device)))
                made[name] = (seconds, judged.aesthetic, judged.clip_positive)
                print(f"  {text[:32]} seed {seed} {name}: {seconds:.0f} s, aesthetic {judged.aesthetic:.3f}, "
                      f"clip {judged.clip_positive:.4f}", flush=True)
            rows.append(made)
    print("\n| run | s/image | aesthetic (ViT-L/14 head) | CLIP similarity (ViT-L/14) |\n|---|---|---|---|")
    for name in ("ViT-L/14", "fast-cpu"):
        seconds, aesthetic, clip = (statistics.fmean(r[name][i] for r in rows) for i in range(3))
        print(f"| {name} | {seconds:.0f} | {aesthetic:.3f} | {clip:.4f} |")


if __name__ == "__main__":
    main()
