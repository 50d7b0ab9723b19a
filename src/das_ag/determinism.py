"""Bit-for-bit repeatable runs: seeded generators live in the engine; this module sets torch up.

On the CPU, runs always use torch's deterministic algorithms: without them two same-seed runs were
seen to differ in the last bits within a few steps, and on this CPU they cost nothing measurable.
On CUDA, determinism is opt-in (it is slower there): cuBLAS needs a fixed workspace
(CUBLAS_WORKSPACE_CONFIG, read when CUDA starts) and torch must pick deterministic kernels.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from .errors import DeviceError

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_SETTING = ":4096:8"
_DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")


def reserve_cuda_workspace() -> None:
    """Set CUBLAS_WORKSPACE_CONFIG if das-ag is about to start CUDA and the user has not set it.

    Called before models move to a GPU, so that a deterministic run stays possible later in the
    same process; a value the user chose is never changed.
    """
    if CUBLAS_ENV not in os.environ and not torch.cuda.is_initialized():
        os.environ[CUBLAS_ENV] = CUBLAS_SETTING


def prepare_cuda() -> None:
    """Make sure cuBLAS is deterministic for this run, or explain why it is too late."""
    if os.environ.get(CUBLAS_ENV) in _DETERMINISTIC_CUBLAS:
        return
    if torch.cuda.is_initialized():
        raise DeviceError(
            f"deterministic CUDA runs need {CUBLAS_ENV}={CUBLAS_SETTING} (now "
            f"{os.environ.get(CUBLAS_ENV, 'unset')}) before CUDA starts; set it in the environment or .env and restart"
        )
    os.environ[CUBLAS_ENV] = CUBLAS_SETTING


def mode(device: torch.device, deterministic: bool) -> str:
    """A short description of the reproducibility this run will have, for people."""
    if device.type == "cpu":
        return "deterministic (CPU: same seed and settings give the same PNG)"
    if deterministic:
        return f"deterministic (CUDA, deterministic kernels, {CUBLAS_ENV}={os.environ.get(CUBLAS_ENV)})"
    return "fast (CUDA kernels may differ in the last bits between runs)"


@contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device):
    """Turn torch's deterministic algorithms on around a run's work, then restore them."""
    enabled = enabled or device.type == "cpu"
    if not enabled:
        yield
        return
    if device.type == "cuda":
        prepare_cuda()
    previous = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    # Deterministic mode also fills every new tensor with NaN, in case an op reads memory it never
    # wrote; none of ours does, and the fills were ~1,400 extra kernels per ViT-L/14 step on CUDA.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.benchmark = previous_benchmark
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill
