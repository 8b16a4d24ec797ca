"""A fast, statistical IMC MVM fitted to the bit-true physics of the same chip (issue 14).

:func:`imckit.imc.mvm` converts every (row tile, input plane, vector, physical column) on its
own: exact, and ~100x a plain matmul. :func:`mvm_fast` computes the same MVM as ONE matmul plus
an error drawn per output, derived from the same configuration:

* **exact** -- the operand splitting, the validation and the :class:`~imckit.work.Work` counts
  (the same plane machinery: energy is unchanged); the mismatch of the chip: charge sharing is
  linear in the input digits, so without an ADC (and without rounding to counts) the bit-true
  output is ``X @ A_eff`` with ``A_eff[i, m] = sum_k wa_k b_ik (1 + delta_ik) R / den_k`` over
  the stored bits ``b`` (weights ``wa``) of the SAME chip (:func:`effective_weights`);
* **modelled** -- each conversion's error after the ADC (kT/C and comparator noise, the code
  grid, clamping at 0 and at the top of the range, rounding to counts) as a function of its
  count ``c`` (:func:`conversion_error`, exact given ``c``); the count of a conversion is not
  computed (that is the expensive matmul) but drawn from its distribution given what is cheap:
  the input plane's nonzero digits in the row tile ``n`` (per plane, vector and tile) and the
  column's stored ones ``K`` (per tile and physical column), as if the ``n`` driven rows fell on
  the column's rows at random (hypergeometric); conversion errors are taken as independent.
  Each output then gets the sum of its conversions' mean errors (the clamp at 0 biases sparse
  planes) and ONE normal draw with the variance of their sum,
  ``sum_t sum_{p active} w_p^2 sum_k wa_k^2 Var[e | n_tpb, K_tk]``.
  When counts are rounded (``round_counts``), rounding removes most of the mismatch, so there
  the mismatch is part of the per-conversion error (at its statistical size, not the chip's
  pattern) and the linear part is the exact ``X @ A``.

Regimes where the model does not hold (:data:`CLIP_WARN`, :data:`FEW_BITS`,
:data:`MISMATCH_WARN`): large capacitor mismatch, heavy clipping
(the count tail is then set by data structure the random-placement model does not see) and ADCs
of few bits (the error is then a deterministic function of the count, correlated across the
conversions of an output and with the signal). :func:`mvm_fast` warns in all three. Multi-level
inputs and one-cycle signed inputs are not modelled yet: they run bit-true, with a warning.

>>> import torch
>>> from imckit.imc import IMCConfig, mvm_fast
>>> A = torch.tensor([[1, -2], [3, 4], [-5, 6]]); X = torch.tensor([[1, 2, 3], [15, 0, 7]])
>>> mvm_fast(A, X, IMCConfig.ideal()).tolist() == (X @ A).tolist()
True
"""
from __future__ import annotations

import collections
import math
import warnings

import numpy as np
import torch

from .._device import no_tf32
from ..mapping.arrays import row_tiles
from .array import (CHIP_CACHE_IDLE_S, _cache_get, _cache_keep, _chip_caps, _env_mb, _prepare,
                    calibrate_adc_range, call_work, column_counts, mvm)
from .config import IMCConfig
from .planes import _TRUSTED, as_tensor, check_ints, stored_planes

CLIP_WARN = 1e-3
"""Modelled fraction of conversions whose count is above the ADC range beyond which
:func:`mvm_fast` warns: the percentile calibration clips at most 0.1 %; well above that, the
clipped tail dominates the error and is set by structure in the data (which rows carry the
large inputs) that the random-placement count model cannot see."""

FEW_BITS = 6
"""ADCs of this many bits or fewer get a warning: the conversion error is a deterministic
function of the count there (a dead zone of several counts), correlated across the conversions
of one output and with the signal, which one independent draw per output does not reproduce.
Measured (``imckit.fast_validation``): 4-bit ADCs leave 0.8-1.25 (backward 6x); at 5 and 6
bits the ratios stay inside but the backward MVM's interval reaches past it; 7 bits and up
behave like the validated 8 bits. The threshold is our choice [I]."""

MISMATCH_WARN = 0.05
"""Capacitor mismatch above which :func:`mvm_fast` warns: validated at 0.2 % and 1 %; at 30 %
the forward MVM's error is underestimated by about a third (``imckit.fast_validation``)."""

