"""Tests of imckit.formats against independent oracles.

Oracles: hand-written grids (SPEC §1.2), brute-force nearest grid value, torch's own float8 /
bfloat16 / float16 casts and dtype bit patterns, statistics of seeded samples, analytic SQNR.
"""
import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from imckit import formats
from imckit.formats import (BF16, FP4E2M1, FP8E4M3, FP8E5M2, FP16, FP32, INT8, GradScale, Int,
                            Radix2FP4, Radix4, clip_scale, error_stats, quantize, quantize_ste)

R4 = Radix4()
SCALES = [1.0, 2.0 ** -10, 8.0]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- radix-4 grid ---------------------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("phase", [0, 1])
def test_radix4_values_are_the_spec_grid(scale, phase):
    top = scale * (2 if phase else 1)
    mags = [top / 4 ** k for k in range(7)]          # S, S/4, ..., S/4096 (times 2 in phase 1)
    expected = sorted([-m for m in mags] + [0.0] + mags)
    got = R4.values(scale=scale, phase=phase, dtype=torch.float64)
    assert got.tolist() == expected
    assert len(got) == 15


def test_radix4_two_phases_cover_every_power_of_two():
    both = torch.cat([R4.values(1.0, 0), R4.values(1.0, 1)])
    pos = sorted(v for v in both.tolist() if v > 0)
    assert pos == [2.0 ** -k for k in range(12, -2, -1)]      # 2S down to S/4096


def brute_nearest(x, grid, tie_pick):
    """Nearest grid value for each x (float64), ties resolved by tie_pick(candidate mask)."""
    out = torch.empty_like(x)
    for s in range(0, len(x), 200_000):
        xs = x[s:s + 200_000, None]
        d = (xs - grid[None, :]).abs()
        tied = d == d.min(dim=1, keepdim=True).values
        out[s:s + 200_000] = grid[tie_pick(tied, grid)]
    return out


def ties_up(tied, grid):
    """Among tied candidates take the largest magnitude."""
    score = torch.where(tied, grid.abs()[None, :], torch.tensor(-1.0, dtype=grid.dtype))
    return score.argmax(dim=1)


def spanning_values(n, top, seed=0, low=-18, high=3):
    """n values with random signs, log-uniform from top*2**low to top*2**high, plus exact
    midpoints (2.5*lo and m/2), grid points, zero and the saturation boundary."""
    g = gen(seed)
    mags = top * torch.exp2(torch.empty(n, dtype=torch.float64).uniform_(low, high, generator=g))
    lv = [top / 4 ** k for k in range(7)]
    special = [0.0, lv[-1] / 2, lv[-1] / 2 * (1 - 1e-12)] + lv + [2.5 * v for v in lv[1:]] + [
        2.5 * v * (1 - 1e-12) for v in lv[1:]] + [top * 1.0000001, 1e3 * top]
    mags[:len(special)] = torch.tensor(special, dtype=torch.float64)
    sign = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return mags * sign


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radix4_nearest_equals_brute_force(phase, dtype):
    scale = 2.0 ** -3
    x = spanning_values(1_000_000 if dtype == torch.float32 else 200_000, scale * 2 ** phase,
                        seed=phase)
    x = x.to(dtype)
    lv = torch.tensor([scale * 2 ** phase / 4 ** k for k in range(7)], dtype=dtype)
    ties = torch.cat([2.5 * lv[:-1] / 4, lv[-1:] / 2])             # exact thresholds
    x[-2 * len(ties):] = torch.cat([ties, torch.nextafter(ties, torch.zeros_like(ties))])
    grid = R4.values(scale, phase, dtype=torch.float64)
    want = brute_nearest(x.to(torch.float64), grid, ties_up)
    got = quantize(x, R4, scale=scale, phase=phase).to(torch.float64)
    assert got.dtype == torch.float64
    bad = (got != want).nonzero()
    assert bad.numel() == 0, f"{bad.numel()} mismatches, e.g. x={x[bad[:3, 0]].tolist()}"


def test_radix4_nearest_thresholds_exactly():
    lo = 2.0 ** -4
    x = torch.tensor([2.5 * lo, math.nextafter(2.5 * lo, 0), 4 ** -6 / 2,
                      math.nextafter(4 ** -6 / 2, 0)], dtype=torch.float64)
    assert quantize(x, R4).tolist() == [4 * lo, lo, 4 ** -6, 0.0]


@pytest.mark.parametrize("phase", [0, 1])
def test_radix4_stochastic_is_unbiased_in_every_binade(phase):
    top = 1.0 * 2 ** phase
    levels = [top / 4 ** k for k in range(6, -1, -1)]
    intervals = [(0.0, levels[0])] + list(zip(levels[:-1], levels[1:]))
    n = 150_000                                           # 7 intervals: ~10^6 samples in all
    g = gen(phase)
    for lo, hi in intervals:
        v = torch.rand(n, generator=g, dtype=torch.float64)
        x = lo + (hi - lo) * v * v                        # skewed: nearest would be biased
        x = x * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
        q = quantize(x, R4, scale=1.0, phase=phase, rounding="stochastic", generator=g)
        assert set(q.abs().unique().tolist()) <= {lo, hi}
        assert torch.equal(torch.sign(q[q != 0]), torch.sign(x[q != 0]))
        err = q.abs() - x.abs()                    # magnitude error (random signs would cancel)
        se = err.std().item() / math.sqrt(n)
        assert abs(err.mean().item()) < 4 * se, (lo, hi, err.mean().item(), se)
        # the same test catches a biased rounding
        qn = quantize(x.abs(), R4, scale=1.0, phase=phase) - x.abs()
        assert abs(qn.mean().item()) > 4 * qn.std().item() / math.sqrt(n)


