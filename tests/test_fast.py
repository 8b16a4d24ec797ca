"""imc.mvm_fast against the bit-true imc.mvm of the same chip (issue 14).

Oracles: the exact integer product (ideal preset), bit-true mvm itself (mismatch only, no ADC:
the same chip, equal to float tolerance; with noise and ADC: the output error variance vs the
exact product, pooled over seeds, within 0.8-1.25 of bit-true's, computed by
imckit.fast_validation, which also writes the chapter's table).
"""
import warnings

import pytest
import torch

from imckit import fast_validation, imc
from imckit.fast_validation import calibrated_range, variance_ratio
from imckit.imc import IMCConfig, mvm, mvm_fast
from imckit.imc.fast import CLIP_WARN


def _ops(kind, reduction, seed, outputs, vectors=64):
    g = torch.Generator().manual_seed(seed)
    A, X, kw, _, _ = imc.training_operands(kind, reduction, outputs=outputs, vectors=vectors,
                                           generator=g)
    return A, X, kw


def test_ideal_equals_exact_product():
    g = torch.Generator().manual_seed(0)
    A = torch.randint(-8, 8, (300, 24), generator=g)
    X = torch.randint(0, 16, (16, 300), generator=g)
    cfg = IMCConfig.ideal(rows=128)
    assert torch.equal(mvm_fast(A, X, cfg), (X @ A).float())
    A2, D, kw = _ops("backward", 200, 1, 16)
    y = mvm_fast(A2, D, IMCConfig.ideal(rows=64), **kw)
    assert torch.equal(y, (D @ A2).float())


def test_mismatch_only_equals_bit_true_on_the_same_chip():
    g = torch.Generator().manual_seed(0)
    A = torch.randint(-8, 8, (256, 20), generator=g)
    X = torch.randint(0, 16, (16, 256), generator=g)
    cfg = IMCConfig.jia22_16nm(rows=128, adc_bits=None, thermal_noise=False, round_counts=False,
                               cap_mismatch=0.02)
    yb, yf, ref = mvm(A, X, cfg), mvm_fast(A, X, cfg), (X @ A).float()
    assert (yb - ref).abs().max() > 10                       # the mismatch is there
    assert torch.allclose(yf, yb, atol=5e-3, rtol=0)         # float32 paths: float tolerance
    X = torch.randint(0, 16, (64, 256), generator=g)         # more cycles than rows
    yb, yf = mvm(A, X, cfg), mvm_fast(A, X, cfg)
    assert torch.allclose(yf, yb, atol=5e-3, rtol=0)


def test_same_work_as_bit_true():
    for kind in ("forward", "backward", "weight_grad"):
        A, X, kw = _ops(kind, 300, 0, 40)
        cfg = IMCConfig.jia22_16nm(rows=128)
        _, wb = mvm(A, X, cfg, report=True, adc_range=0.25, **kw)
        _, wf = mvm_fast(A, X, cfg, report=True, adc_range=0.25, **kw)
        assert wf == wb


def test_shape_dtype_and_seeded_noise():
    A, X, kw = _ops("forward", 144, 0, 32)
    X = X.float()
    cfg = IMCConfig.measured()
    y1, y2 = mvm_fast(A, X, cfg, **kw), mvm_fast(A, X, cfg, **kw)
    assert y1.shape == (64, 32) and y1.dtype == torch.float32 and torch.equal(y1, y2)
    assert mvm_fast(A, X.double(), cfg, **kw).dtype == torch.float64
    g = torch.Generator().manual_seed(5)
    assert not torch.equal(mvm_fast(A, X, cfg, generator=g, **kw),
                           mvm_fast(A, X, cfg, generator=g, **kw))


@pytest.mark.parametrize("kind", ["forward", "backward", "weight_grad"])
def test_trusted_operands_take_the_counting_path_with_the_same_result(kind, monkeypatch):
    # imckit's layers pass trusted operands: radix-4 inputs are then counted from one
    # histogram of the float32 top byte (planes._radix4_counts), never split into codes;
    # the output and the Work must equal the checked path's (same counts, same draws)
    from imckit.imc import planes as P
    hits = []
    real = P._radix4_counts
    monkeypatch.setattr(P, "_radix4_counts", lambda *a: hits.append(1) or real(*a))
    A, X, kw = _ops(kind, 2500, 3, 24)                       # three row tiles, one partial
    cfg = IMCConfig.jia22_16nm()
    for dtype in (torch.float32, torch.float64):
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        y1, w1 = mvm_fast(A, X.to(dtype), cfg, adc_range=0.25, generator=g1, report=True, **kw)
        with imc.planes.trusted_operands():
            y2, w2 = mvm_fast(A, X.to(dtype), cfg, adc_range=0.25, generator=g2, report=True,
                              **kw)
        assert torch.equal(y1, y2) and w1 == w2
    assert len(hits) == (2 if kw["x_kind"] == "radix4" else 0)


