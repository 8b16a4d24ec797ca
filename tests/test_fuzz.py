"""Property tests of the public API (issue 11) with hypothesis.

Every FINITE input gives a finite, correctly shaped result or a ValueError naming the argument,
never another exception; NaN/inf inputs behave as documented (``formats.quantize``: NaN in, NaN
out, +-inf saturates; codes refuse NaN; clip values refuse inf/NaN). Results are checked against
simple oracles too: the nearest grid value (formats), the exact integer product (ideal IMC), the
count range of a column (column_counts), the smallest covering power of two (GradScale).

Reproducible and fast: ``derandomize=True`` (the examples are a function of the test alone), no
example database, no deadline; the module runs in well under a minute on two slow cores.
Former bugs of ``imc.mvm`` / ``calibrate_adc_range`` (imckit/imc/array.py), now fixed, are tested at
the end.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imckit import formats, imc, mapping
from imckit.formats import (BF16, FP4E2M1, FP8E4M3, FP8E5M2, FP16, GradScale, Int, Radix2FP4,
                            Radix4, clip_scale, quantize)
from imckit.formats.gradscale import S_MAX, S_MIN

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=25)

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FORMATS = (Int(4), Int(2), Int(8), Int(16), Int(1, signed=False), Int(4, signed=False),
           Radix4(), Radix4(exp_bits=1), Radix4(exp_bits=4), FP8E4M3, FP8E5M2, FP16, BF16,
           FP4E2M1, Radix2FP4)
CODED = (Int(4), Int(8, signed=False), Radix4(), Radix4(exp_bits=2))
NASTY = [0, -1, -0.0, 0.0, math.inf, -math.inf, math.nan, 5e-324, 1e-320, 1e308, 2.0 ** 1023,
         1.5, 3, True, None, "1", [1.0]]


def value_error_names(fn, *names):
    """``fn()``, or None when it raises a ValueError whose message starts with one of
    ``names`` (the argument it names); any other exception fails the test."""
    try:
        return fn()
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert re.match("|".join(re.escape(n) for n in names), msg), msg
        return None


# --------------------------------------------------------------------------- strategies

def finite(dtype):
    """Finite floats of ``dtype`` (as python floats), edges included."""
    width = {torch.float16: 16, torch.float32: 32, torch.bfloat16: 32, torch.float64: 64}[dtype]
    top = float(torch.finfo(dtype).max)
    return st.floats(-top, top, width=width, allow_nan=False, allow_infinity=False)


@st.composite
def tensors(draw, dtype=None, max_size=12, specials=False):
    """A small tensor (0-d, 1-d or 2-d) of finite values; with ``specials`` some NaN/inf."""
    dtype = dtype or draw(st.sampled_from(DTYPES))
    elems = finite(dtype)
    if specials:
        elems = st.one_of(elems, st.sampled_from([math.nan, math.inf, -math.inf]))
    shape = draw(st.sampled_from([(), (0,), (1,), (3,), (2, 3), (4, 1), (max_size,)]))
    n = math.prod(shape)
    vals = draw(st.lists(elems, min_size=n, max_size=n))
    return torch.tensor(vals, dtype=torch.float64).to(dtype).reshape(shape)


def scales(fmt):
    """Scales within ``fmt.scale_bounds()`` (powers of two for radix-4) and bad ones."""
    lo, hi = fmt.scale_bounds()
    if isinstance(fmt, Radix4):
        good = st.integers(math.frexp(lo)[1] - 1, math.frexp(hi)[1] - 1).map(
            lambda k: 2.0 ** k)
        bad = st.one_of(st.integers(-1074, 1023).map(lambda k: 2.0 ** k),
                        st.floats(1e-300, 1e300))
    else:
        good = st.one_of(st.floats(lo, hi), st.floats(0.01, 100.0))
        bad = st.floats(5e-324, lo)
    return st.one_of(good, good, bad, st.sampled_from(NASTY))


def scale_ok(fmt, scale) -> bool:
    lo, hi = fmt.scale_bounds()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        return False
    if not (math.isfinite(scale) and lo <= scale <= hi):
        return False
    return not isinstance(fmt, Radix4) or math.frexp(scale)[0] == 0.5


def tol(dtype, y64):
    """Rounding slack of a value cast to ``dtype`` (one ulp, and the smallest subnormal)."""
    fi = torch.finfo(dtype)
    return fi.eps * y64.abs() + fi.tiny * fi.eps


# --------------------------------------------------------------------------- formats

@FUZZ
@given(data=st.data(), fmt=st.sampled_from(FORMATS), phase=st.sampled_from([0, 1]),
       rounding=st.sampled_from(["nearest", "stochastic"]))
def test_quantize_finite_in_finite_out_nearest_grid_value(data, fmt, phase, rounding):
    x = data.draw(tensors())
    scale = data.draw(scales(fmt))
    as_numpy = x.dtype != torch.bfloat16 and data.draw(st.booleans())
    y = value_error_names(lambda: quantize(x.numpy() if as_numpy else x, fmt, scale=scale,
                                           phase=phase, rounding=rounding, generator=7), "scale")
    assert (y is None) == (not scale_ok(fmt, scale))
    if y is None:
        return
    if as_numpy:                                                # numpy in, numpy out
        assert isinstance(y, np.ndarray) and y.dtype == x.numpy().dtype
        y = torch.from_numpy(y)
    assert y.shape == x.shape and y.dtype == x.dtype
    lo, hi = fmt.clip_range(scale, phase)
    if hi <= float(torch.finfo(x.dtype).max):                   # documented: finite
        assert torch.isfinite(y).all()
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    fin = torch.isfinite(y64)
    assert ((y64 * x64 >= 0) | ~fin).all()                      # sign kept (or 0)
    xc = x64.clamp(lo, hi)
    err = (y64 - xc).abs()[fin]
    slack = tol(x.dtype, y64[fin])
    if isinstance(fmt, Int):
        step = fmt.delta(scale, phase)
        bound = (0.5 if rounding == "nearest" else 1.0) * step * (1 + 1e-6)
        assert (err <= bound + slack + 2 * tol(torch.float32, y64[fin])).all()
    else:                                                       # the grid, in x's dtype
        grid = fmt.values(scale, phase, dtype=torch.float64)
        gap = (grid[:, None] - xc.reshape(-1)[None, :]).abs()
        if rounding == "nearest":
            best = gap.min(0).values.reshape(xc.shape)[fin]
            assert (err <= best * (1 + 1e-12) + slack).all()
        else:                                                   # a neighbour of xc
            below = torch.where(grid[:, None] <= xc.reshape(1, -1), gap, math.inf)
            above = torch.where(grid[:, None] >= xc.reshape(1, -1), gap, math.inf)
            worst = torch.maximum(below.min(0).values, above.min(0).values)
            assert (err <= worst.reshape(xc.shape)[fin] * (1 + 1e-12) + slack).all()


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(FORMATS), phase=st.sampled_from([0, 1]),
       rounding=st.sampled_from(["nearest", "stochastic"]))
def test_quantize_nan_and_inf_as_documented(data, fmt, phase, rounding):
    x = data.draw(tensors(specials=True))
    y = quantize(x, fmt, phase=phase, rounding=rounding, generator=3)
    lo, hi = fmt.clip_range(1.0, phase)
    assert torch.equal(torch.isnan(y), torch.isnan(x))         # NaN in, NaN out (only there)
    for sign, top in ((1, hi), (-1, lo)):
        where = x == sign * math.inf
        want = torch.tensor(top, dtype=torch.float64).to(x.dtype)
        assert (y[where] == want).all()                         # inf saturates


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(CODED), phase=st.sampled_from([0, 1]),
       rounding=st.sampled_from(["nearest", "stochastic"]))
def test_encode_decode_match_quantize(data, fmt, phase, rounding):
    x = data.draw(tensors(specials=data.draw(st.booleans())))
    scale = data.draw(scales(fmt))
    codes = value_error_names(lambda: fmt.encode(x, scale, phase, rounding=rounding,
                                                 generator=5), "scale", "x contains NaN")
    if codes is None:
        assert not scale_ok(fmt, scale) or bool(torch.isnan(x).any())
        return
    assert codes.shape == x.shape
    if isinstance(fmt, Int):
        assert codes.dtype == torch.int32
        assert ((codes >= fmt.qmin) & (codes <= fmt.qmax)).all()
    else:
        assert codes.dtype == torch.uint8 and (codes < 2 ** fmt.bits).all()
    back = fmt.decode(codes, scale, phase, dtype=x.dtype)
    q = quantize(x, fmt, scale=scale, phase=phase, rounding=rounding, generator=5)
    gap = (back.to(torch.float64) - q.to(torch.float64)).abs()
    same = torch.isfinite(q) & torch.isfinite(back)
    assert (gap[same] <= 2 * tol(x.dtype, q.to(torch.float64)[same])
            + 2 * tol(torch.float32, q.to(torch.float64)[same])).all()


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(FORMATS), rule=st.sampled_from(["max", "mse"]),
       candidates=st.one_of(st.integers(1, 1000), st.sampled_from([0, -1, 1001, 2.5, True])))
def test_clip_scale_gives_a_usable_scale_or_names_the_argument(data, fmt, rule, candidates):
    w = data.draw(tensors(specials=data.draw(st.sampled_from([False, False, True]))))
    s = value_error_names(lambda: clip_scale(w, fmt, rule, candidates=candidates),
                          "candidates", "w has", "w contains")
    cand_ok = not isinstance(candidates, bool) and candidates in range(1, 1001)
    lo, hi = fmt.scale_bounds()
    if s is None:                       # w beyond every scale: radix-4 > 2**1022, Int > 2**1023
        top = hi if isinstance(fmt, Int) else 2.0 ** (math.frexp(hi)[1] - 1) * fmt.max_value
        big = bool((w.to(torch.float64).abs() > top).any())
        assert not cand_ok or not bool(torch.isfinite(w).all()) or big
        return
    assert cand_ok and torch.isfinite(w).all()
    assert isinstance(s, float) and lo <= s <= hi
    q = quantize(w, fmt, scale=s)                               # the format accepts it
    assert q.shape == w.shape
    w64 = w.to(torch.float64)
    amax = float((w64.clamp_min(0) if isinstance(fmt, Int) and not fmt.signed
                  else w64.abs()).max()) if w.numel() else 0.0
    if rule == "max" and amax > 0:
        top = fmt.clip_range(s, 0)[1]
        assert top >= amax                                      # nothing saturates
        if isinstance(fmt, Int):
            assert s == max(amax, lo)
        else:                                                   # the smallest power of two
            assert s == lo or fmt.clip_range(s / 2, 0)[1] < amax


@FUZZ
@given(data=st.data(), rule=st.sampled_from(["max", "delayed"]),
       fmt_max=st.sampled_from([1.0, 6.0, 448.0, 0.5]), backoff=st.sampled_from([2, 4, 8.0]),
       growth=st.integers(1, 4), steps=st.integers(1, 6))
def test_gradscale_scale_is_a_bounded_power_of_two(data, rule, fmt_max, backoff, growth, steps):
    init = data.draw(st.one_of(st.none(), st.integers(-960, 960).map(lambda k: 2.0 ** k)))
    gs = GradScale(rule, fmt_max=fmt_max, backoff=backoff, growth_interval=growth,
                   init_scale=init)
    for _ in range(steps):
        g = data.draw(tensors(specials=data.draw(st.booleans())))
        s = gs.scale_for(g)
        assert isinstance(s, float) and S_MIN <= s <= S_MAX and math.frexp(s)[0] == 0.5
        fin = bool(torch.isfinite(g).all())
        assert gs.nonfinite == (not fin)
        amax = float(g.to(torch.float64).abs().max()) if g.numel() else 0.0
        if rule == "max" and fin and amax > 0:
            assert s * fmt_max >= amax or s == S_MAX
            assert s / 2 * fmt_max < amax or s == S_MIN
        y = quantize(g, Radix4(), scale=s)                      # every S is a usable scale
        assert torch.equal(torch.isnan(y), torch.isnan(g))


@FEW
@given(bad=st.sampled_from(NASTY), field=st.sampled_from(["fmt_max", "backoff",
                                                          "growth_interval", "init_scale"]))
def test_gradscale_bad_arguments_name_themselves(bad, field):
    value_error_names(lambda: GradScale("delayed", **{field: bad}), field)


# --------------------------------------------------------------------------- imc: config

def config_values():
    """Per IMCConfig field: a strategy mixing allowed and disallowed values."""
    ints = lambda lo, hi: st.one_of(st.integers(lo, hi), st.sampled_from(NASTY))   # noqa: E731
    flt = lambda lo, hi: st.one_of(st.floats(lo, hi), st.floats(allow_nan=True),   # noqa: E731
                                   st.sampled_from(NASTY))
    return {
        "rows": ints(1, 4096), "columns": ints(1, 1024),
        "adc_bits": st.one_of(st.none(), ints(1, 16)), "adc_range": flt(2.0 ** -32, 1.0),
        "adc_calibration": st.sampled_from(["fixed", "percentile", "auto", 1]),
        "adc_percentile": flt(1e-3, 100.0), "adc_noise_uv": flt(0.0, 1e6),
        "adc_lsb_min_uv": flt(0.0, 1e6), "ktc_samplings": ints(1, 16),
        "round_counts": st.sampled_from([True, False, "auto", 1, "yes"]),
        "cap_unit_ff": flt(1e-6, 1e6), "col_parasitic_ff": flt(0.0, 1e6),
        "cap_mismatch": flt(0.0, 0.5), "thermal_noise": st.sampled_from([True, False, None]),
        "temperature_k": flt(1e-3, 1e6), "v_dd": flt(1e-3, 10.0), "input_levels": ints(2, 256),
        "sign_mode": st.sampled_from(["two-cycle", "one-cycle", "both"]),
        "seed": ints(0, 2 ** 62)}


@FUZZ
@given(data=st.data())
def test_imcconfig_constructs_or_names_a_field(data):
    fields = config_values()
    chosen = data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
    kw = {f: data.draw(fields[f]) for f in chosen}
    cfg = value_error_names(lambda: imc.IMCConfig(**kw), *(f"{f}=" for f in fields))
    if cfg is not None:
        assert 0.0 <= cfg.sigma_thermal <= 1.0 and cfg.full_scale >= 1


# --------------------------------------------------------------------------- imc: mvm

@st.composite
def mvm_case(draw):
    """A valid (A, X, cfg, kwargs) with small random shapes, every input kind and dtype."""
    B, N, M = draw(st.integers(0, 3)), draw(st.integers(1, 6)), draw(st.integers(0, 3))
    a_bits, a_signed = draw(st.integers(1, 6)), draw(st.booleans())
    if a_signed and a_bits == 1:
        a_signed = False
    alo, ahi = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed else (0, 2 ** a_bits - 1)
    A = torch.tensor(draw(st.lists(st.integers(alo, ahi), min_size=N * M, max_size=N * M)),
                     dtype=torch.int64).reshape(N, M)
    kind = draw(st.sampled_from(imc.X_KINDS))
    levels = draw(st.sampled_from([2, 3, 4, 16])) if kind in ("multilevel", "radix4") else 2
    kw = dict(a_bits=a_bits, a_signed=a_signed, x_kind=kind)
    if kind == "radix4":
        x_scale = draw(st.sampled_from([1.0, 0.25, 2.0 ** 20, 3.0]))
        phase = draw(st.sampled_from([0, 1]))
        top = x_scale * 2.0 ** phase                    # TPR phase 1: 2S * 4^-k
        grid = [0.0] + [s * top * 4.0 ** -k for k in range(7) for s in (1, -1)]
        xs = draw(st.lists(st.sampled_from(grid), min_size=B * N, max_size=B * N))
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        kw.update(x_scale=x_scale, phase=phase)
    else:
        x_bits = draw(st.integers(2 if kind == "signed" else 1, 6))
        m = 2 ** (x_bits - 1) - 1 if kind == "signed" else 2 ** x_bits - 1
        xs = draw(st.lists(st.integers(-m if kind == "signed" else 0, m),
                           min_size=B * N, max_size=B * N))
        dtype = draw(st.sampled_from([torch.int64, torch.float32, torch.float64, torch.float16,
                                      torch.bfloat16]))
        kw.update(x_bits=x_bits)
    X = torch.tensor(xs, dtype=torch.float64).to(dtype).reshape(B, N)
    rows, cols = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    sign_mode = draw(st.sampled_from(["two-cycle", "one-cycle"]))
    if draw(st.booleans()):
        cfg = imc.IMCConfig.ideal(rows=rows, columns=cols, input_levels=levels)
        cfg = dataclasses.replace(cfg, sign_mode=sign_mode)
        ideal = True
    else:
        kw_cfg = dict(
            rows=rows, columns=cols, input_levels=levels, sign_mode=sign_mode,
            adc_bits=draw(st.one_of(st.none(), st.integers(1 if sign_mode == "two-cycle" else 2,
                                                           12))),
            adc_range=draw(st.floats(2.0 ** -32, 1.0)),
            adc_calibration=draw(st.sampled_from(["fixed", "percentile"])),
            adc_percentile=draw(st.floats(1e-3, 100.0)),
            adc_noise_uv=draw(st.floats(0.0, 1e6)), adc_lsb_min_uv=draw(st.floats(0.0, 1e6)),
            ktc_samplings=draw(st.integers(1, 16)),
            round_counts=draw(st.sampled_from([True, False, "auto"])),
            cap_mismatch=draw(st.floats(0.0, 0.5)), temperature_k=draw(st.floats(1.0, 1e6)),
            cap_unit_ff=draw(st.floats(1e-2, 1e3)), col_parasitic_ff=draw(st.floats(0.0, 1e3)),
            v_dd=draw(st.floats(0.1, 5.0)), thermal_noise=draw(st.booleans()),
            seed=draw(st.integers(0, 2 ** 62)))
        try:
            cfg = imc.IMCConfig(**kw_cfg)
        except ValueError as e:                     # kT/C noise above the swing: rejected
            assert str(e).startswith("temperature_k=")
            assume(False)
        ideal = False
    return A, X, cfg, kw, ideal


@FUZZ
@given(case=mvm_case())
def test_mvm_finite_correct_shape_and_exact_when_ideal(case):
    A, X, cfg, kw, ideal = case
    y, work = imc.mvm(A, X, cfg, report=True, **kw)
    B, M = X.shape[0], A.shape[1]
    assert work.macs == B * A.shape[0] * M and work.cycles >= 0 and work.conversions >= 0
    assert y.shape == (B, M)
    assert y.dtype == (torch.float64 if X.dtype == torch.float64 else torch.float32)
    assert torch.isfinite(y).all()
    if ideal:
        ref = X.to(torch.float64) @ A.to(torch.float64)
        assert torch.allclose(y.to(torch.float64), ref, rtol=1e-6, atol=0), (y, ref)


@FUZZ
@given(case=mvm_case())
def test_column_counts_are_finite_counts_within_the_swing(case):
    A, X, cfg, kw, _ = case
    c = imc.column_counts(A, X, cfg, **kw)
    assert c.dim() == 1 and torch.isfinite(c).all()
    L = cfg.input_levels if kw["x_kind"] in ("multilevel", "radix4") else 2
    assert (c.abs() <= cfg.rows * (L - 1) + 1e-3).all()
    if cfg.sign_mode == "two-cycle":
        assert (c >= 0).all()
    r = imc.calibrate_adc_range(c, cfg.rows, levels=L)
    assert 0 < r <= 1 and math.frexp(r)[0] == 0.5


MVM_ARGS = {
    "a_bits": st.one_of(st.integers(-2, 20), st.sampled_from(NASTY)),
    "x_bits": st.one_of(st.integers(-2, 20), st.sampled_from(NASTY)),
    "x_scale": st.one_of(st.floats(1e-3, 1e3), st.sampled_from(NASTY)),
    "phase": st.sampled_from([0, 1, 2, -1, 0.5, None, True]),
    "adc_range": st.one_of(st.floats(2.0 ** -32, 1.0), st.sampled_from(
        [0, -1, 1.5, math.nan, math.inf, "1"])),
    "x_kind": st.sampled_from(list(imc.X_KINDS) + ["float", 3]),
    "a_signed": st.sampled_from([True, False, "no"]),
    "row_group": st.one_of(st.integers(-1, 4), st.sampled_from([1.5, math.inf, None])),
}


@FUZZ
@given(data=st.data())
def test_mvm_bad_arguments_name_themselves(data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(MVM_ARGS)), min_size=1, max_size=3,
                                unique=True))
    kw = {k: data.draw(MVM_ARGS[k]) for k in chosen}
    A = torch.tensor(data.draw(st.lists(st.integers(-9, 17), min_size=6, max_size=6))).reshape(3, 2)
    X = torch.tensor(data.draw(st.lists(st.integers(-9, 17), min_size=6, max_size=6))).reshape(2, 3)
    cfg = imc.IMCConfig.ideal(rows=4)
    names = [f"{k}=" for k in MVM_ARGS] + ["A contains", "X contains"]
    for fn in (imc.mvm, imc.column_counts):
        y = value_error_names(lambda: fn(A, X, cfg, **kw), *names)
        if y is not None:
            assert torch.isfinite(y).all()


SMALL_NASTY = [0, -1, 1.5, math.nan, math.inf, None, "1", True]


@FUZZ
@given(counts=tensors(dtype=torch.float32), rows=st.one_of(st.integers(1, 10 ** 6),
                                                             st.sampled_from(SMALL_NASTY)),
       percentile=st.one_of(st.floats(1e-3, 100.0), st.sampled_from(NASTY)),
       levels=st.one_of(st.integers(2, 256), st.sampled_from(NASTY)))
def test_calibrate_adc_range_is_a_power_of_two_in_range(counts, rows, percentile, levels):
    r = value_error_names(lambda: imc.calibrate_adc_range(
        counts, rows, percentile=percentile, levels=levels), "rows=", "percentile=", "levels=")
    if r is not None:
        assert 0 < r <= 1 and math.frexp(r)[0] == 0.5


# --------------------------------------------------------------------------- mapping

JUNK = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.sampled_from(
    [np.array(["full", "none"]), torch.tensor([1, 2]), ["full"], 1.5, b"full"]))


@FUZZ
@given(data=st.data())
def test_placements_is_a_mapping_or_names_the_argument(data):
    args = {"adaptability": st.one_of(st.sampled_from(mapping.ADAPTABILITY), JUNK),
            "fallback": st.one_of(st.sampled_from(mapping.MVMS), JUNK),
            "base": st.one_of(st.sampled_from(mapping.PLACEMENTS), JUNK),
            "fallback_placement": st.one_of(st.sampled_from(mapping.DIGITAL_PLACEMENTS), JUNK)}
    chosen = data.draw(st.lists(st.sampled_from(sorted(args)), max_size=4, unique=True))
    kw = {k: data.draw(args[k]) for k in chosen}
    adaptability = kw.pop("adaptability", "full")
    p = value_error_names(lambda: mapping.placements(adaptability, **kw),
                          *(f"{k}=" for k in args))
    if p is not None:
        assert list(p) == list(mapping.MVMS) and set(p.values()) <= set(mapping.PLACEMENTS)


# ------------------------------------------ formerly known bugs of imc.mvm (fixed, issue 11)

def test_mvm_empty_reduction_gives_zeros():
    y = imc.mvm(torch.zeros(0, 3, dtype=torch.int64), torch.zeros(2, 0, dtype=torch.int64),
                imc.IMCConfig.ideal(rows=4))
    assert torch.equal(y, torch.zeros(2, 3))


@pytest.mark.parametrize("cfg", [imc.IMCConfig.ideal(rows=4), imc.IMCConfig(rows=4)],
                         ids=["ideal", "noisy"])
def test_mvm_tiny_adc_range_is_finite_or_rejected(cfg):
    A, X = torch.tensor([[7, -8], [3, 1]]), torch.tensor([[15, 15], [1, 0]])
    y = value_error_names(lambda: imc.mvm(A, X, cfg, adc_range=1e-40), "adc_range=")
    assert y is None or torch.isfinite(y).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300])
def test_calibrate_adc_range_non_finite_counts_name_counts(bad):
    counts = torch.tensor([1.0, bad], dtype=torch.float64)
    value_error_names(lambda: imc.calibrate_adc_range(counts, 8), "counts")


def test_calibrate_adc_range_huge_rows():
    r = imc.calibrate_adc_range(torch.tensor([0.0]), 1e308, levels=3)
    assert 0 < r <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mvm_half_precision_inputs_exact_in_ideal_preset(dtype):
    # issue 11: float16/bfloat16 X gave inf / rounded values in the ideal preset (sums beyond
    # 65504, integers beyond 256 in bfloat16); the result is float32 now
    g = torch.Generator().manual_seed(0)
    A = torch.randint(-128, 128, (6, 4), generator=g)
    X = torch.randint(0, 256, (3, 6), generator=g)
    X[0] = 255
    A[:, 0] = 127
    y = imc.mvm(A, X.to(dtype), imc.IMCConfig.ideal(), a_bits=8, x_bits=8)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.equal(y.double(), X.double() @ A.double())