# -- two-phase rounding: phase 1 is the grid offset UPWARD, 2S * 4**-k (issue 13) -----------
def test_radix4_values_at_both_phases_written_out():
    assert R4.values(1.0, 0).tolist()[8:] == [4.0 ** -k for k in range(6, -1, -1)]   # ..., S
    assert R4.values(1.0, 1).tolist()[8:] == [2 * 4.0 ** -k for k in range(6, -1, -1)]  # 2S
    assert R4.values(0.25, 1, dtype=torch.float64).tolist()[-2:] == [0.125, 0.5]
    assert R4.clip_range(0.25, 0) == (-0.25, 0.25) and R4.clip_range(0.25, 1) == (-0.5, 0.5)
    assert R4.decode(torch.tensor([7, 15, 6]), scale=0.25, phase=1).tolist() == [0.5, -0.5, 0.125]


@pytest.mark.parametrize("scale", [1.0, 2.0 ** -7])
def test_radix4_phase1_nearest_equals_brute_force_over_hand_grid(scale):
    # the grid written from SPEC §1.2 (2S * 4**-k), not read from values()
    grid = torch.tensor(sorted([0.0] + [s * 2 * scale / 4 ** k for k in range(7)
                                        for s in (1, -1)]), dtype=torch.float64)
    assert torch.equal(R4.values(scale, 1, dtype=torch.float64), grid)
    x = spanning_values(300_000, 2 * scale, seed=11)
    x[:4] = torch.tensor([0.9, -0.6, 0.3, 1.0], dtype=torch.float64) * scale
    want = brute_nearest(x, grid, ties_up)
    got = quantize(x, R4, scale=scale, phase=1)
    assert torch.equal(got, want)


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9])
def test_radix4_stochastic_mean_within_one_percent_in_both_phases(phase, frac):
    S = 2.0 ** -3
    x = torch.full((100_000,), frac * S)
    q = quantize(x, R4, scale=S, phase=phase, rounding="stochastic", generator=gen(40 + phase))
    assert abs(q.mean().item() - frac * S) <= 0.01 * frac * S, (phase, frac, q.mean().item())
    assert float(q.max()) <= R4.clip_range(S, phase)[1]


def test_radix4_old_downward_phase1_grid_was_biased():
    # the first phase-1 grid was S/2 * 4**-k, i.e. phase 0 at scale S/2: 0.9 S averaged S/2
    x = torch.full((100_000,), 0.9)
    old = quantize(x, R4, scale=0.5, rounding="stochastic", generator=gen(3))
    new = quantize(x, R4, scale=1.0, phase=1, rounding="stochastic", generator=gen(3))
    assert old.mean().item() == 0.5
    assert abs(new.mean().item() - 0.9) < 0.009


def test_max_gradscale_saturates_nothing_in_either_phase():
    g = torch.randn(50_000, generator=gen(12)) * 1e-3
    S = GradScale().scale_for(g)
    for phase in (0, 1):
        assert error_stats(g, R4, scale=S, phase=phase).saturated == 0.0
    assert error_stats(g, R4, scale=S / 2).saturated > 0          # the old phase-1 grid


def test_phase1_doubles_the_grid_of_every_format():
    x = torch.randn(20_000, generator=gen(13), dtype=torch.float64) * 0.4
    for fmt, scale in ((R4, 0.5), (Int(4), 0.7), (Int(4, signed=False), 0.7), (FP8E4M3, 1.0),
                       (FP4E2M1, 0.25), (Radix2FP4, 1.0)):
        assert torch.equal(fmt.values(scale, 1, dtype=torch.float64),
                           2 * fmt.values(scale, 0, dtype=torch.float64)), fmt.name
        assert fmt.clip_range(scale, 1) == tuple(2 * v for v in fmt.clip_range(scale, 0))
        assert torch.equal(quantize(x, fmt, scale=scale, phase=1),
                           2 * quantize(x / 2, fmt, scale=scale)), fmt.name
    xs = torch.full((100_000,), 0.9 * 0.7)                     # Int: no clipping below alpha
    q = quantize(xs, Int(4), scale=0.7, phase=1, rounding="stochastic", generator=gen(14))
    assert abs(q.mean().item() - 0.63) < 0.01 * 0.63


def test_radix4_stochastic_probability_matches_position():
    x = torch.full((400_000,), 0.0625 * (1 + 3 * 0.3))           # 30 % of the way to 0.25
    q = quantize(x, R4, rounding="stochastic", generator=gen(1))
    p = (q == 0.25).double().mean().item()
    assert abs(p - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(x))
    assert set(q.unique().tolist()) == {0.0625, 0.25}


