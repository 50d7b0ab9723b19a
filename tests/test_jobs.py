"""Background jobs on the real tiny models: progress, stop, queueing per device, failures."""

from __future__ import annotations

import time

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
    from das_ag.studio.jobs import device_lock, physical_device

    assert device_lock("cuda") is device_lock("cuda:0") is not device_lock("cuda:1")
    assert device_lock("cpu") is not device_lock("cuda:0")
    assert physical_device("cpu") == "cpu"
