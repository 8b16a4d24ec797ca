"""Tests of the charge-domain IMC simulator against independent oracles.

Oracles: the integer (float64) matrix product, brute-force per-column sums written without the
simulator's plane machinery, and the analytic variances of kT/C noise and capacitor mismatch.
"""
import contextlib
import dataclasses
import math

import pytest
import torch

from imckit import imc
from imckit.work import Work

IDEAL = imc.IMCConfig.ideal()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def radix4_grid(e, g):
    """Radix-4 values for exponents ``e`` (0: zero, 1..7: 4^(e-7)), random signs from ``g``."""
    return torch.where(e > 0, 4.0 ** (e - 7).double(), 0.0) * torch.where(
        torch.rand(e.shape, generator=g) < 0.5, -1.0, 1.0)


def noisy_tiles_cfg():
    """The 16 nm preset on 128-row tiles with comparator noise large enough to change codes."""
    return dataclasses.replace(imc.IMCConfig.jia22_16nm(), rows=128, adc_noise_uv=5000.0)


def exact(A, X):
    return X.to(torch.float64) @ A.to(torch.float64)


def radix4_values(shape, g, scale=1.0, phase=0, p_zero=0.2):
    """Random values on the radix-4 grid, built directly (not through the simulator)."""
    k = torch.randint(0, 7, shape, generator=g)
    mag = scale * (2.0 if phase else 1.0) * torch.pow(4.0, -k.to(torch.float64))  # TPR: 2S*4^-k
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    zero = torch.rand(shape, generator=g) < p_zero
    return torch.where(zero, 0.0, sign * mag).to(torch.float32)


def make_x(kind, B, N, g, x_bits=4, levels=2):
    if kind == "unsigned" or kind == "multilevel":
        return torch.randint(0, 2**x_bits, (B, N), generator=g)
    if kind == "signed":
        m = 2 ** (x_bits - 1) - 1
        return torch.randint(-m, m + 1, (B, N), generator=g)
    return radix4_values((B, N), g)


# ------------------------------------------------------------------ ideal == integer product

@pytest.mark.parametrize("kind", ["unsigned", "signed", "radix4", "multilevel"])
@pytest.mark.parametrize("B,N,M,rows", [(1, 37, 5, 1152), (300, 150, 9, 64), (7, 2500, 33, 1152)])
def test_ideal_equals_integer_product_exactly(kind, B, N, M, rows):
    g = gen(B * 1000 + N + M)
    A = torch.randint(-8, 8, (N, M), generator=g)
    X = make_x(kind, B, N, g)
    levels = 4 if kind == "multilevel" else 2
    cfg = imc.IMCConfig.ideal(rows=rows, input_levels=levels)
    y = imc.mvm(A, X, cfg, x_kind=kind)
    assert y.shape == (B, M)
    assert torch.equal(y, exact(A, X).to(y.dtype))


@pytest.mark.parametrize("opts", [
    dict(a_bits=8, a_signed=True, x_kind="unsigned", x_bits=8),
    dict(a_bits=4, a_signed=False, x_kind="unsigned", x_bits=4),      # MVM 3: stored activations
    dict(a_bits=2, a_signed=True, x_kind="signed", x_bits=6),
    dict(a_bits=4, a_signed=True, x_kind="multilevel", x_bits=5, levels=3),   # base 3 digits
    dict(a_bits=4, a_signed=True, x_kind="multilevel", x_bits=8, levels=16),
])
def test_ideal_exact_other_widths(opts):
    opts = dict(opts)
    levels = opts.pop("levels", 2)
    g = gen(5)
    ab, sa = opts["a_bits"], opts["a_signed"]
    lo, hi = (-(2 ** (ab - 1)), 2 ** (ab - 1)) if sa else (0, 2**ab)
    A = torch.randint(lo, hi, (300, 11), generator=g)
    X = make_x(opts["x_kind"], 17, 300, g, x_bits=opts["x_bits"])
    y = imc.mvm(A, X, imc.IMCConfig.ideal(rows=128, input_levels=levels), **opts)
    assert torch.equal(y.double(), exact(A, X))


@pytest.mark.parametrize("phase", [0, 1])
def test_ideal_radix4_scale_and_phase(phase):
    g = gen(11 + phase)
    A = torch.randint(-8, 8, (200, 6), generator=g)
    X = radix4_values((9, 200), g, scale=2.0**-3, phase=phase)
    y = imc.mvm(A, X, IDEAL, x_kind="radix4", x_scale=2.0**-3, phase=phase)
    assert torch.equal(y, exact(A, X).float())
    with pytest.raises(ValueError, match="radix-4 grid"):        # the other phase's grid
        imc.mvm(A, X, IDEAL, x_kind="radix4", x_scale=2.0**-3, phase=1 - phase)


@pytest.mark.parametrize("levels,sign_mode", [(2, "two-cycle"), (4, "two-cycle"),
                                              (2, "one-cycle"), (16, "one-cycle")])
def test_ideal_radix4_phase1_every_level_up_to_2S(levels, sign_mode):
    # phase 1 is the grid offset UPWARD (2S, S/2, ..., S/2048; issue 13): every level, both
    # signs, the top 2S included, through plain and grouped planes
    S = 2.0 ** -5
    lv = [2 * S * 4.0 ** -k for k in range(7)]
    X = torch.tensor([lv + [-v for v in lv] + [0.0], [-v for v in lv] + lv + [0.0]])
    A = torch.randint(-8, 8, (15, 4), generator=gen(31))
    cfg = dataclasses.replace(imc.IMCConfig.ideal(input_levels=levels), sign_mode=sign_mode)
    y = imc.mvm(A, X, cfg, x_kind="radix4", x_scale=S, phase=1)
    assert torch.equal(y.double(), exact(A, X))
    with pytest.raises(ValueError, match="radix-4 grid"):             # 2S is not on phase 0
        imc.mvm(A, X, cfg, x_kind="radix4", x_scale=S, phase=0)


def test_ideal_radix4_non_power_of_two_scale():
    g = gen(14)
    A = torch.randint(-8, 8, (64, 5), generator=g)
    X = radix4_values((7, 64), g, scale=3.0).double()
    y = imc.mvm(A, X, IDEAL, x_kind="radix4", x_scale=3.0)
    assert torch.allclose(y, exact(A, X), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="radix-4 grid"):
        imc.mvm(A, X * 1.01, IDEAL, x_kind="radix4", x_scale=3.0)


def test_ideal_accepts_float_ints_and_float64():
    g = gen(3)
    A = torch.randint(-8, 8, (50, 4), generator=g)
    X = torch.randint(0, 16, (6, 50), generator=g)
    y = imc.mvm(A.double(), X.double(), IDEAL)
    assert y.dtype == torch.float64 and torch.equal(y, exact(A, X))