def test_stochastic_same_seed_same_result_and_seed_matters():
    x = torch.randn(10_000, generator=gen(5)) * 0.01
    a = quantize(x, R4, rounding="stochastic", generator=gen(7))
    b = quantize(x, R4, rounding="stochastic", generator=7)            # an int seed works too
    c = quantize(x, R4, rounding="stochastic", generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_radix4_saturates_and_keeps_nan():
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 7.0, -7.0, 0.0, -0.0])
    for rounding in ("nearest", "stochastic"):
        q = quantize(x, R4, scale=2.0, rounding=rounding, generator=gen())
        assert q[:2].tolist() == [2.0, -2.0] and math.isnan(q[2])
        assert q[3:5].tolist() == [2.0, -2.0] and q[5:].tolist() == [0.0, 0.0]
    s = error_stats(x[:5], R4, scale=2.0)
    assert s.saturated == 1.0


# -- codes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("phase", [0, 1])
def test_radix4_code_layout_and_round_trip(scale, phase):
    top = scale * 2 ** phase
    codes = torch.tensor([c for c in range(16) if c != 8], dtype=torch.uint8)
    vals = R4.decode(codes, scale=scale, phase=phase)
    expect = [0.0] + [top * 4.0 ** (e - 7) for e in range(1, 8)]
    expect += [-top * 4.0 ** (e - 7) for e in range(1, 8)]
    assert vals.tolist() == expect                                  # (sign << 3) | e layout
    assert torch.equal(R4.encode(vals, scale=scale, phase=phase), codes)
    assert R4.decode(torch.tensor([8]), scale=scale).tolist() == [0.0]   # non-canonical zero
    x = torch.randn(50_000, generator=gen(2)) * top / 10
    c = R4.encode(x, scale=scale, phase=phase)
    assert c.dtype == torch.uint8 and int(c.max()) <= 15
    assert torch.equal(R4.decode(c, scale=scale, phase=phase), quantize(x, R4, scale, phase))
    assert not bool((((c & 7) == 0) & ((c >> 3) == 1)).any())      # zero is canonical


def test_int_encode_decode_round_trip():
    fmt = Int(4)
    q = torch.arange(-7, 8, dtype=torch.int32)
    vals = fmt.decode(q, scale=0.7)
    assert torch.allclose(vals.double(), q.double() * 0.1, atol=1e-7)
    assert torch.equal(fmt.encode(vals, scale=0.7), q)
    with pytest.raises(ValueError, match="outside -7..7"):
        fmt.decode(torch.tensor([8]), scale=0.7)


# -- integer formats ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [Int(4), Int(3), Int(4, signed=False), INT8])
def test_int_nearest_equals_brute_force(fmt):
    alpha = fmt.qmax * 0.125                          # delta = 1/8, exact ties below
    n = 300_000 if fmt.bits < 8 else 60_000
    x = torch.empty(n, dtype=torch.float64).uniform_(-1.5, 1.5, generator=gen(3))
    delta = fmt.delta(alpha)
    frac = (x / delta).abs() % 1.0
    x = x[(frac - 0.5).abs() > 1e-9]                 # keep clear of exact ties (tested below)
    want = brute_nearest(x, fmt.values(alpha, dtype=torch.float64), ties_up)
    got = quantize(x, fmt, scale=alpha)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert quantize(torch.tensor([0.5 * delta, -1.5 * delta], dtype=torch.float64), fmt,
                    scale=alpha).tolist() == pytest.approx(
        [delta, -2 * delta if fmt.signed else 0.0])          # ties away from zero


@pytest.mark.parametrize("fmt", [Int(4), Int(4, signed=False)])
def test_int_stochastic_is_unbiased(fmt):
    x = torch.empty(400_000, dtype=torch.float64).uniform_(0.0, 1.0, generator=gen(4))
    q = quantize(x, fmt, scale=1.0, rounding="stochastic", generator=gen(5))
    err = q - x
    assert abs(err.mean().item()) < 4 * err.std().item() / math.sqrt(len(x))


def test_int_levels_and_bad_bits():
    assert Int(4).values(1.0).mul(7).round().tolist() == list(range(-7, 8))
    assert Int(4, signed=False).values(1.5).mul(10).round().tolist() == list(range(16))
    with pytest.raises(ValueError, match="bits=1"):
        Int(1)
    with pytest.raises(ValueError, match="bits=0"):
        Int(0, signed=False)


def test_clip_scale_rules():
    w = torch.randn(200_000, generator=gen(6), dtype=torch.float64)
    assert clip_scale(w, Int(4)) == w.abs().max().item()
    a = clip_scale(w, Int(4), rule="mse")
    assert 2.0 < a < 3.2           # optimal 4-bit clip of a Gaussian is ~2.5-2.9 sigma
    fine = torch.linspace(0.5, w.abs().max().item(), 400, dtype=torch.float64)
    mses = [(quantize(w, Int(4), scale=float(c)) - w).square().mean().item() for c in fine[::8]]
    assert (quantize(w, Int(4), scale=a) - w).square().mean().item() <= min(mses) * 1.01
    assert clip_scale(w, R4) == 2.0 ** math.ceil(math.log2(w.abs().max().item()))
    assert clip_scale(torch.zeros(5), Int(4)) == 1.0
    with pytest.raises(ValueError, match="rule='p99'"):
        clip_scale(w, Int(4), rule="p99")


