"""The simulated chip: capacitor mismatch, charge sharing, kT/C noise, ADCs, digital back end."""
from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import time
from typing import NamedTuple

import torch

from .._device import no_tf32
from .._validate import check_choice, check_range
from ..work import Work
from .config import ADC_RANGE_MIN, IMCConfig
from ..mapping.arrays import row_tiles
from .planes import (X_KINDS, InputPlanes, as_tensor, input_planes, plane_product,
                     stored_planes)


def _env_mb(name: str, default: int) -> int:
    """A size in MiB from the environment variable ``name``, in bytes; ValueError naming it
    when it is not a number >= 0."""
    raw = os.environ.get(name, str(default))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ValueError(f"{name}={raw!r} is not allowed: give a size in MiB (a number >= 0)")
    return int(mb * 2**20)


def _cache_get(cache, key):
    """The value kept under ``key`` (its last use is now), or None."""
    hit = cache.get(key)
    if hit is None:
        return None
    cache[key] = (hit[0], time.monotonic())
    cache.move_to_end(key)
    return hit[0]


def _cache_keep(cache, budget: int, key, value, nbytes, idle_s: float) -> None:
    """Keep ``value`` in ``cache`` (an OrderedDict of ``(value, last use)``) within ``budget``
    bytes (``nbytes(v)`` each). Training visits its arrays in a cycle, so an LRU would evict
    every entry just before its reuse: a full cache keeps what it has and drops only entries
    unused for ``idle_s`` seconds; a value that can never fit evicts nothing."""
    need = nbytes(value)
    if need > budget:
        return
    total = sum(nbytes(v) for v, _ in cache.values())
    now = time.monotonic()
    while total + need > budget and cache:
        oldest = next(iter(cache))
        v, last = cache[oldest]
        if now - last < idle_s:
            return                                   # full of entries in use: do not cache
        del cache[oldest]
        total -= nbytes(v)
    cache[key] = (value, now)


_CHIP_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
CHIP_CACHE_BYTES = _env_mb("IMCKIT_CHIP_CACHE_MB", 2048)
"""Memory the capacitor patterns of recently used chips may keep (env ``IMCKIT_CHIP_CACHE_MB``,
default 2048): a ResNet-20 step at batch 32 touches ~1.1 GB of them, mostly the weight-gradient
arrays, and redrawing them costs more than the MVMs. Training visits the chips in a cycle, so a
full cache keeps what it has (an LRU would evict every entry just before its reuse) and only
drops chips unused for :data:`CHIP_CACHE_IDLE_S`."""
CHIP_CACHE_IDLE_S = 120.0


def _chip_bytes(chip) -> int:
    return chip.codes.numel() + chip.den.numel() * 4


MISMATCH_GRID = 6.0 / 127
"""Grid of a chip's capacitor deviations in units of ``cap_mismatch``: each cell's unit normal
is drawn, clipped at +-6 and rounded to multiples of 6/127, so the pattern is an int8 code per
cell and the mismatch term of a column is an exact int8 matmul. The chip simulated IS this
pattern (a valid draw: variance ``sigma^2 (1 + grid^2 / 12)``, 1.0002 sigma^2; one cell in
~5e8 clipped) [I]."""

CAP_MIN = 0.1
"""Smallest capacitor a chip may have, in units of C_u [I]: a Gaussian of large ``cap_mismatch``
would draw negative capacitors (at 30 %, one cell in ~2000 below 0), which no circuit has. The
lower tail is cut at ``1 + sigma z >= CAP_MIN``; this changes nothing below 15 % mismatch (the
+-6 sigma clip comes first) and, at 30 %, moves the 0.13 % of cells below z = -3 to it."""


