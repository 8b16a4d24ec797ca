"""INT-b for weights and activations (SPEC §1.1, [SUN20]): uniform grids with a clip value.

* signed (weights): levels ``q = -(2**(b-1)-1) .. 2**(b-1)-1`` (4 bits: -7..7), value
  ``q * delta`` with ``delta = alpha / (2**(b-1)-1)``;
* unsigned (activations after ReLU): levels ``0 .. 2**b-1``, ``delta = alpha / (2**b-1)``.

``alpha`` (the clip value) is the ``scale`` argument of :func:`imckit.formats.quantize`. Nearest
rounding sends ties away from zero (like the radix-4 format: ties go up in magnitude);
stochastic rounding is ``floor(x/delta + u)`` (unbiased). The learnable PACT clip for
activations is :func:`pact_quantize`; a running statistic is :class:`RunningClip`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._scan import has_nan
from .._validate import check_range
from ._core import (MIN_NORMAL64, Format, as_tensor, back, check_common,
                    int_tensor, make_generator, phase_factor, uniform_like)


@dataclass(frozen=True)
class Int(Format):
    """Uniform INT-b quantizer with clip value ``alpha`` (passed as ``scale``).

    Attributes:
        bits: word length b (default 4 [SUN20]); signed needs b >= 2.
        signed: symmetric signed levels (weights) or unsigned levels from 0 (activations).

    >>> from imckit.formats import Int, quantize
    >>> fmt = Int(4)
    >>> fmt.qmax, fmt.delta(0.7)
    (7, 0.09999999999999999)
    >>> quantize(torch.tensor([0.25, -0.05, 0.9]), fmt, scale=0.7).tolist()
    [0.30000001192092896, -0.10000000149011612, 0.699999988079071]
    >>> fmt.encode(torch.tensor([0.25, -0.05, 0.9]), scale=0.7).tolist()
    [3, -1, 7]
    """

    bits: int = 4
    signed: bool = True

    def __post_init__(self):
        check_range("bits", self.bits, 2 if self.signed else 1, 16, integer=True)

    @property
    def name(self) -> str:
        return f"INT{self.bits}" if self.signed else f"UINT{self.bits}"

    @property
    def qmax(self) -> int:
        """Largest integer level (7 for signed 4-bit, 15 for unsigned 4-bit)."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def qmin(self) -> int:
        return -self.qmax if self.signed else 0

    @property
    def max_value(self) -> float:
        """Largest magnitude at scale (alpha) 1."""
        return 1.0

    def delta(self, scale: float = 1.0, phase: int = 0) -> float:
        """Step between levels: ``alpha / qmax``; phase 1 doubles it (the clip value is
        ``2 * alpha``, the grid of every format moves up one binade, :data:`~imckit.formats.PHASES`)."""
        return scale * phase_factor(phase) / self.qmax

    def clip_range(self, scale: float = 1.0, phase: int = 0) -> tuple[float, float]:
        t = scale * phase_factor(phase)
        return (-t if self.signed else 0.0), t

    def values(self, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32) -> torch.Tensor:
        """Every level times delta, sorted."""
        check_common("nearest", phase, None)
        d = self.delta(self.check_scale(scale), phase)
        return torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64).mul(d).to(dtype)

    def scale_bounds(self) -> tuple[float, float]:
        """``(qmax * 2**-1021, 2**1022)``: the step ``scale * 2**phase / qmax`` stays a normal
        float64 at both phases, and ``qmax * step`` (which may round up) stays finite."""
        return self.qmax * 2.0 * MIN_NORMAL64, 2.0 ** 1022

    def _work_dtype(self, x: torch.Tensor, scale: float, phase: int) -> torch.dtype:
        """float32 for float32/half inputs when the step and the top level are normal float32
        numbers (the top with a binade to spare for rounding); float64 otherwise (a float32
        step of 1e100/7 is inf, of 1e-300 is 0: both gave NaN)."""
        f32 = torch.finfo(torch.float32)
        if x.dtype != torch.float64 and (f32.tiny <= self.delta(scale, phase)
                                         and scale * phase_factor(phase) <= f32.max / 2):
            return torch.float32
        return torch.float64

    def _levels(self, x, scale, phase, rounding, generator) -> torch.Tensor:
        """Integer levels (as floats of the work dtype, NaN where x is NaN)."""
        y = x.to(self._work_dtype(x, scale, phase)) / self.delta(scale, phase)
        if rounding == "nearest":                  # ties away from 0: floor(|y| + 1/2) * sign
            if self.qmin == 0:                     # (unsigned: y < 0 clamps to 0 either way)
                y = y.add_(0.5).floor_()
            else:                                  # (2.4x faster than trunc(y + copysign(.5, y)))
                y = y.abs().add_(0.5).floor_().copysign_(y)
        else:
            y = torch.floor(y.add_(uniform_like(y, generator)))
        return y.clamp_(self.qmin, self.qmax)

    def _quantize(self, x, scale, phase, rounding, generator):
        """Levels times the step, cast to x's dtype (a grid value above that dtype's largest
        finite number, possible only when ``scale`` exceeds it, becomes +-inf as in a cast)."""
        return self._levels(x, scale, phase, rounding, generator).mul_(
            self.delta(scale, phase)).to(x.dtype)

    def encode(self, x, scale: float = 1.0, phase: int = 0, *, rounding: str = "nearest",
               generator=None, dtype: torch.dtype = torch.int32):
        """Integer levels ``q`` with ``quantize(x) = q * delta``; NaN: ValueError, ``+-inf``:
        ``qmax``/``qmin`` (saturates). ``dtype`` int32 by default; a float dtype gives the same
        integers as floats (zero as +0), without the round trip through int32."""
        check_common(rounding, phase, generator)
        scale = self.check_scale(scale)
        xt, was_np = as_tensor(x)
        with torch.no_grad():
            if has_nan(xt):
                raise ValueError("x contains NaN: integer levels cannot represent NaN")
            gen = make_generator(generator, xt.device)
            q = self._levels(xt, scale, phase, rounding, gen)
            if dtype.is_floating_point:
                q = q.to(dtype)
                if self.signed:
                    q.add_(0.0)                        # -0 -> +0, as through int32
            else:
                q = q.to(dtype)
        return back(q, was_np)

    def decode(self, q, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32):
        """``q * delta`` for integer levels ``q`` (tensor or array, entries qmin..qmax)."""
        check_common("nearest", phase, None)
        scale = self.check_scale(scale)
        c, was_np = int_tensor("q", q, self.qmin, self.qmax, f"the levels of {self.name}")
        return back(c.to(torch.float64).mul(self.delta(scale, phase)).to(dtype), was_np)