def test_running_clip_and_pact():
    rc = formats.RunningClip(momentum=0.75)
    assert rc.update(torch.tensor([1.0, 4.0])) == 4.0
    assert rc.update(torch.tensor([0.0, 8.0])) == 5.0
    x = torch.tensor([-0.5, 0.1, 0.6, 0.99, 1.0, 3.0], requires_grad=True)
    alpha = torch.tensor(1.0, requires_grad=True)
    y = formats.pact_quantize(x, alpha, bits=4)
    assert torch.allclose(y, quantize(x.detach().clamp(0, 1), Int(4, signed=False), scale=1.0))
    w = torch.arange(1.0, 7.0)
    (y * w).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0, 0.0]
    assert alpha.grad.item() == 5.0 + 6.0             # d y / d alpha = 1 where x >= alpha


# -- straight-through estimator -------------------------------------------------------------
@pytest.mark.parametrize("fmt,kw", [(R4, dict(scale=0.5)), (R4, dict(scale=0.5, phase=1)),
                                    (Int(4), dict(scale=0.3)), (FP8E4M3, {})])
def test_ste_gradient_is_identity_inside_zero_outside(fmt, kw):
    x = (torch.randn(1000, generator=gen(9)) * 0.3).requires_grad_()
    x.data[:3] = torch.tensor([1e4, -1e4, 0.0])
    y = quantize_ste(x, fmt, **kw)
    assert torch.equal(y.detach(), quantize(x.detach(), fmt, **kw))
    g = torch.randn(1000, generator=gen(10))
    y.backward(g)
    lo, hi = fmt.clip_range(kw.get("scale", 1.0), kw.get("phase", 0))
    inside = (x.detach() >= lo) & (x.detach() <= hi)
    assert torch.equal(x.grad, torch.where(inside, g, torch.zeros_like(g)))
    assert 0 < int(inside.sum()) < 1000


def test_quantize_is_not_differentiable_but_ste_is():
    x = torch.randn(5, requires_grad=True)
    assert not quantize(x, R4).requires_grad
    assert quantize_ste(x, R4).requires_grad


# -- base-2 minifloats against torch's casts ------------------------------------------------
def cast_test_values(fmt, n=1_000_000, seed=11):
    """float32 values: random mantissas over every binade from well below the smallest
    subnormal to above the largest value, exact ties (half-ulps), and special values."""
    g = gen(seed)
    lo = fmt.emin - fmt.man_bits - 3
    hi = math.log2(fmt.max_value) + 2
    e = torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=g).floor()
    m = 1 + torch.rand(n, generator=g, dtype=torch.float64)
    x = m * torch.exp2(e)
    k = n // 10                          # exact ties: odd multiples of half a quantum
    q = torch.exp2(torch.clamp(e[:k], min=fmt.emin) - fmt.man_bits)
    x[:k] = (torch.floor(x[:k] / q) + 0.5) * q
    x = x.float() * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    mx = fmt.max_value
    ulp = 2.0 ** (math.floor(math.log2(mx)) - fmt.man_bits)
    special = [0.0, -0.0, mx, -mx, mx + ulp / 2, mx + ulp / 4, 2 * mx, float("inf"),
               -float("inf"), float("nan"), fmt.min_value, fmt.min_value / 2, fmt.min_normal]
    x[k:k + len(special)] = torch.tensor(special)
    return x


def bits_equal(a, b):
    assert a.dtype == b.dtype == torch.float32
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b), "NaN positions differ"
    ia, ib = a[~nan_a].view(torch.int32), b[~nan_b].view(torch.int32)
    bad = (ia != ib).nonzero()
    return bad.numel() == 0, bad


@pytest.mark.parametrize("fmt,dtype", [(FP8E4M3, torch.float8_e4m3fn),
                                       (FP8E5M2, torch.float8_e5m2),
                                       (BF16, torch.bfloat16), (FP16, torch.float16)])
def test_minifloat_matches_torch_casts_bit_for_bit(fmt, dtype):
    x = cast_test_values(fmt)
    mx = fmt.max_value
    ok, bad = bits_equal(quantize(x, fmt), x.clamp(-mx, mx).to(dtype).float())     # saturating
    assert ok, f"saturating: {bad.numel()} differ"
    raw = dataclasses.replace(fmt, saturate=False)
    if dtype == torch.float8_e4m3fn:
        # E4M3FN has no inf: without saturation it overflows to NaN above the midpoint 464
        # between 448 and the NaN code 480 (464 itself is a tie and goes to 448, the even
        # mantissa). Some torch versions saturate in the plain cast (2.13), others give NaN.
        y = quantize(torch.tensor([448.0, -464.0, 464.5, 1e4, float("inf")]), raw)
        assert y[:2].tolist() == [448.0, -448.0] and torch.isnan(y[2:]).all()
        if not torch.isnan(torch.tensor([1e4]).to(dtype).float()).item():
            raw = fmt                                    # this torch's plain cast saturates
    ok, bad = bits_equal(quantize(x, raw), x.to(dtype).float())                     # plain cast
    assert ok, f"non-saturating: {bad.numel()} differ"


@pytest.mark.parametrize("fmt,dtype,itype", [(FP8E4M3, torch.float8_e4m3fn, torch.uint8),
                                             (FP8E5M2, torch.float8_e5m2, torch.uint8),
                                             (FP16, torch.float16, torch.int16),
                                             (BF16, torch.bfloat16, torch.int16)])
def test_minifloat_values_are_every_finite_torch_value(fmt, dtype, itype):
    info = torch.iinfo(itype)
    codes = torch.arange(info.min, info.max + 1, dtype=torch.int32).to(itype)
    allv = codes.view(dtype).double()
    want = allv[torch.isfinite(allv)].unique()
    assert torch.equal(fmt.values(dtype=torch.float64), want)


