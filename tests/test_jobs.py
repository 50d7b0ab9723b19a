"""Background jobs on the real tiny models: progress, stop, queueing per device, failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from das_ag.studio.jobs import Job

from .conftest import small_config
from .test_engine import png_bytes


@pytest.fixture
def sources(tiny_clip_path, head_path):
    return dict(clip_source=str(tiny_clip_path), aesthetic_source=str(head_path))


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_job_runs_to_the_end_with_progress_and_previews(sources):
    job = Job(small_config(steps=6), preview_every=2, **sources).start()
    assert job.join(60)
    snap = job.snapshot()
    assert (snap.state, snap.error) == ("finished", None)
    assert [m.step for m in snap.metrics] == [1, 2, 3, 4, 5, 6]
    assert snap.result.status == "completed" and snap.preview is not None


def test_a_job_says_whether_its_run_compiles(sources):
    # The studio tells a visitor that the first step waits for the compiler, rather than showing
    # "starting" for a minute: only for runs that compile (on the CPU, only when asked to).
    for compile, expected in ((None, False), (True, True)):
        job = Job(small_config(steps=2, compile=compile), **sources).start()
        assert job.join(300)
        snap = job.snapshot()
        assert snap.error is None and snap.compiled is expected and snap.result.compiled is expected


def test_stop_keeps_the_image_so_far(sources):
    job = Job(small_config(steps=2000), **sources).start()
    assert wait_for(lambda: len(job.snapshot().metrics) >= 3)
    job.stop()
    assert job.join(60)
    result = job.snapshot().result
    assert result.status == "cancelled" and 3 <= result.steps_done < 2000
    assert result.image.size == (224, 224)


def test_runs_on_one_device_take_turns(sources):
    first = Job(small_config(steps=2000), **sources).start()
    assert wait_for(lambda: first.snapshot().state == "running")
    second = Job(small_config(steps=3), **sources).start()
    time.sleep(0.5)
    assert second.snapshot().state == "queued" and first.snapshot().state == "running"
    first.stop()
    assert first.join(60) and second.join(60)
    assert second.snapshot().result.status == "completed"


def test_stop_while_queued(sources):
    first = Job(small_config(steps=2000), **sources).start()
    assert wait_for(lambda: first.snapshot().state == "running")
    second = Job(small_config(steps=3), **sources).start()
    second.stop()
    assert second.join(10)
    assert "cancelled while waiting" in second.snapshot().error and second.snapshot().result is None
    first.stop()
    assert first.join(60)


def test_missing_weights_end_the_job_with_the_message(tmp_path):
    job = Job(small_config(), clip_source=str(tmp_path / "nope.pt"), aesthetic_source=str(tmp_path / "nope.pth")).start()
    assert job.join(30)
    snap = job.snapshot()
    assert snap.state == "finished" and snap.result is None and "does not exist" in snap.error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_cuda_runs_work_from_the_studios_threads(sources):
    # CUDA graphs recorded in one job's thread are replayed by the next job's thread, as in the
    # studio, where each Generate starts a new thread; deterministic runs must still repeat.
    config = small_config(steps=8, device="cuda", compile=True, deterministic=True)
    results = []
    for _ in range(2):
        job = Job(config, **sources).start()
        assert job.join(600)
        snap = job.snapshot()
        assert snap.error is None and snap.result.status == "completed"
        assert not snap.result.warnings  # no fallback to eager
        results.append(snap.result)
    assert png_bytes(results[0].image) == png_bytes(results[1].image)


def test_runs_on_one_gpu_take_turns_whatever_name_their_settings_use():
    # "cuda" and "cuda:0" are one GPU on a one-GPU machine (and "auto" resolves to one of them):
    # two locks would let two runs share it mid-step. Nothing here needs a GPU.
    from das_ag.studio.jobs import device_line, physical_device

    assert device_line("cuda") is device_line("cuda:0") is not device_line("cuda:1")
    assert device_line("cpu") is not device_line("cuda:0")
    assert physical_device("cpu") == "cpu"


def test_runs_on_one_device_take_turns_first_come_first_served(sources):
    # A lock wakes its waiters in any order: a visitor who came first could wait behind later ones.
    # Here the line is kept, and each waiting job knows how many runs are ahead of it.
    from das_ag.studio.jobs import device_line

    line, holder = device_line("cpu"), object()  # a run that has the device now
    line.join(holder)
    try:
        jobs = []
        for n in range(3):
            jobs.append(Job(small_config(steps=2, seed=n), **sources).start())
            assert wait_for(lambda: jobs[-1].snapshot().ahead == n + 1), jobs[-1].snapshot()
        assert [j.snapshot().state for j in jobs] == ["queued"] * 3
        assert [j.snapshot().ahead for j in jobs] == [1, 2, 3]
    finally:
        line.leave(holder)
    order = []
    assert wait_for(lambda: (order.extend(j for j in jobs if not j.snapshot().active and j not in order)
                             or len(order) == 3), timeout=120)
    assert order == jobs and all(j.snapshot().result.status == "completed" for j in jobs)


def test_a_job_whose_page_has_gone_stops_and_keeps_its_images(sources, tmp_path):
    # A closed tab must not hold the device for the rest of a long run, nor lose what was made.
    page_open = [True]
    job = Job(small_config(steps=5000), owner_alive=lambda: page_open[0], abandon_after=0.5,
              abandoned_folder=tmp_path / "unclaimed", **sources).start()
    assert wait_for(lambda: len(job.snapshot().metrics) >= 3)
    page_open[0] = False
    assert job.join(60)
    snap = job.snapshot()
    assert "page that started the run was closed" in snap.error
    assert snap.result.status == "cancelled" and snap.result.steps_done < 5000
    (kept,) = snap.abandoned
    assert Path(kept).parent == tmp_path / "unclaimed"
    assert Path(kept).read_bytes() == snap.result.files()[".png"]


def test_a_page_that_reconnects_within_the_grace_keeps_its_run(sources, tmp_path):
    answers = iter([False] * 3 + [True] * 10_000)  # gone for three checks, then back
    job = Job(small_config(steps=12), owner_alive=lambda: next(answers), abandon_after=30,
              abandoned_folder=tmp_path / "unclaimed", **sources).start()
    assert job.join(60)
    snap = job.snapshot()
    assert snap.error is None and snap.result.status == "completed" and snap.abandoned == ()
    assert not (tmp_path / "unclaimed").exists()


def test_a_queued_job_whose_page_has_gone_leaves_the_line(sources, tmp_path):
    from das_ag.studio.jobs import device_line

    line, holder = device_line("cpu"), object()
    line.join(holder)
    try:
        job = Job(small_config(steps=2), owner_alive=lambda: False, abandon_after=0.2,
                  abandoned_folder=tmp_path / "unclaimed", **sources).start()
        assert job.join(10)
        assert "page was closed while waiting" in job.snapshot().error and line.ahead(job) is None
    finally:
        line.leave(holder)


def test_previews_are_kept_small_and_few(sources, monkeypatch):
    # Every preview of a long run of many images was kept at full size for the animation.
    from das_ag.studio import jobs

    monkeypatch.setattr(jobs, "MAX_FRAMES", 4)
    job = Job(small_config(steps=12, resolution=448, augment_copies=1), preview_every=1, **sources).start()
    assert job.join(120)
    snap = job.snapshot()
    (frames,) = snap.frames
    assert 2 <= len(frames) <= 4 and all(max(f.size) == jobs.PREVIEW_SIDE for f in frames)
    assert snap.result.image.size == (448, 448)  # the image itself is whole


def test_keep_frame_thins_evenly_and_keeps_the_first():
    from das_ag.studio.jobs import MAX_FRAMES, keep_frame

    frames, stride = [], 1
    for n in range(5 * MAX_FRAMES):
        stride = keep_frame(frames, n, n, stride)
        assert len(frames) <= MAX_FRAMES
    assert frames[0] == 0 and stride == 8 and len(frames) > MAX_FRAMES // 2
    assert {b - a for a, b in zip(frames, frames[1:])} == {stride}  # the whole run, evenly
