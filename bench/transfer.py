"""Do das-ag's images show their prompt to a CLIP they were not made against?

Makes the 30 captions of ../shared/data/toyclip ("a {colour} {shape}") x seeds with the toy maker
CLIP and asks the toy judge, a second CLIP never optimised against, to name each image among all
30 captions (top-1), and its shape and colour separately; the maker's own top-1 beside it says
what the image was optimised for. Each setting prints one row, with the seconds per image of its
batched runs (this machine, nothing else running), so a row can be compared with the baseline of
the same run.

    uv run python bench/transfer.py                          # every setting below
    uv run python bench/transfer.py --settings today,default --seeds 0,1,2
    uv run python bench/transfer.py --canvas strokes         # the stroke drawings' settings
    uv run python bench/transfer.py --helper H.pt --settings default,default+helper

Rows named `+helper` guide by an ensemble of the maker and a helper CLIP (`--helper`, a
checkpoint bench/toy_helper.py trains), the helper at the row's weight; the maker's top-1 is
still the maker's alone.

Guidance is off (the toy CLIPs' 768-d embeddings fit the aesthetic head, but its scores mean
nothing on them), the picture is 64 px (the toy CLIPs' input), and everything else is the
setting's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from das_ag.config import GenerationConfig, settings_over
from das_ag.embedding import embed_image
from das_ag.engine import choose_images_per_step, synthesize
from das_ag.models import load_models
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule

TOYCLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "toyclip"
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
CAPTIONS = tuple(f"a {c} {s}" for c in COLOURS for s in SHAPES)

# The settings compared, each over the same base (64 px, 150 steps, guidance off). `today` is
# das-ag's defaults before this bench; `default` whatever the defaults are now.
BASE = dict(resolution=64, steps=150, device="cpu", terms={"aesthetic": {"guidance": "off"}})
# The views of releases before bench/transfer.py: the whole picture, shifted.
TODAY = dict(crop_min=1.0, crop_aspect=1.0, view_turn=0.0, view_flip=False)
PIXELS = {
    "today": TODAY,
    "default": {},
    "no-augment": dict(TODAY, jitter_margin=0, noise=Schedule.constant(0.0), colour_shift=Schedule.constant(0.0)),
    "crop-0.5": dict(TODAY, crop_min=0.5),
    "crop-0.3": dict(TODAY, crop_min=0.3),
    "flip": dict(TODAY, view_flip=True),
    "turn-15": dict(TODAY, view_turn=15.0),
    "stretch-1.3": dict(TODAY, crop_aspect=1.3),
    "crop-0.5-flip-turn": dict(TODAY, crop_min=0.5, view_flip=True, view_turn=15.0),
    "crop-0.5-all": dict(TODAY, crop_min=0.5, view_flip=True, view_turn=15.0, crop_aspect=1.3),
    "wide-jitter": dict(TODAY, jitter_margin=12),
    "copies-16": dict(TODAY, augment_copies=16),
    "lr-0.05": dict(TODAY, lr=0.05),
    # Over today's defaults (crops from half the side, flips, turns of 15 degrees): the canvas.
    "default+levels-all": dict(canvas_settings={"levels": "all"}),
    "default+combine-sum": dict(canvas_settings={"combine": "sum"}),
    "default+bicubic": dict(canvas_settings={"interpolation": "bicubic"}),
    "default+lr-0.2": dict(lr=0.2),
    "default+copies-12": dict(augment_copies=12),
    "default+noise-low": dict(noise=Schedule("exp_warmup", 0.1, 0.25, 0.03)),
    "default+whole-1": dict(whole_views=1),
    "default+whole-2": dict(whole_views=2),
    # The pyramid's coarse levels (a quarter of the side or less) at a multiple of the run's rate.
    "default+coarse-1.5": dict(canvas_settings={"coarse_lr": 1.5}),
    "default+coarse-2": dict(canvas_settings={"coarse_lr": 2.0}),
    "default+coarse-3": dict(canvas_settings={"coarse_lr": 3.0}),
    "default+coarse-4": dict(canvas_settings={"coarse_lr": 4.0}),
    "default+coarse-2+turn-10": dict(canvas_settings={"coarse_lr": 2.0}, view_turn=10.0),
    # Noise that stays high while shapes form and falls late (the default rises late, to 0.5).
    "default+noise-fall": dict(noise=Schedule("exp_warmup", 0.5, 0.2, 0.03)),
    "default+coarse-2+noise-fall": dict(canvas_settings={"coarse_lr": 2.0}, noise=Schedule("exp_warmup", 0.5, 0.2, 0.03)),
    # Seventh round: more steps (the issue allows 1.5x today's time), and the noise's two ends apart.
    "default+steps-200": dict(steps=200),
    "default+steps-225": dict(steps=225),
    "default+noise-end-0.35": dict(noise=Schedule("exp_warmup", 0.2, 0.35, 0.03)),
    "default+noise-start-0.1": dict(noise=Schedule("exp_warmup", 0.1, 0.5, 0.03)),
    "default+noise-end-0.3": dict(noise=Schedule("exp_warmup", 0.2, 0.3, 0.03)),
    "default+noise-end-0.4": dict(noise=Schedule("exp_warmup", 0.2, 0.4, 0.03)),
    # Eighth round: the colour shift's end (it rises late as the noise did), and wider turns.
    "default+colour-end-0.15": dict(colour_shift=Schedule("exp_warmup", 0.05, 0.15, 0.03)),
    "default+colour-off": dict(colour_shift=Schedule.constant(0.0)),
    "default+colour-end-0.45": dict(colour_shift=Schedule("exp_warmup", 0.05, 0.45, 0.03)),
    "default+colour-start-0.15": dict(colour_shift=Schedule("exp_warmup", 0.15, 0.30, 0.03)),
    "default+turn-25": dict(view_turn=25.0),
    # An ensemble: the maker and --helper at this weight (the helper's share of the guide).
    "default+helper": dict(helper=1.0),
    "default+helper-0.5": dict(helper=0.5),
    "default+helper+copies-5": dict(helper=1.0, augment_copies=5),
    "default+coarse-2+helper+copies-5": dict(helper=1.0, augment_copies=5, canvas_settings={"coarse_lr": 2.0}),
}
STROKES_BASE = dict(canvas="strokes", canvas_settings={"count": 24, "width": 4.0, "width_max": 10.0})
STROKES = {
    "today": dict(TODAY, **STROKES_BASE),
    "default": STROKES_BASE,
    "crop-0.5-flip-turn": dict(TODAY, crop_min=0.5, view_flip=True, view_turn=15.0, **STROKES_BASE),
    "default+noise-end-0.5": dict(noise=Schedule("exp_warmup", 0.2, 0.5, 0.03), **STROKES_BASE),
    "default+noise-end-0.35": dict(noise=Schedule("exp_warmup", 0.2, 0.35, 0.03), **STROKES_BASE),
}


def configs(settings: dict, seeds: list[int], steps: int) -> list[GenerationConfig]:
    base = settings_over(dict(BASE, steps=steps), settings)
    return [GenerationConfig(**{**base, "prompts": (Prompt(c),), "seed": s}) for s in seeds for c in CAPTIONS]


def top1(models, images, captions) -> list[str]:
    from das_ag.prompts import tokenize

    with torch.no_grad():
        text = models.encode_texts(tokenize(list(captions))[0])
        return [captions[int((embed_image(models, im) @ text.t())[0].argmax())] for im in images]


def measure(name: str, settings: dict, maker, judge, seeds: list[int], steps: int, helper: str | None = None) -> dict:
    settings, guide = dict(settings), maker
    if "helper" in settings:
        sources = (str(TOYCLIP / "toyclip-shapes.pt"), f"{helper}:{settings.pop('helper'):g}")
        guide = load_models(list(sources), None, "cpu", need_head=False)
        settings["clip_models"] = sources
    todo = configs(settings, seeds, steps)
    per_step = choose_images_per_step(guide, todo)
    began = time.perf_counter()
    images = []
    for start in range(0, len(todo), per_step):
        run = synthesize(todo[start:start + per_step], guide)
        for _ in run:
            pass
        images += [r.image for r in run.results()]
    seconds = (time.perf_counter() - began) / len(todo)
    wanted = [c.prompts[0].text for c in todo]
    seen, own = top1(judge, images, CAPTIONS), top1(maker, images, CAPTIONS)
    n = len(todo)
    row = {
        "setting": name, "n": n,
        "judge": sum(s == w for s, w in zip(seen, wanted)) / n,
        "shape": sum(s.split()[2] == w.split()[2] for s, w in zip(seen, wanted)) / n,
        "colour": sum(s.split()[1] == w.split()[1] for s, w in zip(seen, wanted)) / n,
        "maker": sum(s == w for s, w in zip(own, wanted)) / n,
        "s/image": seconds,
    }
    row["missed shapes"], row["maker missed"] = missed_shapes(seen, wanted), missed_shapes(own, wanted)
    return row


def missed_shapes(seen: list[str], wanted: list[str]) -> str:
    """How many images of each shape were named wrongly, most first."""
    misses: dict[str, int] = {}
    for s, w in zip(seen, wanted):
        if s != w:
            misses[w.split()[2]] = misses.get(w.split()[2], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(misses.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canvas", choices=("pyramid", "strokes"), default="pyramid")
    parser.add_argument("--settings", help="comma-separated names (default: all of the canvas's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--helper", help="a helper CLIP's checkpoint for the +helper rows (bench/toy_helper.py)")
    args = parser.parse_args(argv)
    if not (TOYCLIP / "toyclip-shapes-judge.pt").is_file():
        print(f"the toy CLIPs are not in {TOYCLIP}: this bench needs ../shared", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    table = PIXELS if args.canvas == "pyramid" else STROKES
    names = args.settings.split(",") if args.settings else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(table)}", file=sys.stderr)
        return 2
    if any("helper" in table[n] for n in names) and not args.helper:
        print("the +helper rows need --helper, a checkpoint bench/toy_helper.py trains", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    maker = load_models(str(TOYCLIP / "toyclip-shapes.pt"), None, "cpu", need_head=False)
    judge = load_models(str(TOYCLIP / "toyclip-shapes-judge.pt"), None, "cpu", need_head=False)
    print(f"{len(CAPTIONS)} captions x seeds {seeds}, {args.steps} steps, 64 px, {args.canvas}, "
          f"{torch.get_num_threads()} threads")
    print("| setting | judge top-1 | shape | colour | maker top-1 | s/image | judge's misses by shape | maker's |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        row = measure(name, table[name], maker, judge, seeds, args.steps, args.helper)
        rows.append(row)
        print(f"| {name} | {row['judge']:.0%} | {row['shape']:.0%} | {row['colour']:.0%} | {row['maker']:.0%} "
              f"| {row['s/image']:.2f} | {row['missed shapes']} | {row['maker missed']} |", flush=True)
    if len(rows) > 1 and "today" in names:
        base = next(r for r in rows if r["setting"] == "today")["s/image"]
        print("time against today: " + ", ".join(f"{r['setting']} {r['s/image'] / base:.2f}x" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