INT8 = Int(8)
"""Signed INT8 (levels -127..127), a comparison format; ``scale`` is the clip value."""


class _Pact(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, fmt, rounding, generator):
        a = float(alpha.detach())
        ctx.save_for_backward(x, alpha)
        with torch.no_grad():
            return fmt._quantize(x.detach(), a, 0, rounding, generator)

    @staticmethod
    def backward(ctx, g):
        x, alpha = ctx.saved_tensors
        a = alpha.detach().to(x.dtype)
        gx = g * ((x >= 0) & (x < a)).to(g.dtype)                # STE inside the clip
        galpha = (g * (x >= a).to(g.dtype)).sum().reshape(alpha.shape).to(alpha.dtype)
        return gx, galpha, None, None, None


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, bits: int = 4, *,
                  rounding: str = "nearest", generator=None) -> torch.Tensor:
    """PACT activation quantizer: clip to ``[0, alpha]``, unsigned INT-b, learnable ``alpha``.

    Gradients (PACT, Choi et al. 2018, with the straight-through estimator): ``dy/dx = 1`` for
    ``0 <= x < alpha`` and 0 elsewhere; ``dy/dalpha = 1`` where ``x >= alpha`` (summed).

    Args:
        x: activations (torch tensor).
        alpha: clip value, a one-element tensor (usually a Parameter with requires_grad).
        bits: word length (default 4 [SUN20]).

    >>> x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    >>> alpha = torch.tensor(1.5, requires_grad=True)
    >>> y = pact_quantize(x, alpha, bits=2); y.tolist()
    [0.0, 0.5, 1.5]
    >>> y.sum().backward(); x.grad.tolist(), alpha.grad.item()
    ([0.0, 1.0, 0.0], 1.0)
    """
    fmt = Int(bits, signed=False)
    check_common(rounding, 0, generator)
    if not isinstance(x, torch.Tensor) or not isinstance(alpha, torch.Tensor):
        raise ValueError("x and alpha must be torch tensors (pact_quantize is autograd)")
    as_tensor(x)
    fmt.check_scale(alpha)
    return _Pact.apply(x, alpha, fmt, rounding, make_generator(generator, x.device))


class RunningClip:
    """Clip value for unsigned activations from a running statistic (exponential average).

    ``alpha <- momentum * alpha + (1 - momentum) * max(x)`` per call (the first call takes
    ``max(x)``). ``momentum`` default 0.9 is our assumption [I].

    >>> rc = RunningClip(momentum=0.5)
    >>> rc.update(torch.tensor([0.0, 2.0])), rc.update(torch.tensor([1.0, 4.0]))
    (2.0, 3.0)
    """

    def __init__(self, momentum: float = 0.9):
        check_range("momentum", momentum, 0.0, 1.0)
        self.momentum = float(momentum)
        self.alpha: float | None = None

    def update(self, x) -> float:
        """Fold one batch of activations into the running clip value and return it."""
        xt, _ = as_tensor(x)
        if xt.numel() == 0:
            return self.alpha if self.alpha is not None else 1.0
        m = float(torch.nan_to_num(xt.detach(), nan=0.0, posinf=0.0).max().clamp_min(0))
        self.alpha = m if self.alpha is None else self.momentum * self.alpha + (
            1 - self.momentum) * m
        if self.alpha == 0:
            return 1.0
        return self.alpha
