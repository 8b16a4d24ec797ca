"""Operands as bit planes: stored entries as columns, inputs as planes applied one per cycle.

Bit-parallel / bit-serial (BPBS) operation [JIA20]: bit ``k`` of each stored entry lives in its
own physical column (column ``m * a_bits + k``); inputs are split into binary (or base-L) planes,
applied one per cycle. A plane that has no nonzero digit in a batch row and row tile is not
applied at all: it costs no cycle, no conversion and no noise.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import sys
import time
from typing import NamedTuple

import numpy as np
import torch

from ..formats import phase_factor
from .._device import no_tf32
from ..mapping.arrays import radix4_group, row_tiles

X_KINDS = ("unsigned", "signed", "radix4", "multilevel")
"""How the inputs X are turned into planes applied one per cycle (see :func:`imckit.imc.mvm`)."""

DIGIT_MAX_INT8 = 127
"""Input digits up to this magnitude are kept as int8 (every kind except ``multilevel`` inputs
with a DAC of more than 128 levels), so the plane products run as exact int8 x int8 -> int32
matmuls; larger digits stay float32."""


class InputPlanes(NamedTuple):
    digits: torch.Tensor | None  # (P, B, N) digits in 0..L-1 (+- if bipolar), int8 where they
                                 # fit (DIGIT_MAX_INT8), else float32; None for
                                 # radix-4 inputs, which keep ``codes`` instead
    weights: torch.Tensor  # (P,) float64 plane weights
    active: list           # per row tile: (P, B) bool, the cycles that run
    drives: int            # row drives: nonzero digits summed over planes, rows and batch
    bipolar: bool = False  # signed digits in one cycle (sign_mode="one-cycle"): bipolar ADC
    codes: tuple | None = None  # radix-4: (plane index per input, -1 for zero; digit per input)
    counts: torch.Tensor | None = None  # (T, P, B) nonzero digits per row tile, plane, vector

    @property
    def n_planes(self) -> int:
        return int(self.weights.shape[0])

    def tile_cycles(self) -> list[int]:
        """Cycles that run per row tile (one read-back from the device for all tiles).

        >>> InputPlanes(None, torch.ones(2), [torch.tensor([[True, False], [True, True]])],
        ...             3).tile_cycles()
        [3]
        """
        if not self.active:
            return []
        return [int(c) for c in torch.stack(self.active).flatten(1).sum(1).tolist()]

    def tile_rows(self, t: int, s: int, e: int, cycles: int):
        """Digits of the ``cycles`` (plane, vector) cycles that run in row tile t (rows s..e):
        ``(d, idx)``, d of shape (cycles, e - s) in the planes' digit dtype (int8 whenever every
        digit fits, see :data:`DIGIT_MAX_INT8`), idx their ``plane * B + vector`` (None: all P*B
        in order). Radix-4 rows are built from the plane indices, never from dense planes."""
        act = self.active[t].reshape(-1)
        P, B = self.active[t].shape
        idx = None if cycles == P * B else act.nonzero().view(-1)
        if self.codes is None:
            d = self.digits[:, :, s:e].reshape(P * B, e - s)
            return (d if idx is None else d.index_select(0, idx)), idx
        plane, digit = self.codes                     # int8 plane index per input, int8 digit
        if idx is None:
            pb = torch.arange(P, device=plane.device).repeat_interleave(B)
            bb = torch.arange(B, device=plane.device).repeat(P)
        else:
            pb, bb = idx // B, idx % B
        d = (plane[:, s:e].index_select(0, bb) == pb.to(torch.int8).view(-1, 1)).view(torch.int8)
        if digit is not None:
            d.mul_(digit[:, s:e].index_select(0, bb))
        return d, idx


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


_TRUSTED = contextvars.ContextVar("imckit_trusted_operands", default=False)


@contextlib.contextmanager
def trusted_operands():
    """Skip the integer checks of operands inside the block: for imckit's own layers, whose
    quantizers produce the levels (issue 11: validation at the public entry points, unchecked
    hot paths inside). Thread- and context-local.

    >>> with trusted_operands():
    ...     check_ints("X", torch.tensor([0.5]), 0, 1, "never checked here")
    """
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_ints(name, t, lo, hi, what):
    """All entries finite integers in lo..hi, else ValueError naming the first offender."""
    if t.numel() == 0 or _TRUSTED.get():
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
    """Bit matrix (N, M*a_bits) int8, column ``m*a_bits + k`` = bit k of A[:, m], and the
    plane weights (a_bits,) float64: 2^k, the MSB ``-2^(a_bits-1)`` if signed (two's complement).

    >>> stored_planes(torch.tensor([[-3]]), 3, True)
    (tensor([[1, 0, 1]], dtype=torch.int8), tensor([ 1.,  2., -4.], dtype=torch.float64))
    """
    lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed else (0, 2**a_bits - 1)
    check_ints("A", A, lo, hi, f"a_bits={a_bits}, a_signed={a_signed}")
    it = torch.int8 if a_bits <= 7 else _int_dtype(a_bits)        # narrow ints: fewer bytes
    if A.is_floating_point() and a_bits > 7:
        A = A.to(torch.int32)
    ai = A.to(it) & (2**a_bits - 1)                              # every level fits: exact
    k = torch.arange(a_bits, device=A.device, dtype=it)           # (wrapping = two's complement)
    bits = ((ai.unsqueeze(-1) >> k) & 1).to(torch.int8).reshape(A.shape[0], A.shape[1] * a_bits)
    wa = 2.0 ** k.to(torch.float64)
    if a_signed:
        wa[-1] = -wa[-1]
    return bits, wa


def _int_dtype(bits):
    """The narrowest integer dtype that holds ``bits``-bit digit patterns (shifts on uint8 are
    several times faster than on int64 on CPU)."""
    return torch.uint8 if bits <= 8 else torch.int32


def radix4_codes(X, x_scale, phase):
    """Plane index per input: ``(sign < 0) * 7 + (e - 1)`` for e = 1..7, 14 for zero.

    >>> radix4_codes(torch.tensor([[1.0, -1/16, 0.0, 4.0**-6]]), 1.0, 0).tolist()
    [[6, 11, 14, 0]]
    """
    e0, neg = _radix4_exponents(X, x_scale, phase)
    code = e0.to(torch.int64) + 7 * neg.to(torch.int64)
    return torch.where(e0 >= 0, code, torch.full_like(code, 14))


def _radix4_exponents(X, x_scale, phase):
    """``(e - 1, X < 0)`` per input: e0 int8 in 0..6, -1 for zero; ValueError off the grid."""
    base = x_scale * phase_factor(phase)                 # phase 1: 2S * 4^-k (TPR)
    Xf = X if X.is_floating_point() else X.to(torch.float64)
    mag = Xf.abs()
    nz = mag > 0
    if math.frexp(base)[0] == 0.5:                                 # power-of-two scale: exact
        mant, ex = torch.frexp(mag if base == 1.0 else mag / base)
        e = (ex + 13) >> 1                                         # 4^(e-7) = 0.5 * 2^(2e-13)
        if _TRUSTED.get():                                         # imckit's own quantizer
            return torch.where(nz, e - 1, -1).to(torch.int8), Xf < 0
        ok = (mant == 0.5) & ((ex & 1) == 1) & (e >= 1) & (e <= 7)
    else:
        m = mag.to(torch.float64) / base
        e = (7 + torch.round(torch.log2(torch.where(nz, m, 1.0)) / 2)).to(torch.int32)
        grid = torch.pow(4.0, e.to(torch.float64) - 7)
        ok = ((m - grid).abs() <= 1e-6 * grid) & (e >= 1) & (e <= 7)
    bad = (nz & ~ok) | ~torch.isfinite(mag)
    if bool(bad.any()):
        v = X[bad][0].item()
        raise ValueError(f"X contains {v!r}, not on the radix-4 grid: allowed 0 and "
                         f"+-{base:g}*4^-k, k=0..6 (x_scale={x_scale:g}, phase={phase})")
    e0 = torch.where(nz, e - 1, -1).to(torch.int8)
    return e0, Xf < 0


def input_planes(X, kind, x_bits, levels, x_scale, phase, rows, group=1,
                 sign_mode="two-cycle", counts=False) -> InputPlanes:
    """Split inputs X (B, N) into the planes applied one per cycle (see :func:`imckit.imc.mvm`).

    Signed inputs (``signed``, ``radix4``) in ``sign_mode="one-cycle"`` get one plane per
    magnitude digit with digits of both signs (a +-1 row drive, read by a bipolar ADC).
    """
    dev = X.device
    B, N = X.shape
    spans = row_tiles(N, rows, group)              # the one mapping's tiles
    one = sign_mode == "one-cycle"
    if kind == "radix4":
        return _radix4_planes(X, levels, x_scale, phase, spans, sign_mode, counts)
    if x_scale != 1.0:
        raise ValueError(f"x_scale={x_scale!r} is not allowed for x_kind={kind!r}: allowed 1.0 "
                         "(x_scale only places the radix-4 grid)")
    if kind == "signed":
        m = 2 ** (x_bits - 1) - 1
        check_ints("X", X, -m, m, f"x_kind='signed', x_bits={x_bits}")
        xi = X.to(torch.int32)
        t = torch.arange(x_bits - 1, device=dev, dtype=torch.int32).view(-1, 1, 1)
        w = 2.0 ** torch.arange(x_bits - 1, device=dev, dtype=torch.float64)
        mag = ((xi.abs().unsqueeze(0) >> t) & 1).to(torch.int8)
        if one:                                                    # +-1 digits, one cycle
            digits = mag * torch.sign(xi).to(torch.int8).unsqueeze(0)
        else:
            pos = (xi > 0).to(torch.int8).unsqueeze(0)
            digits, w = torch.cat([mag * pos, mag * (1 - pos)]), torch.cat([w, -w])
        L = 2
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
        if L - 1 > DIGIT_MAX_INT8:
            digits = digits.to(torch.float32)
        else:                                                      # digits <= 127: same bytes
            digits = digits.view(torch.int8) if digits.dtype == torch.uint8 else digits.to(torch.int8)
        w = float(L) ** t.to(torch.float64)
    return _finish(digits, w, spans, bipolar=kind == "signed" and one,
                   binary=L == 2 and kind == "unsigned")


INT8_MM_ENV = "IMCKIT_INT8_MM"
"""``1`` / ``0`` forces / forbids ``torch._int_mm`` for the plane products on CPU; unset (or
``auto``) lets :func:`int8_mm_fast` time it once per process."""


@functools.lru_cache(maxsize=1)
def int8_mm_fast() -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32) beats a float32 matmul on this CPU, timed
    once per process on a 512 x 1152 x 128 plane product (0.1-0.3 s). CPUs with int8
    dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) run it several times faster than
    sgemm; on an AVX2-only CPU it fell to a reference kernel 45x slower than sgemm (measured on
    a 2-core AMD EPYC). Both are exact here, so the choice changes speed, never results.
    ``IMCKIT_INT8_MM`` (``1``/``0``) overrides the timing.

    >>> isinstance(int8_mm_fast(), bool)
    True
    """
    env = os.environ.get(INT8_MM_ENV, "auto").strip().lower()
    if env in ("1", "true", "on", "yes"):
        return True
    if env in ("0", "false", "off", "no"):
        return False
    if env not in ("", "auto"):
        raise ValueError(f"{INT8_MM_ENV}={env!r} is not allowed: give 1, 0 or auto")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (512, 1152), dtype=torch.int8, generator=g)
    b = torch.randint(0, 2, (1152, 128), dtype=torch.int8, generator=g)
    af, bf = a.float(), b.float()

    def best(fn):
        fn()                                             # warm-up (kernel selection, caches)
        ts = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)
    try:
        t_int = best(lambda: torch._int_mm(a, b))
    except RuntimeError:                                 # no int8 kernel in this build
        return False
    return t_int < best(lambda: af @ bf)