def test_radix4_with_formats_module_if_available():
    formats = pytest.importorskip("imckit.formats")
    if not hasattr(formats, "quantize") or not hasattr(formats, "Radix4"):
        pytest.skip("imckit.formats has not landed")
    g = gen(21)
    x = torch.randn(16, 300, generator=g)
    q = formats.quantize(x, formats.Radix4(), scale=4.0, phase=1)
    A = torch.randint(-8, 8, (300, 8), generator=g)
    y = imc.mvm(A, q, IDEAL, x_kind="radix4", x_scale=4.0, phase=1)
    assert torch.equal(y, exact(A, q).float())


def test_empty_batch_and_all_zero_inputs():
    A = torch.randint(-8, 8, (40, 3), generator=gen(0))
    y, w = imc.mvm(A, torch.zeros(0, 40, dtype=torch.int64), imc.IMCConfig(), report=True)
    assert y.shape == (0, 3) and w.conversions == 0 and w.cycles == 0 and w.macs == 0
    y, w = imc.mvm(A, torch.zeros(2, 40, dtype=torch.int64), imc.IMCConfig(), report=True)
    assert torch.equal(y, torch.zeros(2, 3)) and w.cycles == 0      # no plane runs: no noise


# ------------------------------------------------------------------ work report

def test_work_counts_by_hand():
    # rows=4, N=6: two row tiles (rows 0-3, 4-5). M=2 stored 3-bit -> 6 physical columns.
    A = torch.zeros(6, 2, dtype=torch.int64)
    X = torch.tensor([[1, 0, 0, 0, 0, 0],      # tile 0: plane 0 (1 row); tile 1: nothing
                      [3, 2, 0, 0, 4, 4]])     # tile 0: plane 0 (1 row), plane 1 (2 rows); tile 1: plane 2 (2 rows)
    cfg = imc.IMCConfig.ideal(rows=4)
    _, w = imc.mvm(A, X, cfg, a_bits=3, x_bits=3, report=True)
    assert w == Work(macs=2 * 6 * 2, conversions=4 * 6, cycles=4, row_drives=6, write_bits=36,
                     outputs=4)
    _, w = imc.mvm(A, X, cfg, a_bits=3, x_bits=3, report=True, count_write=False)
    assert w.write_bits == 0


# ------------------------------------------------------------------ thermal noise

def test_sigma_thermal_formula():
    cfg = imc.IMCConfig.jia22_16nm()
    expect = math.sqrt(2 * 1.380649e-23 * 300.0 / (1152 * 1e-15)) / 0.8   # two samplings
    assert cfg.sigma_thermal == pytest.approx(expect, rel=1e-12)
    one = dataclasses.replace(cfg, ktc_samplings=1)
    assert one.sigma_thermal == pytest.approx(expect / math.sqrt(2), rel=1e-12)
    assert cfg.sigma_thermal < 0.1 / 255                        # far below an 8-bit LSB
    assert dataclasses.replace(cfg, thermal_noise=False).sigma_thermal == 0.0