def test_small_formats_grids_and_ties():
    assert FP4E2M1.values().tolist()[7:] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert Radix2FP4.values().tolist()[7:] == [0.0] + [2.0 ** -k for k in range(6, -1, -1)]
    x = torch.empty(200_000, dtype=torch.float64).uniform_(-8, 8, generator=gen(12))
    x[:6] = torch.tensor([0.25, 0.75, 1.25, 2.5, 3.5, 5.0], dtype=torch.float64)
    grid = FP4E2M1.values(dtype=torch.float64)
    code_even = torch.tensor([((i - 7) % 2 == 0) for i in range(15)])  # E2M1: even mantissa

    def ties_even(tied, grid):
        return torch.where(tied, code_even[None, :].double() + 1, 0.0).argmax(dim=1)
    assert torch.equal(quantize(x, FP4E2M1), brute_nearest(x, grid, ties_even))
    assert quantize(x[:6], FP4E2M1).tolist() == [0.0, 1.0, 1.0, 2.0, 4.0, 4.0]
    y = torch.empty(200_000, dtype=torch.float64).uniform_(-2, 2, generator=gen(13))
    y[:3] = torch.tensor([2.0 ** -7, 1.5 * 2.0 ** -3, 0.75], dtype=torch.float64)
    want = brute_nearest(y, Radix2FP4.values(dtype=torch.float64), ties_up)
    assert torch.equal(quantize(y, Radix2FP4), want)


@pytest.mark.parametrize("fmt", [FP8E4M3, FP4E2M1, Radix2FP4])
def test_minifloat_stochastic_is_unbiased(fmt):
    x = torch.empty(300_000, dtype=torch.float64).uniform_(0, fmt.max_value, generator=gen(14))
    q = quantize(x, fmt, rounding="stochastic", generator=gen(15))
    err = q - x
    assert abs(err.mean().item()) < 4 * err.std().item() / math.sqrt(len(x))
    assert torch.isin(q, fmt.values(dtype=torch.float64)).all()


def test_fp32_is_identity_and_scale_and_phase_rescale():
    x = torch.randn(1000, generator=gen(16))
    assert torch.equal(quantize(x, FP32), x)
    assert torch.equal(quantize(x.double(), FP32), x.double())
    y = quantize(x, FP8E4M3, scale=2.0 ** -5)
    assert torch.equal(y, quantize(x * 32, FP8E4M3) / 32)
    assert torch.equal(quantize(x, FP8E4M3, phase=1), quantize(x / 2, FP8E4M3) * 2)


# -- GradScale -----------------------------------------------------------------------------
def test_gradscale_max_rule_is_the_smallest_covering_power_of_two():
    gs = GradScale("max")
    for amax in [0.3, 0.25, 1e-7, 17.0]:
        g = torch.tensor([amax, -amax / 3])
        s = gs.scale_for(g)
        assert math.frexp(s)[0] == 0.5 and s / 2 < amax <= s
        assert not gs.overflowed
    assert gs.scale_for(torch.tensor([float("nan")])) == 32.0 and gs.overflowed


def test_gradscale_delayed_backs_off_on_inf_nan_and_recovers():
    gs = GradScale("delayed", growth_interval=3)
    g = torch.full((10,), 0.1)
    seen = [gs.scale_for(g) for _ in range(2)]
    assert seen == [0.125, 0.125] and not gs.overflowed
    s_before = gs.scale
    for bad in (float("inf"), float("nan")):
        gb = g.clone()
        gb[3] = bad
        gs.scale_for(gb)
        assert gs.overflowed and gs.nonfinite and not gs.saturated
    assert gs.scale == s_before * 4                      # backed off twice (x2 each)
    used = [gs.scale_for(g) for _ in range(7)]           # clean steps: grows back
    assert used == [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert not gs.overflowed and gs.n_overflows == 2
    gs.scale_for(g * 1.5)                                # 0.15 > 0.125: finite overflow
    assert gs.overflowed and gs.saturated and not gs.nonfinite and gs.scale == 0.25
    state = gs.state_dict()
    gs2 = GradScale("delayed")
    gs2.load_state_dict(state)
    assert gs2.scale_for(g) == gs.scale_for(g)


def test_gradscale_bad_config():
    with pytest.raises(ValueError, match="rule='min'"):
        GradScale("min")
    with pytest.raises(ValueError, match="backoff=3"):
        GradScale("delayed", backoff=3)
    with pytest.raises(ValueError, match="init_scale=0.3"):
        GradScale("delayed", init_scale=0.3)


# -- error statistics -----------------------------------------------------------------------
def test_error_stats_against_hand_values_and_analytic_sqnr():
    x = torch.tensor([0.3, 1e-6, -2.0, 0.0, float("nan")])
    s = error_stats(x, R4, scale=1.0)
    errs = [0.25 - 0.3, -1e-6, -1.0 + 2.0, 0.0]
    assert s.n == 4 and s.bias == pytest.approx(sum(errs) / 4)
    assert s.mse == pytest.approx(sum(e * e for e in errs) / 4)
    assert s.underflow == pytest.approx(1 / 3) and s.saturated == pytest.approx(1 / 4)
    assert s["sqnr_db"] == s.as_dict()["sqnr_db"]
    u = torch.empty(1_000_000, dtype=torch.float64).uniform_(-1, 1, generator=gen(17))
    # uniform input over the clip range: SQNR = 10 log10((a^2/3) / (delta^2/12)) = 10 log10(4*127^2)
    assert error_stats(u, INT8, scale=1.0).sqnr_db == pytest.approx(
        10 * math.log10(4 * 127 ** 2), abs=0.1)
    e = error_stats(torch.empty(0), R4)
    assert e.n == 0 and math.isnan(e.mse)


# -- input kinds and bad input --------------------------------------------------------------
@pytest.mark.parametrize("fmt", [R4, Int(4), FP8E4M3, FP32])
def test_numpy_in_numpy_out_and_dtypes(fmt):
    xn = np.random.default_rng(0).standard_normal(100).astype(np.float32) * 0.2
    yn = quantize(xn, fmt)
    assert isinstance(yn, np.ndarray) and yn.dtype == np.float32
    assert np.array_equal(yn, quantize(torch.from_numpy(xn), fmt).numpy())
    for dt in (torch.float16, torch.bfloat16):
        y = quantize(torch.from_numpy(xn).to(dt), fmt)
        assert y.dtype == dt and y.shape == (100,)
    for shape in [(0,), (3, 0)]:
        e = quantize(torch.empty(shape), fmt, rounding="stochastic", generator=0)
        assert e.shape == shape and e.dtype == torch.float32


@pytest.mark.parametrize("bad, match", [
    (torch.arange(4), "dtype torch.int64"), (torch.ones(2, dtype=torch.bool), "dtype torch.bool"),
    (np.arange(3), "numpy dtype int64"), ([0.1, 0.2], "is a list")])
def test_non_float_input_is_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        quantize(bad, R4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rounding="up"), "rounding='up'"), (dict(phase=2), "phase=2"),
    (dict(scale=0.3), "scale=0.3 is not a power of two"), (dict(scale=0.0), "scale=0.0"),
    (dict(scale=-1.0), "scale=-1.0"), (dict(scale=float("inf")), "scale=inf"),
    (dict(rounding="stochastic"), "generator=None"),
    (dict(rounding="stochastic", generator="seed"), "generator='seed'")])