def _int_mag(t: torch.Tensor) -> int:
    """Largest magnitude of an integer tensor, one pass (``abs`` of int8 -128 wraps)."""
    lo, hi = torch.aminmax(t)
    return max(int(hi), -int(lo))


def exact_mm(a, b):
    """``a @ b`` exactly for integer-valued operands whose products sum below 2^24: int8 x int8
    -> int32 on CPU (``torch._int_mm``) where that is the faster kernel (:func:`int8_mm_fast`),
    else a float32 matmul without TF32 (exact below 2^24 as well; int8 operands whose sums
    could pass it take float64). Returns float32 (beyond 2^24: the exact sum, rounded once).

    >>> exact_mm(torch.tensor([[1, 2]], dtype=torch.int8), torch.tensor([[3], [4]], dtype=torch.int8))
    tensor([[11.]])
    """
    if a.dtype == torch.int8 and b.dtype == torch.int8 and not a.is_cuda:
        if int8_mm_fast():
            return torch._int_mm(a, b).to(torch.float32)
        k = a.shape[1]
        if k * 128 * 128 >= 2 ** 24 and a.numel() and b.numel() and (
                k * _int_mag(a) * _int_mag(b) >= 2 ** 24):
            # partial sums could pass 2^24 (long multi-level digits against mismatch codes):
            # float64 sums are exact, one rounding to float32 as from int32
            return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.float32)
    with no_tf32():
        return a.to(torch.float32) @ b.to(torch.float32)