def _bit_planes(X, bits):
    """Oracle plane decomposition of unsigned ints (Python-level, one plane at a time)."""
    return [((X // 2**t) % 2).to(torch.float64) for t in range(bits)]


def test_thermal_only_variance_matches_prediction():
    g = gen(1)
    N, M, B, rows = 300, 64, 16, 128                              # three row tiles
    A = torch.randint(-8, 8, (N, M), generator=g)
    X = torch.randint(0, 16, (B, N), generator=g)
    X[:, 128:256][:, :] = X[:, 128:256] % 4                       # tile 1 lacks planes 2, 3
    cfg = imc.IMCConfig(rows=rows, adc_bits=None, cap_mismatch=0.0, thermal_noise=True,
                        temperature_k=3e4)                        # hot, so noise >> fp32 rounding
    ng = gen(99)
    err = torch.stack([imc.mvm(A, X, cfg, generator=ng).double() - exact(A, X)
                       for _ in range(6)])
    sig_count = cfg.sigma_thermal * rows
    wa2 = sum(4.0**k for k in range(4))                           # (1 + 4 + 16 + 64)
    pred = torch.zeros(B)
    for s in range(0, N, rows):
        for t, plane in enumerate(_bit_planes(X[:, s:s + rows], 4)):
            pred += (plane.sum(1) > 0).double() * 4.0**t          # only cycles that run
    pred = pred * wa2 * sig_count**2                              # per output, same for every m
    ratio = float((err**2).mean()) / float(pred.mean())
    assert abs(ratio - 1) < 0.10, ratio
    assert abs(float(err.mean())) < 4 * math.sqrt(float(pred.mean()) / err.numel())


def test_noise_generator_fresh_vs_repeatable():
    g = gen(2)
    A = torch.randint(-8, 8, (256, 8), generator=g)
    X = torch.randint(0, 16, (4, 256), generator=g)
    cfg = imc.IMCConfig(adc_bits=None, cap_mismatch=0.0, temperature_k=3e4)
    assert torch.equal(imc.mvm(A, X, cfg), imc.mvm(A, X, cfg))   # None: seeded from cfg.seed
    ng = gen(7)
    assert not torch.equal(imc.mvm(A, X, cfg, generator=ng), imc.mvm(A, X, cfg, generator=ng))
    assert torch.equal(imc.mvm(A, X, cfg, generator=gen(7)), imc.mvm(A, X, cfg, generator=gen(7)))


# ------------------------------------------------------------------ mismatch

def _mismatch_prediction(A, X, sigma, rows, a_bits=4):
    """First-order variance of each output under cap mismatch, brute force in float64.

    Column count estimate = R * sum_i C_i m_i / sum_i C_i with C_i = 1 + eps_i. To first order its
    error is sum_i eps_i (m_i - c/R) over all R rows of the tile (unused rows: m_i = 0). Planes
    of one input share a column's eps, so the plane-weighted sum is taken before squaring.
    """
    N, M = A.shape
    bitsA = [((A % 2**a_bits) // 2**k) % 2 for k in range(a_bits)]      # (N, M) each
    wa = [2.0**k for k in range(a_bits)]
    wa[-1] = -wa[-1]
    pred = torch.zeros(X.shape[0], M, dtype=torch.float64)
    for s in range(0, N, rows):
        planes = _bit_planes(X[:, s:s + rows], 4)
        n = planes[0].shape[1]
        for k in range(a_bits):
            a = bitsA[k][s:s + rows].to(torch.float64)                      # (n, M)
            d = torch.zeros(X.shape[0], rows, M, dtype=torch.float64)       # per row i
            for t, p in enumerate(planes):
                m = p.unsqueeze(-1) * a.unsqueeze(0)                        # (B, n, M)
                c = m.sum(1, keepdim=True)                                  # (B, 1, M)
                d[:, :n] += 2.0**t * (m - c / rows)
                d[:, n:] += 2.0**t * (-c / rows)
            pred += wa[k] ** 2 * (d**2).sum(1)
    return sigma**2 * pred


def test_mismatch_fixed_per_chip_and_variance_matches_prediction():
    g = gen(4)
    N, M, B, rows, sigma = 400, 256, 6, 256, 0.01
    A = torch.randint(-8, 8, (N, M), generator=g)
    X = torch.randint(0, 16, (B, N), generator=g)
    cfg = imc.IMCConfig(rows=rows, adc_bits=None, cap_mismatch=sigma, thermal_noise=False, seed=3)
    e1 = imc.mvm(A, X, cfg).double() - exact(A, X)
    e2 = imc.mvm(A, X, cfg).double() - exact(A, X)
    assert torch.equal(e1, e2) and float(e1.abs().max()) > 0            # same chip: same error
    e3 = imc.mvm(A, X, dataclasses.replace(cfg, seed=4)).double() - exact(A, X)
    assert not torch.allclose(e1, e3)                                   # another chip
    errs = [e1] + [imc.mvm(A, X, dataclasses.replace(cfg, seed=s)).double() - exact(A, X)
                   for s in (10, 11, 12)]
    pred = _mismatch_prediction(A, X, sigma, rows)
    ratio = float(torch.stack(errs).pow(2).mean()) / float(pred.mean())
    assert abs(ratio - 1) < 0.15, ratio


def test_mismatch_depends_on_tile_index_not_call_shape():
    g = gen(6)
    A = torch.randint(-8, 8, (100, 128), generator=g)
    X = torch.randint(0, 16, (3, 100), generator=g)
    cfg = imc.IMCConfig(adc_bits=None, cap_mismatch=0.01, thermal_noise=False, seed=5)
    wide = imc.mvm(A, X, cfg)                     # 512 physical columns: two column tiles
    narrow = imc.mvm(A[:, :64], X, cfg)           # the first 256 physical columns only
    assert torch.equal(wide[:, :64], narrow)


@pytest.mark.parametrize("sigma,B,kind", [(0.002, 300, "unsigned"), (0.05, 300, "unsigned"),
                                          (0.05, 3, "unsigned"), (0.05, 300, "radix4")])
def test_mismatch_column_values_match_float64_charge_sharing(sigma, B, kind):
    """Oracle: every column value R * sum_i C_i m_i / sum_i C_i computed in float64 from the
    chip's capacitors, within 1e-4 counts (the docstring's bound: two exact integer sums,
    combined in float32), with more and with fewer cycles than rows; radix-4 inputs take the
    row-sum path (``plane_product``)."""
    from imckit.imc import array, planes as pl
    g = gen(8)
    N, M, rows = 200, 64, 128
    A = torch.randint(-8, 8, (N, M), generator=g)
    if kind == "radix4":
        X = radix4_grid(torch.randint(0, 8, (B, N), generator=g), g)
    else:
        X = torch.randint(0, 16, (B, N), generator=g)
    bits, _ = pl.stored_planes(A, 4, True)
    ip = pl.input_planes(X, kind, 4, 2, 1.0, 0, rows)
    n_tiles = 2
    chip = array._chip_caps(9, rows, 256, n_tiles, 1, sigma, "cpu")
    delta = chip.delta
    Mb = bits.shape[1]
    got = array._column_values(ip, bits, array.Chip(chip.codes[:, :Mb], chip.scale,
                                                    chip.den[:, :Mb]), rows)
    for t, ((v, idx), (s, e)) in enumerate(zip(got, [(0, 128), (128, 200)])):
        d, _ = ip.tile_rows(t, s, e, ip.tile_cycles()[t])
        cap = 1.0 + delta[t * rows:t * rows + e - s, :Mb].double()
        full = 1.0 + delta[t * rows:(t + 1) * rows, :Mb].double()
        ref = rows * (d.double() @ (bits[s:e].double() * cap)) / full.sum(0)
        assert float((v.double() - ref).abs().max()) < 1e-4


def test_chip_pattern_is_a_unit_normal_on_its_grid():
    """The int8 deviation codes: mean 0, variance (1 + grid^2/12)/grid^2 codes^2 (a unit normal
    rounded to the grid), no code beyond +-127, den the exact column sum of the caps."""
    from imckit.imc import array
    chip = array._chip_caps(3, 512, 512, 2, 1, 0.01, "cpu")
    z = chip.codes.double() * array.MISMATCH_GRID
    assert chip.codes.dtype == torch.int8 and chip.scale == pytest.approx(0.01 * array.MISMATCH_GRID)
    assert abs(float(z.mean())) < 4 / 512                        # 2^19 cells: sd of mean 1/724
    assert float(z.var()) == pytest.approx(1 + array.MISMATCH_GRID**2 / 12, abs=0.01)
    caps = 1 + chip.delta.double().view(2, 512, 512)
    assert torch.allclose(chip.den.double(), caps.sum(1), rtol=0, atol=1e-4)


def test_no_capacitor_below_cap_min():
    """At 30 % mismatch the Gaussian's lower tail is cut at CAP_MIN (about 0.13 % of cells sit
    there, none below); at 10 % nothing is cut (the +-6 sigma clip comes first), so the codes
    equal the 30 % chip's wherever that one is not cut."""
    from imckit.imc import array
    hi = array._chip_caps(4, 512, 512, 1, 1, 0.3, "cpu")
    lo = array._chip_caps(4, 512, 512, 1, 1, 0.1, "cpu")
    caps = 1 + hi.delta
    assert float(caps.min()) >= array.CAP_MIN - 1e-6
    at_floor = float((caps < array.CAP_MIN + 0.3 * array.MISMATCH_GRID).double().mean())
    assert 0.0005 < at_floor < 0.003
    assert float((1 + lo.delta).min()) > 0.3                      # -6 sigma at 10 %: 0.4
    uncut = caps > array.CAP_MIN + 0.3 * array.MISMATCH_GRID
    assert torch.equal(hi.codes[uncut], lo.codes[uncut])


def test_exact_mm_matches_int64_product():
    from imckit.imc.planes import exact_mm
    g = gen(9)
    a = torch.randint(-128, 128, (57, 1152), generator=g, dtype=torch.int64)
    b = torch.randint(0, 2, (1152, 40), generator=g, dtype=torch.int64)
    ref = (a @ b).to(torch.float32)
    assert torch.equal(exact_mm(a.to(torch.int8), b.to(torch.int8)), ref)       # int8 path
    assert torch.equal(exact_mm(a.float(), b.to(torch.int8)), ref)              # float path


def test_trusted_radix4_planes_equal_checked_ones():
    from imckit.imc.planes import input_planes, trusted_operands
    g = gen(10)
    e = torch.randint(0, 8, (20, 300), generator=g)          # 0: zero, else exponent 1..7
    sgn = torch.where(torch.rand(20, 300, generator=g) < 0.5, -1.0, 1.0)
    X = torch.where(e > 0, sgn * 4.0 ** (e.double() - 7), 0.0).float() * 0.25
    for levels, mode in [(2, "two-cycle"), (16, "one-cycle"), (64, "two-cycle")]:
        a = input_planes(X, "radix4", 4, levels, 0.25, 0, 128, 1, mode)
        with trusted_operands():
            b = input_planes(X, "radix4", 4, levels, 0.25, 0, 128, 1, mode)
        assert torch.equal(a.weights, b.weights) and a.drives == b.drives
        assert all(torch.equal(p, q) for p, q in zip(a.codes, b.codes) if p is not None)


# ------------------------------------------------------------------ noise budget

def test_noise_budget_ktc_matches_analytic_variance():
    """Oracle: one binary plane, 1-bit stored ones, no ADC: each output's kT/C error is one
    conversion's noise, sigma_thermal x rows counts; its power is that squared."""
    cfg = imc.IMCConfig.jia22_16nm(temperature_k=3000.0)      # loud enough to measure
    rows = cfg.rows
    A = torch.ones(rows, 64, dtype=torch.int64)
    X = (torch.rand(400, rows, generator=gen(12)) < 0.3).to(torch.int64)
    b = imc.noise_budget(A, X, cfg, a_bits=1, a_signed=False, x_bits=1, generator=gen(13))
    want = (cfg.sigma_thermal * rows) ** 2
    assert b.error_power["ktc"] == pytest.approx(want, rel=0.05)
    assert b.error_power["mismatch"] > 0 and b.adc_range >= cfg.adc_range_floor()


def test_noise_budget_causes_add_up_and_operand_error_is_rounding():
    g = gen(14)
    for kind in imc.MVM_KINDS:
        A, X, kw, Af, Xf = imc.training_operands(kind, 300, generator=g)
        assert A.shape[0] == X.shape[1] == 300
        assert torch.equal(A, torch.round(A)) and A.abs().max() <= 15
        b = imc.noise_budget(A, X, imc.IMCConfig.jia22_16nm(), A_float=Af, X_float=Xf,
                             generator=gen(15), **kw)
        e = b.error_power
        assert 0 < e["operand"] < b.signal_power               # rounding, not garbage
        assert e["analog"] > 0 and e["comparator"] > 0 and e["ktc"] > 0
        assert b.lsb_counts == pytest.approx(b.adc_range * 1152 / 255)
        quiet = imc.IMCConfig.jia22_16nm(cap_mismatch=0.0, thermal_noise=False, adc_noise_uv=0.0)
        q = imc.noise_budget(A, X, quiet, generator=gen(15), **kw)
        assert q.error_power["analog"] == 0 and q.error_power["ktc"] == 0


def test_budget_point_is_strict_json_and_reproducible():
    import json
    a = imc.budget_point("backward", 144, "measured", seed=1)
    assert a == imc.budget_point("backward", 144, "measured", seed=1)
    json.dumps(a, allow_nan=False)
    assert a["adc_range"] == 1.0                                # noise-limited preset
    with pytest.raises(ValueError, match="preset='ideal'"):
        imc.budget_point(preset="ideal")


# ------------------------------------------------------------------ ADC

def _ones_column(N, k):
    """One stored 1-bit column of ones and one input vector with k ones: column count k."""
    A = torch.ones(N, 1, dtype=torch.int64)
    X = torch.zeros(1, N, dtype=torch.int64)
    X[0, :k] = 1
    return A, X


def test_adc_8bit_on_1152_rows_exact_only_up_to_255():
    cfg = imc.IMCConfig(rows=1152, adc_bits=8, adc_range=255 / 1152, round_counts=True,
                        cap_mismatch=0.0, thermal_noise=False)
    got = []
    for k in [0, 1, 100, 255, 256, 600, 1152]:
        A, X = _ones_column(1152, k)
        got.append(float(imc.mvm(A, X, cfg, a_bits=1, a_signed=False, x_bits=1)[0, 0]))
    assert got == [0, 1, 100, 255, 255, 255, 255]                 # clips above 255 counts
    # over the full swing one 8-bit LSB is 1152/255 = 4.5 counts: small counts are lost
    full = dataclasses.replace(cfg, adc_range=1.0)
    A, X = _ones_column(1152, 2)
    assert float(imc.mvm(A, X, full, a_bits=1, a_signed=False, x_bits=1)[0, 0]) == 0.0


def test_adc_exact_with_enough_bits_and_clips_with_small_range():
    g = gen(8)
    A = torch.randint(-8, 8, (1152, 16), generator=g)
    X = torch.randint(0, 16, (5, 1152), generator=g)
    cfg = imc.IMCConfig(adc_bits=12, adc_range=1.0, round_counts=True, cap_mismatch=0.0,
                        thermal_noise=False, adc_noise_uv=0.0)    # 4095 codes >= 1152 counts
    assert torch.equal(imc.mvm(A, X, cfg).double(), exact(A, X))
    top = float(imc.column_counts(A, X, cfg).max())
    r = imc.calibrate_adc_range(imc.column_counts(A, X, cfg), 1152, percentile=100)
    assert r >= top / 1152 and r / 2 < top / 1152
    assert torch.equal(imc.mvm(A, X, cfg, adc_range=r).double(), exact(A, X))
    small = imc.mvm(A, X, cfg, adc_range=r / 4).double()          # clipped columns lose counts
    assert not torch.equal(small, exact(A, X))


def test_adc_clipping_oracle():
    cfg = imc.IMCConfig(rows=64, adc_bits=6, adc_range=0.5, cap_mismatch=0.0, thermal_noise=False,
                        adc_noise_uv=0.0, round_counts=False)
    ks = torch.arange(0, 65)
    ys = []
    for k in ks.tolist():
        A, X = _ones_column(64, k)
        ys.append(float(imc.mvm(A, X, cfg, a_bits=1, a_signed=False, x_bits=1)[0, 0]))
    step = 0.5 * 64 / 63
    oracle = [min(round(k / step), 63) * step for k in ks.tolist()]
    assert ys == pytest.approx(oracle, abs=1e-4)
    assert max(ys) == pytest.approx(32.0, abs=1e-4)               # clipped at half the swing


def test_round_counts_auto_follows_the_lsb():
    """"auto" rounds to integer counts exactly when one LSB is at most one count: 64 rows at
    6 bits over half the swing (LSB 0.51 counts) recovers every count 0..32; over the full
    swing (1.02 counts per LSB) it does not round, so the raw codes show."""
    base = dict(rows=64, adc_bits=6, cap_mismatch=0.0, thermal_noise=False, adc_noise_uv=0.0)
    fine, coarse = imc.IMCConfig(adc_range=0.5, **base), imc.IMCConfig(adc_range=1.0, **base)
    for k in range(0, 33):
        A, X = _ones_column(64, k)
        kw = dict(a_bits=1, a_signed=False, x_bits=1)
        assert float(imc.mvm(A, X, fine, **kw)[0, 0]) == k
        assert float(imc.mvm(A, X, coarse, **kw)[0, 0]) == pytest.approx(round(k * 63 / 64) * 64 / 63)


def test_comparator_noise_is_in_volts_not_lsb():
    """Oracle: the comparator's variance in counts is (uV / V_DD x rows)^2 whatever the range
    (an LSB-referred model made it shrink with the range)."""
    rows, uv = 256, 2000.0
    A, X = _ones_column(rows, 10)
    X = X.expand(4000, rows).contiguous()
    for r in (1.0, 0.25):
        cfg = imc.IMCConfig(rows=rows, adc_bits=12, adc_range=r, cap_mismatch=0.0,
                            thermal_noise=False, adc_noise_uv=uv, round_counts=False,
                            adc_lsb_min_uv=0.0)
        y = imc.mvm(A, X, cfg, a_bits=1, a_signed=False, x_bits=1,
                    generator=gen(11)).double().view(-1)
        want = uv * 1e-6 / 0.8 * rows                           # rms in counts
        lsb = r * rows / 4095
        assert y.var().item() == pytest.approx(want**2 + lsb**2 / 12, rel=0.08)


def test_calibration_never_goes_below_the_lsb_floor():
    cfg = imc.IMCConfig.jia22_16nm()
    floor = cfg.adc_range_floor()
    assert floor == pytest.approx(250e-6 * 255 / 0.8)
    tiny = torch.tensor([1.0, 2.0, 3.0])                        # would calibrate to 2^-8
    assert imc.calibrate_adc_range(tiny, 1152, percentile=100) == 2.0 ** -8
    r = imc.calibrate_adc_range(tiny, 1152, percentile=100, floor=floor)
    assert r == 0.125 and r * 0.8 / 255 >= 250e-6               # LSB >= 250 uV
    pc = dataclasses.replace(cfg, adc_calibration="percentile", cap_mismatch=0.0,
                             thermal_noise=False, adc_noise_uv=0.0)
    A, X = _ones_column(1152, 3)
    y = float(imc.mvm(A, X, pc, a_bits=1, a_signed=False, x_bits=1)[0, 0])
    assert y == 3.0                           # range 1/8: LSB 0.56 counts, "auto" rounds: exact
    assert imc.IMCConfig.measured().adc_range_floor() == 1.0    # noise-limited: full swing


def test_percentile_calibration_mode_matches_explicit_range():
    g = gen(9)
    A = torch.randint(-8, 8, (500, 12), generator=g)
    X = torch.randint(0, 16, (8, 500), generator=g)
    fixed = imc.IMCConfig(cap_mismatch=0.0, thermal_noise=False)
    r = imc.calibrate_adc_range(imc.column_counts(A, X, fixed), 1152, percentile=99.0)
    auto = dataclasses.replace(fixed, adc_calibration="percentile", adc_percentile=99.0)
    assert torch.equal(imc.mvm(A, X, auto), imc.mvm(A, X, fixed, adc_range=r))
    assert r < 1.0


def test_column_counts_brute_force():
    g = gen(10)
    A = torch.randint(0, 4, (70, 3), generator=g)
    X = torch.randint(0, 4, (2, 70), generator=g)
    counts = imc.column_counts(A, X, imc.IMCConfig.ideal(rows=32), a_bits=2, a_signed=False,
                               x_bits=2)
    expect = []
    for s in range(0, 70, 32):
        for t in range(2):
            for b in range(2):
                d = (X[b, s:s + 32] // 2**t) % 2
                if d.sum() == 0:
                    continue
                for m in range(3):
                    for k in range(2):
                        expect.append(float((d * ((A[s:s + 32, m] // 2**k) % 2)).sum()))
    assert sorted(counts.tolist()) == sorted(expect)


def test_calibrate_adc_range_powers_of_two():
    assert imc.calibrate_adc_range(torch.tensor([300.0]), 1152, percentile=100) == 0.5
    assert imc.calibrate_adc_range(torch.tensor([288.0]), 1152, percentile=100) == 0.25
    assert imc.calibrate_adc_range(torch.tensor([5000.0]), 1152) == 1.0
    assert imc.calibrate_adc_range(torch.zeros(10), 1152) == 2.0 ** -10
    c = torch.cat([torch.full((999,), 10.0), torch.tensor([1000.0])])
    assert imc.calibrate_adc_range(c, 1152, percentile=99.9) == 2.0 ** -6    # ignores the outlier


# ------------------------------------------------------------------ SQNR split

def test_sqnr_split_16nm_analog_noise_below_quantization():
    g = gen(12)
    A = torch.randint(-7, 8, (1152, 32), generator=g)
    X = torch.randint(0, 16, (16, 1152), generator=g)
    s = imc.sqnr_split(A, X, imc.IMCConfig.jia22_16nm())
    db = s.sqnr_db
    assert set(db) == {"adc", "mismatch", "thermal", "all"}
    assert db["thermal"] > db["adc"] + 10 and db["mismatch"] > db["adc"] + 10
    assert abs(db["all"] - db["adc"]) < 1.0                        # the ADC dominates
    ideal = imc.sqnr_split(A, X, IDEAL).sqnr_db
    assert all(v == math.inf for v in ideal.values())


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("field,value", [
    ("adc_bits", 0), ("adc_bits", 17), ("cap_mismatch", -0.1), ("rows", 0), ("columns", 0),
    ("adc_range", 0.0), ("adc_range", 1.5), ("temperature_k", -1.0), ("adc_noise_uv", -1.0),
    ("input_levels", 1), ("adc_calibration", "auto"), ("v_dd", 0.0)])
def test_bad_config_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"{field}={value!r}"):
        imc.IMCConfig(**{field: value})


FLOAT_FIELDS = [f.name for f in dataclasses.fields(imc.IMCConfig) if f.type == "float"]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_config_rejects_non_finite_floats(field, value):
    # issue 11: inf passed in temperature_k, adc_noise_uv, cap_unit_ff, col_parasitic_ff, v_dd
    # and mvm then returned -3456 for an exact 3
    with pytest.raises(ValueError, match=rf"^{field}={value!r} is not (finite|a number)"):
        imc.IMCConfig(**{field: value})


def test_config_float_fields_are_the_ones_checked():
    assert {"temperature_k", "adc_noise_uv", "adc_lsb_min_uv", "cap_unit_ff", "col_parasitic_ff",
            "v_dd"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("changes, match", [
    (dict(cap_unit_ff=5e-324, rows=1), r"cap_unit_ff=5e-324.* noise of inf"),   # was 1/0
    (dict(v_dd=1e-300), r"v_dd=1e-300 give kT/C noise of 8.48e\+295"),
    (dict(temperature_k=1e300), r"^temperature_k=1e\+300.* allowed 0..1"),
    (dict(adc_noise_uv=1e308), r"^adc_noise_uv=1e\+308 is out of range: allowed 0..1e\+06"),
    (dict(adc_range=1e-40), r"^adc_range=1e-40 is out of range: allowed 2.32831e-10..1"),
    # found by tests/test_fuzz.py: a 1-bit bipolar ADC has no code but 0 (mvm divided by 0)
    (dict(adc_bits=1, sign_mode="one-cycle"), r"^adc_bits=1 is not allowed with sign_mode")])
def test_config_rejects_finite_values_that_break_mvm(changes, match):
    # finite but absurd: mvm raised RuntimeError (float32 overflow) or returned NaN
    with pytest.raises(ValueError, match=match):
        imc.IMCConfig(**changes)


def test_config_extremes_within_range_give_finite_mvm():
    A, X = torch.tensor([[7, -8], [3, 1]]), torch.tensor([[15, 15], [1, 0]])
    quiet = dict(cap_unit_ff=5e-324, rows=4, thermal_noise=False)     # no kT/C: no check
    for cfg in (imc.IMCConfig(**quiet), imc.IMCConfig(rows=4, adc_noise_uv=1e6),
                imc.IMCConfig(rows=4, adc_range=imc.config.ADC_RANGE_MIN),
                imc.IMCConfig(rows=4, adc_bits=None, temperature_k=5e7, cap_unit_ff=1.0)):
        assert torch.isfinite(imc.mvm(A, X, cfg)).all()


@pytest.mark.parametrize("A,X,kw,match", [
    (torch.tensor([[8]]), torch.tensor([[1]]), {}, r"A contains 8.*-8\.\.7"),
    (torch.tensor([[0.5]]), torch.tensor([[1]]), {}, r"A contains 0.5.*not an integer"),
    (torch.tensor([[1]]), torch.tensor([[16]]), {}, r"X contains 16.*0\.\.15"),
    (torch.tensor([[1]]), torch.tensor([[-1]]), {}, r"X contains -1.*0\.\.15"),
    (torch.tensor([[1]]), torch.tensor([[8]]), dict(x_kind="signed"), r"X contains 8.*-7\.\.7"),
    (torch.tensor([[-1]]), torch.tensor([[1]]), dict(a_signed=False), r"A contains -1.*0\.\.15"),
    (torch.tensor([[1]]), torch.tensor([[0.3]]), dict(x_kind="radix4"), r"X contains 0.3.*radix-4"),
    (torch.ones(3, 2), torch.ones(1, 4), {}, r"X.shape=\(1, 4\).*A.shape=\(3, 2\)"),
    (torch.ones(3), torch.ones(1, 3), {}, r"A.shape=\(3,\)"),
    (torch.tensor([[1]]), torch.tensor([[1]]), dict(x_kind="float"), r"x_kind='float'"),
    (torch.tensor([[1]]), torch.tensor([[1]]), dict(a_bits=0), r"a_bits=0"),
    (torch.tensor([[1]]), torch.tensor([[1]]), dict(adc_range=0.0), r"adc_range=0.0"),
    (torch.tensor([[1]]), torch.tensor([[1]]), dict(x_scale=2.0), r"x_scale=2.0"),
])
def test_bad_operands_raise_before_compute(A, X, kw, match):
    with pytest.raises(ValueError, match=match):
        imc.mvm(A, X, imc.IMCConfig(), **kw)


def test_bad_arguments_raise_before_any_plane_is_built(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computed before validating")
    from imckit.imc import array
    monkeypatch.setattr(array, "input_planes", boom)
    A, X = torch.ones(3, 2, dtype=torch.int64), torch.ones(1, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"adc_range=1.5"):
        imc.mvm(A, X, imc.IMCConfig(), adc_range=1.5)
    with pytest.raises(ValueError, match=r"generator=3"):
        imc.mvm(A, X, imc.IMCConfig(), generator=3)


def test_sqnr_split_validates_shapes_with_a_value_error():
    with pytest.raises(ValueError, match=r"X.shape=\(1, 4\).*A.shape=\(3, 2\)"):
        imc.sqnr_split(torch.ones(3, 2), torch.ones(1, 4), imc.IMCConfig())
    s = imc.sqnr_split(torch.ones(3, 2), torch.zeros(0, 3), imc.IMCConfig())
    assert s.signal_power == 0.0 and set(s.error_power.values()) == {0.0}


def test_presets_cite_their_sources():
    assert "JIA22" in imc.IMCConfig.jia22_16nm.__doc__
    assert "JIA20" in imc.IMCConfig.jia20_65nm.__doc__
    c = imc.IMCConfig.jia20_65nm()
    assert (c.rows, c.columns, c.adc_bits, c.cap_unit_ff) == (2304, 256, 8, 1.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rows = 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_ideal_and_runs_noisy():
    g = gen(13)
    A = torch.randint(-8, 8, (2000, 40), generator=g)
    X = torch.randint(0, 16, (32, 2000), generator=g)
    y = imc.mvm(A.cuda(), X.cuda(), IDEAL)
    assert y.is_cuda and torch.equal(y.cpu().double(), exact(A, X))
    cfg = imc.IMCConfig.jia22_16nm()
    yc = imc.mvm(A.cuda(), X.cuda(), cfg, generator=torch.Generator("cuda").manual_seed(0))
    assert yc.is_cuda and torch.isfinite(yc).all()


def test_mvm_refuses_planes_beyond_memory_before_allocating(monkeypatch):
    """issue 11: no memory guard before huge allocations; now a ValueError naming X.shape."""
    from imckit.imc import array
    monkeypatch.setattr(array, "_memory_limit", lambda: 1 << 20)      # 1 MiB
    A = torch.zeros(1152, 64, dtype=torch.int64)
    X = torch.zeros(512, 1152, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"X.shape=\(512, 1152\)"):
        imc.mvm(A, X, imc.IMCConfig.ideal())


@pytest.mark.parametrize("kind,levels,sign_mode", [("radix4", 2, "two-cycle"),
                                                   ("radix4", 16, "two-cycle"),
                                                   ("radix4", 2, "one-cycle"),
                                                   ("unsigned", 2, "two-cycle")])
def test_plane_counts_equal_a_brute_force_count_and_leave_the_planes_unchanged(kind, levels,
                                                                                sign_mode):
    """``counts=True`` (the fast mode) counts the nonzero digits per (row tile, plane, vector)
    and must give exactly the planes of ``counts=False`` (bit-true)."""
    from imckit.imc import planes as pl
    g = gen(21)
    B, N, rows = 40, 300, 128
    if kind == "radix4":
        X = radix4_grid(torch.randint(0, 8, (B, N), generator=g), g)
        X[:, :40] = 0.0                                   # a row tile of zeros in part
    else:
        X = torch.randint(0, 16, (B, N), generator=g)
    a = pl.input_planes(X, kind, 4, levels, 1.0, 0, rows, 1, sign_mode)
    b = pl.input_planes(X, kind, 4, levels, 1.0, 0, rows, 1, sign_mode, counts=True)
    assert torch.equal(a.weights, b.weights) and a.drives == b.drives
    assert all(torch.equal(x, y) for x, y in zip(a.active, b.active))
    spans = [(0, 128), (128, 256), (256, 300)]
    for t, (s, e) in enumerate(spans):                     # brute force from the dense digits
        d, idx = b.tile_rows(t, s, e, b.tile_cycles()[t])
        dense = torch.zeros(b.n_planes * B, dtype=torch.int64)
        dense[idx if idx is not None else torch.arange(b.n_planes * B)] = (d != 0).sum(1).long()
        assert torch.equal(b.counts[t].long().reshape(-1), dense)


@pytest.mark.parametrize("env", ["0", "1", "auto"])
def test_exact_mm_equals_the_integer_product_whichever_kernel_runs(env, monkeypatch):
    # int8 x int8 -> int32 where the CPU has a fast kernel for it, float32 elsewhere: both exact
    from imckit.imc import planes
    monkeypatch.setenv(planes.INT8_MM_ENV, env)
    planes.int8_mm_fast.cache_clear()
    try:
        assert planes.int8_mm_fast() is {"0": False, "1": True}.get(env, planes.int8_mm_fast())
        g = torch.Generator().manual_seed(0)
        a = torch.randint(-127, 128, (33, 1040), dtype=torch.int8, generator=g)
        b = torch.randint(0, 2, (1040, 24), dtype=torch.int8, generator=g)
        got = planes.exact_mm(a, b)
        assert got.dtype == torch.float32
        assert torch.equal(got.to(torch.int64), a.to(torch.int64) @ b.to(torch.int64))
        # sums past 2^24 (127 x 127 x 1152): the exact sum rounded once, as from int32
        a = torch.full((2, 1152), 127, dtype=torch.int8); a[1, ::3] = 101
        b = torch.full((1152, 3), 127, dtype=torch.int8); b[::5, 1] = -126
        want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.float32)
        assert float(want.abs().max()) > 2 ** 24 and torch.equal(planes.exact_mm(a, b), want)
        a[0, :] = -128                                    # -128: its abs wraps in int8
        want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.float32)
        assert torch.equal(planes.exact_mm(a, b), want)
    finally:
        planes.int8_mm_fast.cache_clear()


def test_int8_mm_switch_names_a_bad_value(monkeypatch):
    from imckit.imc import planes
    monkeypatch.setenv(planes.INT8_MM_ENV, "sometimes")
    planes.int8_mm_fast.cache_clear()
    try:
        with pytest.raises(ValueError, match="IMCKIT_INT8_MM='sometimes'"):
            planes.int8_mm_fast()
    finally:
        planes.int8_mm_fast.cache_clear()


@pytest.mark.parametrize("levels,sign_mode,exps,used", [(2, "two-cycle", (1, 3, 7), 6),
                                                      (16, "two-cycle", (2, 5), 4),
                                                      (2, "one-cycle", (1, 2, 3, 4, 5, 6, 7), 7)])
def test_plane_product_every_cycle_active_and_planes_dropped(levels, sign_mode, exps, used):
    """A tile where every (plane, vector) cycle runs (no index: ``idx is None``), and inputs
    that use only some exponents (unused planes dropped, plane indices remapped): still the
    dense integer product, row for row."""
    from imckit.imc import planes as pl
    g = gen(25)
    B, N = 3, 96
    X = radix4_grid(torch.tensor(exps)[torch.randint(0, len(exps), (B, N), generator=g)], g)
    for k, ex in enumerate(exps):                  # every exponent and sign in every vector
        X[:, 2 * k] = 4.0 ** (ex - 7)
        X[:, 2 * k + 1] = -(4.0 ** (ex - 7))
    ip = pl.input_planes(X, "radix4", 4, levels, 1.0, 0, 128, 1, sign_mode)
    assert ip.n_planes == used            # of 14, 8 and 7 planes: dropped and remapped
    b = torch.randint(-127, 128, (N, 11), dtype=torch.int8, generator=g)
    c = ip.tile_cycles()[0]
    assert c == ip.n_planes * B
    v, idx = pl.plane_product(ip, 0, 0, N, c, b)
    d, idx_d = ip.tile_rows(0, 0, N, c)
    assert idx is None and idx_d is None
    assert torch.equal(v.to(torch.int64), d.to(torch.int64) @ b.to(torch.int64))


@pytest.mark.parametrize("levels,sign_mode,trusted", [(2, "two-cycle", False),
                                                      (2, "two-cycle", True),
                                                      (16, "two-cycle", False),
                                                      (2, "one-cycle", False),
                                                      (64, "one-cycle", False)])
def test_plane_product_equals_the_dense_integer_product(levels, sign_mode, trusted):
    """Radix-4 cycles summed as bags (``embedding_bag`` over the inputs sorted by plane and
    vector) equal the dense digits times the stored matrix in int64, row for row, in the
    order of ``tile_rows``; with skipped cycles, a whole tile of zeros, multi-level digits and
    signed digits (one-cycle), and mismatch-code magnitudes (up to 127)."""
    from imckit.imc import planes as pl
    g = gen(23)
    B, N, rows = 37, 300, 128
    e = torch.randint(0, 8, (B, N), generator=g)
    e[:, 5:60][torch.rand(B, 55, generator=g) < 0.9] = 0        # sparse: cycles skipped
    X = radix4_grid(e, g)
    X[:, 128:256] = 0.0                                           # a row tile with no cycle
    X[3] = 0.0                                                    # a vector with no cycle
    b = torch.randint(-127, 128, (N, 19), dtype=torch.int8, generator=g)
    ctx = pl.trusted_operands() if trusted else contextlib.nullcontext()
    with ctx:
        ip = pl.input_planes(X, "radix4", 4, levels, 1.0, 0, rows, 1, sign_mode)
    cycles = ip.tile_cycles()
    assert cycles[1] == 0
    for t, (s, e_) in enumerate([(0, 128), (128, 256), (256, 300)]):
        if cycles[t] == 0:
            continue
        v, idx = pl.plane_product(ip, t, s, e_, cycles[t], b[s:e_])
        d, idx_d = ip.tile_rows(t, s, e_, cycles[t])
        assert (idx is None) == (idx_d is None) and (idx is None or torch.equal(idx, idx_d))
        assert v.dtype == torch.float32
        assert torch.equal(v.to(torch.int64), d.to(torch.int64) @ b[s:e_].to(torch.int64))


def test_plane_product_takes_the_dense_exact_product_past_2_24(monkeypatch):
    """Digits x stored values whose sums could pass 2^24 are not summed in float32 bags: the
    dense exact product (float64 sums, rounded once) runs instead. 256-level DACs put radix-4
    exponents in groups of 4 (digits up to 64); 2300 rows x 64 x ~123 > 2^24, with odd terms
    (digit-1 inputs in the same cycle) so that float32 sums would round."""
    from imckit.imc import planes as pl
    g = gen(24)
    N = 2300
    X = torch.full((2, N), 4.0 ** -3).double()                   # e = 4: digit 64 (g = 4)
    X[:, ::50] = 4.0 ** -6                                        # e = 1: digit 1, same plane
    ip = pl.input_planes(X, "radix4", 4, 256, 1.0, 0, 4096, 1, "two-cycle")
    b = torch.randint(120, 128, (N, 3), dtype=torch.int8, generator=g)
    calls = []
    monkeypatch.setattr(torch.nn.functional, "embedding_bag",
                        lambda *a, **k: calls.append(1))
    c = ip.tile_cycles()[0]
    v, idx = pl.plane_product(ip, 0, 0, N, c, b)
    d, _ = ip.tile_rows(0, 0, N, c)
    want = d.to(torch.int64) @ b.to(torch.int64)
    assert not calls
    assert float(want.abs().max()) > 2 ** 24
    assert not torch.equal(want.to(torch.float32).to(torch.int64), want)   # rounding shows
    assert torch.equal(v, want.to(torch.float32))


def test_noise_drawn_ahead_equals_noise_drawn_in_place(monkeypatch):
    """The helper thread draws each tile's normals in tile order from the same generator: the
    result is bit for bit that of drawing them when used, call after call (several row tiles,
    skipped cycles, a generator that carries over)."""
    from imckit.imc import array
    g = gen(31)
    A = torch.randint(-8, 8, (700, 40), generator=g)
    X = torch.randint(0, 16, (9, 700), generator=g)
    X[:, 128:256] = 0
    cfg = noisy_tiles_cfg()
    out = {}
    for ahead in (0, 1, 2):
        monkeypatch.setattr(array, "NOISE_AHEAD", ahead)
        gg = torch.Generator().manual_seed(5)
        out[ahead] = [imc.mvm(A, X, cfg, generator=gg, adc_range=0.3) for _ in range(3)]
    for ahead in (1, 2):
        assert all(torch.equal(a, b) for a, b in zip(out[0], out[ahead]))
    assert not torch.equal(out[0][0], out[0][1])                  # fresh noise per call


def test_an_error_mid_call_leaves_the_generator_as_drawing_in_place_would(monkeypatch):
    """Tiles drawn ahead and never used (the call failed on its second tile) are undone: the
    generator ends where drawing in place leaves it, and the next call's noise is the same."""
    from imckit.imc import array
    g = gen(33)
    A = torch.randint(-8, 8, (700, 40), generator=g)
    X = torch.randint(0, 16, (9, 700), generator=g)
    cfg = noisy_tiles_cfg()
    real = array.plane_product
    out = {}
    for ahead in (0, 2):
        monkeypatch.setattr(array, "NOISE_AHEAD", ahead)
        seen = []

        def failing(planes, t, *a, **k):
            seen.append(t)
            if len(seen) == 2:
                raise MemoryError("simulated")
            return real(planes, t, *a, **k)
        monkeypatch.setattr(array, "plane_product", failing)
        gg = torch.Generator().manual_seed(5)
        with pytest.raises(MemoryError):
            imc.mvm(A, X, cfg, generator=gg, adc_range=0.3)
        monkeypatch.setattr(array, "plane_product", real)
        out[ahead] = (gg.get_state(), imc.mvm(A, X, cfg, generator=gg, adc_range=0.3))
    assert torch.equal(out[0][0], out[2][0])
    assert torch.equal(out[0][1], out[2][1])


def test_noise_drawn_in_place_when_no_thread_can_start(monkeypatch):
    """At interpreter shutdown no new future can be scheduled: the tiles are drawn when used,
    with the same values."""
    from imckit.imc import array
    g = gen(34)
    A = torch.randint(-8, 8, (300, 8), generator=g)
    X = torch.randint(0, 16, (4, 300), generator=g)
    cfg = noisy_tiles_cfg()
    want = imc.mvm(A, X, cfg, generator=torch.Generator().manual_seed(1), adc_range=0.3)

    class Closed:
        def submit(self, *a, **k):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
    monkeypatch.setattr(array, "_NOISE_POOL", Closed())
    got = imc.mvm(A, X, cfg, generator=torch.Generator().manual_seed(1), adc_range=0.3)
    assert torch.equal(got, want)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_noisy_mvm_runs_in_a_forked_child():
    """A child forked after the noise helper thread exists gets a new one: the parent's thread
    is not in the child, and drawing through the old pool would wait forever. (The child also
    runs torch on one thread: torch's own thread pool is not fork-safe either.)"""
    import os
    import select
    import signal
    g = gen(32)
    A = torch.randint(-8, 8, (300, 8), generator=g)
    X = torch.randint(0, 16, (4, 300), generator=g)
    cfg = dataclasses.replace(imc.IMCConfig.jia22_16nm(), rows=128)
    want = imc.mvm(A, X, cfg, adc_range=0.3)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                                   # the child
        try:
            torch.set_num_threads(1)
            ok = torch.equal(imc.mvm(A, X, cfg, adc_range=0.3), want)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 60)
    got = os.read(r, 1) if ready else b"hung"
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    assert got == b"1"