def test_bad_arguments_raise_before_compute(kwargs, match, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computed before validating")
    monkeypatch.setattr(Radix4, "_quantize", boom)
    with pytest.raises(ValueError, match=match):
        quantize(torch.ones(3), R4, **kwargs)
    with pytest.raises(ValueError, match=match):
        R4.encode(torch.ones(3), **kwargs)


def test_bad_formats_and_codes():
    with pytest.raises(ValueError, match="fmt='int4'"):
        quantize(torch.ones(2), "int4")
    with pytest.raises(ValueError, match="specials='x'"):
        formats.Minifloat(4, 3, 7, specials="x")
    with pytest.raises(ValueError, match="saturate=False"):
        formats.Minifloat(2, 1, 1, specials="none", saturate=False)
    with pytest.raises(ValueError, match="exp_bits=0"):
        Radix4(exp_bits=0)
    with pytest.raises(ValueError, match="outside 0..15"):
        R4.decode(torch.tensor([16]))
    with pytest.raises(ValueError, match="NaN"):
        R4.encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="scale=0 is out of range"):
        quantize(torch.ones(2), Int(4), scale=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(100_000, generator=gen(18)) * 0.05
    xc = x.cuda()
    for fmt in (R4, Int(4), FP8E4M3, FP8E5M2, BF16, FP16, FP4E2M1, Radix2FP4):
        for phase in (0, 1):
            assert torch.equal(quantize(xc, fmt, phase=phase).cpu(), quantize(x, fmt, phase=phase))
    assert torch.equal(quantize(xc, FP8E4M3), xc.to(torch.float8_e4m3fn).float())
    assert torch.equal(R4.encode(xc, scale=0.25).cpu(), R4.encode(x, scale=0.25))
    assert R4.decode(R4.encode(xc, scale=0.25), scale=0.25).is_cuda
    # stochastic: a CUDA generator, an int seed (made on the tensor's device), a CPU generator
    for g in (torch.Generator(device="cuda").manual_seed(0), 0, gen(0)):
        q = quantize(xc, R4, scale=0.25, rounding="stochastic", generator=g)
        assert q.is_cuda and torch.isin(q.cpu(), R4.values(0.25)).all()
    v = torch.full((1_000_000,), 0.1, device="cuda")
    q = quantize(v, R4, rounding="stochastic", generator=1)
    err = (q - v).double()
    assert abs(err.mean().item()) < 4 * err.std().item() / 1000
    y = quantize_ste(xc.clone().requires_grad_(), Int(4), scale=0.05)
    y.sum().backward()
    assert GradScale("delayed").scale_for(xc) == GradScale("max").scale_for(x)
    assert error_stats(xc, R4, scale=0.25).sqnr_db == pytest.approx(
        error_stats(x, R4, scale=0.25).sqnr_db)


# -- edge cases of issue 11 -----------------------------------------------------------------
F64 = torch.float64


def test_int_huge_scale_gives_finite_correct_values():
    # issue 11: quantize(x, Int(4), scale=1e100) gave NaN even for 0 (the float32 step was inf)
    x = torch.tensor([0.0, 1.0, -3e38, 3e38])
    assert quantize(x, Int(4), scale=1e100).tolist() == [0.0, 0.0, 0.0, 0.0]
    x64 = torch.tensor([0.0, 1e99, 2e100], dtype=F64)
    assert quantize(x64, Int(4), scale=1e100).tolist() == [0.0, 1e100 / 7, 1e100]


def test_int_tiny_scale_gives_finite_correct_values():
    # a float32 step of 1e-300/7 is 0: 0/0 gave NaN
    assert quantize(torch.tensor([0.0, 1.0]), Int(4), scale=1e-300).tolist() == [0.0, 0.0]
    x64 = torch.tensor([0.0, 3e-301, 1.0], dtype=F64)
    got = quantize(x64, Int(4), scale=1e-300).tolist()
    assert got == [0.0, 2 * (1e-300 / 7), 1e-300]
    assert Int(4)._work_dtype(torch.zeros(1), 0.7, 0) == torch.float32   # the usual path


@pytest.mark.parametrize("fmt, scale", [(Int(4), 1e-320), (FP8E4M3, 5e-324), (FP16, 1e-310),
                                        (R4, 2.0 ** -1010), (R4, 2.0 ** 1023)])
def test_scale_whose_step_underflows_is_rejected(fmt, scale):
    # before: NaN (Int, minifloats) or a message naming the phase-scaled top (radix-4)
    msg = re.escape(f"scale={scale!r} is out of range for {fmt.name}: allowed")
    with pytest.raises(ValueError, match="^" + msg):
        quantize(torch.zeros(2, dtype=F64), fmt, scale=scale, phase=1)
    lo, hi = fmt.scale_bounds()
    for s in (lo, hi):
        for phase in (0, 1):
            y = quantize(torch.tensor([0.0, hi, -lo], dtype=F64), fmt, scale=s, phase=phase)
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, 1001, "10", float("inf")])
def test_clip_scale_candidates_are_validated(bad):
    # issue 11: candidates=0 raised ZeroDivisionError
    with pytest.raises(ValueError, match=rf"^candidates={bad!r}"):
        clip_scale(torch.randn(20), Int(4), rule="mse", candidates=bad)


