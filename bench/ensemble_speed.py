"""Encoder ensembles: step time and memory per encoder, and the CPU's fast path (issue 14, items 4, 7).

    uv run python bench/ensemble_speed.py                 # CPU
    uv run python bench/ensemble_speed.py --device cuda   # on a GPU

Random weights in the real shapes (no download): OpenAI-format ViT-L/14 and ViT-B/32, and
open_clip's own ViT-B-32 architecture built by open_clip. 224 px, 8 copies, default precision.
Each run's mean step over a whole number of aesthetic periods (the fast path scores with
ViT-L/14 on every 10th step only), and time-to-image for a 100-step image from that mean.
Scores need the real weights, which this machine cannot download: compare them where you can.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_speed import engine_steps  # noqa: E402

from das_ag.models import AestheticHead, load_models  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402
from das_ag.schedules import Schedule  # noqa: E402

IMAGE_STEPS = 100


def random_open_clip_b32(folder: Path) -> str:
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-B-32")  # the real architecture, random weights
    path = folder / "open-clip-ViT-B-32-random.bin"
    torch.save(model.state_dict(), path)
    return f"open_clip:ViT-B-32@{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--periods", type=int, default=1, help="aesthetic periods (10 steps each) timed per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        large = str(save_random_clip(folder / "ViT-L-14.pt", "ViT-L/14", seed=0))
        base = str(save_random_clip(folder / "ViT-B-32.pt", "ViT-B/32", seed=1))
        laion = random_open_clip_b32(folder)
        head = folder / "head.pth"
        torch.save(AestheticHead().state_dict(), head)

        runs = {
            "ViT-L/14 (DAS-AG, the default)": ([large], "reward", 1),
            "ViT-B/32 (DAS, no head)": ([base], "off", 1),
            "open_clip ViT-B-32 (DAS, no head)": ([laion], "off", 1),
            "ViT-B/32 + open_clip ViT-B-32 (DAS)": ([base, laion], "off", 1),
            "ViT-B/32 + ViT-L/14 (DAS-AG, both guide)": ([base, large], "reward", 1),
            "fast path: ViT-B/32 + ViT-L/14:0, aesthetic every 10": ([base, f"{large}:0"], "reward", 10),
        }
        rows, memory = [], {}
        for name, (sources, guidance, every) in runs.items():
            models = load_models(sources if len(sources) > 1 else sources[0], str(head), args.device,
                                 need_head=guidance != "off")
            for encoder in models.encoders:
                size = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
                memory[encoder.identity.name.split("@")[0]] = (size / 2**20, encoder.width, encoder.kind)
            steps = 10 * args.periods
            seconds, _ = engine_steps(models, steps + 1, augment_copies=8, resolution=224, clip_models=tuple(sources) if len(sources) > 1 else (), terms={"aesthetic": {"every": every, "guidance": guidance, "weight": Schedule.constant(3.0)}})
            mean = statistics.fmean(seconds[:steps])
            rows.append((name, mean))
            print(f"  {name}: {mean * 1000:.0f} ms/step", flush=True)
    print("\n| encoder | weights (MiB) | embedding | loader |\n|---|---|---|---|")
    for name, (mib, width, kind) in memory.items():
        print(f"| {name} | {mib:.0f} | {width}-d | {kind} |")
    reference = rows[0][1]
    print(f"\n| run | ms/step | vs ViT-L/14 | {IMAGE_STEPS}-step image |\n|---|---|---|---|")
    for name, mean in rows:
        print(f"| {name} | {mean * 1000:.0f} | {mean / reference:.2f}x | {mean * IMAGE_STEPS / 60:.1f} min |")


if __name__ == "__main__":
    main()
