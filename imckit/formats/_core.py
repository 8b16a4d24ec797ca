"""Shared machinery of the number formats: the format base class, input handling, checks.

Every public entry point converts its input with :func:`as_tensor` (torch tensor or numpy
array in, the same kind out), checks its arguments with the helpers here *before* any
compute (ValueError naming the argument, the value and what is allowed), and then works on
plain torch tensors under ``torch.no_grad()``.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from .._validate import check_choice, check_range

ROUNDINGS = ("nearest", "stochastic")
"""Rounding modes every format supports."""

PHASES = (0, 1)
"""Two-phase rounding (TPR) phases [SUN20]: phase 1 is the phase-0 grid offset UPWARD by one
binade (times 2, :func:`phase_factor`). For radix-4 FP4 at scale ``S`` phase 0 holds
``S * 4**-k`` and phase 1 ``2S * 4**-k`` (k = 0..6): both hold every value in ``[0, S]``
without clipping, together every power of two from ``2S`` to ``S/4096``. The direction of the
offset is our choice [I] (SPEC §1.2; the first version offset it down, times 1/2, and clipped
``(S/2, S]`` in phase 1). Every other format applies the same factor to its grid. In
:mod:`imckit.nn` phase 0 feeds the backward MVM and phase 1 the weight-gradient MVM (our default,
``LayerConfig.backward_phase`` / ``weight_grad_phase``)."""


def phase_factor(phase: int) -> float:
    """The factor phase ``phase`` applies to a format's grid: 1 for phase 0, 2 for phase 1.

    >>> phase_factor(0), phase_factor(1)
    (1.0, 2.0)
    """
    return 2.0 if phase else 1.0

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

MIN_NORMAL64 = sys.float_info.min
"""Smallest normal float64 (2**-1022): grid steps stay at or above it (no underflow to 0)."""
MAX_FLOAT64 = sys.float_info.max


class Format:
    """Base class of a number format (a grid of representable values times a scale).

    Subclasses implement :meth:`_quantize` on validated float tensors, :meth:`clip_range`,
    :meth:`values` and :meth:`check_scale`. Use them through :func:`imckit.formats.quantize`.
    """

    name: str = "format"
    bits: int = 0

    def scale_bounds(self) -> tuple[float, float]:
        """``(lo, hi)``: the scales this format accepts. At ``lo`` the smallest step of the grid
        is still a normal float64 at both phases, so no step underflows to 0 (which gave
        0/0 = NaN); at ``hi`` the phase-1 factor ``scale * 2`` is still finite."""
        return 2.0 * MIN_NORMAL64, MAX_FLOAT64 / 2

    def check_scale(self, scale: Any) -> float:
        """Validate ``scale`` and return it as a python float (finite, within
        :meth:`scale_bounds`)."""
        return check_scale_bounds(self, check_scale(scale))

    def clip_range(self, scale: float = 1.0, phase: int = 0) -> tuple[float, float]:
        """``(lo, hi)``: inputs outside are clipped (saturated); the STE passes no gradient there."""
        raise NotImplementedError

    def values(self, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32) -> torch.Tensor:
        """Every representable value at this scale and phase, sorted (1-D tensor)."""
        raise NotImplementedError

    def _quantize(self, x: torch.Tensor, scale: float, phase: int, rounding: str,
                  generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


def check_scale(scale: Any, name: str = "scale", *, power_of_two: bool = False) -> float:
    """A positive, finite scale as a float (0-d / one-element tensors accepted).

    >>> check_scale(0.5, power_of_two=True)
    0.5
    >>> check_scale(0.3, power_of_two=True)
    Traceback (most recent call last):
    ...
    ValueError: scale=0.3 is not a power of two: allowed 2**k for an integer k (rescaling is a shift, SPEC 1.2)
    """
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"{name} has shape {tuple(scale.shape)}: allowed a single number")
        scale = float(scale.detach().reshape(()).item())
    elif isinstance(scale, np.generic):
        scale = scale.item()
    check_range(name, scale, 0, None, lo_open=True)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{name}={scale!r} is not allowed: a finite positive number is needed")
    if power_of_two and math.frexp(scale)[0] != 0.5:
        raise ValueError(f"{name}={scale!r} is not a power of two: allowed 2**k for an integer k"
                         " (rescaling is a shift, SPEC 1.2)")
    return scale


def check_scale_bounds(fmt: Format, scale: float) -> float:
    """``scale`` if it lies within ``fmt.scale_bounds()``, else a ValueError naming it.

    >>> from imckit.formats import Int
    >>> check_scale_bounds(Int(4), 1e-310)
    Traceback (most recent call last):
    ...
    ValueError: scale=1e-310 is out of range for INT4: allowed 3.1151e-307..4.49423e+307 (steps and levels must stay normal float64 numbers)
    """
    lo, hi = fmt.scale_bounds()
    if not lo <= scale <= hi:
        raise ValueError(f"scale={scale!r} is out of range for {fmt.name}: allowed {lo:g}..{hi:g}"
                         " (steps and levels must stay normal float64 numbers)")
    return scale


def check_common(rounding: str, phase: Any, generator: Any) -> None:
    """Check the arguments shared by every quantizer call (before any compute)."""
    check_choice("rounding", rounding, ROUNDINGS)
    if isinstance(phase, bool) or phase not in PHASES:
        raise ValueError(f"phase={phase!r} is not allowed: choose one of 0, 1 "
                         "(two-phase rounding, SPEC 1.2)")
    if rounding == "stochastic":
        if generator is None:
            raise ValueError("generator=None is not allowed with rounding='stochastic': pass a "
                             "torch.Generator or an int seed (randomness is always explicit)")
        if isinstance(generator, bool) or not isinstance(generator, (torch.Generator, int)):
            raise ValueError(f"generator={generator!r} is not allowed: a torch.Generator or an "
                             "int seed")


def as_tensor(x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)`` for a torch tensor or numpy array of floats; else ValueError.

    >>> t, was_np = as_tensor(np.zeros(3, dtype=np.float32)); t.dtype, was_np
    (torch.float32, True)
    >>> as_tensor(torch.arange(3))
    Traceback (most recent call last):
    ...
    ValueError: x has dtype torch.int64: a floating-point tensor is needed (float16, bfloat16, float32, float64)
    """
    was_numpy = isinstance(x, np.ndarray)
    if was_numpy:
        if x.dtype.kind != "f" or x.dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"{name} has numpy dtype {x.dtype}: a floating-point array is needed "
                             "(float16, float32, float64)")
        x = torch.from_numpy(np.ascontiguousarray(x)).reshape(x.shape)   # 0-d stays 0-d
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} is a {type(x).__name__}: a torch.Tensor or numpy.ndarray is "
                         "needed")
    if not x.dtype.is_floating_point or x.dtype.is_complex:
        raise ValueError(f"{name} has dtype {x.dtype}: a floating-point tensor is needed "
                         "(float16, bfloat16, float32, float64)")
    return x, was_numpy


