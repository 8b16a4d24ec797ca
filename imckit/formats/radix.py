"""Radix-4 FP4 [1,3,0] for gradients, with two-phase rounding (SPEC §1.2, [SUN20]).

A 4-bit code is 1 sign bit and a 3-bit exponent field ``e`` (no mantissa). ``e = 0`` is zero;
``e = 1..7`` is the magnitude ``S * 4**(e - 7)``: ``S/4096, S/1024, ..., S/4, S``. The scale
``S`` is a power of two, so rescaling is a shift. Phase 1 of two-phase rounding (TPR) uses the
same grid offset UPWARD by one binade, ``2S * 4**-k`` (k = 0..6: ``2S, S/2, ..., S/2048``).
Both phases hold every value in ``[0, S]`` without clipping (with GradScale's ``max`` rule
nothing saturates in either phase, and stochastic rounding is unbiased up to ``S``); together
they cover every power of two from ``2S`` to ``S/4096``. TPR is SUN20's; the upward direction
is our choice [I] (SPEC §1.2). In :mod:`imckit.nn` phase 0 feeds the backward MVM and phase 1
the weight-gradient MVM (``LayerConfig.backward_phase`` / ``weight_grad_phase``, our default).

Rounding between adjacent levels ``lo < |x| < hi = 4*lo``:

* ``nearest``: up iff ``|x| >= 2.5*lo`` (the midpoint; ties go up);
* ``stochastic``: up with probability ``(|x| - lo) / (hi - lo)``, so ``E[q(x)] = x``;
* below the smallest level ``m``: nearest gives ``m`` iff ``|x| >= m/2``, stochastic gives ``m``
  with probability ``|x|/m``; above the top level ``|x|`` saturates.

The grid consists of powers of two with one parity of the exponent, so both roundings work on
the bits of the float directly: adding 0.75 to the mantissa carries into the exponent exactly
when ``|x| >= 1.25 * 2**k``, and clearing the lowest exponent bit then lands on the grid. All
operations are whole-tensor and in place (no Python loop over elements).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._scan import has_nan
from .._validate import check_range
from ._core import (Format, as_tensor, back, int_tensor, check_common, check_scale, log2_int,
                    make_generator, phase_factor, uniform_like)

# (integer view dtype, mantissa bits, exponent bits) of the float dtypes we compute in.
_BITS = {torch.float32: (torch.int32, 23, 8), torch.float64: (torch.int64, 52, 11)}


def _grid_floor_(a: torch.Tensor, g_top: int, nearest: bool) -> torch.Tensor:
    """In place: each (positive, normal) ``a`` -> the largest grid power ``2**g <= a`` with
    ``g = g_top (mod 2)``; with ``nearest`` the value is first pushed up by 0.75 of its binade
    (so it lands on the upper level iff ``a >= 1.25 * 2**(g+1)``, i.e. ``2.5 * lo``)."""
    itype, mb, eb = _BITS[a.dtype]
    parity = (g_top + (1 << (eb - 1)) - 1) % 2          # parity of the biased grid exponent
    b = a.view(itype)
    off = ((3 << (mb - 2)) if nearest else 0) - (parity << mb)
    if off:
        b.add_(off)
    b.bitwise_and_(((1 << eb) - 2) << mb)              # exponent field, lowest bit cleared
    if parity:
        b.bitwise_or_(1 << mb)
    return a


@dataclass(frozen=True)
class Radix4(Format):
    """Radix-4 floating point with no mantissa, ``[1, exp_bits, 0]`` (SPEC §1.2, [SUN20]).

    Attributes:
        exp_bits: exponent-field bits; ``2**exp_bits - 1`` nonzero magnitudes per sign, a
            dynamic range of ``4**(2**exp_bits - 2)``. Default 3: the 4-bit format of [SUN20].

    >>> from imckit.formats import Radix4, quantize
    >>> fmt = Radix4()
    >>> fmt.values(scale=1.0).tolist()[7:]
    [0.0, 0.000244140625, 0.0009765625, 0.00390625, 0.015625, 0.0625, 0.25, 1.0]
    >>> x = torch.tensor([0.3, 0.6, -0.7, 2.0, 1e-5, float("nan")])  # 2.5*0.25 = 0.625
    >>> quantize(x, fmt, scale=1.0).tolist()
    [0.25, 0.25, -1.0, 1.0, 0.0, nan]
    >>> fmt.encode(x[:5], scale=1.0).tolist()
    [6, 6, 15, 7, 0]
    >>> fmt.decode(fmt.encode(x[:5], scale=1.0), scale=1.0).tolist()
    [0.25, 0.25, -1.0, 1.0, 0.0]
    >>> fmt.values(scale=1.0, phase=1).tolist()[8:]                  # 2S * 4**-k
    [0.00048828125, 0.001953125, 0.0078125, 0.03125, 0.125, 0.5, 2.0]
    >>> quantize(torch.tensor([0.9, 1.0]), fmt, scale=1.0, phase=1).tolist()  # 2.5*0.5 = 1.25
    [0.5, 0.5]
    """

    exp_bits: int = 3

    def __post_init__(self):
        check_range("exp_bits", self.exp_bits, 1, 4, integer=True)

    @property
    def name(self) -> str:
        return "radix-4 FP4" if self.exp_bits == 3 else f"radix-4 [1,{self.exp_bits},0]"

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits

    @property
    def levels(self) -> int:
        """Nonzero magnitudes per sign (7 for the 4-bit format)."""
        return (1 << self.exp_bits) - 1

    @property
    def max_value(self) -> float:
        """Largest magnitude at scale 1, phase 0."""
        return 1.0

    def scale_bounds(self) -> tuple[float, float]:
        """``(2**(2*levels - 1020), 2**1022)``: every level of both phases' grids (phase 1's
        top ``2S`` at most ``2**1023``), and a quarter of the smallest (the rounding
        threshold), is a normal float64."""
        return 2.0 ** (2 * self.levels - 1020), 2.0 ** 1022

    def check_scale(self, scale) -> float:
        """A power of two ``2**k`` within :meth:`scale_bounds`, else a ValueError naming it."""
        s = check_scale(scale, power_of_two=True)
        lo, hi = self.scale_bounds()
        if not lo <= s <= hi:
            raise ValueError(f"scale={s!r} is out of range for {self.name}: allowed 2**k with "
                             f"{log2_int(lo)} <= k <= {log2_int(hi)}")
        return s

    def top(self, scale: float = 1.0, phase: int = 0) -> float:
        """The largest magnitude: ``S`` in phase 0, ``2S`` in phase 1."""
        return scale * phase_factor(phase)

    def smallest(self, scale: float = 1.0, phase: int = 0) -> float:
        """The smallest nonzero magnitude ``top * 4**-(levels-1)``."""
        return self.top(scale, phase) * 4.0 ** -(self.levels - 1)

    def clip_range(self, scale: float = 1.0, phase: int = 0) -> tuple[float, float]:
        t = self.top(scale, phase)
        return -t, t

    def values(self, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32) -> torch.Tensor:
        """All ``2*levels + 1`` representable values, sorted (phase 1: the grid times 2)."""
        check_common("nearest", phase, None)
        t = self.top(self.check_scale(scale), phase)
        mags = [t * 4.0 ** -(self.levels - 1 - k) for k in range(self.levels)]
        return torch.tensor([-v for v in reversed(mags)] + [0.0] + mags, dtype=dtype)

    def _compute_dtype(self, x: torch.Tensor, top: float) -> torch.dtype:
        """float32 when every level (and a quarter of the smallest) is a normal float32 and x
        is not float64; float64 otherwise (``check_scale`` keeps the grid normal there)."""
        g_top = log2_int(top)
        g_low = g_top - 2 * self.levels                      # log2 of (smallest level / 4)
        if x.dtype != torch.float64 and g_top <= 126 and g_low >= -125:
            return torch.float32
        return torch.float64

    def _quantize(self, x, scale, phase, rounding, generator):
        top = self.top(scale, phase)
        m = self.smallest(scale, phase)
        work = self._compute_dtype(x, top)
        xw = x.to(work).contiguous()
        g_top = log2_int(top)
        nearest = rounding == "nearest"
        # saturate (inf too); NaN stays. Nearest: |x| < m/2 is raised to m/2 (the bit trick
        # needs a positive normal; those values are zeroed below)
        a = torch.abs(xw).clamp_(min=0.5 * m if nearest else None, max=top)
        nan = torch.isnan(xw) if has_nan(a) else None
        if nearest:
            # The grid value of |x| (m at least) times sign(x) where |x| >= m/2 and 0 below
            # (hardshrink keeps |x| > the float just below m/2): one float multiply instead of
            # a bool mask, masked_fill and copysign, 3.5x faster on a 2-core x86 CPU. A zero
            # result is +0.
            half = torch.tensor(0.5 * m, dtype=work)
            keep = torch.sign(F.hardshrink(xw, float(torch.nextafter(half, half.new_zeros(())))))
            _grid_floor_(a, g_top, nearest=True)
            a.clamp_(min=m).mul_(keep)
        else:
            # Below m the choice is 0 or m with P(m) = |x|/m. Mapping a -> m/4 + 0.75 a there
            # (a no-op for a >= m, hence the max) turns it into the generic rule between the
            # virtual level lo = m/4 and 4*lo = m; the result m/4 then means 0.
            t = torch.mul(a, 0.75).add_(0.25 * m)
            torch.maximum(a, t, out=a)
            lo = _grid_floor_(a.clone(), g_top, nearest=False)
            u = uniform_like(a, generator, out=t)
            up = a > torch.addcmul(lo, lo, u, value=3.0, out=u)  # P(up) = (a - lo) / (3 lo)
            itype, mb, _ = _BITS[work]
            lo.view(itype).add_(up, alpha=2 << mb)               # lo * 4 where up
            a = F.threshold_(lo, 0.5 * m, 0.0).copysign_(xw)     # grid values: m/4 means 0
        if nan is not None:
            a.masked_fill_(nan, float("nan"))
        return a.to(x.dtype)

    # -- codes ------------------------------------------------------------------------------
    def _table(self, scale: float, phase: int, dtype, device) -> torch.Tensor:
        """Value of each code 0 .. 2**(exp_bits+1)-1 (code = sign << exp_bits | e)."""
        t = self.top(scale, phase)
        mags = [0.0] + [t * 4.0 ** (e - self.levels) for e in range(1, self.levels + 1)]
        return torch.tensor(mags + [-v if v else 0.0 for v in mags], dtype=dtype, device=device)

    def encode(self, x, scale: float = 1.0, phase: int = 0, *, rounding: str = "nearest",
               generator=None):
        """uint8 codes ``(sign << exp_bits) | e`` of ``quantize(x, ...)``.

        ``e = 0`` is zero (always with sign 0: a canonical zero), ``e = 1..levels`` is the
        magnitude ``top * 4**(e - levels)``. NaN has no code: ValueError; ``+-inf``
        saturates to the top code of its sign.
        """
        check_common(rounding, phase, generator)
        scale = self.check_scale(scale)
        xt, was_np = as_tensor(x)
        with torch.no_grad():
            if has_nan(xt):
                raise ValueError("x contains NaN: radix-4 codes cannot represent NaN")
            gen = make_generator(generator, xt.device)
            top = self.top(scale, phase)                         # codes from the grid value in
            work = self._compute_dtype(xt, top)                  # a dtype that holds it (not x's:
            q = self._quantize(xt.to(work), scale, phase, rounding, gen)   # 65536 is f16 inf)
            _, ex = torch.frexp(q)                                # |q| = 2**(ex - 1)
            g_top = log2_int(top)
            e = torch.div(ex - 1 - g_top, 2, rounding_mode="floor") + self.levels
            e = torch.where(q == 0, 0, e)
            codes = (e | ((q < 0).to(e.dtype) << self.exp_bits)).to(torch.uint8)
        return back(codes, was_np)

    def decode(self, codes, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32):
        """Values of radix-4 codes (integer tensor or array with entries 0 .. 2**(bits)-1)."""
        check_common("nearest", phase, None)
        scale = self.check_scale(scale)
        c, was_np = int_tensor("codes", codes, 0, (1 << self.bits) - 1,
                               f"radix-4 codes (sign << {self.exp_bits}) | e")
        out = self._table(scale, phase, dtype, c.device)[c.long()]
        return back(out, was_np)
