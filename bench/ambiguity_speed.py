"""What does the style-ambiguity term cost a step, and how fast are centroids built?

    uv run python bench/ambiguity_speed.py                 # CPU
    uv run python bench/ambiguity_speed.py --device cuda   # on a GPU

On a random-weight CLIP of ViT-L/14's shape (no download), 224 px, 8 copies, default precision:
1. the engine's step without the term and with it (the 27 WikiArt labels, reward), timed in
   alternation so the drift of a shared machine falls on both alike (target: within 2%);
2. `centroids build`'s encoding rate (pictures per second) on a folder of generated pictures,
   and the same build again from the embedding cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from das_ag.styles import build_centroids, embed_folder  # noqa: E402
from step_speed import engine_step_seconds, random_models  # noqa: E402

WITH_TERM = {"ambiguity": {"guidance": "reward", "styles": "wikiart"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of without / with")
    parser.add_argument("--steps", type=int, default=2, help="engine steps timed per round")
    parser.add_argument("--pictures", type=int, default=32, help="pictures in the centroid folder")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        models = random_models(Path(tmp), "ViT-L/14", device)
        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

        without, with_term = [], []
        for _ in range(args.rounds):
            without.append(engine_step_seconds(models, args.steps, augment_copies=8, resolution=224))
            with_term.append(engine_step_seconds(models, args.steps, augment_copies=8, resolution=224, terms=WITH_TERM))
            print(f"  without {without[-1] * 1000:.0f} ms, with {with_term[-1] * 1000:.0f} ms", flush=True)
        a, b = statistics.median(without), statistics.median(with_term)

        folder = Path(tmp) / "pictures"
        folder.mkdir()
        g = torch.Generator().manual_seed(0)
        for i in range(args.pictures):
            pixels = (torch.rand(3, 96, 128, generator=g) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
        start = time.perf_counter()
        points, hashes, report = embed_folder(folder, models, cache_dir=Path(tmp) / "cache", batch_size=16)
        first = time.perf_counter() - start
        build_centroids(points, hashes, 5, models.identities()["clip"])
        start = time.perf_counter()
        _, _, cached = embed_folder(folder, models, cache_dir=Path(tmp) / "cache", batch_size=16)
        second = time.perf_counter() - start

    print(f"\nViT-L/14 step, 224 px, 8 copies: without the term {a * 1000:.0f} ms, with it (27 labels) "
          f"{b * 1000:.0f} ms: ratio {b / a:.3f}")
    print(f"centroids build: {report.embedded} pictures encoded at {report.embedded / report.seconds:.2f} pictures/s "
          f"({first:.1f} s in all); again from the cache ({cached.cached} cached): {second:.2f} s")


if __name__ == "__main__":
    main()
