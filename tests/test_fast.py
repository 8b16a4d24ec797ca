"""imc.mvm_fast against the bit-true imc.mvm of the same chip (issue 14).

Oracles: the exact integer product (ideal preset), bit-true mvm itself (mismatch only, no ADC:
the same chip, equal to float tolerance; with noise and ADC: the output error variance vs the
exact product, pooled over seeds, within 0.8-1.25 of bit-true's).
"""
import warnings

import pytest
import torch

from imckit import imc
from imckit.imc import IMCConfig, mvm, mvm_fast
from imckit.imc.fast import CLIP_WARN


def _ops(kind, reduction, seed, outputs, vectors=64):
    g = torch.Generator().manual_seed(seed)
    A, X, kw, _, _ = imc.training_operands(kind, reduction, outputs=outputs, vectors=vectors,
                                           generator=g)
    return A, X, kw


def _range(A, X, cfg, kw):
    return imc.calibrate_adc_range(imc.column_counts(A, X, cfg, **kw), cfg.rows,
                                   percentile=cfg.adc_percentile, floor=cfg.adc_range_floor())


def variance_ratio(kind, reduction, preset, seeds=6, outputs=192, **kw_extra):
    """Pooled output MSE (vs the exact product) of fast over bit-true, at the range the layers
    calibrate (99.9 % of counts, a power of two, never under the LSB floor)."""
    ef = eb = 0.0
    for s in range(seeds):
        A, X, kw = _ops(kind, reduction, s, outputs)
        kw.update(kw_extra)
        cfg = getattr(IMCConfig, preset)(seed=s)
        r = _range(A, X, cfg, kw)
        ref = X.double() @ A.double()
        yb = mvm(A, X, cfg, adc_range=r, generator=torch.Generator().manual_seed(100 + s), **kw)
        yf = mvm_fast(A, X, cfg, adc_range=r, generator=torch.Generator().manual_seed(200 + s),
                      **kw)
        eb += float(((yb.double() - ref) ** 2).mean())
        ef += float(((yf.double() - ref) ** 2).mean())
    return ef / eb


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
    X = torch.randint(0, 16, (64, 256), generator=g)         # bit-true's bfloat16 mismatch path
    yb, yf = mvm(A, X, cfg), mvm_fast(A, X, cfg)
    assert (yf - yb).abs().max() < 0.01 * (yb - (X @ A).float()).abs().max()


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
    with pytest.warns(UserWarning, match="clip above the ADC range"):
        mvm_fast(A, X, IMCConfig.jia22_16nm(), adc_range=0.0625, **kw)
    with warnings.catch_warnings():                          # the calibrated range: silent
        warnings.simplefilter("error")
        mvm_fast(A, X, IMCConfig.jia22_16nm(), adc_range=_range(A, X, IMCConfig(), kw), **kw)
    with pytest.warns(UserWarning, match="runs bit-true"):
        y = mvm_fast(A, X, IMCConfig.jia22_16nm(input_levels=4), x_kind="multilevel",
                     x_bits=4, adc_range=0.5)
    assert y.shape == (64, 64)
    assert CLIP_WARN <= 0.01
