"""Device settings shared by the simulator and the trainer (no imckit imports: any layer may use it)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def exact_kernels():
    """:func:`no_tf32`, and on a GPU cuDNN off: its convolution algorithms (Winograd, FFT) are
    not exact on integer operands, the native im2col + GEMM kernels are (with TF32 off).

    >>> with exact_kernels():
    ...     pass
    """
    with no_tf32():
        if not torch.cuda.is_available():
            yield
            return
        with torch.backends.cudnn.flags(enabled=False):
            yield


@contextlib.contextmanager
def no_tf32():
    """TF32 off for cuBLAS and cuDNN inside the block: exact integer sums on a GPU (TF32 keeps
    10 mantissa bits) and unrounded mismatch-folded IMC weights (TF32 would round them by ~5e-4
    against a ~2e-3 mismatch). A no-op without CUDA.

    >>> with no_tf32():
    ...     pass
    """
    if not torch.cuda.is_available():
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
