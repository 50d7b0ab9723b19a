"""Train a third toy CLIP, a helper for ensembles in bench/transfer.py (issue 29).

The DAS line of work says images made against an ensemble of encoders transfer better to an
encoder none of them is. The toy maker and judge in ../shared/data/toyclip are the only trained
encoders here, and the judge must stay unseen, so this bench trains a helper of its own: a small
CLIP in OpenAI's format (it loads through das-ag's `clip.load` path like the maker), trained with
CLIP's contrastive objective on shapes this script draws itself. Its drawings are not the toy
CLIPs' (this project never had their generator): same captions, "a {colour} {shape}", a drawing of
one shape on a noisy grey ground. The helper is written to --out, never into the project.

    uv run python bench/toy_helper.py --out ~/.cache/das-ag/bench/toy-helper.pt
    uv run python bench/transfer.py --helper ~/.cache/das-ag/bench/toy-helper.pt \
        --settings default,default+helper

It prints the loss as it trains and, at the end, its zero-shot top-1 on fresh drawings.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from das_ag.clip_models import CLIP_MEAN, CLIP_STD
from das_ag.clip_package import clip_module
from das_ag.prompts import tokenize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import CAPTIONS  # noqa: E402  (the bench this helper serves: the same 30 captions)

SIDE, SUPERSAMPLE = 64, 4
COLOURS = {"red": (215, 45, 40), "green": (45, 175, 65), "blue": (45, 80, 225),
           "yellow": (235, 215, 50), "purple": (145, 55, 200), "white": (240, 240, 240)}


def outline(shape: str, r: float) -> list[tuple[float, float]]:
    """A shape's polygon around (0, 0), before turning (circles and rings are drawn as ellipses)."""
    if shape == "square":
        s = 0.8 * r
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "triangle":
        return [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "cross":
        a, w = r, 0.33 * r
        return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w),
                (-w, -w)]
    raise ValueError(shape)


def draw(caption: str, rng: np.random.Generator) -> Image.Image:
    """One 64 px drawing of `caption`: a shape of random size, place and turn on a noisy grey ground,
    sometimes with grey specks beside it."""
    _, colour, shape = caption.split()
    big = SIDE * SUPERSAMPLE
    ground = rng.uniform(0.04, 0.22) if rng.random() < 0.5 else rng.uniform(0.32, 0.55)
    g = int(255 * ground)
    im = Image.new("RGB", (big, big), (g, g, g))
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(0, 4) if rng.random() < 0.35 else 0):  # distractor specks
        x, y, s = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(2, 6) * SUPERSAMPLE
        v = int(255 * rng.uniform(0.3, 0.7))
        d.ellipse([x - s, y - s, x + s, y + s], fill=(v, v, v))
    r = rng.uniform(0.16, 0.36) * big
    cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    fill = tuple(int(np.clip(c + rng.normal(0, 14), 0, 255)) for c in COLOURS[colour])
    if shape in ("circle", "ring"):
        e = 0.85 * r
        d.ellipse([cx - e, cy - e, cx + e, cy + e], fill=fill)
        if shape == "ring":
            h = e * rng.uniform(0.5, 0.68)
            d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=(g, g, g))
    else:
        turn = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(turn), math.sin(turn)
        d.polygon([(cx + c * x - s * y, cy + s * x + c * y) for x, y in outline(shape, r)], fill=fill)
    small = np.asarray(im.resize((SIDE, SIDE), Image.LANCZOS), dtype=np.float32) / 255
    small = small + rng.normal(0, rng.uniform(0.01, 0.06), small.shape)
    return Image.fromarray((np.clip(small, 0, 1) * 255).astype(np.uint8))


def batch(captions, per_caption: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images normalised as CLIP reads them, the index of each one's caption)."""
    labels = np.repeat(np.arange(len(captions)), per_caption)
    pixels = np.stack([np.asarray(draw(captions[i], rng), dtype=np.float32) / 255 for i in labels])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(labels)


def build(width: int, layers: int, seed: int):
    torch.manual_seed(seed)
    return clip_module().model.CLIP(
        embed_dim=768, image_resolution=SIDE, vision_layers=layers, vision_width=width, vision_patch_size=8,
        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=2)


def zero_shot(model, rng: np.random.Generator, per_caption: int = 10) -> float:
    model.eval()
    with torch.no_grad():
        x, labels = batch(CAPTIONS, per_caption, rng)
        text = F.normalize(model.encode_text(tokenize(list(CAPTIONS))[0]), dim=-1)
        seen = (F.normalize(model.encode_image(x), dim=-1) @ text.t()).argmax(dim=1)
    model.train()
    return float((seen == labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where the helper's checkpoint goes (outside the project)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--per-caption", type=int, default=4, help="drawings of each caption in a batch")
    parser.add_argument("--width", type=int, default=96, help="the vision transformer's width")
    parser.add_argument("--layers", type=int, default=3, help="the vision transformer's layers")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    model = build(args.width, args.layers, args.seed).float().train()
    tokens = tokenize(list(CAPTIONS))[0]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t, args.steps) / args.steps)))
    # Every batch holds the captions in the same order, so which drawing is whose is fixed.
    labels = torch.arange(len(CAPTIONS)).repeat_interleave(args.per_caption)
    positives = (labels[None, :] == torch.arange(len(CAPTIONS))[:, None]).float()
    began = time.perf_counter()
    for step in range(args.steps):
        x, _ = batch(CAPTIONS, args.per_caption, rng)
        image = F.normalize(model.encode_image(x), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image @ text.t()
        # CLIP's two-way contrastive loss, with every drawing of a caption as that caption's positive.
        loss = (F.cross_entropy(logits, labels)
                + (-(logits.t().log_softmax(dim=1) * positives).sum(1) / positives.sum(1)).mean()) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f}, {time.perf_counter() - began:.0f} s", flush=True)
    accuracy = zero_shot(model, np.random.default_rng(args.seed + 1000))
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.half().state_dict(), out)
    print(f"zero-shot top-1 on 300 fresh drawings: {accuracy:.0%}; written to {out} "
          f"({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