def _stable_order(c: torch.Tensor) -> torch.Tensor:
    """Indices that sort the small integers ``c`` (1-D), equal values kept in their order: a
    radix sort (numpy's stable sort of 8- and 16-bit integers on CPU, ~12 ns per element on a
    2-core x86 CPU; ``torch.sort`` on other devices)."""
    if c.device.type != "cpu":
        return torch.sort(c, stable=True).indices
    return torch.from_numpy(np.argsort(c.numpy(), kind="stable"))


def plane_product(planes: InputPlanes, t: int, s: int, e: int, cycles: int, b: torch.Tensor):
    """The exact products of the ``cycles`` (plane, vector) cycles that run in row tile t (rows
    s..e) with ``b`` (e - s, K) integers: ``(v, idx)``, v (cycles, K) float32 in the order of
    :meth:`InputPlanes.tile_rows`, idx as there.

    Radix-4 inputs sit in ONE plane each, so a cycle's row holds ~1/14 of the tile's inputs:
    for them the rows of ``b`` are summed per cycle (``embedding_bag``: the inputs sorted by
    (plane, vector) once, a gather-add of the rows they select) instead of a dense 0/1 matmul
    over every row; the sums are integers below 2^24 and exact in float32 in any order (else
    the dense :func:`exact_mm` runs). Other planes are dense: :func:`exact_mm`."""
    if planes.codes is None or b.numel() == 0 or (e - s) * (
            1 if planes.codes[1] is None else _int_mag(planes.codes[1][:, s:e])
    ) * _int_mag(b) >= 2 ** 24:                        # dense planes, or sums past 2^24
        d, idx = planes.tile_rows(t, s, e, cycles)
        return exact_mm(d, b), idx
    plane, digit = planes.codes
    B = plane.shape[0]
    P = planes.n_planes
    sub = plane[:, s:e].reshape(-1)                    # (vector, row) order; -1: zero input
    pos = (sub >= 0).nonzero().view(-1)
    c = sub.index_select(0, pos)
    order = _stable_order(c).to(pos.device)
    pos = pos.index_select(0, order)                   # sorted by (plane, vector, row)
    n = e - s
    vec = torch.div(pos, n, rounding_mode="floor")
    rows = pos - vec * n
    cnt = torch.bincount(c.index_select(0, order).to(torch.int64) * B + vec, minlength=P * B)
    act = cnt > 0
    idx = None if cycles == P * B else act.nonzero().view(-1)
    sizes = cnt if idx is None else cnt.index_select(0, idx)
    if sizes.numel() != cycles:
        raise AssertionError("radix-4 bags disagree with the active cycles")
    offsets = torch.cumsum(sizes, 0) - sizes
    psw = None
    if digit is not None:
        psw = digit[:, s:e].reshape(-1).index_select(0, pos).to(torch.float32)
    v = torch.nn.functional.embedding_bag(rows, b.to(torch.float32), offsets, mode="sum",
                                          per_sample_weights=psw)
    return v, idx


