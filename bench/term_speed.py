"""What each optional loss term adds to a step (symmetry, colourfulness, palette, style ambiguity,
a start picture held at a strength).

    uv run python bench/term_speed.py                 # CPU
    uv run python bench/term_speed.py --device cuda   # on a GPU

On a random-weight CLIP of ViT-L/14's shape (no download), 224 px, 8 copies, default precision:
the engine's step without optional terms and with each one, timed in rounds that alternate them,
so the drift of a shared machine falls on all alike. Medians; ratios from this one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_speed import engine_step_seconds, random_models  # noqa: E402

TERMS = {
    "none": {},
    "symmetry": {"symmetry": {"weight": 1.0}},
    "colourfulness": {"colourfulness": {"weight": 1.0}},
    "palette": {"palette": {"weight": 1.0}},
    "ambiguity (27 labels)": {"ambiguity": {"guidance": "reward"}},
    "start picture (strength 20)": {"init": {"image": "{picture}", "strength": 20.0}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        models = random_models(Path(tmp), "ViT-L/14", device)
        picture = Path(tmp) / "start.png"
        Image.new("RGB", (224, 224), (200, 120, 40)).save(picture)
        for terms in TERMS.values():  # the start picture's file, now that there is a folder for it
            if "init" in terms:
                terms["init"]["image"] = str(picture)
        times = {name: [] for name in TERMS}
        for _ in range(args.rounds):
            for name, terms in TERMS.items():
                times[name].append(engine_step_seconds(models, args.steps, augment_copies=8, resolution=224, terms=terms))
                print(f"  {name}: {times[name][-1] * 1000:.0f} ms", flush=True)
    base = statistics.median(times["none"])
    print("\n| term | ms/step | vs none |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.0f} | {median / base:.3f}x |")


if __name__ == "__main__":
    main()