class Chip(NamedTuple):
    """Capacitors of a simulated chip in units of C_u: ``cap = 1 + scale * codes`` per bit cell."""
    codes: torch.Tensor    # (T * R, Ct * cols) int8 deviation codes, -127..127
    scale: float           # cap_mismatch * MISMATCH_GRID: one code in units of C_u
    den: torch.Tensor      # (T, Ct * cols) float32: sum of the caps over ALL R rows of a tile

    @property
    def delta(self) -> torch.Tensor:
        """Deviations ``cap - 1`` (float32), as many as ``codes``."""
        return self.codes.to(torch.float32) * self.scale


def _chip_caps(seed, rows, cols, n_row_tiles, n_col_tiles, sigma, device) -> Chip:
    """The :class:`Chip` of ``seed``: per bit cell ``cap = 1 + sigma z``, z a unit normal on
    the :data:`MISMATCH_GRID` (no cap below :data:`CAP_MIN`); ``den`` (T, Ct*cols) sums the caps over ALL R rows of each tile
    (unused rows share charge too). The normals of tile (t, c) come from their own generator
    seeded by (seed, t, c): a tile's pattern does not depend on how many tiles a call uses.
    Cached (within :data:`CHIP_CACHE_BYTES`)."""
    key = (seed, rows, cols, n_row_tiles, n_col_tiles, sigma, str(device))
    hit = _cache_get(_CHIP_CACHE, key)
    if hit is not None:
        return hit
    codes = torch.empty(n_row_tiles * rows, n_col_tiles * cols, dtype=torch.int8)
    lo = -127 if sigma <= 0 else max(-127, math.ceil(-(1 - CAP_MIN) / sigma / MISMATCH_GRID))
    for t in range(n_row_tiles):
        for c in range(n_col_tiles):
            g = torch.Generator().manual_seed((seed * 1_000_003 + t * 7919 + c * 104_729) % 2**63)
            z = torch.randn(rows, cols, generator=g)
            codes[t * rows:(t + 1) * rows, c * cols:(c + 1) * cols] = (
                z.div_(MISMATCH_GRID).round_().clamp_(lo, 127).to(torch.int8))
    scale = sigma * MISMATCH_GRID
    sums = codes.view(n_row_tiles, rows, -1).sum(1, dtype=torch.int64)      # exact
    den = (rows + scale * sums.to(torch.float64)).to(torch.float32)
    out = Chip(codes.to(device), scale, den.to(device))
    _cache_keep(_CHIP_CACHE, CHIP_CACHE_BYTES, key, out, _chip_bytes, CHIP_CACHE_IDLE_S)
    return out


def _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits, x_scale, phase, adc_range=None,
             generator=None, row_group=1, counts=False):
    """Validate everything (no compute before), then split both operands into planes."""
    if not isinstance(cfg, IMCConfig):
        raise ValueError(f"cfg={type(cfg).__name__} is not allowed: pass an imc.IMCConfig")
    if adc_range is not None:
        check_range("adc_range", adc_range, ADC_RANGE_MIN, 1)
    check_range("a_bits", a_bits, 1, 16, integer=True)
    check_choice("a_signed", a_signed, [True, False])
    check_choice("x_kind", x_kind, X_KINDS)
    check_range("x_bits", x_bits, 2 if x_kind == "signed" else 1, 16, integer=True)
    check_range("x_scale", x_scale, 0, None, lo_open=True)
    check_choice("phase", phase, [0, 1])
    check_range("row_group", row_group, 1, None, integer=True)
    A, X = as_tensor("A", A), as_tensor("X", X)
    if X.shape[1] != A.shape[0]:
        raise ValueError(f"X.shape={tuple(X.shape)} does not match A.shape={tuple(A.shape)}: "
                         f"X must be (B, {A.shape[0]})")
    if A.device != X.device:
        raise ValueError(f"A.device={A.device} differs from X.device={X.device}: use one device")
    if generator is not None and (not isinstance(generator, torch.Generator)
                                  or generator.device.type != X.device.type):
        raise ValueError(f"generator={generator!r} is not allowed: pass a torch.Generator on "
                         f"X's device ({X.device.type})")
    _check_memory(X, A, x_kind, x_bits, cfg)
    bits, wa = stored_planes(A, a_bits, a_signed)
    if X.shape[1] == 0:                                   # empty reduction: nothing to apply
        empty = InputPlanes(torch.zeros(0, X.shape[0], 0, device=X.device),
                            torch.zeros(0, dtype=torch.float64), [], 0)
        return A, X, bits, wa, empty, 2
    planes = input_planes(X, x_kind, x_bits, cfg.input_levels, x_scale, phase, cfg.rows,
                          row_group, cfg.sign_mode, counts)
    L = cfg.input_levels if x_kind in ("multilevel", "radix4") else 2
    return A, X, bits, wa, planes, L