def _tile_indicator(N, spans, device, dtype):
    """(N, T) 0/1 matrix: row i belongs to row tile t."""
    ind = torch.zeros(N, len(spans), dtype=dtype, device=device)
    for j, (s, e) in enumerate(spans):
        ind[s:e, j] = 1
    return ind


def _finish(digits, w, spans, bipolar, binary=False):
    """Drop planes no vector uses; per row tile, the (plane, vector) cycles that run. The
    nonzero digits per (plane, vector, row tile) come from one matmul with a tile indicator
    (``binary``: the int8 digits are 0/1 already, their own nonzero indicator)."""
    P, B, N = digits.shape
    small = digits.dtype == torch.int8
    if binary and small:
        nz = digits
    else:
        nz = (digits != 0).view(torch.int8) if small else (digits != 0).to(torch.float32)
    ind = _tile_indicator(N, spans, digits.device, nz.dtype)
    cnt = exact_mm(nz.reshape(P * B, N), ind).view(P, B, len(spans))
    act = cnt > 0
    used = act.any(2).any(1)
    if not bool(used.all()):
        digits, w, act, cnt = digits[used], w[used], act[used], cnt[used]
    active = [act[:, :, j] for j in range(len(spans))]
    return InputPlanes(digits, w, active, int(cnt.sum()), bipolar, None, cnt.permute(2, 0, 1))