def int_tensor(name: str, t: Any, lo: int, hi: int, allowed: str) -> tuple[torch.Tensor, bool]:
    """``t`` as an integer tensor with entries lo..hi (and whether it came as numpy), else a
    ValueError naming ``name``; what decoders take."""
    was_np = not isinstance(t, torch.Tensor)
    c = torch.as_tensor(t)
    if c.dtype.is_floating_point or c.dtype.is_complex or c.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {c.dtype}: an integer tensor is needed")
    if c.numel() and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"{name} has entries outside {lo}..{hi}: allowed {allowed}")
    return c, was_np


def back(t: torch.Tensor, was_numpy: bool):
    """Return ``t`` as the kind of input it came from."""
    return t.numpy() if was_numpy else t


def make_generator(generator: torch.Generator | int | None, device: torch.device):
    """A torch.Generator from a Generator or an int seed (None stays None)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def uniform_like(x: torch.Tensor, generator: torch.Generator, out: torch.Tensor | None = None):
    """Uniform [0, 1) samples shaped like ``x`` (contiguous), from ``generator``; samples made
    on another device than x's (a CPU generator for a CUDA tensor) are moved to x's device."""
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if generator.device != x.device:
        return out.copy_(torch.rand(x.shape, generator=generator, dtype=x.dtype,
                                    device=generator.device))
    return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device, out=out)


def pow2(k) -> torch.Tensor | float:
    """Exact powers of two: ``2**k`` for an integer tensor (float64 result) or an int."""
    if isinstance(k, torch.Tensor):
        return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
    return math.ldexp(1.0, int(k))


def pow2_ceil(v: float) -> float:
    """Smallest power of two >= v (v > 0), computed exactly; ``inf`` when it exceeds the
    float64 range (v > 2**1023, or v = inf).

    >>> pow2_ceil(0.3), pow2_ceil(0.25), pow2_ceil(5.0), pow2_ceil(1.5e308)
    (0.5, 0.25, 8.0, inf)
    """
    m, e = math.frexp(v)
    if not math.isfinite(v) or e > 1024 or (e == 1024 and m != 0.5):
        return math.inf
    return math.ldexp(1.0, e - 1) if m == 0.5 else math.ldexp(1.0, e)


def log2_int(v: float) -> int:
    """``log2(v)`` of an exact power of two."""
    return math.frexp(v)[1] - 1