def _memory_limit() -> int:
    """Half the machine's physical memory in bytes (a guard, not an allocator)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _check_memory(X, A, x_kind, x_bits, cfg) -> None:
    """Refuse a call whose plane tensors would not fit (before allocating them). An upper bound:
    P planes (14 radix-4 (sign, exponent) planes, at most ``2 * x_bits`` INT planes) of B x N
    digits (4-byte float + 1-byte mask) and a P*B x M*4-column float32 accumulator of 4-bit
    stored operands. Radix-4 inputs keep plane indices, so they need less than this."""
    planes = 14 if x_kind == "radix4" else 2 * x_bits
    need = planes * X.shape[0] * X.shape[1] * 5 + X.shape[0] * planes * A.shape[1] * 4 * 4
    if need > _memory_limit():
        raise ValueError(f"X.shape={tuple(X.shape)} with A.shape={tuple(A.shape)} is not "
                         f"allowed: its bit planes need ~{need / 2**30:.1f} GiB, more than half "
                         "of this machine's memory; split the batch")


def _column_values(planes, bits, caps, rows, gain=1.0, group=1, cycles=None):
    """Per row tile: active (plane, batch) rows, and their column values in counts x gain
    (a list of :func:`_iter_column_values`)."""
    return list(_iter_column_values(planes, bits, caps, rows, gain, group, cycles))


def _iter_column_values(planes, bits, caps, rows, gain=1.0, group=1, cycles=None):
    """Per row tile, one at a time: active (plane, batch) rows, and their column values in
    counts x gain.

    ``caps`` = the :class:`Chip` (its columns cut to the stored ones) or None: tile t uses the
    first ``e - s`` capacitors of physical array t, and charge shares over all R of them (unused
    rows hold 0). A column reads ``R * sum_i C_i m_i / sum_i C_i`` with ``C_i = 1 + scale k_i``:
    the exact count ``sum_i m_i`` and the mismatch sum ``sum_i k_i m_i``, both from one exact
    integer product (:func:`~imckit.imc.planes.plane_product`: a matmul, or for radix-4 inputs
    sums of the selected rows; ``k_i`` the cell's int8 deviation code), scaled and combined in
    float32:
    the rounding is ~2e-7 of the full scale ``R (L - 1)`` (~1e-4 counts for binary planes on
    1152 rows, ~2e-2 for 128-level digits), far below kT/C noise and one ADC step. (Digits of
    more than 128 levels stay float32, and with mismatch their sums can pass 2^24: there
    the product is float32's, not exact.)"""
    N = bits.shape[0]
    cycles = planes.tile_cycles() if cycles is None else cycles
    for t, (s, e) in enumerate(row_tiles(N, rows, group)):
        if cycles[t] == 0:
            continue
        Bt = bits[s:e]
        if caps is not None:
            # count and mismatch sum in ONE exact product: the digits are read (and, for a
            # float32 kernel, converted) once, and the product is twice as wide
            cm = caps.codes[t * rows:t * rows + (e - s)] * Bt   # codes of the stored 1-bits
            both, idx = plane_product(planes, t, s, e, cycles[t], torch.cat([Bt, cm], 1))
            Mb = Bt.shape[1]
            v = torch.add(both[:, :Mb], both[:, Mb:], alpha=caps.scale)
            del both
            v.mul_((gain * rows) / caps.den[t])        # charge sharing over all R caps, gain
        else:
            v, idx = plane_product(planes, t, s, e, cycles[t], Bt)
            if gain != 1.0:
                v.mul_(gain)
        yield v, idx


_NOISE_POOL: concurrent.futures.ThreadPoolExecutor | None = None
NOISE_AHEAD = 2
"""Row tiles whose normals :class:`_Noise` draws ahead of their use."""


def _forget_noise_pool():                      # a forked child has no helper thread
    global _NOISE_POOL
    _NOISE_POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_noise_pool)


class _Noise:
    """The normals of each row tile (``shapes``, in tile order), drawn from ``generator`` in
    that order, so the values are those of drawing each tile when it is used; on a CPU they
    are drawn up to :data:`NOISE_AHEAD` tiles ahead on one helper thread. ``torch.randn``
    fills a buffer on one core (~160 M normals/s on a 2-core x86 CPU), the largest single
    cost of a bit-true MVM: ahead of use, it runs while the other operations of the tile
    leave a core free. Where no thread can be started (interpreter shutdown), tiles are drawn
    when used. :meth:`abandon` (an exception in the caller) leaves the generator as drawing in
    place would have: draws made ahead and never used are undone."""

    def __init__(self, shapes, generator, device):
        global _NOISE_POOL
        self._shapes = iter(shapes)
        self._gen, self._dev = generator, device
        self._ahead = torch.device(device).type == "cpu" and NOISE_AHEAD > 0
        self._pending: collections.deque = collections.deque()
        if self._ahead:
            if _NOISE_POOL is None:
                _NOISE_POOL = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="imckit-noise")
            for _ in range(NOISE_AHEAD):
                self._submit()

    def _draw(self, shape):
        return torch.randn(shape, generator=self._gen, device=self._dev)

    def _draw_ahead(self, shape):
        return self._gen.get_state(), self._draw(shape)

    def _submit(self):
        shape = next(self._shapes, None)
        if shape is None:
            return
        try:
            self._pending.append(_NOISE_POOL.submit(self._draw_ahead, shape))
        except RuntimeError:          # shutting down: no new threads; draw it when used
            self._pending.append(shape)

    def next(self) -> torch.Tensor:
        if not self._ahead:
            return self._draw(next(self._shapes))
        draw = self._pending.popleft()
        self._submit()
        if isinstance(draw, tuple):
            return self._draw(draw)
        return draw.result()[1]

    def abandon(self) -> None:
        """Cancel the draws not yet used; put the generator back to its state before the
        first of them that ran."""
        first = None
        while self._pending:
            draw = self._pending.popleft()
            if isinstance(draw, tuple) or draw.cancel():
                continue
            try:
                state = draw.result()[0]
            except Exception:                  # the draw itself failed: nothing consumed
                continue
            first = state if first is None else first
        if first is not None:
            self._gen.set_state(first)


