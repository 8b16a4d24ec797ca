"""The entry points every format shares: quantize, its straight-through twin, clip rules, stats.

``quantize(x, fmt, scale=..., phase=..., rounding=..., generator=...)`` is fake quantization:
values on the format's grid, in the input's dtype and kind (torch tensor or numpy array).
For :class:`~imckit.formats.Int` the ``scale`` is the clip value alpha; for the floating
formats it multiplies the grid (a power of two for radix-4). ``phase=1`` doubles the grid: the
phase-0 grid offset UPWARD by one binade (two-phase rounding, SPEC §1.2; the direction is our
choice [I]). It is meant for radix-4, where phase 1 holds ``2S * 4**-k`` and so, like phase 0,
every value in ``[0, S]`` without clipping. Every format accepts it and applies the same factor
2 so the chapters can compare formats: INT-b then has the clip value ``2*alpha`` and twice the
step, a minifloat keeps its relative precision but gives up its lowest binade. (The first
version halved the grid of every format in phase 1, which clipped the top binade, ``(S/2, S]``,
of whatever the scale rule had fitted, biased even with stochastic rounding; changed for all.)
NaN stays NaN, +-inf saturates, values above the range saturate (except the non-saturating
FP32 identity), empty tensors work, integer tensors are rejected (details: :func:`quantize`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .._scan import all_finite
from .._validate import check_choice, check_range
from ._core import (Format, as_tensor, back, check_common, make_generator, pow2_ceil)
from .integer import Int
from .minifloat import FP32, Minifloat
from .radix import Radix4


def _check_format(fmt) -> Format:
    if not isinstance(fmt, Format):
        raise ValueError(f"fmt={fmt!r} is not a number format: use formats.Radix4(), "
                         "formats.Int(bits), a formats.Minifloat or a named one (FP8E4M3, ...)")
    return fmt


def _prepare(x, fmt, scale, phase, rounding, generator):
    """Validate everything (no compute yet) and return ``(tensor, was_numpy, scale, gen)``."""
    _check_format(fmt)
    check_common(rounding, phase, generator)
    scale = fmt.check_scale(scale)
    xt, was_np = as_tensor(x)
    return xt, was_np, scale, make_generator(generator, xt.device) if rounding == "stochastic" \
        else None


def _quantize_tensor(xt, fmt, scale, phase, rounding, gen) -> torch.Tensor:
    with torch.no_grad():
        xd = xt.detach()
        if xd.numel() == 0:
            return xd.clone()
        if fmt == FP32 and xd.dtype != torch.float64:                  # identity (SPEC §1.2)
            return xd.clone()
        if xd.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return fmt._quantize(xd.float(), scale, phase, rounding, gen).to(xd.dtype)
        return fmt._quantize(xd, scale, phase, rounding, gen)


def quantize(x, fmt: Format, scale=1.0, phase: int = 0, rounding: str = "nearest",
             generator=None):
    """Fake-quantize ``x`` to ``fmt``: every value moved onto the format's grid.

    Args:
        x: torch tensor (any float dtype, CPU or CUDA) or numpy float array.
        fmt: a format (``Radix4()``, ``Int(4)``, ``FP8E4M3``, ...).
        scale: radix-4: the top level S (a power of two); Int: the clip value alpha;
            minifloats: multiplies the grid. Python float or one-element tensor.
        phase: 0 or 1; phase 1 uses the grid times 2, the phase-0 grid offset up one binade
            (two-phase rounding [SUN20]; the direction is ours [I], SPEC §1.2).
        rounding: ``"nearest"`` or ``"stochastic"`` (unbiased; needs ``generator``).
        generator: torch.Generator or int seed; required for stochastic rounding.

    Returns:
        The quantized values, same shape, dtype and kind (torch/numpy) as ``x``.

    Special values, for every format, phase and rounding:

    * NaN in, NaN out.
    * ``+-inf`` saturates like any value above the range: ``+-`` the top level
      (``fmt.clip_range``); unsigned Int sends ``-inf`` (any negative) to 0. Formats built
      with ``saturate=False`` behave like a cast instead: inf stays inf (``specials="ieee"``)
      or becomes NaN (``"fn"``); ``FP32`` is the identity on float16/bfloat16/float32 input.
    * The grid value is computed exactly and cast to ``x``'s dtype. Where the format's top
      level at this ``scale`` exceeds that dtype's largest finite number (``Int(4)`` with
      ``scale=1e100`` on float32, ``BF16`` on float16), a finite ``x`` whose grid value lies
      beyond it becomes ``+-inf``, as in a cast; grid values below the dtype's smallest
      subnormal become ``+-0``. With ``fmt.clip_range(scale, phase)[1] <= finfo(x.dtype).max``
      every finite ``x`` gives a finite result.
    * ``scale`` must lie within ``fmt.scale_bounds()`` (a step that underflows to 0 would
      give 0/0 = NaN): ValueError naming ``scale`` and the range otherwise.

    >>> quantize(torch.tensor([float("nan"), float("inf"), -float("inf")]), Int(4)).tolist()
    [nan, 1.0, -1.0]
    >>> quantize(torch.tensor([0.0, 3e38]), Int(4), scale=1e100).tolist()   # step 1.4e99
    [0.0, 0.0]

    >>> import numpy as np
    >>> from imckit.formats import Radix4, quantize
    >>> quantize(np.array([0.1, 0.2, 0.35], dtype=np.float32), Radix4(), scale=1.0, phase=1)
    array([0.125, 0.125, 0.5  ], dtype=float32)
    >>> q = quantize(torch.full((100000,), 0.9), Radix4(), phase=1, rounding="stochastic",
    ...              generator=0)                   # phase 1 holds 2S: no clipping below S
    >>> round(q.mean().item(), 2)
    0.9
    >>> g = torch.Generator().manual_seed(0)
    >>> q = quantize(torch.full((100000,), 0.1), Radix4(), rounding="stochastic", generator=g)
    >>> round(q.mean().item(), 2)
    0.1
    """
    xt, was_np, scale, gen = _prepare(x, fmt, scale, phase, rounding, generator)
    return back(_quantize_tensor(xt, fmt, scale, phase, rounding, gen), was_np)


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, scale, phase, rounding, gen):
        lo, hi = fmt.clip_range(scale, phase)
        ctx.save_for_backward(((x >= lo) & (x <= hi)))
        return _quantize_tensor(x, fmt, scale, phase, rounding, gen)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside.to(g.dtype), None, None, None, None, None


def quantize_ste(x: torch.Tensor, fmt: Format, scale=1.0, phase: int = 0,
                 rounding: str = "nearest", generator=None) -> torch.Tensor:
    """:func:`quantize` with the straight-through estimator for autograd.

    Forward: ``quantize(x, ...)``. Backward: the incoming gradient where ``x`` lies inside the
    clip range (``fmt.clip_range``, bounds included), 0 where it was clipped.

    >>> from imckit.formats import Int
    >>> x = torch.tensor([0.33, -2.0, 0.9], requires_grad=True)
    >>> quantize_ste(x, Int(4), scale=1.0).sum().backward(); x.grad.tolist()
    [1.0, 0.0, 1.0]
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError("x must be a torch tensor: quantize_ste is for autograd")
    xt, _, scale, gen = _prepare(x, fmt, scale, phase, rounding, generator)
    return _STE.apply(xt, fmt, scale, phase, rounding, gen)


