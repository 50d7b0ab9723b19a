"""Plans on a real local Ray cluster (the cluster extra): the same files as a local run, a killed
worker's images made elsewhere, an interrupted plan resumed, missing weights said before a start."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from das_ag.cli import main
from das_ag.errors import DasAgError
from das_ag.experiments import is_complete, run_plan

from .conftest import USER_VARIABLES

# One prompt, one seed, DAS and DAS-AG, as pixels and as strokes: four images (two batches at two
# images per step), and an SVG beside each drawing.
PLAN = """
seeds = [1]
methods = ["DAS", "DAS-AG"]

[settings]
steps = 6
augment_copies = 2
resolution = 64
device = "cpu"

[[prompts]]
text = "a red apple"

[[variants]]
name = "pixels"

[[variants]]
name = "strokes"
canvas = "strokes"
canvas_settings = { count = 6 }
"""


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, tiny_clip_path, head_path):
    """A local cluster of this machine's CPUs, started the way `--ray auto` starts one. Its
    nodes' environment names the weights, as a deployed node's .env would (and nothing of the
    user's: no weight variables, no .env, no cache)."""
    ray = pytest.importorskip("ray", reason="the cluster extra is not installed (uv sync --extra cluster)")
    import logging

    import torch

    home = tmp_path_factory.mktemp("ray-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in USER_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("DAS_AG_CACHE_DIR", str(home / "cache"))
        patch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
        patch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
        patch.chdir(home)
        ray.init(num_cpus=max(2, torch.get_num_threads()), include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_files(tmp_path_factory, tiny_clip_path, head_path):
    """The plan made by a local `das-ag batch` at this process's torch threads, two images per step."""
    folder = tmp_path_factory.mktemp("local")
    (folder / "plan.toml").write_text(PLAN)
    env = {"CLIP_MODEL_PATH": str(tiny_clip_path), "AESTHETIC_PREDICTOR_PATH": str(head_path)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["batch", str(folder / "plan.toml"), "--out", str(folder / "out"), "--images-per-step", "2",
                     "--quiet"]) == 0
    files = _files(folder / "out" / "images")
    assert len(files) == 6  # four PNGs and the two drawings' SVGs
    return files


def _spec(tiny_clip_path, head_path, cpus):
    from das_ag.cluster import WorkerSpec

    return WorkerSpec(str(tiny_clip_path), str(head_path), need_head=True, cpus=cpus)


def _plan(out: Path, seeds=(1,)):
    from das_ag.experiments import load_plan

    source = out.parent / "plan.toml"
    source.write_text(PLAN.replace("seeds = [1]", f"seeds = {list(seeds)}"))
    return load_plan(source, out)


def test_a_plan_on_ray_is_the_local_plan_byte_for_byte(ray_cluster, local_files, tiny_clip_path, head_path, weights_env,
                                                        tmp_path, capsys):
    (tmp_path / "plan.toml").write_text(PLAN)
    command = ["batch", str(tmp_path / "plan.toml"), "--out", str(tmp_path / "out"), "--ray", "auto", "--quiet"]
    assert main([*command, "--images-per-step", "2"]) == 0
    printed = capsys.readouterr().out
    assert "made 4, skipped 0 already finished" in printed
    assert _files(tmp_path / "out" / "images") == local_files
    # The folder is a plan's folder: its report reads every image, the drawings' too.
    assert "| pixels | DAS | 1 |" in printed and "| strokes | DAS-AG | 1 |" in printed

    # Run again: everything is complete, on the cluster as locally.
    assert main(command) == 0
    assert "made 0, skipped 4 already finished" in capsys.readouterr().out


class WorkerKiller(threading.Thread):
    """SIGKILLs the process of a worker making a batch, as the kernel's OOM killer or an operator
    would, `times` times (each time a new one: Ray restarts a killed worker)."""

    def __init__(self, times: int):
        super().__init__(daemon=True)
        self.times, self.killed, self.done = times, [], threading.Event()

    def run(self):
        deadline = time.monotonic() + 180
        while len(self.killed) < self.times and not self.done.is_set() and time.monotonic() < deadline:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"ray::PlanWorker.run") and int(pid) not in self.killed:
                    os.kill(int(pid), signal.SIGKILL)
                    self.killed.append(int(pid))
                    break
            time.sleep(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def test_a_killed_workers_batch_is_made_by_another(ray_cluster, tiny_clip_path, head_path, models, tmp_path):
    import torch

    from das_ag.cluster import run_plan_on_ray

    # Eight images for two one-thread workers; images per step auto, as the first worker measures it
    # (here all eight share one batch, which the worker that is not killed makes).
    plan = _plan(tmp_path / "out", seeds=(1, 2))
    lines = []
    with WorkerKiller(times=1) as killer:
        made, skipped, failed = run_plan_on_ray(plan, _spec(tiny_clip_path, head_path, cpus=1), on_failure=lines.append)
    assert len(killer.killed) == 1, "no worker was seen making a batch"
    assert (made, skipped, failed) == (8, 0, 0)
    died = [line for line in lines if "died" in line]
    assert len(died) == 1 and died[0].endswith("died (its process ended: killed, crashed or out of memory); "
                                               "trying again on another worker")
    assert any(item.filename in died[0] for item in plan.items)  # the line names the batch's images
    assert all(is_complete(plan.path(item), item.config, models.identities()) for item in plan.items)

    # The batch made again elsewhere is what it would have been: a local run at the workers'
    # one thread gives the same bytes.
    here = _plan(tmp_path / "local", seeds=(1, 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_plan(here, models)
    finally:
        torch.set_num_threads(threads)
    assert _files(plan.image_dir) == _files(here.image_dir)


def test_a_batch_whose_workers_keep_dying_is_given_up_in_a_line_and_the_plan_goes_on(ray_cluster, tiny_clip_path,
                                                                                    head_path, tmp_path):
    from das_ag.cluster import ATTEMPTS, run_plan_on_ray

    import torch

    plan = _plan(tmp_path / "out")
    lines = []
    with WorkerKiller(times=ATTEMPTS):
        # One worker, two batches: the first is killed each time it is tried (the worker restarted
        # each time), then the worker makes the second.
        made, skipped, failed = run_plan_on_ray(plan, _spec(tiny_clip_path, head_path, cpus=torch.get_num_threads()),
                                                images_per_step=2, on_failure=lines.append)
    assert (made, skipped, failed) == (2, 0, 2)
    retried = [line for line in lines if "trying again" in line]
    given_up = [line for line in lines if line.endswith("left out")]
    assert len(given_up) == 1 and f"failed {ATTEMPTS} times" in given_up[0]
    assert len(retried) == ATTEMPTS - 1 and all(line.split(": ")[0] == given_up[0].split(": ")[0] for line in retried)
    lost = given_up[0].split(": ")[0].split(", ")  # the batch's images, by name
    assert len(lost) == 2 and not any(plan.path(item).exists() for item in plan.items if item.filename in lost)
    assert len(list(plan.image_dir.glob("*.png"))) == 2


def test_an_interrupted_plan_frees_its_workers_and_resumes_to_the_same_files(ray_cluster, local_files, tiny_clip_path,
                                                                             head_path, tmp_path):
    import torch

    from das_ag.cluster import run_plan_on_ray

    plan = _plan(tmp_path / "out")
    spec = _spec(tiny_clip_path, head_path, cpus=torch.get_num_threads())
    total = ray_cluster.cluster_resources()["CPU"]

    def ctrl_c(progress):
        if progress.done == 2:  # the first batch written
            raise KeyboardInterrupt  # as Ctrl-C would, while the driver waits for the next

    with pytest.raises(KeyboardInterrupt):
        run_plan_on_ray(plan, spec, images_per_step=2, on_progress=ctrl_c)
    kept = _files(plan.image_dir)
    assert len([name for name in kept if name.endswith(".png")]) == 2
    deadline = time.monotonic() + 30
    while ray_cluster.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_cluster.available_resources().get("CPU", 0) == total  # no worker holds the cluster's CPUs

    assert run_plan_on_ray(plan, spec, images_per_step=2) == (2, 2, 0)  # (made, skipped, failed)
    assert _files(plan.image_dir) == local_files


def test_a_node_without_the_weights_is_named_before_the_plan_starts(ray_cluster, head_path, tmp_path):
    from das_ag.cluster import WorkerSpec, run_plan_on_ray

    plan = _plan(tmp_path / "out")
    missing = tmp_path / "not-here.pt"
    with pytest.raises(DasAgError) as caught:
        run_plan_on_ray(plan, WorkerSpec(str(missing), str(head_path), need_head=True, cpus=1))
    message = str(caught.value)
    assert "1 of 1 node(s) cannot run the plan, so it did not start" in message and str(missing) in message
    assert "\n" not in message
    node = ray_cluster.nodes()[0]["NodeManagerAddress"]
    assert f"{node}: CLIP model {missing}" in message
    assert not list(plan.image_dir.glob("*"))


def test_ray_is_needed_only_when_asked_for(monkeypatch, weights_env, tmp_path, capsys):
    (tmp_path / "plan.toml").write_text(PLAN)
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the extra: `import ray` fails
    assert main(["batch", str(tmp_path / "plan.toml"), "--ray", "auto", "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == ("das-ag: error: --ray needs the cluster extra: uv sync --extra cluster "
                                               "(or pip install 'das-ag[cluster]')")
    assert main(["batch", str(tmp_path / "plan.toml"), "--gpus-per-worker", "1", "--quiet"]) == 1
    assert "--gpus-per-worker places workers on a Ray cluster; add --ray auto" in capsys.readouterr().err


def test_an_address_where_nothing_listens_is_said_at_once(weights_env, tmp_path, capsys):
    pytest.importorskip("ray", reason="the cluster extra is not installed (uv sync --extra cluster)")
    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "plan.toml").write_text(PLAN)
    started = time.monotonic()
    assert main(["batch", str(tmp_path / "plan.toml"), "--ray", f"127.0.0.1:{port}", "--quiet"]) == 1
    assert time.monotonic() - started < 30  # Ray alone retries for minutes
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"das-ag: error: nothing answers at 127.0.0.1:{port}") and "\n" not in err
    assert main(["batch", str(tmp_path / "plan.toml"), "--ray", "head-node", "--quiet"]) == 1
    assert "--ray head-node is not an address" in capsys.readouterr().err
