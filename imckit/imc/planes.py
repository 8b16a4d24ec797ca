"""Operands as bit planes: stored entries as columns, inputs as planes applied one per cycle.

Bit-parallel / bit-serial (BPBS) operation [JIA20]: bit ``k`` of each stored entry lives in its
own physical column (column ``m * a_bits + k``); inputs are split into binary (or base-L) planes,
applied one per cycle. A plane that has no nonzero digit in a batch row and row tile is not
applied at all: it costs no cycle, no conversion and no noise.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

X_KINDS = ("unsigned", "signed", "radix4", "multilevel")
"""How the inputs X are turned into planes applied one per cycle (see :func:`imckit.imc.mvm`)."""


class InputPlanes(NamedTuple):
    digits: torch.Tensor   # (P, B, N) float32 digits in 0..L-1, only planes used somewhere
    weights: torch.Tensor  # (P,) float64 plane weights
    active: list           # per row tile: (P, B) bool, the cycles that run
    drives: int            # row drives: nonzero digits summed over planes, rows and batch


def as_tensor(name, t):
    """A 2-D tensor (arrays are converted), else ValueError naming the argument."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except Exception:
            raise ValueError(f"{name}={type(t).__name__} is not allowed: pass a tensor or array") from None
    if t.dim() != 2:
        raise ValueError(f"{name}.shape={tuple(t.shape)} is not allowed: {name} must be 2-D")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}.dtype={t.dtype} is not allowed: use an integer or float dtype")
    return t


def check_ints(name, t, lo, hi, what):
    """All entries finite integers in lo..hi, else ValueError naming the first offender."""
    if t.numel() == 0:
        return
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != torch.round(t))
        if bool(bad.any()):
            v = t[bad][0].item()
            raise ValueError(f"{name} contains {v!r}, not an integer: allowed {lo}..{hi} ({what})")
    for v in (x.item() for x in torch.aminmax(t)):                 # one pass for both
        if v < lo or v > hi:
            raise ValueError(f"{name} contains {v:g}, out of range: allowed {lo}..{hi} ({what})")


def stored_planes(A, a_bits, a_signed):
    """Bit matrix (N, M*a_bits) float32, column ``m*a_bits + k`` = bit k of A[:, m], and the
    plane weights (a_bits,) float64: 2^k, the MSB ``-2^(a_bits-1)`` if signed (two's complement).

    >>> stored_planes(torch.tensor([[-3]]), 3, True)
    (tensor([[1., 0., 1.]]), tensor([ 1.,  2., -4.], dtype=torch.float64))
    """
    lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed else (0, 2**a_bits - 1)
    check_ints("A", A, lo, hi, f"a_bits={a_bits}, a_signed={a_signed}")
    it = _int_dtype(a_bits)                                       # narrow ints: fewer bytes
    ai = (A.to(torch.int32) if A.is_floating_point() else A).to(it) & (2**a_bits - 1)
    k = torch.arange(a_bits, device=A.device, dtype=it)           # (wrapping = two's complement)
    bits = ((ai.unsqueeze(-1) >> k) & 1).to(torch.float32).reshape(A.shape[0], -1)
    wa = 2.0 ** k.to(torch.float64)
    if a_signed:
        wa[-1] = -wa[-1]
    return bits, wa


def _int_dtype(bits):
    """The narrowest integer dtype that holds ``bits``-bit digit patterns (shifts on uint8 are
    several times faster than on int64 on CPU)."""
    return torch.uint8 if bits <= 8 else torch.int32


def tiles(n, rows):
    """Row tiles ``[(start, stop), ...]`` of a reduction of length n on arrays of ``rows``."""
    return [(s, min(s + rows, n)) for s in range(0, n, rows)]