FULL_TABLE_ROWS = 288
"""Row tiles up to this many rows get their whole (n, K) error table when first used (0.1-0.2 s
at 288 rows on a 2-core x86 CPU), so small layers never check for missing entries; longer tiles
fill the pairs they meet (the first steps of a run)."""

_F_CACHE: "collections.OrderedDict[tuple, dict]" = collections.OrderedDict()
_F_CACHE_KEYS = 32
_W_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
W_CACHE_BYTES = _env_mb("IMCKIT_FAST_CACHE_MB", 1024)
"""Memory the fast mode's per-cell chip weights (:func:`effective_weights`) of recently used
arrays may keep (env ``IMCKIT_FAST_CACHE_MB``, default 1024): a ResNet-20 step at batch 32
uses ~380 MB of them (the weight-gradient arrays hold the activations, batch x positions
rows). Like the chip cache, a full cache keeps what it has (training visits the arrays in a
cycle) and drops entries unused for :data:`~imckit.imc.array.CHIP_CACHE_IDLE_S`."""


def conversion_error(c_max: int, *, rows: int, sigma: float, cap_mismatch: float,
                     step: float | None, top: float | None, round_counts: bool,
                     linear: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and mean square of one conversion's error in counts, for each count 0..c_max.

    The column reads ``v = c + m`` (mismatch ``m ~ N(0, cap_mismatch^2 c (1 - c/rows))``: the
    charged cells' deviations less the column's average, as charge sharing over all ``rows``
    capacitors makes it) plus noise ``N(0, sigma^2)`` (counts); the ADC rounds to codes of
    ``step`` counts clamped to ``[0, top]`` (``step=None``: no ADC), the back end optionally
    rounds to integer counts. The error is taken against ``v`` (``linear``: the mismatch is in
    the linear part, :func:`effective_weights`) or against ``c``.

    >>> mu, m2 = conversion_error(2, rows=8, sigma=0.0, cap_mismatch=0.0, step=1.0, top=8.0,
    ...                           round_counts=True, linear=False)
    >>> m2.tolist()
    [0.0, 0.0, 0.0]
    """
    c = np.arange(c_max + 1, dtype=np.float64)
    if step is None and not round_counts:                       # no quantizer at all
        return np.zeros_like(c), np.full_like(c, sigma**2)
    sm = cap_mismatch * np.sqrt(np.clip(c * (1 - c / rows), 0, None))
    nodes, wts = np.polynomial.hermite_e.hermegauss(12 if cap_mismatch > 0 else 1)
    wts = wts / wts.sum()
    v = c[:, None] + sm[:, None] * nodes[None, :]               # (C, G) column values
    st = 1.0 if step is None else step
    lo, hi = (0, round(top / st)) if step is not None else (-np.inf, np.inf)
    s = max(sigma, 1e-9 * st)
    W = int(math.ceil(16 * s / st)) + 4
    i0 = np.floor((v - 8 * s) / st) - 1
    i = i0[..., None] + np.arange(W)                            # (C, G, W) raw codes
    cdf = lambda x: 0.5 * (1 + _erf(x / (s * math.sqrt(2))))    # noqa: E731
    p = cdf((i + 0.5) * st - v[..., None]) - cdf((i - 0.5) * st - v[..., None])
    p[..., 0] += cdf((i[..., 0] - 0.5) * st - v)               # tails outside the window
    p[..., -1] += 1 - cdf((i[..., -1] + 0.5) * st - v)
    out = np.clip(i, lo, hi) * st
    if round_counts:
        out = np.round(out)
    e = out - (v if linear else c[:, None])[..., None]
    mu = ((p * e).sum(-1) * wts).sum(-1)
    m2 = ((p * e * e).sum(-1) * wts).sum(-1)
    return mu, m2


def _erf(x):
    return torch.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _hypergeom_moments(table: dict, n: torch.Tensor, K: torch.Tensor) -> None:
    """Fill ``table`` (per tile of ``R`` rows) at the missing (n, K) pairs: the count's
    expectation of the conversion error, mean and mean square, and the probability of clipping,
    for ``c ~ Hypergeometric(R, K, n)`` (n driven rows on a column of K stored ones)."""
    if table.get("complete"):
        return
    R, f1, f2, fc = table["R"], table["f1"], table["f2"], table["clip"]
    # rows, then columns of the (U, V) block of the 0/1 float "filled" table: 4x cheaper than
    # gathering it through a meshgrid (bool gathers are slow on CPU); a run's steady state
    if not n.numel() or not K.numel() or float(
            table["filled"].index_select(0, n).index_select(1, K).min()) > 0:
        return
    nn, kk = torch.meshgrid(n, K, indexing="ij")
    need = table["filled"][nn, kk] == 0
    nsel, ksel = nn[need], kk[need]
    n_, k_ = nsel.double(), ksel.double()
    mean = n_ * k_ / R
    sd = torch.sqrt(mean * (1 - k_ / R) * (R - n_) / max(R - 1, 1))
    c_lo = torch.clamp(torch.floor(mean - 12 * sd) - 1, min=0)
    c_lo = torch.maximum(c_lo, torch.clamp(n_ + k_ - R, min=0)).long()
    c_hi = torch.minimum(nsel, ksel).long()
    # +-12 sd around the mean, within the support; pairs of similar width run together
    width = torch.minimum(torch.ceil(24 * sd).long() + 4, c_hi - c_lo + 1).clamp_(min=1)
    bucket = torch.ceil(torch.log2(width.double())).long()
    lf = table["logfact"]                                   # lf[i] = log(i!), i = 0..R
    mu, m2, clip = table["mu"], table["m2"], table["over"]
    out = torch.empty(3, nsel.numel(), dtype=torch.float64)
    chunks = []
    for b in torch.unique(bucket).tolist():             # <= 4M window cells per chunk
        sel = (bucket == b).nonzero().view(-1)
        step = max(1, (4 << 20) // int(width[sel].max()))
        chunks += [sel[i:i + step] for i in range(0, sel.numel(), step)]
    for sel in chunks:
        W = int(width[sel].max())
        nb, kb, lo, hi = nsel[sel, None], ksel[sel, None], c_lo[sel, None], c_hi[sel, None]
        cc = lo + torch.arange(W)
        ok = cc <= hi
        cc = torch.where(ok, cc, lo)                        # masked below
        f = lambda x: lf[x.clamp(min=0)]                   # noqa: E731
        logp = (f(kb) - f(cc) - f(kb - cc) + f(R - kb) - f(nb - cc) - f(R - kb - nb + cc)
                - (lf[R] - f(nb) - f(R - nb)))
        p = torch.where(ok, torch.exp(logp), 0.0)
        p = p / p.sum(1, keepdim=True)
        out[0, sel] = (p * mu[cc]).sum(1)
        out[1, sel] = (p * m2[cc]).sum(1)
        out[2, sel] = (p * clip[cc]).sum(1)
    f1[nsel, ksel] = out[0].float()
    f2[nsel, ksel] = out[1].float()
    fc[nsel, ksel] = out[2].float()
    table["filled"][nsel, ksel] = 1.0


def _error_table(key: tuple, R: int, **physics) -> dict:
    hit = _F_CACHE.get(key)
    if hit is not None:
        _F_CACHE.move_to_end(key)
        return hit
    mu, m2 = conversion_error(R, **physics)
    c = np.arange(R + 1)
    top = physics["top"]
    over = (c > top + 0.5 * physics["step"]) if physics["step"] is not None else 0 * c
    t = {"R": R, "mu": torch.from_numpy(mu), "m2": torch.from_numpy(m2),
         "logfact": torch.lgamma(torch.arange(R + 1, dtype=torch.float64) + 1),
         "over": torch.from_numpy(over.astype(np.float64)),
         "exact": bool(np.all(m2 == 0)),
         "f1": torch.zeros(R + 1, R + 1), "f2": torch.zeros(R + 1, R + 1),
         "clip": torch.zeros(R + 1, R + 1),
         "filled": torch.zeros(R + 1, R + 1)}                    # 0/1 floats (fast gathers)
    if R <= FULL_TABLE_ROWS and not t["exact"]:       # small tiles: every (n, K) at once
        every = torch.arange(R + 1)
        _hypergeom_moments(t, every, every)
        t["complete"] = True
    _F_CACHE[key] = t
    while len(_F_CACHE) > _F_CACHE_KEYS:
        _F_CACHE.popitem(last=False)
    return t


def _stored_digits(A: torch.Tensor, a_bits: int) -> torch.Tensor:
    """``A`` as unsigned ``a_bits``-bit patterns (two's complement wraps), uint8 / int32: the
    stored bit planes are ``(u >> k) & 1``, made one at a time (never the (N, M, a_bits) int8
    tensor of :func:`~imckit.imc.planes.stored_planes`)."""
    if A.is_floating_point():
        A = A.to(torch.int32)
    return (A.to(torch.uint8) if a_bits <= 8 else A.to(torch.int32)) & (2**a_bits - 1)


def _bit(u: torch.Tensor, k: int) -> torch.Tensor:
    return (u >> k) & 1


def effective_weights(A, cfg: IMCConfig, *, a_bits: int = 4, a_signed: bool = True,
                      row_group: int = 1) -> torch.Tensor:
    """``A_eff`` (N, M) float32 of the chip ``cfg.seed`` (the capacitors bit-true
    :func:`~imckit.imc.mvm` uses): ``sum_k wa_k b_ik (1 + delta_ik) R / den_k`` per row tile.
    Without ADC and rounding to counts, ``X @ A_eff`` is the bit-true output. A layer whose
    stored operand stays put between updates may keep it.

    >>> A = torch.tensor([[3], [-2]])
    >>> effective_weights(A, IMCConfig.jia22_16nm(cap_mismatch=0.0)).tolist()
    [[3.0], [-2.0]]
    """
    return _effective(_stored_digits(A, a_bits), cfg, a_bits, a_signed, row_group)


def _effective(u, cfg, a_bits, a_signed, row_group) -> torch.Tensor:
    """:func:`effective_weights` from the stored digit patterns ``u`` (:func:`_stored_digits`)."""
    N, M = u.shape
    w = _chip_weights(cfg, N, M, a_bits, a_signed, row_group, u.device)
    y = None
    for k in range(a_bits):
        b = _bit(u, k).to(torch.float32)
        y = b.mul_(w[k]) if y is None else y.addcmul_(b, w[k])
    return y


def _chip_weights(cfg, N, M, a_bits, a_signed, row_group, dev) -> torch.Tensor:
    """(a_bits, N, M) float32: ``wa_k (1 + delta) R / den`` of every stored bit cell."""
    R, Mb = cfg.rows, M * a_bits
    spans = row_tiles(N, R, row_group)
    ct = -(-Mb // cfg.columns)
    key = (cfg.seed, R, cfg.columns, len(spans), ct, cfg.cap_mismatch, str(dev), N, row_group,
           M, a_bits, a_signed)
    hit = _cache_get(_W_CACHE, key)
    if hit is not None:
        return hit
    wa = 2.0 ** torch.arange(a_bits, dtype=torch.float64)
    if a_signed:
        wa[-1] = -wa[-1]
    if cfg.cap_mismatch > 0:
        chip = _chip_caps(cfg.seed, R, cfg.columns, len(spans), ct, cfg.cap_mismatch, dev)
        delta, den = chip.delta, chip.den
        rows = torch.cat([torch.arange(e - s) + t * R for t, (s, e) in enumerate(spans)])
        tile = torch.cat([torch.full((e - s,), t) for t, (s, e) in enumerate(spans)])
        w = (1 + delta[rows.to(dev), :Mb]) * (R / den[tile.to(dev), :Mb])
    else:
        w = torch.ones(N, Mb, device=dev)
    w = (w.view(N, M, a_bits) * wa.to(dev, torch.float32)).permute(2, 0, 1).contiguous()
    _w_cache_put(key, w)
    return w


def _w_cache_put(key, w) -> None:
    _cache_keep(_W_CACHE, W_CACHE_BYTES, key, w, lambda v: v.numel() * v.element_size(),
                CHIP_CACHE_IDLE_S)


def _is_lazy(X) -> bool:
    """A lazy rows operand (``imckit.nn.rows.ConvRows``): ``shape``, ``dtype``, ``device``,
    ``planes(...)`` (counted inputs or None), ``product(A, dtype)`` and ``materialize()``."""
    return not isinstance(X, torch.Tensor) and hasattr(X, "materialize")


def _product(X, A, dtype) -> torch.Tensor:
    """``X @ A`` in ``dtype`` (TF32 off); a lazy operand computes it its own way."""
    if _is_lazy(X):
        return X.product(A, dtype)
    with no_tf32():
        return X.to(dtype) @ A.to(dtype)


def _supported(planes, L) -> bool:
    """Binary digits through a unipolar ADC: the count model's case."""
    if planes.bipolar or L != 2:
        return False
    return planes.codes is None or planes.codes[1] is None


def mvm_fast(A, X, cfg: IMCConfig, *, report: bool = False, a_bits: int = 4,
             a_signed: bool = True, x_kind: str = "unsigned", x_bits: int = 4,
             x_scale: float = 1.0, phase: int = 0, adc_range: float | None = None,
             generator: torch.Generator | None = None, count_write: bool = True,
             row_group: int = 1):
    """``X @ A`` with the error statistics of :func:`~imckit.imc.mvm` at one matmul's cost.

    Same arguments, shapes, dtypes and (``report=True``) the same :class:`~imckit.work.Work`
    as :func:`~imckit.imc.mvm`; see the module docstring for what is exact and what is
    modelled. ``generator`` draws the one normal per output (None: seeded from ``cfg.seed``).
    A ``"percentile"`` cfg without ``adc_range`` calibrates from the exact column counts, as
    bit-true does (a matmul as large as bit-true's: pass ``adc_range`` to avoid it).

    Warns (``UserWarning``) where the model is not validated: modelled clipping above
    :data:`CLIP_WARN` of the conversions, ADCs of :data:`FEW_BITS` bits or fewer, capacitor
    mismatch above :data:`MISMATCH_WARN`, and inputs it
    does not model (multi-level, one-cycle signed), which run bit-true.

    >>> A = torch.tensor([[3], [-1]]); X = torch.tensor([[0.25, -1.0]])
    >>> mvm_fast(A, X, IMCConfig.ideal(), x_kind="radix4").tolist()
    [[1.75]]
    """
    kw = dict(a_bits=a_bits, a_signed=a_signed, x_kind=x_kind, x_bits=x_bits, x_scale=x_scale,
              phase=phase, row_group=row_group)
    A = as_tensor("A", A)
    planes = None
    if _is_lazy(X):                      # imckit's conv rows: counted on the image if it can
        if _TRUSTED.get() and adc_range is not None and isinstance(cfg, IMCConfig):
            planes = X.planes(x_kind, x_bits, cfg.input_levels, x_scale, phase, cfg.rows,
                              row_group, cfg.sign_mode)
        if planes is None:
            X = X.materialize()
    if planes is not None:
        _, wa = stored_planes(A[:, :0], a_bits, a_signed)
        L = cfg.input_levels if x_kind in ("multilevel", "radix4") else 2
    else:
        # bit-true's validation and input planes (the Work counts); the stored planes are
        # made here one at a time, so _prepare gets A without columns
        _, X, _, wa, planes, L = _prepare(A[:, :0], X, cfg, a_bits, a_signed, x_kind, x_bits,
                                          x_scale, phase, adc_range, generator, row_group,
                                          counts=True)
    lo, hi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed else (0, 2**a_bits - 1)
    check_ints("A", A, lo, hi, f"a_bits={a_bits}, a_signed={a_signed}")
    if X.shape[1] and planes.n_planes and not _supported(planes, L):
        warnings.warn(f"mvm_fast models binary input planes through a unipolar ADC; x_kind="
                      f"{x_kind!r} with input_levels={cfg.input_levels}, sign_mode="
                      f"{cfg.sign_mode!r} runs bit-true (imc.mvm)", stacklevel=2)
        X = X.materialize() if _is_lazy(X) else X
        return mvm(A, X, cfg, report=report, adc_range=adc_range, generator=generator,
                   count_write=count_write, **kw)
    (B, N), M, dev, R = X.shape, A.shape[1], X.device, cfg.rows
    out_dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    cycles = sum(planes.tile_cycles())
    Mb = M * a_bits
    work = call_work(X, A, planes, cycles, a_bits, cfg, count_write)
    if cycles == 0 or M == 0 or N == 0:
        y = torch.zeros(B, M, dtype=out_dtype, device=dev)
        return (y, work) if report else y
    r = cfg.adc_range if adc_range is None else adc_range
    if cfg.adc_calibration == "percentile" and adc_range is None and cfg.adc_bits is not None:
        r = calibrate_adc_range(column_counts(A, X, cfg, **kw), R, percentile=cfg.adc_percentile,
                                levels=L, floor=cfg.adc_range_floor(False))
    fs = R * (L - 1)
    sig = math.hypot(cfg.sigma_thermal, cfg.sigma_comparator) * fs
    if cfg.adc_bits is None:
        step, top = None, None
    else:
        q = cfg.adc_levels(False)
        step, top = r * fs / q, q * (r * fs / q)
    rc = (cfg.round_counts if isinstance(cfg.round_counts, bool)
          else cfg.adc_bits is not None and step <= 1.0)
    linear = not rc and cfg.cap_mismatch > 0
    if cfg.adc_bits is not None and cfg.adc_bits <= FEW_BITS:
        warnings.warn(f"mvm_fast with adc_bits={cfg.adc_bits} (<= {FEW_BITS}): the conversion "
                      "error is a deterministic function of the count there, correlated across "
                      "conversions; the fast model's error variance is not validated, use "
                      "fidelity='bit-true'", stacklevel=2)
    if cfg.cap_mismatch > MISMATCH_WARN:
        warnings.warn(f"mvm_fast with cap_mismatch={cfg.cap_mismatch:g} (> {MISMATCH_WARN:g}): "
                      "the fast model's error is not validated at large mismatch (at 0.3 it "
                      "underestimates the forward MVM's error), use fidelity='bit-true'",
                      stacklevel=2)
    physics = dict(rows=R, sigma=sig, cap_mismatch=cfg.cap_mismatch, step=step, top=top,
                   round_counts=rc, linear=linear)
    u = _stored_digits(A, a_bits)                  # the stored bit patterns, made once
    err = _error_terms(u, planes, wa, physics, N, M, a_bits, row_group, dev)
    if err is not None and err[2] > CLIP_WARN * cycles * Mb:
        warnings.warn(f"mvm_fast: ~{err[2] / (cycles * Mb):.2%} of the conversions clip above "
                      f"the ADC range (adc_range={r:g}; more than {CLIP_WARN:.1%}): the fast "
                      "model's clipping error is not validated there, use fidelity='bit-true' "
                      "or a larger range", stacklevel=2)
    if err is None and not linear:                                 # every conversion exact
        y = _product(X, A, torch.float64).to(out_dtype)
        return (y, work) if report else y
    ct_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    Alin = _effective(u, cfg, a_bits, a_signed, row_group) if linear else A
    y = _product(X, Alin, ct_dtype)
    if err is not None:
        if generator is None:
            generator = torch.Generator(device=dev).manual_seed(cfg.seed + 0xFA57)
        z = torch.randn(B, M, generator=generator, device=dev)
        y += (err[0] + err[1].clamp_(min=0).sqrt_() * z).to(ct_dtype)
    y = y.to(out_dtype)
    return (y, work) if report else y


def _error_terms(u, planes, wa, physics, N, M, a_bits, row_group, dev):
    """Per output: the summed mean error of its conversions (B, M), their summed variance
    (B, M), both float32, and the modelled number of clipping conversions; None when every
    conversion is exact. Row tiles of one length share one table lookup and run batched."""
    R = physics["rows"]
    spans = row_tiles(N, R, row_group)
    n_tpb = planes.counts.to(torch.int64)          # (T, P, B): counted with the planes
    T, P, B = n_tpb.shape
    wp = planes.weights.to(dev, torch.float32)
    wak = wa.to(dev, torch.float32)
    K = _stored_ones(u, spans, a_bits)             # (T, M * a_bits) int64, m-major
    by_len: dict = {}
    for t, (s, e) in enumerate(spans):
        by_len.setdefault(e - s, []).append(t)
    mean = var = None
    clipped = 0.0
    for length, ts in by_len.items():
        tab = _error_table((tuple(sorted(physics.items())), length), length, **physics)
        if tab["exact"]:
            continue
        # chunks of tiles small enough that the (tiles, B, max(U, V, M)) products stay modest
        step = max(1, (16 << 20) // max(B * max(M * a_bits, length + 1), 1))
        for c in range(0, len(ts), step):
            idx = torch.tensor(ts[c:c + step], device=dev)
            b1, b2, cl = _tile_terms(tab, n_tpb[idx], K[idx], wp, wak, M, a_bits, dev)
            mean = b1 if mean is None else mean.add_(b1)
            var = b2 if var is None else var.add_(b2)
            clipped += cl
    return None if mean is None else (mean, var, clipped)


def _stored_ones(u, spans, a_bits) -> torch.Tensor:
    """Stored ones per (row tile, physical column) (T, M * a_bits) int64, column m-major:
    ``K[t, m * a_bits + k]`` = ones of bit k of column m in tile t. The tiles are
    :func:`~imckit.mapping.arrays.row_tiles`: ``r`` rows each from row 0, the last one shorter."""
    N, M = u.shape
    T, r = len(spans), spans[0][1] - spans[0][0]
    nf = N // r                                          # full tiles
    acc = torch.int16 if r < 2 ** 15 else torch.int32    # sums <= r; int16 sums run 1.5x faster
    out = torch.empty(T, M, a_bits, dtype=torch.int64, device=u.device)
    for k in range(a_bits):
        b = _bit(u, k)
        out[:nf, :, k] = b[:nf * r].view(nf, r, M).sum(1, dtype=acc)
        if nf < T:
            out[nf, :, k] = b[nf * r:].sum(0, dtype=acc)
    return out.view(T, M * a_bits)


def _classes(v: torch.Tensor, top: int):
    """Sorted distinct values of ``v`` (integers in 0..top, 0 always among them) and each
    entry's class index: a presence table, not a sort."""
    present = torch.zeros(top + 1, dtype=torch.bool, device=v.device)
    present[v.reshape(-1)] = True
    present[0] = True
    remap = torch.cumsum(present, 0) - 1
    return present.nonzero().view(-1), remap[v]


def _tile_terms(tab, nt, Kt, wp, wak, M, a_bits, dev):
    """Summed mean error, variance (B, M) and clipping count of G row tiles of one length:
    ``nt`` (G, P, B) nonzero inputs, ``Kt`` (G, M * a_bits) stored ones. Count class 0 (a
    plane with no nonzero input in the tile: no cycle runs) carries no error."""
    G, P, B = nt.shape
    R = tab["R"]
    nu, ninv = _classes(nt, R)                                     # input count classes
    ku, kinv = _classes(Kt, R)                                     # stored-ones classes
    U, V = nu.numel(), ku.numel()
    nuc, kuc = nu.cpu(), ku.cpu()
    _hypergeom_moments(tab, nuc[1:], kuc)
    f1 = tab["f1"][nuc][:, kuc].to(dev)
    f2 = tab["f2"][nuc][:, kuc].to(dev)
    fc = tab["clip"][nuc][:, kuc].to(dev)
    f1[0], f2[0], fc[0] = 0.0, 0.0, 0.0                            # n = 0: nothing runs
    # plane weights of each (tile, vector), summed by the plane's count class
    idx = ninv.permute(0, 2, 1)                                    # (G, B, P)
    W1 = torch.zeros(G, B, U, device=dev).scatter_add_(2, idx, wp.view(1, 1, P).expand(G, B, P))
    W2 = torch.zeros(G, B, U, device=dev).scatter_add_(
        2, idx, (wp * wp).view(1, 1, P).expand(G, B, P))
    W0 = torch.zeros(G, U, device=dev).scatter_add_(
        1, ninv.reshape(G, P * B), torch.ones((), device=dev).expand(G, P * B))
    # column classes -> outputs: S[g, v, m] = sum_k wa_k [K_gmk in class v]
    kidx = kinv.view(G, M, a_bits).permute(0, 2, 1)                # (G, a_bits, M)
    S1 = torch.zeros(G, V, M, device=dev).scatter_add_(1, kidx, wak.view(1, -1, 1).expand(G, a_bits, M))
    S2 = torch.zeros(G, V, M, device=dev).scatter_add_(
        1, kidx, (wak * wak).view(1, -1, 1).expand(G, a_bits, M))
    kc = torch.zeros(G, V, device=dev).scatter_add_(
        1, kinv.view(G, -1), torch.ones((), device=dev).expand(G, M * a_bits))
    d2 = f2 - f1 * f1
    with no_tf32():
        if B * U * V + B * V * M <= U * V * M + B * U * M:          # fewer MACs
            b1 = torch.bmm(W1 @ f1, S1)
            b2 = torch.bmm(W2 @ d2, S2)
        else:
            b1 = torch.bmm(W1, f1 @ S1)
            b2 = torch.bmm(W2, d2 @ S2)
    clipped = float(((W0 @ fc) * kc).sum())
    return b1.sum(0), b2.sum(0), clipped
