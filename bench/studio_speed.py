"""The studio's speed against the CLI's, on the same config: a real Streamlit server and Chromium.

    uv run python bench/studio_speed.py [--steps 300] [--copies 8] [--resolution 224] [--trials 3]

Both make the same image with the tiny random CLIP (a step cheap enough to be bound by Python,
as every GPU step is), and each reports its own run time (the CLI's "N steps X s" line, the
studio's "N steps in X s"), so start-up and model loading are not counted. Prints steps/s of
each and the ratio studio / CLI (target >= 0.9). Needs /usr/bin/chromium and the playwright
package (the dev group). Run it alone: another torch process on the 2 cores makes both slow.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from das_ag.models import AestheticHead  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PROMPT = "a lighthouse on a cliff at dawn"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_rate(env: dict, steps: int, copies: int, resolution: int, folder: Path) -> float:
    out = folder / f"cli-{time.monotonic_ns()}.png"
    done = subprocess.run(
        [sys.executable, "-m", "das_ag.cli", "generate", "--prompt", PROMPT, "--steps", str(steps), "--copies", str(copies),
         "--resolution", str(resolution), "--device", "cpu", "--quiet", "--out", str(out)],
        env=env, capture_output=True, text=True, check=True,
    )
    match = re.search(r"(\d+) steps\s+([\d.]+) s", done.stdout)
    return int(match.group(1)) / float(match.group(2))


def studio_rates(env: dict, steps: int, copies: int, resolution: int, folder: Path, trials: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = open(folder / "streamlit.log", "w")
    # The README's command, run where the README runs it (the project's .streamlit/config.toml).
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "src/das_ag/app.py", "--server.headless", "true",
         "--server.port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    rates = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_text("das-ag studio").first.wait_for(timeout=90_000)
            for label, value in (("Steps", steps), ("Augmented copies", copies), ("Resolution (px)", resolution)):
                box = page.get_by_label(label, exact=True)
                box.fill(str(value))
                box.press("Enter")
            page.get_by_label("Prompt 1", exact=True).fill(PROMPT)
            page.get_by_label("Prompt 1", exact=True).press("Enter")
            for _ in range(trials):
                page.get_by_role("button", name="Generate", disabled=False).click()
                page.get_by_text("Finished", exact=True).wait_for(state="detached", timeout=30_000)
                page.get_by_text("Finished", exact=True).wait_for(timeout=600_000)
                match = re.search(r"(\d+) steps in ([\d.]+) s", page.inner_text("body"))
                rates.append(int(match.group(1)) / float(match.group(2)))
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)  # ~10 s a run: times print to 0.1 s
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip_path = save_random_clip(folder / "tiny-clip.pt", "tiny", seed=0)
        head = folder / "head.pth"
        torch.save(AestheticHead().state_dict(), head)  # random weights: only its shape costs time
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAS_AG_")}
        env.update(CLIP_MODEL_PATH=str(clip_path), AESTHETIC_PREDICTOR_PATH=str(head), PYTHONUNBUFFERED="1",
                   DAS_AG_CACHE_DIR=str(folder / "cache"), DAS_AG_OUTPUT_DIR=str(folder / "out"))
        cli = [cli_rate(env, args.steps, args.copies, args.resolution, folder) for _ in range(args.trials)]
        studio = studio_rates(env, args.steps, args.copies, args.resolution, folder, args.trials)
    import statistics

    median_cli, median_studio = statistics.median(cli), statistics.median(studio)
    print(f"config: tiny CLIP, {args.steps} steps, {args.copies} copies, {args.resolution} px, CPU, {torch.get_num_threads()} threads")
    print(f"CLI    steps/s: {', '.join(f'{r:.1f}' for r in cli)}")
    print(f"studio steps/s: {', '.join(f'{r:.1f}' for r in studio)}")
    print(f"studio / CLI (median of each): {median_studio / median_cli:.2f}  (target >= 0.9); "
          f"best of each: {max(studio) / max(cli):.2f}")


if __name__ == "__main__":
    main()