def test_clip_scale_mse_keeps_its_choice_and_works_at_any_magnitude():
    w = torch.randn(5000, generator=gen(3))
    base = clip_scale(w, Int(4), rule="mse")
    for k in (-1000, -300, -40, 40, 300, 1000):          # a power-of-two rescale: same choice
        w64 = w.to(F64) * 2.0 ** k
        assert clip_scale(w64, Int(4), rule="mse") == base * 2.0 ** k
    assert clip_scale(w.to(F64) * 2.0 ** 60, R4, rule="mse") == clip_scale(w, R4, rule="mse") * 2.0 ** 60


def test_clip_scale_extreme_w_gives_a_usable_scale_or_names_w():
    # before: OverflowError (radix-4, radix-2 FP4) and scales quantize then rejected
    for fmt in (R4, Radix2FP4):
        with pytest.raises(ValueError, match=r"^w has max\|w\|=1.7e\+308: no .* scale covers it"):
            clip_scale(torch.tensor([1.7e308], dtype=F64), fmt)
    for fmt in (R4, Int(4), FP16, FP8E4M3):
        for rule in ("max", "mse"):
            s = clip_scale(torch.tensor([5e-324, 0.0], dtype=F64), fmt, rule=rule)
            assert fmt.scale_bounds()[0] == s
            assert quantize(torch.tensor([5e-324], dtype=F64), fmt, scale=s).tolist() == [0.0]


def test_gradscale_stays_finite_at_any_magnitude():
    # before: OverflowError for max|g| > 2**1023; delayed backoff ran S to inf, growth to 0
    from imckit.formats.gradscale import S_MAX, S_MIN
    gs = GradScale()
    assert gs.scale_for(torch.tensor([1.7e308], dtype=F64)) == S_MAX and gs.saturated
    assert GradScale().scale_for(torch.tensor([5e-324], dtype=F64)) == S_MIN
    up = GradScale("delayed", init_scale=1.0)
    down = GradScale("delayed", init_scale=1.0, growth_interval=1)
    for _ in range(1100):
        up.scale_for(torch.tensor([float("inf")]))
        down.scale_for(torch.tensor([0.0]))
    assert (up.scale, down.scale) == (S_MAX, S_MIN)
    for s in (up.scale, down.scale):
        assert torch.isfinite(quantize(torch.ones(2), R4, scale=s)).all()
    with pytest.raises(ValueError, match=r"^init_scale=.* is out of range"):
        GradScale("delayed", init_scale=2.0 ** 1000)


SPECIAL_FORMATS = [Int(4), Int(3, signed=False), R4, FP8E4M3, FP8E5M2, FP16, BF16, FP4E2M1,
                   Radix2FP4]