def _radix4_counts(X, x_scale, phase, spans):
    """Radix-4 inputs (binary digits, two-cycle signs) of imckit's own quantizer, counted only:
    the :class:`InputPlanes` of :func:`_radix4_planes` with ``counts`` and without ``codes``
    (what the fast mode needs), from ONE histogram per (row tile, vector) of the float32 top
    byte. On the grid ``+-base * 4^(e-7)`` (power-of-two base) that byte is
    ``sign << 7 | biased_exponent >> 1``, and ``e = 1..7`` are seven consecutive byte values
    per sign; zero is byte 0 (or 128, negative zero), below them all. No check that X is on
    the grid (trusted operands only). None where the trick does not apply (non-power-of-two base, exponents outside float32's
    normal range, big-endian machines): the caller takes the general path.
    """
    base = x_scale * phase_factor(phase)
    mant, lb = math.frexp(base)                       # base = 2^(lb - 1)
    if mant != 0.5 or sys.byteorder != "little" or X.dtype not in (torch.float32, torch.float64):
        return None
    c0 = (127 + (lb - 1) - 12) >> 1                   # top 7 bits of e = 1's biased exponent
    if c0 < 1 or 127 + lb - 1 > 254:                  # c0 = 0 would share zero's byte
        return None
    B, N = X.shape
    T = len(spans)
    x = X.to(torch.float32).contiguous()              # grid values are exact in float32
    top = x.view(torch.uint8).view(B, N, 4)[..., 3].to(torch.int16)   # little-endian: byte 3
    # 16 bins: 8 * sign + (e for e = 1..7, 0 for zero); (top & 127) - c0 is e - 1 on the grid
    # and negative for zero (c0 >= 1)
    code = ((top & 127) - (c0 - 1)).clamp_(0, 7).add_((top >> 7) << 3).to(torch.int64)
    hist = torch.zeros(T, B, 16, dtype=torch.int32, device=X.device)
    one = torch.ones((), dtype=torch.int32, device=X.device)
    r = spans[0][1] - spans[0][0]                        # row_tiles: r rows each from row 0
    nf = N // r                                          # full tiles: one scatter for all
    hist[:nf].scatter_add_(2, code[:, :nf * r].view(B, nf, r).permute(1, 0, 2),
                           one.expand(nf, B, r))
    if nf < T:                                           # the last, shorter one
        hist[nf].scatter_add_(1, code[:, nf * r:], one.expand(B, N - nf * r))
    bins = torch.tensor([1 + j for j in range(7)] + [9 + j for j in range(7)], device=X.device)
    cnt = hist[:, :, bins].permute(0, 2, 1).to(torch.int64)    # (T, 14, B): plane e0 + 7 neg
    w = base * torch.pow(4.0, torch.arange(14, device=X.device, dtype=torch.float64) % 7 - 6)
    w = torch.where(torch.arange(14, device=X.device) >= 7, -w, w)
    act = cnt > 0
    used = act.any(2).any(0)
    if not bool(used.all()):
        w, cnt, act = w[used], cnt[:, used], act[:, used]
    return InputPlanes(None, w, list(act), int(cnt.sum()), False, None, cnt)