def test_radix4_counts_equal_the_plane_split():
    from imckit.imc import planes as P
    from imckit.mapping.arrays import row_tiles
    g = torch.Generator().manual_seed(0)
    for (B, N, rows), x_scale, phase in [((5, 7, 4), 1.0, 0), ((64, 300, 128), 4096.0, 1),
                                         ((16, 3000, 1152), 2.0**-20, 0), ((3, 1, 1), 0.5, 1)]:
        base = x_scale * P.phase_factor(phase)
        e = torch.randint(0, 7, (B, N), generator=g).double()
        sgn = torch.where(torch.rand(B, N, generator=g) < 0.5, -1.0, 1.0).double()
        X = torch.where(torch.rand(B, N, generator=g) < 0.3, 0.0, sgn * 4.0**-e * base)
        spans = row_tiles(N, rows, 1)
        ref = P._radix4_planes(X, 2, x_scale, phase, spans, "two-cycle", True)
        with P.trusted_operands():
            got = P._radix4_planes(X.float(), 2, x_scale, phase, spans, "two-cycle", True)
        assert got.codes is None and ref.codes is not None
        assert torch.equal(got.counts, ref.counts) and torch.equal(got.weights, ref.weights)
        assert got.drives == ref.drives and len(got.active) == len(ref.active)
        assert all(torch.equal(a, b) for a, b in zip(got.active, ref.active))


@pytest.mark.parametrize("R", [100, 300])                  # whole table / pairs as met
def test_hypergeometric_weights_equal_scipy(R):
    # the table's expectations over c ~ Hypergeometric(R, K, n) against scipy's pmf
    from scipy.stats import hypergeom
    from imckit.imc import fast as F
    tab = F._error_table(("test-hypergeom", R), R, rows=R, sigma=0.7, cap_mismatch=0.01,
                         step=1.5, top=60.0, round_counts=True, linear=False)
    assert tab.get("complete", False) == (R <= F.FULL_TABLE_ROWS)
    n = torch.tensor([1, 7, 40, 70, R - 1, R])
    K = torch.tensor([0, 1, 13, 60, R - 50, R])
    F._hypergeom_moments(tab, n, K)
    c = torch.arange(R + 1)
    for ni in n.tolist():
        for ki in K.tolist():
            pmf = torch.from_numpy(hypergeom(R, ki, ni).pmf(c.numpy()))
            for name, fn in (("f1", "mu"), ("f2", "m2"), ("clip", "over")):
                want = float((pmf * tab[fn]).sum())
                assert float(tab[name][ni, ki]) == pytest.approx(want, rel=1e-5, abs=1e-7), \
                    (name, ni, ki)
    assert bool(tab["clip"][R, R] == 1.0)                   # c = R > top: always clipped


@pytest.mark.parametrize("x_scale", [2.0**-114, 2.0**-113, 2.0**-112, 2.0**127, 2.0**114])
def test_radix4_counts_at_the_edges_of_float32(x_scale):
    # zeros of both signs are never counted, however small the scale; scales whose grid leaves
    # float32's normal range (or shares zero's top byte) take the general path
    from imckit.imc import planes as P
    base = x_scale
    X = torch.tensor([[base * 4.0**-6, 0.0, -0.0, base, -base * 4.0**-6, -0.0]],
                     dtype=torch.float64)
    ref = P._radix4_planes(X, 2, x_scale, 0, [(0, 6)], "two-cycle", True)
    with P.trusted_operands():
        got = P._radix4_planes(X, 2, x_scale, 0, [(0, 6)], "two-cycle", True)
    assert got.drives == ref.drives == 3
    assert torch.equal(got.counts, ref.counts) and torch.equal(got.weights, ref.weights)


