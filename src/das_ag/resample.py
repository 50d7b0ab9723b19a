"""Separable image resampling as two small matrix products.

torch's interpolate has no deterministic CUDA backward for bicubic (and its bilinear backward
uses atomics), which is why the references could not be both bicubic and reproducible. A resize
is linear and separable, so we take torch's own 1-D weights once, by resizing an identity matrix,
and apply them as `A @ X @ B^T`: the same numbers as interpolate, deterministic on every device,
and a matmul, which is what GPUs and CPUs do fastest.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=256)
def resample_matrix(src: int, dst: int, mode: str = "bilinear", antialias: bool = False) -> torch.Tensor:
    """The (dst, src) matrix that resizes one axis from `src` to `dst` samples like F.interpolate."""
    return _interpolated_identity(src, dst, mode, antialias, torch.device("cpu")).float()


@functools.lru_cache(maxsize=256)
def circular_resample_matrix(src: int, dst: int, mode: str = "bilinear") -> torch.Tensor:
    """The (dst, src) matrix that upsamples one axis of a periodic signal: the samples torch's
    interpolate would take (align_corners=False), with the taps past one end read from the other,
    so a picture that tiles still tiles after the resize (a seamless tile's pyramid levels)."""
    if src == dst:
        return torch.eye(src)
    j = torch.arange(dst, dtype=torch.float64)
    matrix = torch.zeros(dst, src, dtype=torch.float64)
    scale = src / dst
    if mode == "nearest":
        matrix[j.long(), (j * scale).floor().long() % src] = 1
        return matrix.float()
    x = (j + 0.5) * scale - 0.5  # where each output sample lies among the input samples
    base = x.floor()
    f = x - base
    if mode == "bilinear":
        taps = [(0, 1 - f), (1, f)]
    elif mode == "bicubic":  # torch's cubic convolution, A = -0.75
        a = -0.75

        def near(t):  # |t| <= 1
            return ((a + 2) * t - (a + 3)) * t * t + 1

        def far(t):  # 1 < |t| < 2
            return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

        taps = [(-1, far(f + 1)), (0, near(f)), (1, near(1 - f)), (2, far(2 - f))]
    else:
        raise ValueError(f"unknown interpolation {mode!r}")
    for offset, weight in taps:
        matrix.index_put_((j.long(), (base.long() + offset) % src), weight, accumulate=True)
    return matrix.float()


def _interpolated_identity(src: int, dst: int, mode: str, antialias: bool, device: torch.device) -> torch.Tensor:
    if src == dst:
        return torch.eye(src, dtype=torch.float64, device=device)
    basis = torch.eye(src, dtype=torch.float64, device=device).reshape(src, 1, 1, src)
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": antialias and dst < src}
    # Resizing a 1 x src image to 1 x dst leaves the height alone (scale 1 is the identity for
    # every mode), so each row is the resized i-th basis vector: the i-th column of the matrix.
    rows = F.interpolate(basis, size=(1, dst), mode=mode, **kwargs)
    return rows.reshape(src, dst).t().contiguous()


def resample_matrix_on(src: int, dst: int, mode: str, antialias: bool, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """resample_matrix on `device` in `dtype`. Eagerly it is made once, so that no step copies it
    from the host (a copy that would make the host wait for the GPU). Traced into a compiled step,
    it is built in the graph from an identity on the device: no host copy either, a few small
    kernels. (A constant held by the graph through torch.compiler.assume_constant_result failed
    to compile on torch 2.11 as soon as a step held two: they shared the function's name.)"""
    if torch.compiler.is_compiling():
        return _interpolated_identity(src, dst, mode, antialias, device).float().to(dtype)  # as eagerly
    return _resample_matrix_on(src, dst, mode, antialias, device, dtype)


@functools.lru_cache(maxsize=256)
def _resample_matrix_on(src, dst, mode, antialias, device, dtype) -> torch.Tensor:
    return resample_matrix(src, dst, mode, antialias).to(device, dtype)


def resize(images: torch.Tensor, size: int, mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """Resize square images (..., H, W) to (..., size, size)."""
    h, w = images.shape[-2:]
    if h == size and w == size:
        return images
    rows = resample_matrix_on(h, size, mode, antialias, images.device, images.dtype)
    cols = resample_matrix_on(w, size, mode, antialias, images.device, images.dtype)
    return rows @ images @ cols.t()
