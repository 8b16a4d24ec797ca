"""The SUN20-style training recipe (issue 13, part 4): PACT, SAWB, the adaptive GradScale, the
recipe presets and versioned checkpoints. Oracles: formats.pact_quantize (PACT's own gradient
rule, independent of the layer's), a brute-force MSE-optimal clip, hand-followed scale
sequences."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imckit import data, formats, models, train
from imckit import nn as inn
from imckit.formats import clip as C
from imckit.nn.engine import quantize_weight


# --- PACT ------------------------------------------------------------------------------------

def test_pact_alpha_gradient_matches_the_pact_oracle():
    """With output gradients exactly representable in radix-4 (powers of 4 at S = 1), the
    layer's dL/dalpha must equal PACT's rule computed by formats.pact_quantize on the same
    quantized weights, plus pact_decay * alpha; the input gradient too (STE inside the clip)."""
    torch.manual_seed(0)
    layer = inn.IMCLinear(6, 3, placement="digital", a_clip="pact", pact_decay=0.01,
                          input_kind="unsigned", grad_scale="max", w_clip="sawb")
    x = (torch.rand(16, 6) * 2).requires_grad_(True)
    layer(x)                                              # initializes alpha (first batch)
    assert float(layer.a_alpha.detach()) > 0
    with torch.no_grad():
        layer.a_alpha.fill_(1.2)
    layer.zero_grad()
    x.grad = None
    g = torch.Generator().manual_seed(1)
    C_ = torch.tensor([1.0, 0.25, 1 / 16])[torch.randint(0, 3, (16, 3), generator=g)]
    C_ = C_ * torch.where(torch.rand(16, 3, generator=g) < 0.5, -1.0, 1.0)
    C_[0, 0] = 1.0                                        # max|gy| = 1: S = 1 exactly
    (layer(x) * C_).sum().backward()

    wl, ws, _ = quantize_weight(layer.weight.detach(), layer.cfg)
    xr = x.detach().clone().requires_grad_(True)
    alpha = torch.tensor(1.2, requires_grad=True)
    y = formats.pact_quantize(xr, alpha, bits=4) @ (wl * ws).t() + layer.bias.detach()
    (y * C_).sum().backward()
    assert float(layer.a_alpha.grad) == pytest.approx(float(alpha.grad) + 0.01 * 1.2, rel=1e-5)
    assert float(alpha.grad) != 0                         # some inputs were clipped
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_pact_alpha_learns_and_stays_positive_and_first_layer_keeps_its_init():
    ds = data.digits()
    net = inn.convert(models.mlp(64, (32, 32), seed=0), placement="digital", keep_ends=False)
    layers = [m for _, m in inn.imc_layers(net)]
    assert all(isinstance(m.a_alpha, torch.nn.Parameter) for m in layers)
    train.fit(net, ds, epochs=1, progress=False)
    a = [float(m.a_alpha.detach()) for m in layers]
    assert all(v > 0 for v in a)
    assert layers[0].a_alpha.grad is None                 # its input needs no gradient
    assert layers[1].a_alpha.grad is not None


def test_strict_recipe_has_no_learned_clip_and_kept_ends_have_none():
    net = inn.convert(models.small_cnn(seed=0), recipe="sun20")
    layers = [m for _, m in inn.imc_layers(net)]
    assert [m.a_alpha is None for m in layers] == [True, False, True]   # ends run fp32
    strict = inn.convert(models.small_cnn(seed=0), recipe="strict")
    assert all(m.a_alpha is None for _, m in inn.imc_layers(strict))


# --- SAWB ------------------------------------------------------------------------------------

def _brute_mse(w: np.ndarray, q: int, clips: np.ndarray) -> np.ndarray:
    d = clips[:, None] / q
    y = np.clip(np.round(w[None, :] / d), -q, q) * d
    return ((y - w[None, :]) ** 2).mean(1)


@pytest.mark.parametrize("sigma", [0.01, 1.0, 30.0])
def test_sawb_clip_is_near_the_mse_optimal_clip_on_gaussian_weights(sigma):
    w = np.random.default_rng(3).standard_normal(40_000) * sigma
    clips = np.linspace(1.0, 4.0, 601) * sigma            # a fine grid, independent of clip.py
    err = _brute_mse(w, 7, clips)
    best = clips[int(np.argmin(err))]
    a = C.sawb_clip(torch.tensor(w), bits=4)
    assert a == pytest.approx(best, rel=0.05)             # clip within 5 %
    err_a = _brute_mse(w, 7, np.array([a]))[0]
    assert err_a <= 1.02 * err.min()                      # and its MSE within 2 % of optimal


def test_our_sawb_fit_and_the_published_4bit_coefficients_both_near_the_optimum():
    """On a unit Gaussian (rms 1, E|w| = sqrt(2/pi)) both coefficient pairs give a clip within
    5 % of the brute-force MSE-optimal one (~2.49), and within 8 % of each other."""
    w = np.random.default_rng(5).standard_normal(40_000)
    clips = np.linspace(1.0, 4.0, 601)
    best = clips[int(np.argmin(_brute_mse(w, 7, clips)))]
    m = (2 / np.pi) ** 0.5
    ours = C.fit_sawb_coefficients(4)
    pub = C.SAWB_COEFFS[4]
    for c1, c2 in (ours, pub):
        assert c1 + c2 * m == pytest.approx(best, rel=0.05)
    assert ours[0] + ours[1] * m == pytest.approx(pub[0] + pub[1] * m, rel=0.08)


def test_sawb_edge_cases():
    assert C.sawb_clip(torch.zeros(5)) == 1.0
    assert C.sawb_clip(torch.tensor([0.0, 0.0, 2.0])) <= 2.0
    with pytest.raises(ValueError, match="inf/NaN"):
        C.sawb_clip(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="bits=1"):
        C.sawb_coefficients(1)
    wl, ws, mask = quantize_weight(torch.randn(64, 32), inn.LayerConfig())
    assert mask is not None and not bool(mask.all())      # SAWB clips some weights (STE mask)
    assert int(wl.abs().max()) == 7


# --- adaptive GradScale -----------------------------------------------------------------------

def test_adaptive_scale_tracks_a_shrinking_gradient_one_binade_per_step():
    ad, de = formats.GradScale("adaptive"), formats.GradScale("delayed")
    for gs in (ad, de):
        gs.scale_for(torch.tensor([0.9]))                 # S = 1
    seen_ad, seen_de = [], []
    for _ in range(6):                                    # the gradient drops 32x at once
        seen_ad.append(ad.scale_for(torch.tensor([0.02])))
        seen_de.append(de.scale_for(torch.tensor([0.02])))
    assert seen_ad == [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]    # settled: 0.02 in (S/2, S]
    assert seen_de == [1.0] * 6                           # delayed waits growth_interval steps
    assert not ad.saturated


def test_adaptive_scale_backs_off_on_overflow_and_flags_it():
    ad = formats.GradScale("adaptive")
    ad.scale_for(torch.tensor([0.3]))                     # S = 0.5
    assert ad.scale_for(torch.tensor([1.7])) == 0.5 and ad.saturated and ad.overflowed
    assert ad.scale_for(torch.tensor([1.7])) == 1.0 and ad.saturated
    assert ad.scale_for(torch.tensor([1.7])) == 2.0 and not ad.saturated
    assert ad.n_overflows == 2
    assert ad.scale_for(torch.tensor([float("nan")])) == 2.0 and ad.nonfinite


def test_the_default_layer_uses_the_adaptive_scale():
    layer = inn.IMCLinear(4, 2, placement="digital")
    assert layer._gs.rule == "adaptive" and inn.LayerConfig.strict().grad_scale == "max"


# --- recipes ---------------------------------------------------------------------------------

def test_recipes_are_presets_one_flag_apart():
    assert inn.LayerConfig() == inn.LayerConfig.sun20()
    assert inn.LayerConfig().recipe == "sun20" and inn.LayerConfig.strict().recipe == "strict"
    assert inn.LayerConfig(keep_ends=False).recipe is None      # sun20 rules, every layer
    s = inn.LayerConfig.strict()
    assert (s.keep_ends, s.w_clip, s.a_clip, s.grad_scale) == (False, "max", "percentile", "max")
    with pytest.raises(ValueError, match="recipe='fast'"):
        inn.make_config(recipe="fast")
    with pytest.raises(ValueError, match="together with cfg"):
        inn.make_config(inn.LayerConfig(), recipe="strict")
    with pytest.raises(ValueError, match="pact_decay=-1"):
        inn.LayerConfig(pact_decay=-1)
    with pytest.raises(ValueError, match="w_clip='l2'"):
        inn.LayerConfig(w_clip="l2")


def test_sun20_keeps_the_ends_and_warns_when_nothing_is_left_to_map():
    net = inn.convert(models.small_cnn(seed=0))
    pl = list(inn.placements_of(net).values())
    assert [p["forward"] for p in pl] == ["fp32", "imc", "fp32"]
    with pytest.warns(UserWarning, match="nothing runs on imc"):
        inn.convert(models.mlp(64, (64,), seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        every = inn.convert(models.mlp(64, (64,), seed=0), keep_ends=False)
    assert all(p["forward"] == "imc" for p in inn.placements_of(every).values())


# --- checkpoints -----------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _stop_after_one(h):
    if h.epochs_done == 1:
        raise _Stop


def _fit(recipe, path, epochs=2, stop=False):
    """A 2-epoch run; ``stop``: killed after epoch 1 (its checkpoint stays)."""
    net = inn.convert(models.mlp(64, (16, 16), seed=0), placement="digital", recipe=recipe)
    try:
        return net, train.fit(net, data.digits(), epochs=epochs, batch_size=256,
                              progress=False, checkpoint=path, config={"recipe": recipe},
                              callbacks=[_stop_after_one] if stop else [])
    except _Stop:
        return net, None


def _strip(h):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in h.records]


def test_checkpoints_carry_their_format_and_resume(tmp_path):
    p = tmp_path / "c.pt"
    _fit("sun20", p, stop=True)
    state = torch.load(p, weights_only=True)
    assert state["format"] == train.CKPT_FORMAT == 2
    assert any(k.endswith("a_alpha") for k in state["model"])
    _, resumed = _fit("sun20", p)
    _, straight = _fit("sun20", tmp_path / "d.pt")
    assert _strip(resumed) == _strip(straight)


def test_a_format_1_checkpoint_migrates_when_nothing_is_missing(tmp_path):
    p = tmp_path / "c.pt"
    _fit("strict", p, stop=True)
    state = torch.load(p, weights_only=True)
    torch.save({**state, "format": 1}, p)
    _, resumed = _fit("strict", p)
    _, straight = _fit("strict", tmp_path / "d.pt")
    assert _strip(resumed) == _strip(straight)


def test_old_or_newer_checkpoints_are_refused_clearly(tmp_path):
    p = tmp_path / "c.pt"
    _fit("sun20", p, stop=True)
    state = torch.load(p, weights_only=True)
    old = {k: v for k, v in state["model"].items() if not k.endswith("a_alpha")}
    torch.save({**state, "format": 1, "model": old}, p)
    with pytest.raises(train.CheckpointError, match=r"format 1.*lacks \['3.a_alpha'"):
        _fit("sun20", p)
    torch.save({**state, "format": 3}, p)
    with pytest.raises(train.CheckpointError, match="format 3, written by a newer imckit"):
        _fit("sun20", p)
    torch.save({**state, "format": "two"}, p)
    with pytest.raises(train.CheckpointError, match="format='two'"):
        _fit("sun20", p)


def test_pact_and_adaptive_training_is_reproducible():
    ds = data.digits()
    accs = []
    for _ in range(2):
        net = inn.convert(models.mlp(64, (16, 16), seed=1), placement="digital", keep_ends=False)
        h = train.fit(net, ds, epochs=1, batch_size=128, seed=1, progress=False)
        accs.append((h.test_accuracy[-1], h.train_loss[-1],
                     [float(m.a_alpha.detach()) for _, m in inn.imc_layers(net)]))
    assert accs[0] == accs[1]


def test_a_training_step_of_sun20_is_cross_entropy_of_the_quantized_model():
    """Sanity: the default recipe trains (loss falls) on a small CNN within one epoch."""
    ds = data.digits()
    net = inn.convert(models.small_cnn(seed=0), placement="digital")
    x, y = ds.x_train[:256], ds.y_train[:256]
    before = float(F.cross_entropy(net(x), y))
    train.fit(net, ds, epochs=1, progress=False)
    assert float(F.cross_entropy(net(x), y)) < before