CLIP_RULES = ("max", "mse")

MAX_CANDIDATES = 1000
"""Most clip candidates ``clip_scale(rule="mse")`` evaluates at once (one broadcast of
candidates x ~8k samples: 1000 is ~32 MB of float32)."""


def clip_scale(w, fmt: Format, rule: str = "max", *, candidates: int = 100) -> float:
    """Choose the ``scale`` for ``w`` by a named rule (SPEC §1.1).

    * ``max``: Int: ``max|w|`` (unsigned: ``max(w)``); radix-4 and minifloats: the smallest
      power of two that keeps ``max|w|`` inside the range.
    * ``mse``: the candidate minimizing the quantization MSE (nearest rounding) on a
      fixed-stride sample of at most ~8k entries of ``w``. Int: ``candidates`` (1 ..
      :data:`MAX_CANDIDATES`) evenly spaced clip values in ``(0, max]``, evaluated in one
      broadcast; power-of-two formats: the 13 powers of two at and below the ``max`` rule's.

    An all-zero ``w`` gives 1.0 (any scale represents it exactly). The result is always a
    scale ``fmt`` accepts: a ``w`` so small that the rule's scale would fall below
    ``fmt.scale_bounds()`` gets the lowest bound; one so large that no scale of ``fmt`` covers
    it (radix-4 beyond 2**1022, Int beyond 2**1023) is a ValueError naming ``w``, as is inf/NaN
    in ``w``.

    >>> from imckit.formats import Int, Radix4
    >>> w = torch.tensor([0.1, -0.2, 0.05, 3.0])
    >>> clip_scale(w, Int(4)), clip_scale(w, Radix4())
    (3.0, 4.0)
    >>> w = torch.randn(10000, generator=torch.Generator().manual_seed(0))
    >>> 0.5 < clip_scale(w, Int(4), rule="mse") / clip_scale(w, Int(4)) < 0.9
    True
    """
    _check_format(fmt)
    check_choice("rule", rule, CLIP_RULES)
    check_range("candidates", candidates, 1, MAX_CANDIDATES, integer=True)
    wt, _ = as_tensor(w, "w")
    with torch.no_grad():
        w64 = wt.detach().reshape(-1).to(torch.float64)
        if not all_finite(w64):
            raise ValueError("w contains inf/NaN: a clip value needs finite data")
        if isinstance(fmt, Int) and not fmt.signed:
            amax = float(w64.clamp_min(0).max()) if w64.numel() else 0.0
        else:
            amax = float(w64.abs().max()) if w64.numel() else 0.0
        if amax == 0:
            return 1.0
        best = _max_rule_scale(amax, fmt)
        if rule == "max":
            return best
        sample = w64[:: max(1, w64.numel() // 4096)]            # a fixed-stride sample
        if isinstance(fmt, Int):
            return _mse_int(sample, amax, fmt, int(candidates))
        return _mse_pow2(sample, best, fmt)


def _max_rule_scale(amax: float, fmt: Format) -> float:
    """The ``max`` rule's scale for ``max|w| = amax > 0``, within ``fmt.scale_bounds()``."""
    lo, hi = fmt.scale_bounds()
    if isinstance(fmt, Int):
        best = max(amax, lo)
    else:
        v = amax / fmt.max_value
        best = lo if v <= lo else pow2_ceil(v)
    if best > hi:
        raise ValueError(f"w has max|w|={amax:g}: no {fmt.name} scale covers it (allowed "
                         f"scales up to {hi:g}, values up to {hi * fmt.max_value:g})")
    return best


def _mse_int(sample: torch.Tensor, amax: float, fmt: Int, candidates: int) -> float:
    """Int ``mse`` rule: all candidates in one float32 broadcast, on the sample divided by a
    power of two ``p`` near ``amax`` (exact, so the same choice as without it, and no
    overflow or underflow of the squared errors whatever the magnitude of ``w``)."""
    p = math.ldexp(1.0, math.frexp(amax)[1] - 1)               # amax / p in [1, 2)
    s = (sample / p).float()
    cands = torch.arange(1, candidates + 1, dtype=torch.float64) * ((amax / p) / candidates)
    delta = (cands / fmt.qmax)[:, None].float()
    y = s[None, :] / delta
    q = torch.trunc(y + torch.copysign(torch.full_like(y, 0.5), y))
    err = (q.clamp_(fmt.qmin, fmt.qmax).mul_(delta) - s).square_().mean(1)
    return max(float(cands[int(torch.argmin(err))]) * p, fmt.scale_bounds()[0])


def _mse_pow2(sample: torch.Tensor, best: float, fmt: Format) -> float:
    """Power-of-two formats' ``mse`` rule: 13 powers of two at and below ``best``, errors
    computed on ``sample / best`` (exact: the grids shift with the scale)."""
    lo = fmt.scale_bounds()[0]
    ks = [k for k in range(13) if best * 2.0 ** -k >= lo]
    s = sample / best
    errs = [float((fmt._quantize(s, 2.0 ** -k, 0, "nearest", None) - s).square().mean())
            for k in ks]
    return best * 2.0 ** -ks[min(range(len(ks)), key=errs.__getitem__)]


@dataclass(frozen=True)
class ErrorStats:
    """Quantization error statistics of one tensor (finite entries only).

    Attributes:
        mse: mean squared error ``mean((q - x)**2)``.
        sqnr_db: signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (q-x)^2)`` in dB.
        bias: mean error ``mean(q - x)``.
        underflow: fraction of the nonzero inputs that became 0.
        saturated: fraction of the inputs outside the clip range (incl. +-inf).
        n: number of finite entries used.
    """

    mse: float
    sqnr_db: float
    bias: float
    underflow: float
    saturated: float
    n: int

    def __getitem__(self, key: str):
        return getattr(self, key)

    def as_dict(self) -> dict:
        return asdict(self)


def error_stats(x, fmt: Format, **kwargs) -> ErrorStats:
    """Error statistics of ``quantize(x, fmt, **kwargs)`` against ``x`` (computed in float64).

    >>> from imckit.formats import Radix4
    >>> s = error_stats(torch.tensor([1.0, 0.3, 1e-6, 5.0]), Radix4(), scale=1.0)
    >>> s.underflow, s.saturated, round(s.bias, 4)
    (0.25, 0.25, -1.0125)
    """
    extra = set(kwargs) - {"scale", "phase", "rounding", "generator"}
    if extra:
        raise ValueError(f"unknown arguments {sorted(extra)}: allowed scale, phase, rounding, "
                         "generator")
    phase = kwargs.get("phase", 0)
    rounding = kwargs.get("rounding", "nearest")
    xt, _, scale, gen = _prepare(x, fmt, kwargs.get("scale", 1.0), phase, rounding,
                                 kwargs.get("generator"))
    lo, hi = fmt.clip_range(scale, phase)
    with torch.no_grad():
        q = _quantize_tensor(xt, fmt, scale, phase, rounding, gen).to(torch.float64)
        x64 = xt.detach().to(torch.float64)
        nonnan = ~torch.isnan(x64)
        saturated = ((x64 < lo) | (x64 > hi)) & nonnan
        n_all = int(nonnan.sum())
        fin = torch.isfinite(x64)
        xf, qf = x64[fin], q[fin]
        n = xf.numel()
        if n == 0:
            nan = float("nan")
            return ErrorStats(nan, nan, nan, 0.0, 0.0, 0)
        err = qf - xf
        sse, sig = float(err.square().sum()), float(xf.square().sum())
        sqnr = float("inf") if sse == 0 else (
            10 * math.log10(sig / sse) if sig > 0 else float("-inf"))
        nz = xf != 0
        n_nz = int(nz.sum())
        under = float((nz & (qf == 0)).sum()) / n_nz if n_nz else 0.0
        return ErrorStats(mse=sse / n, sqnr_db=sqnr, bias=float(err.mean()), underflow=under,
                          saturated=float(saturated.sum()) / max(n_all, 1), n=n)