def _radix4_planes(X, levels, x_scale, phase, spans, sign_mode, counts=False):
    """Radix-4 inputs: exponents e = 1..7 in groups of ``g = radix4_group(levels)`` per cycle
    (digit ``4^((e-1) % g)``, plane weight ``base * 4^(e0-7)`` of the group's lowest exponent);
    signs in separate planes (``two-cycle``) or as signed digits (``one-cycle``). ``counts``:
    also count the nonzero inputs per (row tile, plane, vector), for the fast mode."""
    g = radix4_group(levels)
    if counts and g == 1 and sign_mode != "one-cycle" and _TRUSTED.get():
        hit = _radix4_counts(X, x_scale, phase, spans)
        if hit is not None:
            return hit
    e0, neg = _radix4_exponents(X, x_scale, phase)             # e - 1 (int8), -1 for zero
    nz = e0 >= 0
    G = -(-7 // g)                                             # groups per sign
    one = sign_mode == "one-cycle"
    if g == 1:
        grp = e0
    else:
        grp = torch.div(e0, g, rounding_mode="floor")
    if not one:
        grp = grp + (G * (neg & nz)).to(torch.int8)
    plane = torch.where(nz, grp, -1).to(torch.int8)
    if g > 1 or one:
        digit = torch.pow(4, torch.remainder(e0.clamp(min=0), g).to(torch.int32)).to(torch.int8)
        if one:                                                # <= 64: radix4_group
            digit = torch.where(neg, -digit, digit)
    n_planes = G if one else 2 * G
    base = x_scale * phase_factor(phase)
    j = torch.arange(n_planes, device=X.device, dtype=torch.float64) % G
    w = base * torch.pow(4.0, j * g + 1 - 7)
    if not one:
        w = torch.where(torch.arange(n_planes, device=X.device) >= G, -w, w)
    # Each input sits in exactly one plane: keep its plane index and digit (no dense planes)
    # and read the active (plane, vector) cycles of each row tile from the indices.
    B, N = X.shape
    T = len(spans)
    cnt = None
    if counts:
        # nonzero inputs per (row tile, plane, vector): one bincount over the plane indices
        tile = torch.empty(N, dtype=torch.int64, device=X.device)
        for t, (s, e) in enumerate(spans):
            tile[s:e] = t
        key = (tile.view(1, -1) * n_planes + plane.to(torch.int64)) * B \
            + torch.arange(B, device=X.device).view(-1, 1)
        cnt = torch.bincount(key[nz], minlength=T * n_planes * B).view(T, n_planes, B)
        active = list(cnt > 0)
    else:
        bidx = torch.arange(B, device=X.device).view(-1, 1)
        active = []
        pl = plane.to(torch.int64) + 1                         # 0: inputs that are zero
        for s, e in spans:
            a = torch.zeros(n_planes + 1, B, dtype=torch.bool, device=X.device)
            a.index_put_((pl[:, s:e], bidx.expand(B, e - s)),
                         torch.ones((), dtype=torch.bool, device=X.device))
            active.append(a[1:])
    used = (torch.stack(active).any(0).any(1) if active
            else torch.zeros(n_planes, dtype=torch.bool, device=X.device))
    if not bool(used.all()):
        remap = (torch.cumsum(used.to(torch.int64), 0) - 1).to(torch.int8)  # old -> used plane
        plane = torch.where(plane >= 0, remap[plane.clamp(min=0).to(torch.int64)], plane)
        w, active = w[used], [a[used] for a in active]
        cnt = None if cnt is None else cnt[:, used]
    binary = g == 1 and not one                                 # every digit is 1
    codes = (plane, None if binary else torch.where(nz, digit, 0))
    return InputPlanes(None, w, active, int(nz.sum()), one, codes, cnt)