def call_work(X, A, planes, cycles: int, a_bits: int, cfg: IMCConfig, count_write: bool) -> Work:
    """The :class:`~imckit.work.Work` of one MVM call: every active cycle converts all
    ``M * a_bits`` physical columns and runs on each of their column tiles (shared by
    :func:`mvm` and :func:`imckit.imc.fast.mvm_fast`, which must record the same work)."""
    (B, N), M = X.shape, A.shape[1]
    Mb = M * a_bits
    ct = -(-Mb // cfg.columns)
    return Work(macs=B * N * M, conversions=cycles * Mb, cycles=cycles * ct,
                row_drives=planes.drives, write_bits=N * M * a_bits if count_write else 0,
                outputs=B * M)


def mvm(A, X, cfg: IMCConfig, *, report: bool = False, a_bits: int = 4, a_signed: bool = True,
        x_kind: str = "unsigned", x_bits: int = 4, x_scale: float = 1.0, phase: int = 0,
        adc_range: float | None = None, generator: torch.Generator | None = None,
        count_write: bool = True, row_group: int = 1):
    """``X @ A`` on simulated charge-domain IMC arrays (BPBS, row-tiled, noisy, quantized).

    Column j of a row tile, in one cycle: the count ``c = sum_i m_i`` (``m_i`` = input digit x
    stored bit) is read as ``R * sum_i C_ij m_i / sum_i C_ij`` over all R capacitors of the column
    (unused rows hold 0), plus noise in volts (kT/C of every sampling event and the ADC
    comparator's input-referred noise, :attr:`IMCConfig.sigma_thermal`, ``sigma_comparator``),
    then digitized: ``code = clip(round(v/r (2^B-1)), 0,
    2^B-1)`` for ``v`` the fraction of the column swing (bipolar, ``clip(round(v/r
    (2^(B-1)-1)), -(2^(B-1)-1), 2^(B-1)-1)``, when signed digits share a cycle:
    ``cfg.sign_mode="one-cycle"``); the back end rescales codes to counts and shift-adds them
    over planes and row tiles.

    Args:
        A: (N, M) stored integers, ``a_bits`` wide; two's complement planes if ``a_signed``
            (MSB weight ``-2^(a_bits-1)``), plain binary planes otherwise. Float or int dtype.
        X: (B, N) inputs. ``x_kind`` says how they become planes, one applied per cycle:
            ``"unsigned"`` ints 0..2^x_bits-1, binary planes of weight 2^t;
            ``"signed"`` ints with ``|x| <= 2^(x_bits-1)-1``, positive and negative parts applied
            separately (or as +-1 digits in one cycle, ``cfg.sign_mode``); ``"radix4"`` float
            values 0 or ``+-x_scale*4^(e-7)`` (``*2`` for ``phase=1``), e = 1..7: one plane
            per (sign, exponent), or per group of exponents with a multi-level DAC
            (``cfg.input_levels > 2``, :func:`imckit.mapping.radix4_group`); ``"multilevel"``
            ints 0..2^x_bits-1 as base-L digits, L = ``cfg.input_levels`` [LEE21]. A plane
            that is empty for a batch row within a row tile costs no cycle and no conversion.
        cfg: the array (:class:`IMCConfig`).
        report: also return the :class:`~imckit.work.Work` of this call.
        adc_range: overrides ``cfg.adc_range`` (fraction of the column swing, (0, 1]).
        generator: ``torch.Generator`` (on X's device) for the fresh thermal and ADC noise. None:
            one seeded from ``cfg.seed``, so repeating a call repeats its noise; pass a generator
            to draw fresh noise per call (training does). Mismatch always comes from ``cfg.seed``.
        count_write: report ``N * M * a_bits`` bits written for loading A (False when A is
            already resident in the arrays).
        row_group: rows a row tile keeps together (a conv channel's ``k*k`` taps), as
            :func:`imckit.mapping.row_tiles` decides.

    Returns:
        (B, M) float tensor (float64 for float64 X, else float32), and the Work if ``report``.
        The ``M * a_bits`` physical columns span ``ceil(M * a_bits / cfg.columns)`` arrays, each
        receiving every cycle: ``cycles`` counts per array; ``row_drives`` counts the input
        digits fetched and driven, once per cycle (broadcast to every column tile).

    Different layers live on different arrays: give them different ``cfg.seed`` values.

    >>> A = torch.tensor([[3], [-1]]); X = torch.tensor([[0.25, -1.0]])
    >>> mvm(A, X, IMCConfig.ideal(), x_kind="radix4").tolist()
    [[1.75]]
    >>> y, w = mvm(A, torch.tensor([[5, 0]]), IMCConfig.ideal(), report=True)
    >>> y.tolist(), w.cycles, w.conversions        # 5 = planes 1 and 4: two cycles x 4 columns
    ([[15.0]], 2, 8)
    """
    A, X, bits, wa, planes, L = _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits,
                                         x_scale, phase, adc_range, generator, row_group)
    r = cfg.adc_range if adc_range is None else adc_range
    (B, N), M, dev, R = X.shape, A.shape[1], X.device, cfg.rows
    P, Mb = planes.n_planes, bits.shape[1]
    out_dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    per_tile = planes.tile_cycles()
    cycles = sum(per_tile)
    ct = -(-Mb // cfg.columns)                                      # column tiles (arrays)
    work = call_work(X, A, planes, cycles, a_bits, cfg, count_write)
    if cycles == 0 or M == 0 or N == 0:
        y = torch.zeros(B, M, dtype=out_dtype, device=dev)
        return (y, work) if report else y
    caps = None
    if cfg.cap_mismatch > 0:                                        # mismatch per bit cell
        n_tiles = len(row_tiles(N, R, row_group))
        chip = _chip_caps(cfg.seed, R, cfg.columns, n_tiles, ct, cfg.cap_mismatch, dev)
        caps = Chip(chip.codes[:, :Mb], chip.scale, chip.den[:, :Mb])
    fs = R * (L - 1)                                                # full-scale count
    calibrate = cfg.adc_calibration == "percentile" and adc_range is None
    if calibrate:
        values = _column_values(planes, bits, caps, R, group=row_group, cycles=per_tile)
        r = calibrate_adc_range(torch.cat([v.reshape(-1) for v, _ in values]), R,
                                percentile=cfg.adc_percentile, levels=L,
                                floor=cfg.adc_range_floor(planes.bipolar))
    # Analog noise in volts at the column, as a fraction of the swing: kT/C of every sampling
    # event and the comparator's input-referred noise; in counts it is x fs, in LSB x fs x gain.
    sig_v = math.hypot(cfg.sigma_thermal, cfg.sigma_comparator)
    noisy = sig_v > 0
    if cfg.adc_bits is None:                                        # no quantizer: counts direct
        gain, step, sig = 1.0, 1.0, sig_v * fs
    else:
        q = cfg.adc_levels(planes.bipolar)
        gain, step = q / (r * fs), r * fs / q                       # count -> code -> count
        sig = sig_v * fs * gain
    round_counts = (cfg.round_counts if isinstance(cfg.round_counts, bool)
                    else cfg.adc_bits is not None and step <= 1.0)  # "auto": LSB <= 1 count
    if calibrate:
        for v, _ in values:
            v.mul_(gain)
    else:                                      # tile by tile: one tile's values at a time
        values = _iter_column_values(planes, bits, caps, R, gain, row_group, per_tile)
    if generator is None and noisy:
        generator = torch.Generator(device=dev).manual_seed(cfg.seed + 0x5EED)
    noise = _Noise([(c, Mb) for c in per_tile if c], generator, dev) if noisy else None
    acc = None
    try:
        for v, idx in values:
            if noisy:
                v.add_(noise.next(), alpha=sig)
            if cfg.adc_bits is not None:
                v.round_().clamp_(-q if planes.bipolar else 0, q)
            if round_counts:
                v.mul_(step).round_()
            if idx is None and acc is None:
                acc = v
            else:
                acc = torch.zeros(P * B, Mb, device=dev) if acc is None else acc
                acc.add_(v) if idx is None else acc.index_add_(0, idx, v)
    except BaseException:
        if noise is not None:
            noise.abandon()
        raise
    scale = 1.0 if (round_counts or cfg.adc_bits is None) else step
    dt = torch.float64 if round_counts else torch.float32          # exact sums when exact counts
    if dt == torch.float64 and fs * (2**a_bits - 1) < 2**24:
        # integer counts x stored-bit weights stay below 2^24: exact in float32, so only the
        # (P, B, M) plane sums need float64 (4x less to convert than the per-bit counts)
        y = (acc.view(P, B, M, a_bits) @ wa.to(device=dev, dtype=torch.float32)).double()
    else:
        y = acc.view(P, B, M, a_bits).to(dt) @ (wa * scale).to(device=dev, dtype=dt)
    y = torch.tensordot(planes.weights.to(device=dev, dtype=dt), y, dims=1).to(out_dtype)
    return (y, work) if report else y


def column_counts(A, X, cfg: IMCConfig, *, a_bits: int = 4, a_signed: bool = True,
                  x_kind: str = "unsigned", x_bits: int = 4, x_scale: float = 1.0,
                  phase: int = 0, row_group: int = 1, **_ignored) -> torch.Tensor:
    """Ideal column counts of every conversion :func:`mvm` would run (1-D float tensor).

    One entry per (row tile, active input plane, batch row, physical column), in counts
    ``0..rows*(L-1)``: what the ADCs must digitize. Feed to :func:`calibrate_adc_range` or a
    histogram. Accepts (and ignores) mvm's other keywords, so one kwargs dict serves both.

    >>> A = torch.tensor([[1], [1], [0]]); X = torch.tensor([[1, 1, 1], [0, 0, 0]])
    >>> column_counts(A, X, IMCConfig.ideal(rows=2), a_bits=2, a_signed=False).tolist()
    [2.0, 0.0, 0.0, 0.0]
    """
    A, X, bits, _, planes, _ = _prepare(A, X, cfg, a_bits, a_signed, x_kind, x_bits,
                                        x_scale, phase, row_group=row_group)
    if planes.n_planes == 0 or A.shape[0] == 0:
        return torch.zeros(0, device=X.device)
    values = _column_values(planes, bits, None, cfg.rows, group=row_group)
    return torch.cat([torch.zeros(0, device=X.device)] + [v.reshape(-1) for v, _ in values])


def calibrate_adc_range(counts, rows: int, *, percentile: float = 99.9, levels: int = 2,
                        floor: float = ADC_RANGE_MIN) -> float:
    """Smallest power-of-two ADC range covering ``percentile`` % of column counts (of their
    magnitudes, for a bipolar ADC), and at least ``floor``.

    Returns r in (0, 1] as a fraction of the full swing ``rows * (levels - 1)``: a programmable
    reference set by a shift, as SPEC §2.1 assumes [I]. Never below one count, nor below
    ``floor`` (pass :meth:`IMCConfig.adc_range_floor`: the finest LSB the reference allows).

    >>> calibrate_adc_range(torch.tensor([10.0]), 1152, percentile=100, floor=0.0797)
    0.125

    >>> calibrate_adc_range(torch.tensor([10.0, 100.0, 280.0]), 1152, percentile=100)
    0.25
    """
    check_range("rows", rows, 1, None, integer=True)
    check_range("percentile", percentile, 0, 100, lo_open=True)
    check_range("levels", levels, 2, 256, integer=True)
    check_range("floor", floor, ADC_RANGE_MIN, 1)
    c = torch.as_tensor(counts).reshape(-1)
    c = (c if c.is_floating_point() else c.to(torch.float64)).abs()     # bipolar: |count|
    if c.numel() == 0:
        return 1.0
    lo = 2.0 ** math.ceil(math.log2(floor) - 1e-12)                # a power of two >= floor
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"counts contains {c[~torch.isfinite(c)][0].item()!r}: column counts "
                         "must be finite")
    k = max(1, min(c.numel(), math.ceil(percentile / 100 * c.numel() - 1e-9)))
    top = max(float(c.kthvalue(k).values), 1.0)
    frac = max(top / (float(rows) * (levels - 1)), ADC_RANGE_MIN)   # never below one count
    return min(1.0, max(lo, 2.0 ** math.ceil(math.log2(frac) - 1e-12)))
