"""Generic base-2 minifloats: FP8 E4M3/E5M2, FP16, BF16, FP4 E2M1, radix-2 FP4, FP32.

One :class:`Minifloat` (exponent bits, mantissa bits, bias, subnormals, how the top exponent
is used, saturation) serves every base-2 comparison format of SPEC §1.2. Nearest rounding is
round-half-to-even, as IEEE 754 and torch's casts do, so the formats that torch has as dtypes
agree with its casts bit for bit (the tests use those casts as oracles). Values below the
smallest normal of a format without subnormals go to 0 or the smallest normal, ties up, like
the radix-4 format. Stochastic rounding rounds up with probability equal to the distance to
the lower neighbour over the spacing (unbiased).

The arithmetic is done in float64: every value of these formats, and every spacing, is exact
there; the result is cast back to the input dtype. ``phase=1`` multiplies the grid by 2, as for
every format (:data:`~imckit.formats.PHASES`): two-phase rounding is radix-4's, and a base-2
grid times 2 is the same grid with one binade more on top and one fewer at the bottom.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_choice, check_range
from ._core import Format, phase_factor, pow2, uniform_like

SPECIALS = ("ieee", "fn", "none")
"""How the all-ones exponent is used: ``ieee`` reserves it for inf/NaN (fp16, bf16, E5M2);
``fn`` keeps it finite except the all-ones mantissa, which is NaN (E4M3FN); ``none`` has no
inf/NaN codes at all (FP4 E2M1 of the OCP MX spec, radix-2 FP4)."""


@dataclass(frozen=True)
class Minifloat(Format):
    """A base-2 floating-point format ``[1, exp_bits, man_bits]``.

    Attributes:
        exp_bits: exponent-field width in bits.
        man_bits: mantissa (fraction) width in bits.
        bias: exponent bias; a normal value is ``(1 + f / 2**man_bits) * 2**(e - bias)``.
        subnormals: whether ``e = 0`` encodes subnormals (``f / 2**man_bits * 2**(1 - bias)``);
            without them ``e = 0`` is zero only.
        specials: see :data:`SPECIALS`.
        saturate: out-of-range values (and +-inf) clip to the largest finite value; when
            False they become inf (``ieee``) or NaN (``fn``), like a plain cast.
        label: display name.

    >>> from imckit.formats import FP8E4M3, FP4E2M1, quantize
    >>> FP8E4M3.max_value, FP4E2M1.max_value
    (448.0, 6.0)
    >>> quantize(torch.tensor([0.3, 1000.0, -2.6]), FP4E2M1).tolist()
    [0.5, 6.0, -3.0]
    """

    exp_bits: int
    man_bits: int
    bias: int
    subnormals: bool = True
    specials: str = "ieee"
    saturate: bool = True
    label: str = ""

    def __post_init__(self):
        check_range("exp_bits", self.exp_bits, 1, 11, integer=True)
        check_range("man_bits", self.man_bits, 0, 52, integer=True)
        check_range("bias", self.bias, -1000, 1000, integer=True)
        check_choice("specials", self.specials, SPECIALS)
        if self.specials == "ieee" and self.exp_bits < 2:
            raise ValueError(f"exp_bits={self.exp_bits} is not allowed with specials='ieee': "
                             "allowed 2..11 (one exponent code is reserved for inf/NaN)")
        if self.specials == "fn" and self.man_bits < 1:
            raise ValueError(f"man_bits={self.man_bits} is not allowed with specials='fn': "
                             "allowed 1..52 (the all-ones mantissa is NaN)")
        if self.specials == "none" and not self.saturate:
            raise ValueError("saturate=False is not allowed with specials='none': the format "
                             "has no inf/NaN to overflow into")

    # -- derived numbers ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.label or f"E{self.exp_bits}M{self.man_bits}"

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top = (1 << self.exp_bits) - (2 if self.specials == "ieee" else 1)
        return top - self.bias

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def max_value(self) -> float:
        """Largest finite magnitude at scale 1."""
        ulps = (1 << (self.man_bits + 1)) - (2 if self.specials == "fn" else 1)
        return float(ulps * 2.0 ** (self.emax - self.man_bits))

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_value(self) -> float:
        """Smallest nonzero magnitude at scale 1."""
        return 2.0 ** (self.emin - (self.man_bits if self.subnormals else 0))

    def clip_range(self, scale: float = 1.0, phase: int = 0) -> tuple[float, float]:
        t = self.max_value * scale * phase_factor(phase)
        return -t, t

    def values(self, scale: float = 1.0, phase: int = 0, *, dtype=torch.float32) -> torch.Tensor:
        """Every finite value (at most 2**16 codes), sorted."""
        if self.exp_bits + self.man_bits > 16:
            raise ValueError(f"{self.name} has 2**{self.exp_bits + self.man_bits} codes per "
                             "sign: values() enumerates at most 2**16")
        s = self.check_scale(scale) * phase_factor(phase)
        e = torch.arange(1 << self.exp_bits, dtype=torch.int64)[:, None]
        f = torch.arange(1 << self.man_bits, dtype=torch.float64)[None, :]
        frac = f / 2 ** self.man_bits
        normal = (1 + frac) * pow2(e - self.bias)
        sub = frac * pow2(torch.tensor(self.emin)) if self.subnormals else torch.zeros_like(frac)
        mags = torch.where(e == 0, sub, normal).flatten()
        mags = mags[mags <= self.max_value].unique()
        return (torch.cat([-mags.flip(0), mags]).unique() * s).to(dtype)

    # -- rounding -----------------------------------------------------------------------
    def _quantize(self, x, scale, phase, rounding, generator):
        s = scale * phase_factor(phase)
        a = x.to(torch.float64).abs()
        if s != 1.0:
            a.div_(s)
        big = self.max_value if self.saturate else 2.0 * self.max_value
        a.clamp_(max=big)                                        # +-inf: finite, NaN stays
        _, ex = torch.frexp(a)                                   # a = m * 2**ex, m in [.5, 1)
        e = torch.clamp(ex - 1, min=self.emin)                   # binade (subnormals: emin)
        inv_quantum = pow2(self.man_bits - e)
        if not self.subnormals:                                  # grid {0, min_normal} below
            inv_quantum = torch.where(a < self.min_normal, 1.0 / self.min_normal, inv_quantum)
        y = a.mul_(inv_quantum)                                  # exact: a power of two
        if rounding == "nearest":
            if self.subnormals:
                y.round_()                                       # half to even
            else:                                                # ties up below min_normal
                y = torch.where(y < 1.0, torch.floor(y + 0.5), torch.round(y))
        else:
            y.add_(uniform_like(y, generator)).floor_()
        q = y.div_(inv_quantum)
        if not self.saturate:
            over = q > self.max_value
            q = q.masked_fill_(over, float("inf") if self.specials == "ieee" else float("nan"))
        if s != 1.0:
            q.mul_(s)
        return q.copysign_(x.to(torch.float64)).to(x.dtype)


def _named(label, **kw) -> Minifloat:
    return Minifloat(label=label, **kw)


FP8E4M3 = _named("FP8 E4M3", exp_bits=4, man_bits=3, bias=7, specials="fn")
"""OCP FP8 E4M3 (torch.float8_e4m3fn), saturating: max 448."""
FP8E5M2 = _named("FP8 E5M2", exp_bits=5, man_bits=2, bias=15, specials="ieee")
"""OCP FP8 E5M2 (torch.float8_e5m2), saturating: max 57344."""
FP16 = _named("FP16", exp_bits=5, man_bits=10, bias=15)
"""IEEE binary16 (torch.float16), saturating: max 65504."""
BF16 = _named("BF16", exp_bits=8, man_bits=7, bias=127)
"""bfloat16 (torch.bfloat16), saturating."""
FP4E2M1 = _named("FP4 E2M1", exp_bits=2, man_bits=1, bias=1, specials="none")
"""OCP MX FP4 E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 (and negatives)."""
Radix2FP4 = _named("radix-2 FP4", exp_bits=3, man_bits=0, bias=7, subnormals=False,
                   specials="none")
"""Radix-2 FP4 [1,3,0]: magnitudes 2**-k for k = 0..6 and zero (SPEC §1.2)."""
FP32 = _named("FP32", exp_bits=8, man_bits=23, bias=127, saturate=False)
"""IEEE binary32: the unquantized baseline (identity on float32 input; inf stays inf)."""