def radix4_codes(X, x_scale, phase):
    """Plane index per input: ``(sign < 0) * 7 + (e - 1)`` for e = 1..7, 14 for zero.

    >>> radix4_codes(torch.tensor([[1.0, -1/16, 0.0, 4.0**-6]]), 1.0, 0).tolist()
    [[6, 11, 14, 0]]
    """
    base = x_scale * (0.5 if phase else 1.0)
    Xf = X if X.is_floating_point() else X.to(torch.float64)
    mag = Xf.abs()
    nz = mag > 0
    if math.frexp(base)[0] == 0.5:                                 # power-of-two scale: exact
        mant, ex = torch.frexp(mag / base)
        e = torch.div(ex + 13, 2, rounding_mode="floor")           # 4^(e-7) = 0.5 * 2^(2e-13)
        ok = (mant == 0.5) & (ex % 2 == 1) & (e >= 1) & (e <= 7)
    else:
        m = mag.to(torch.float64) / base
        e = 7 + torch.round(torch.log2(torch.where(nz, m, 1.0)) / 2)
        grid = torch.pow(4.0, e - 7)
        ok = ((m - grid).abs() <= 1e-6 * grid) & (e >= 1) & (e <= 7)
    bad = (nz & ~ok) | ~torch.isfinite(mag)
    if bool(bad.any()):
        v = X[bad][0].item()
        raise ValueError(f"X contains {v!r}, not on the radix-4 grid: allowed 0 and "
                         f"+-{base:g}*4^-k, k=0..6 (x_scale={x_scale:g}, phase={phase})")
    code = (e.to(torch.int64) - 1) + 7 * (Xf < 0).to(torch.int64)
    return torch.where(nz, code, torch.full_like(code, 14))


def input_planes(X, kind, x_bits, levels, x_scale, phase, rows) -> InputPlanes:
    """Split inputs X (B, N) into the planes applied one per cycle (see :func:`imckit.imc.mvm`)."""
    dev = X.device
    B, N = X.shape
    spans = tiles(N, rows)
    if kind == "radix4":
        code = radix4_codes(X, x_scale, phase)
        hit = code.unsqueeze(0) == torch.arange(14, device=dev).view(-1, 1, 1)   # (14, B, N)
        present = torch.stack([hit[:, :, s:e].any(-1) for s, e in spans])      # (T, 14, B)
        used = present.any(2).any(0).nonzero().view(-1)            # planes used anywhere
        digits = hit[used].to(torch.float32)
        lev = (used % 7 + 1).to(torch.float64)                     # exponent field e
        w = x_scale * (0.5 if phase else 1.0) * torch.pow(4.0, lev - 7)
        w = torch.where(used >= 7, -w, w)
        active = [p[used] for p in present]
        return InputPlanes(digits, w, active, int((code < 14).sum()))
    if x_scale != 1.0:
        raise ValueError(f"x_scale={x_scale!r} is not allowed for x_kind={kind!r}: allowed 1.0 "
                         "(x_scale only places the radix-4 grid)")
    if kind == "signed":
        m = 2 ** (x_bits - 1) - 1
        check_ints("X", X, -m, m, f"x_kind='signed', x_bits={x_bits}")
        xi = X.to(torch.int32)
        t = torch.arange(x_bits - 1, device=dev, dtype=torch.int32).view(-1, 1, 1)
        digits = torch.cat([(xi.clamp(min=0).unsqueeze(0) >> t) & 1,
                            ((-xi).clamp(min=0).unsqueeze(0) >> t) & 1]).to(torch.float32)
        w = 2.0 ** torch.arange(x_bits - 1, device=dev, dtype=torch.float64)
        w, L = torch.cat([w, -w]), 2
    else:
        check_ints("X", X, 0, 2**x_bits - 1, f"x_kind={kind!r}, x_bits={x_bits}")
        L = levels if kind == "multilevel" else 2
        ndig = max(1, math.ceil(x_bits / math.log2(L) - 1e-9))
        t = torch.arange(ndig, device=dev, dtype=torch.int32)
        if L & (L - 1) == 0:                                       # power of two: shifts
            it = _int_dtype(x_bits)
            xi = X.to(it).unsqueeze(0)
            digits = (xi >> (t * int(math.log2(L))).to(it).view(-1, 1, 1)) & (L - 1)
        else:
            xi = X.to(torch.int32).unsqueeze(0)
            digits = (xi // (L ** t).view(-1, 1, 1)) % L
        digits, w = digits.to(torch.float32), float(L) ** t.to(torch.float64)
    active = [digits[:, :, s:e].amax(-1) > 0 for s, e in spans]
    used = torch.stack(active).any(0).any(1)
    if not bool(used.all()):
        digits, w, active = digits[used], w[used], [a[used] for a in active]
    drives = int(digits.sum() if L == 2 else (digits > 0).sum())
    return InputPlanes(digits, w, active, drives)