@pytest.mark.parametrize("fmt", SPECIAL_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_nan_and_inf_behave_as_documented(fmt, dtype, rounding):
    # quantize's docstring: NaN in, NaN out; +-inf saturates to the clip range
    x = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    for phase in (0, 1):
        y = quantize(x, fmt, phase=phase, rounding=rounding, generator=0)
        lo, hi = fmt.clip_range(1.0, phase)
        assert math.isnan(y[0]) and y.dtype == dtype
        assert y[1:].tolist() == [torch.tensor(hi, dtype=dtype).item(),
                                  torch.tensor(lo, dtype=dtype).item()]


def test_non_saturating_formats_and_encode_special_values():
    x = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert quantize(x, FP32).tolist()[1:] == [math.inf, -math.inf]
    e4m3_cast = formats.Minifloat(4, 3, 7, specials="fn", saturate=False)
    assert all(math.isnan(v) for v in quantize(x, e4m3_cast).tolist())
    assert R4.encode(x[1:]).tolist() == [7, 15] and Int(4).encode(x[1:]).tolist() == [7, -7]
    for fmt in (R4, Int(4)):
        with pytest.raises(ValueError, match="NaN"):
            fmt.encode(x[:1])


def test_grid_values_beyond_the_dtype_become_inf_as_documented():
    # BF16's grid value of 65504 is 65536, beyond float16: inf, as a cast would give
    assert quantize(torch.tensor([65504.0], dtype=torch.float16), BF16).tolist() == [math.inf]
    # a top level within the dtype keeps every finite input finite
    x = torch.tensor([3.4e38, -3.4e38, 1.0])
    top = torch.finfo(torch.float32).max
    for fmt, s in ((Int(4), top), (Int(8), top), (R4, 2.0 ** 127), (FP8E4M3, top / 448)):
        assert torch.isfinite(quantize(x, fmt, scale=s)).all()
    for dtype in (torch.float16, torch.bfloat16):
        top = torch.finfo(dtype).max
        xs = torch.tensor([top, -top, 1.0], dtype=dtype)
        assert torch.isfinite(quantize(xs, Int(4), scale=top)).all()


def test_encode_codes_come_from_the_grid_value_not_its_cast():
    # found by tests/test_fuzz.py: float16 inf at scale 2**16 gave code 254 (the top level,
    # 65536, is inf in float16 and frexp(inf) is no exponent)
    x = torch.tensor([float("inf"), 60000.0, -20.0], dtype=torch.float16)
    codes = R4.encode(x, scale=2.0 ** 16)
    assert codes.tolist() == [7, 7, 9]
    assert R4.decode(codes, scale=2.0 ** 16, dtype=F64).tolist() == [65536.0, 65536.0, -16.0]


def test_clip_scale_int_names_w_beyond_its_scales():
    # found by tests/test_fuzz.py: max|w| > 2**1023 gave a scale quantize then rejected
    with pytest.raises(ValueError, match=r"^w has max\|w\|=1.7e\+308: no INT4 scale covers it"):
        clip_scale(torch.tensor([1.7e308], dtype=F64), Int(4))
    assert clip_scale(torch.tensor([2.0 ** 1022], dtype=F64), Int(4)) == 2.0 ** 1022
    with pytest.raises(ValueError, match="no INT4 scale covers it"):   # phase 1's 2*alpha: inf
        clip_scale(torch.tensor([2.0 ** 1023], dtype=F64), Int(4))


def test_zero_dim_numpy_stays_zero_dim():
    # found by tests/test_fuzz.py: np.ascontiguousarray made a 0-d array 1-d
    y = quantize(np.array(0.3, dtype=np.float32), Int(4), scale=0.7)
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == np.float32


@pytest.mark.parametrize("fmt", [Int(4), Int(4, signed=False), Int(2), INT8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_int_encode_as_floats_equals_int32_levels_with_positive_zero(fmt, dtype):
    # the float levels the layers use skip the int32 round trip: the same integers, zero as +0
    g = torch.Generator().manual_seed(3)
    ties = (torch.arange(-130, 130, dtype=torch.float64) + 0.5) * fmt.delta(1.3)
    x = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * 3,
                   ties, torch.nextafter(ties, torch.zeros_like(ties)),
                   torch.tensor([0.0, -0.0, -1e-30, float("inf"), float("-inf")],
                                dtype=torch.float64)]).to(dtype)
    want = fmt.encode(x, scale=1.3).to(dtype)
    got = fmt.encode(x, scale=1.3, dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, want)
    assert not bool(torch.signbit(got[got == 0]).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [2.0 ** -3, 2.0 ** -4, 2.0 ** 60, 2.0 ** -100])
def test_radix4_nearest_at_every_threshold_and_special_value(dtype, scale):
    # m/2 and 2.5*lo, one ulp either side, zeros, inf, NaN: the brute-force nearest grid value
    if dtype == torch.float32 and scale in (2.0 ** 60, 2.0 ** -100):
        pytest.skip("outside float32's range for this grid")
    for phase in (0, 1):
        grid = R4.values(scale, phase, dtype=torch.float64)
        lv = grid[grid > 0]
        th = torch.cat([lv[:1] / 2, 2.5 * lv[:-1]]).to(dtype)
        x = torch.cat([th, torch.nextafter(th, torch.zeros_like(th)),
                       torch.nextafter(th, torch.full_like(th, math.inf)), lv.to(dtype)])
        x = torch.cat([x, -x, torch.tensor([0.0, -0.0, math.inf, -math.inf], dtype=dtype)])
        want = brute_nearest(x.double().clamp(-float(lv[-1]), float(lv[-1])), grid, ties_up)
        got = quantize(x, R4, scale=scale, phase=phase)
        assert torch.equal(got.double(), want), (phase, x[got.double() != want][:4])
        nan = quantize(torch.tensor([math.nan, -math.nan], dtype=dtype), R4, scale=scale, phase=phase)
        assert bool(nan.isnan().all())
