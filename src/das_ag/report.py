"""The files a comparison leaves behind, all rebuilt from the PNGs in a folder.

scores.csv / scores.json (one row per image), summary.json / summary.md (mean +- std per method,
the published table's form), summary.png (a chart of it) and contact_sheet.png (rows = prompt
set and seed, columns = methods, scores under each image). Every column names its evaluator.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import DasAgError
from .evaluators import Column
from .experiments import collect_rows, method_order, read_manifest, score_columns, summarize
from .durable import write_atomic



def write_report(out_dir: str | Path, evaluators: list | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    evaluators = evaluators or []
    published = read_manifest(out_dir).get("published")
    rows = collect_rows(out_dir, evaluators)
    if not rows:
        # Nothing to tabulate: said in one line, and no empty tables or chart left behind.
        raise DasAgError(f"{out_dir} holds no das-ag images (PNGs with a recipe); nothing to report")
    held_out = [c for e in evaluators for c in e.columns]
    columns: list[Column] = [*score_columns(rows, {c.name for c in held_out}), *held_out]
    names = [c.name for c in columns]
    info = {c.name: {"evaluator": c.evaluator, "held_out": c.held_out} for c in columns}
    summary = summarize(rows, names)
    paths = {
        "scores_csv": out_dir / "scores.csv",
        "scores_json": out_dir / "scores.json",
        "summary_json": out_dir / "summary.json",
        "summary_md": out_dir / "summary.md",
        "chart": out_dir / "summary.png",
        "contact_sheet": out_dir / "contact_sheet.png",
    }
    write_atomic(paths["scores_csv"], _csv(rows, names).encode(), overwrite=True)
    write_atomic(paths["scores_json"], _json({"columns": info, "rows": rows}), overwrite=True)
    write_atomic(paths["summary_json"], _json({"columns": info, "summary": summary}), overwrite=True)
    write_atomic(paths["summary_md"], markdown_summary(summary, columns, published).encode(), overwrite=True)
    write_atomic(paths["chart"], _chart(summary, columns), overwrite=True)
    write_atomic(paths["contact_sheet"], _contact_sheet(out_dir, rows, columns), overwrite=True)
    return paths


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _csv(rows: list[dict], names: list[str]) -> str:
    buffer = io.StringIO()
    fields = ["file", *(["video"] if any("video" in r for r in rows) else []), "prompt_set", "variant", "method",
              "seed", "status", *names]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown_summary(summary: list[dict], columns: list[Column], published: dict | None = None) -> str:
    has_variants = any(s["variant"] for s in summary)
    head = (["variant"] if has_variants else []) + ["method", "n"] + [c.heading for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = ([s["variant"]] if has_variants else []) + [s["method"], str(s["n"])] + [_cell(s[c.name]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation over images. Columns:"]
    lines += [f"- {c.heading}: {c.evaluator}" for c in columns]
    if published:
        lines += ["", "Published (Aesthetic Predictor v2.5, held out, 6 samples each):", "",
                  "| method | aesthetic v2.5 |", "|---|---|"]
        lines += [f"| {m} | {mean:.3f} ± {std:.3f} |" for m, (mean, std) in published.items()]
    return "\n".join(lines) + "\n"


def _chart(summary: list[dict], columns: list[Column]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display; never a GUI backend in a server or CI
    import matplotlib.pyplot as plt

    shown = [c for c in columns if c.name != "clip_negative" or any(s[c.name]["mean"] is not None for s in summary)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    labels = [f"{s['method']}\n{s['variant']}" if s["variant"] else s["method"] for s in summary]
    colours = {"DAS": "#8c8c8c", "DAS-AG": "#2b8a3e", "DAS-rAG": "#c92a2a"}
    for ax, column in zip(axes[0], shown):
        means = [s[column.name]["mean"] or 0.0 for s in summary]
        stds = [s[column.name]["std"] or 0.0 for s in summary]
        ax.bar(labels, means, yerr=stds, capsize=4, color=[colours.get(s["method"], "#1971c2") for s in summary])
        ax.set_title(column.heading + (" (held out)" if column.held_out else ""), fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _contact_sheet(out_dir: Path, rows: list[dict], columns: list[Column], thumb: int = 192) -> bytes:
    methods = sorted({r["method"] for r in rows}, key=method_order)
    keys = sorted({(r["prompt_set"], r["variant"], r["seed"]) for r in rows})
    by_key = {(r["prompt_set"], r["variant"], r["seed"], r["method"]): r for r in rows}
    font = ImageFont.load_default(size=12)
    shown = [c for c in columns if c.name != "clip_negative"]
    caption_h, header_h, pad = 16 * (1 + len(shown)), 24, 8
    cell_w, cell_h = thumb + pad, thumb + caption_h + pad
    sheet = Image.new("RGB", (max(1, len(methods)) * cell_w + pad, header_h + max(1, len(keys)) * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, method in enumerate(methods):
        draw.text((pad + j * cell_w, 4), method, fill="black", font=ImageFont.load_default(size=16))
    for i, (prompt_set, variant, seed) in enumerate(keys):
        for j, method in enumerate(methods):
            row = by_key.get((prompt_set, variant, seed, method))
            if row is None:
                continue
            x, y = pad + j * cell_w, header_h + i * cell_h
            with Image.open(out_dir / row["file"]) as image:
                sheet.paste(image.convert("RGB").resize((thumb, thumb), Image.Resampling.LANCZOS), (x, y))
            lines = [f"{prompt_set[:20]}{'/' + variant if variant else ''} seed {seed}"]
            lines += [f"{c.heading} {row[c.name]:.3f}" for c in shown if row.get(c.name) is not None]
            for k, line in enumerate(lines):
                draw.text((x, y + thumb + 2 + 16 * k), line, fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