def test_fast_cache_size_is_checked_and_never_evicts_for_what_cannot_fit(monkeypatch):
    from imckit.imc import fast as F
    monkeypatch.setenv("IMCKIT_FAST_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="IMCKIT_FAST_CACHE_MB='lots'"):
        F._env_mb("IMCKIT_FAST_CACHE_MB", 1024)
    monkeypatch.setenv("IMCKIT_FAST_CACHE_MB", "0.5")
    assert F._env_mb("IMCKIT_FAST_CACHE_MB", 1024) == 2**19
    monkeypatch.setattr(F, "W_CACHE_BYTES", 4096)
    monkeypatch.setattr(F, "_W_CACHE", type(F._W_CACHE)())
    monkeypatch.setattr(F, "CHIP_CACHE_IDLE_S", 0.0)        # everything counts as idle
    F._w_cache_put("small", torch.zeros(512))               # 2 KiB: kept
    F._w_cache_put("huge", torch.zeros(4096))               # 16 KiB: never fits
    assert list(F._W_CACHE) == ["small"]
    F._w_cache_put("other", torch.zeros(768))               # 3 KiB: evicts the idle one
    assert list(F._W_CACHE) == ["other"]


def test_error_terms_add_over_row_tiles():
    # the batched tiles (one lookup, bmm over tiles, chunks) give each tile's own terms:
    # the sum of the terms of each tile run alone
    from imckit.imc import fast as F
    from imckit.imc.planes import input_planes, stored_planes
    from imckit.mapping.arrays import row_tiles
    A, X, kw = _ops("weight_grad", 700, 2, 12, vectors=20)
    cfg = IMCConfig.jia22_16nm(rows=128)
    physics = dict(rows=128, sigma=1.0, cap_mismatch=0.01, step=0.5, top=32.0,
                   round_counts=True, linear=False)
    u = F._stored_digits(A, 4)
    _, wa = stored_planes(A, 4, False)

    def terms(Xs, us):
        pl = input_planes(Xs, "radix4", 4, 2, kw["x_scale"], kw["phase"], 128, 1, "two-cycle",
                          True)
        return F._error_terms(us, pl, wa, physics, Xs.shape[1], A.shape[1], 4, 1, "cpu")
    whole = terms(X, u)
    parts = [terms(X[:, s:e], u[s:e]) for s, e in row_tiles(700, 128, 1)]
    assert torch.allclose(whole[0], sum(p[0] for p in parts), rtol=1e-5, atol=1e-4)
    assert torch.allclose(whole[1], sum(p[1] for p in parts), rtol=1e-5, atol=1e-4)
    assert whole[2] == pytest.approx(sum(p[2] for p in parts), rel=1e-5)
    assert float(whole[1].min()) > 0


@pytest.mark.parametrize("preset", ["jia22_16nm", "measured"])
@pytest.mark.parametrize("kind", ["forward", "backward", "weight_grad"])
def test_error_variance_ratio_144(kind, preset):
    assert 0.8 <= variance_ratio(kind, 144, preset) <= 1.25


@pytest.mark.parametrize("preset", ["jia22_16nm", "measured"])
def test_error_variance_ratio_conv3x3(preset):
    """ResNet-20-like 3x3 convolution: 16 or 64 channels x 9 taps, rows kept per channel."""
    for rows in (144, 576):
        assert 0.8 <= variance_ratio("forward", rows, preset, seeds=4, row_group=9) <= 1.25


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["jia22_16nm", "measured"])
@pytest.mark.parametrize("kind", ["forward", "backward", "weight_grad"])
@pytest.mark.parametrize("reduction", [576, 1152])
def test_error_variance_ratio_long(kind, reduction, preset):
    assert 0.8 <= variance_ratio(kind, reduction, preset, seeds=4, outputs=128) <= 1.25


def test_warns_where_it_breaks():
    A, X, kw = _ops("forward", 576, 0, 64)
    with pytest.warns(UserWarning, match="adc_bits=4"):
        mvm_fast(A, X, IMCConfig.jia22_16nm(adc_bits=4), adc_range=0.25, **kw)
    with pytest.warns(UserWarning, match="adc_bits=6"):
        mvm_fast(A, X, IMCConfig.jia22_16nm(adc_bits=6), adc_range=0.25, **kw)
    with pytest.warns(UserWarning, match="cap_mismatch=0.3"):
        mvm_fast(A, X, IMCConfig.jia22_16nm(cap_mismatch=0.3), adc_range=0.25, **kw)
    with pytest.warns(UserWarning, match="clip above the ADC range"):
        mvm_fast(A, X, IMCConfig.jia22_16nm(), adc_range=0.0625, **kw)
    with warnings.catch_warnings():                          # the calibrated range: silent
        warnings.simplefilter("error")
        r = calibrated_range(A, X, IMCConfig(), kw)
        mvm_fast(A, X, IMCConfig.jia22_16nm(), adc_range=r, **kw)
    with pytest.warns(UserWarning, match="runs bit-true"):
        y = mvm_fast(A, X, IMCConfig.jia22_16nm(input_levels=4), x_kind="multilevel",
                     x_bits=4, adc_range=0.5)
    assert y.shape == (64, 64)
    assert CLIP_WARN <= 0.01


# --- the validation table the chapter "Training on IMC, live" prints -------------------------

def test_validation_layers_are_the_books():
    """fast_validation.LAYERS describes the models' own shapes (fan-in = forward reduction,
    fan-out x taps = backward reduction, input channels = backward outputs)."""
    from torch import nn

    from imckit import models

    lay = fast_validation.LAYERS
    assert models.mlp(64, (64,))[1].weight.shape == (64, 64)
    assert lay["digits MLP 64-64"]["forward"]["reduction"] == 64
    convs = {name: [m for m in net.modules()
                    if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
             for name, net in (("cnn", models.small_cnn()), ("resnet", models.resnet20()))}
    shapes = {(c.in_channels, c.out_channels) for c in convs["resnet"]}
    for name, c_in, c_out in (("digits CNN conv 16-32", 16, 32), ("ResNet-20 conv 16-16", 16, 16),
                              ("ResNet-20 conv 64-64", 64, 64)):
        if name.startswith("digits"):
            assert (convs["cnn"][1].in_channels, convs["cnn"][1].out_channels) == (c_in, c_out)
        else:
            assert (c_in, c_out) in shapes
        f, b, w = (lay[name][k] for k in ("forward", "backward", "weight_grad"))
        assert (f["reduction"], f["outputs"], f["row_group"]) == (9 * c_in, c_out, 9)
        assert (b["reduction"], b["outputs"], b["row_group"]) == (9 * c_out, c_in, 9)
        assert (w["outputs"], w["vectors"]) == (9 * c_in, c_out)


def test_committed_validation_is_what_the_chapter_reads():
    """book/data/fast_validation.json: its schema, every entry the chapter prints, made with
    today's layers and warning thresholds, the accuracy of the committed benchmark folded in,
    and the verdicts the chapter states (every ratio in the band; every broken regime warned)."""
    import json

    from imckit.imc import fast
    from conftest import ROOT

    d = fast_validation.load()
    assert d["schema"] == fast_validation.SCHEMA
    cfg = d["config"]
    assert cfg["layers"] == json.loads(json.dumps(fast_validation.LAYERS))
    assert tuple(cfg["band"]) == fast_validation.BAND
    assert cfg["warn_thresholds"] == {"clip_fraction": fast.CLIP_WARN,
                                      "few_adc_bits": fast.FEW_BITS,
                                      "cap_mismatch": fast.MISMATCH_WARN}
    want = {(lay, p, m) for lay in fast_validation.LAYERS for p in fast_validation.PRESETS
            for m in fast_validation.MVM_KINDS}
    assert {(r["layer"], r["preset"], r["mvm"]) for r in d["variance"]} == want
    assert {(r["regime"], r["mvm"]) for r in d["breaks"]} == {
        (b, m) for b in fast_validation.BREAKS for m in fast_validation.MVM_KINDS}
    for r in d["variance"] + d["breaks"]:
        assert {"ratio", "ratio_ci95", "in_band", "warned_seeds", "seeds", "warning"} <= set(r)
        assert r["in_band"] == (cfg["band"][0] <= r["ratio"] <= cfg["band"][1])
    assert all(r["in_band"] and r["warned_seeds"] == 0 for r in d["variance"])
    # every entry out of the band warned in every draw (the chapter says so), and some are out
    assert all(r["warned_seeds"] == r["seeds"] for r in d["breaks"] if not r["in_band"])
    assert any(not r["in_band"] for r in d["breaks"])
    assert all("clipped" in r and "per_seed" in r for r in d["breaks"])
    prov = d["provenance"]
    assert prov["command"].startswith("python benchmarks/fast_validation.py")
    assert prov["hardware"] == "2-core x86 CPU" and prov["date"] and prov["wall_s"] > 0
    acc = d["accuracy"]
    bench = json.loads((ROOT / acc["source"]).read_text())
    assert acc["summary"] == bench["summary"] and acc["command"] == bench["command"]
    assert acc["hardware"] == "2-core x86 CPU"
    cols = {"layer", "preset", "forward", "backward", "weight_grad", "warned"}
    assert all(cols <= set(row) for row in fast_validation.rows(d))
    assert all(cols | {"regime"} <= set(row) for row in fast_validation.rows(d, "breaks"))
    assert len(fast_validation.accuracy_rows(d)) == 2 * len(acc["summary"])
    chapter = (ROOT / "book" / "ch05_training_live.ipynb").read_text()
    assert "fast_validation.load()" in chapter and "fast_validation.rows(FV" in chapter


@pytest.mark.parametrize("N,r", [(32768, 1152), (40000, 32767), (70000, 40000), (5, 3), (1152, 1152)])
def test_stored_ones_count_every_bit_of_every_tile(N, r):
    # int16 sums below 2^15 rows, int32 above; all-ones columns reach the tile length
    from imckit.imc.fast import _stored_ones
    g = torch.Generator().manual_seed(N)
    u = torch.randint(0, 16, (N, 7), dtype=torch.uint8, generator=g)
    u[:, 0] = 15
    spans = [(i, min(i + r, N)) for i in range(0, N, r)]
    want = torch.stack([torch.stack([((u[s:e].long() >> k) & 1).sum(0) for k in range(4)], -1)
                        .reshape(-1) for s, e in spans])
    got = _stored_ones(u, spans, 4)
    assert got.dtype == torch.int64 and torch.equal(got, want)
    assert int(got[0, 0]) == min(r, N)
