"""Tests of imckit.nn: the three training MVMs of a layer on fp32 / digital / IMC placements.

Oracles: torch's own nn.Linear / nn.Conv2d (fp32), a hand-written quantized backward pass with a
brute-force radix-4 rounding (digital), the digital placement itself for an ideal IMC array,
torch.autograd.gradcheck, and seeded training runs on scikit-learn's digits.
"""
from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imckit import imc, mapping
from imckit import nn as inn


@pytest.fixture(autouse=True)
def _strict_recipe(monkeypatch):
    """These tests check the layer machinery with the strict recipe's rules, which their
    hand-written oracles follow (running activation clip, max weight clip, max GradScale,
    every layer mapped); tests/test_recipe.py checks the sun20 recipe (the default)."""
    from imckit.nn import config
    monkeypatch.setattr(config, "DEFAULT_RECIPE", "strict")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small matmuls run fastest on one thread (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlp(seed=0, widths=(12, 16, 5)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# --------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("field, value", [
    ("placement", "gpu"), ("adaptability", "half"), ("fallback", "forward_pass"), ("w_bits", 1),
    ("a_bits", 9), ("grad_rounding", "up"), ("grad_scale", "min"), ("backward_phase", 2),
    ("adc_percentile", 0), ("recalibrate_every", -1), ("input_kind", "complex"), ("imc", 3)])
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        inn.LayerConfig(**{field: value})


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="colour"):
        inn.IMCLinear(3, 2, colour="red")


@pytest.mark.parametrize("adaptability", mapping.ADAPTABILITY)
def test_adaptability_sets_and_reports_placements(adaptability):
    net = inn.convert(_mlp(), adaptability=adaptability, imc=imc.IMCConfig.ideal())
    net(torch.rand(4, 12)).sum().backward()
    inn.after_step(net)
    want = mapping.placements(adaptability)
    for layer in inn.collect_work(net)["layers"]:
        got = {m: d["placement"] for m, d in layer["mvms"].items()}
        assert got == want
        for m, d in layer["mvms"].items():
            if d["macs"]:                                    # MVM ran: IMC ones convert, digital not
                assert (d["conversions"] > 0) == (want[m] == "imc")


# --------------------------------------------------------------------------- fp32 oracle: torch

def test_fp32_linear_equals_nn_linear_exactly():
    torch.manual_seed(1)
    ref = nn.Linear(7, 5)
    layer = inn.IMCLinear.from_float(ref, placement="fp32")
    x = torch.randn(6, 7)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(6, 5)
    y1, y2 = ref(x1), layer(x2)
    assert torch.equal(y1, y2)
    y1.backward(g)
    y2.backward(g)
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(ref.weight.grad, layer.weight.grad)
    assert torch.equal(ref.bias.grad, layer.bias.grad)


def test_fp32_conv_equals_nn_conv_exactly():
    torch.manual_seed(2)
    ref = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    layer = inn.IMCConv2d.from_float(ref, placement="fp32")
    x = torch.randn(2, 3, 7, 7)
    assert torch.equal(ref(x), layer(x))


def test_fp32_branches_of_the_function_pass_gradcheck():
    """The custom function with every MVM on fp32 (shortcut to F.linear disabled)."""
    torch.manual_seed(3)
    layer = inn.IMCLinear(5, 3, placement="fp32").double()
    layer.all_fp32 = False
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: inn.TrainingMVMs.apply(x, w, None, layer),
                                    (x, layer.weight))
    conv = inn.IMCConv2d(2, 3, 3, padding=1, placement="fp32").double()
    conv.all_fp32 = False
    xc = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (xc,))
    assert torch.allclose(conv(xc), F.conv2d(xc, conv.weight, conv.bias, padding=1))


# --------------------------------------------------------------------------- digital oracle

def _radix4_bruteforce(g, S, phase):
    """Nearest value of the radix-4 grid {0, +-S' 4^-k, k=0..6}, S' = S * 2^phase (TPR)."""
    base = S * (2.0 if phase else 1.0)
    grid = torch.cat([torch.zeros(1, dtype=torch.float64),
                      base * 4.0 ** -torch.arange(7, dtype=torch.float64)])
    idx = (g.abs().double().unsqueeze(-1) - grid).abs().argmin(-1)
    return (torch.sign(g) * grid[idx]).to(g.dtype)


def test_digital_gradients_equal_handwritten_quantized_backward():
    torch.manual_seed(4)
    N, M, B = 9, 6, 8
    layer = inn.IMCLinear(N, M, placement="digital")
    x = torch.rand(B, N, requires_grad=True)            # unsigned: an activation after ReLU
    G = torch.randn(B, M) * 0.01
    y = layer(x)
    y.backward(G)

    W, b = layer.weight.detach(), layer.bias.detach()
    aw = W.abs().max()
    Wq = torch.clamp(torch.round(W / aw * 7), -7, 7) * (aw / 7)
    ax = x.detach().max()                                # first step: clip = this batch's max
    Xq = torch.clamp(torch.round(x.detach() / ax * 15), 0, 15) * (ax / 15)
    torch.testing.assert_close(y.detach(), Xq @ Wq.t() + b, rtol=1e-6, atol=1e-7)

    S = 2.0 ** math.ceil(math.log2(float(G.abs().max())))
    D0, D1 = _radix4_bruteforce(G, S, 0), _radix4_bruteforce(G, S, 1)
    assert not torch.equal(D0, D1)                       # the two TPR phases really differ
    torch.testing.assert_close(x.grad, D0 @ Wq, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(layer.weight.grad, D1.t() @ Xq, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(layer.bias.grad, G.sum(0))


def test_signed_input_uses_signed_levels_and_clip_mask():
    torch.manual_seed(5)
    layer = inn.IMCLinear(4, 3, placement="digital", a_momentum=0.0)
    layer(torch.randn(16, 4) * 0.1)                      # sets the clip alpha = max|x| of batch
    x = torch.tensor([[0.5, -0.5, 0.01, -0.01]]) * float(layer.a_max) * 4
    x.requires_grad_()
    layer.eval()
    layer(x).sum().backward()
    assert bool(layer.signed_seen)
    assert x.grad[0, 2] != 0 and x.grad[0, 3] != 0      # inside the clip range: gradient passes
    assert x.grad[0, 0] == 0 and x.grad[0, 1] == 0      # clipped (|x| > alpha): STE stops


# --------------------------------------------------------------------------- ideal IMC == digital

def _grads(model, x, G):
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(G)
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_ideal_imc_equals_digital_exactly(kind):
    torch.manual_seed(6)
    if kind == "linear":
        base = _mlp(6, (12, 20, 7))
        x, G = torch.randn(10, 12), torch.randn(10, 7)
    else:
        base = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3))
        x, G = torch.randn(3, 2, 6, 6), torch.randn(3, 2, 4, 4)
    import copy

    dig = inn.convert(copy.deepcopy(base), placement="digital")
    # adc_percentile=100: the calibrated range covers every count (99.9 may clip the top 0.1 %)
    ide = inn.convert(copy.deepcopy(base), placement="imc", imc=imc.IMCConfig.ideal(),
                      adc_percentile=100)
    y1, gx1, gp1 = _grads(dig, x, G)
    y2, gx2, gp2 = _grads(ide, x, G)
    assert torch.equal(y1, y2)
    assert torch.equal(gx1, gx2)
    for a, b in zip(gp1, gp2):
        assert torch.equal(a, b)


def test_noisy_imc_differs_and_records_errors():
    torch.manual_seed(7)
    cfg = imc.IMCConfig.jia22_16nm(cap_mismatch=0.05)
    net = inn.convert(_mlp(7, (12, 16, 5)), imc=cfg, record_errors=True)
    net(torch.rand(32, 12)).sum().backward()
    for layer in inn.collect_work(net)["layers"]:
        for m in ("forward", "weight_grad"):
            err = layer["mvms"][m]["error"]
            assert err["n"] > 0 and 0 < err["rel_rmse"] < 0.5 and math.isfinite(err["sqnr_db"])
    # distinct chip seeds per (layer, MVM)
    layers = [m for _, m in inn.imc_layers(net)]
    seeds = {layer._imc_cfg(m).seed for layer in layers for m in inn.MVMS}
    assert len(seeds) == 3 * len(layers)


# --------------------------------------------------------------------------- convert & work

def test_convert_from_float_and_keep_ends():
    base = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 6), nn.ReLU(),
                         nn.Linear(6, 3))
    net = inn.convert(base, keep_ends=True)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["IMCConv2d", "ReLU", "Flatten", "IMCLinear", "ReLU", "IMCLinear"]
    pl = inn.placements_of(net)
    assert set(pl["0"].values()) == {"fp32"} and set(pl["5"].values()) == {"fp32"}
    assert pl["3"] == mapping.placements("full")
    assert [m.layer_index for _, m in inn.imc_layers(net)] == [0, 1, 2]
    single = inn.convert(nn.Linear(3, 2), placement="fp32")
    assert isinstance(single, inn.IMCLinear)
    with pytest.raises(ValueError, match="groups"):
        inn.IMCConv2d.from_float(nn.Conv2d(2, 2, 1, groups=2))


# --- convert: every MVM module is converted or reported (issue 11) --------------------------

def _no_mvm_modules():
    """Modules without an MVM of their own: convert leaves them alone, silently."""
    return [nn.Embedding(5, 3), nn.BatchNorm1d(3), nn.LayerNorm(3), nn.MaxPool1d(1),
            nn.AvgPool2d(1), nn.ReLU(), nn.GELU(), nn.Dropout(0.1), nn.Flatten(), nn.Identity()]


def _unconverted_mvm_modules():
    """``(module, what the report says)`` for every MVM module convert cannot put on IMC."""
    return [(nn.Conv1d(1, 1, 1), "Conv1d"), (nn.Conv3d(1, 1, 1), "Conv3d"),
            (nn.ConvTranspose1d(1, 1, 1), "ConvTranspose1d"),
            (nn.ConvTranspose2d(1, 1, 1), "ConvTranspose2d"),
            (nn.ConvTranspose3d(1, 1, 1), "ConvTranspose3d"), (nn.Bilinear(2, 2, 2), "Bilinear"),
            (nn.LazyLinear(2), "LazyLinear: uninitialized"),
            (nn.LazyConv2d(2, 1), "LazyConv2d: uninitialized"),
            (nn.MultiheadAttention(4, 2), "MultiheadAttention"), (nn.RNN(2, 2), "RNN"),
            (nn.LSTM(2, 2), "LSTM"), (nn.GRU(2, 2), "GRU"), (nn.RNNCell(2, 2), "RNNCell"),
            (nn.LSTMCell(2, 2), "LSTMCell"), (nn.GRUCell(2, 2), "GRUCell"),
            (nn.Conv2d(2, 2, 1, groups=2), "Conv2d: groups=2"),
            (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "Conv2d: padding_mode"),
            (nn.Conv2d(1, 1, 3, padding="same"), "Conv2d: padding='same'")]


def test_convert_reports_every_unconverted_mvm_in_one_error_and_changes_nothing():
    # issue 11: Conv1d, Conv3d, ConvTranspose*, RNNs, Bilinear, LazyLinear, ... stayed fp32
    # silently; groups != 1 raised mid-conversion, leaving a half-converted model
    bad = _unconverted_mvm_modules()
    net = nn.Sequential(nn.Linear(2, 2), *[m for m, _ in bad], *_no_mvm_modules())
    kinds = [type(m) for m in net]
    with pytest.raises(ValueError) as err:
        inn.convert(net)
    msg = str(err.value)
    assert "\n" not in msg and "allow_unconverted=True" in msg
    for i, (_, what) in enumerate(bad, start=1):
        assert f"'{i}' ({what}" in msg
    for i in range(len(bad) + 1, len(net)):           # no-MVM modules are not listed
        assert f"'{i}' (" not in msg
    assert "'0' (" not in msg and [type(m) for m in net] == kinds


def test_convert_allow_unconverted_warns_once_and_converts_the_rest():
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1), nn.LSTM(2, 2))
    with pytest.warns(UserWarning, match=r"'1' \(Conv1d.*'2' \(LSTM") as rec:
        inn.convert(net, allow_unconverted=True)
    assert len(rec) == 1
    assert [type(m).__name__ for m in net] == ["IMCLinear", "Conv1d", "LSTM"]
    with pytest.raises(ValueError, match="allow_unconverted='yes'"):
        inn.convert(nn.Linear(2, 2), allow_unconverted="yes")


def test_convert_leaves_modules_without_an_mvm_silently(recwarn):
    net = nn.Sequential(*_no_mvm_modules(), nn.Linear(3, 2))
    inn.convert(net)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert [type(m) for m in net][:-1] == [type(m) for m in _no_mvm_modules()]
    assert isinstance(net[-1], inn.IMCLinear)


def test_convert_converts_subclasses_that_call_their_own_forward():
    # issue 11: type(m) in (nn.Linear, nn.Conv2d) skipped every subclass
    class Conv(nn.Conv2d):
        pass

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    lazy = nn.LazyLinear(3)
    lazy(torch.rand(1, 4))                              # initialized: a plain Linear now
    ndq = nn.modules.linear.NonDynamicallyQuantizableLinear(3, 3)
    net = nn.Sequential(Conv(1, 1, 1), nn.Flatten(), lazy, ndq)
    inn.convert(net)
    assert [type(m).__name__ for m in net] == ["IMCConv2d", "Flatten", "IMCLinear", "IMCLinear"]
    with pytest.raises(ValueError, match=r"'0' \(Scaled: subclass overrides forward"):
        inn.convert(nn.Sequential(Scaled(2, 2)))


def test_convert_reports_multihead_attention_and_keeps_its_out_proj():
    # MHA calls F.multi_head_attention_forward with out_proj.weight: converting out_proj
    # would leave that MVM in fp32 anyway, so MHA itself is the module reported
    mha = nn.MultiheadAttention(4, 2)
    net = nn.Sequential()
    net.attn = mha
    with pytest.raises(ValueError, match=r"'attn' \(MultiheadAttention: .*out_proj") as err:
        inn.convert(net)
    assert "out_proj' (" not in str(err.value)
    with pytest.warns(UserWarning):
        inn.convert(net, allow_unconverted=True)
    assert type(mha.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    x = torch.rand(3, 1, 4)
    assert mha(x, x, x)[0].shape == (3, 1, 4)


def test_convert_keeps_a_shared_module_one_shared_layer():
    # issue 11: a module used twice was converted once and its weights stopped being shared
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    inner = nn.Sequential(lin, nn.ReLU())
    net = nn.Sequential(inner, lin, nn.Sequential(lin))
    inn.convert(net, placement="digital")
    layer = net[1]
    assert isinstance(layer, inn.IMCLinear) and net[0][0] is layer and net[2][0] is layer
    assert len(inn.imc_layers(net)) == 1 and layer.weight is lin.weight
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w0 = layer.weight.detach().clone()
    net(torch.rand(4, 3)).sum().backward()
    opt.step()
    assert not torch.equal(layer.weight, w0) and net[0][0].weight is net[2][0].weight


def test_convert_keeps_tied_parameters_tied():
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    net = inn.convert(nn.Sequential(a, nn.ReLU(), b), placement="digital")
    assert net[0] is not net[2] and net[0].weight is net[2].weight
    assert len(list(net.parameters())) == 1


def test_work_counts_are_consistent():
    torch.manual_seed(8)
    N, M, B, steps = 12, 10, 16, 3
    net = inn.convert(nn.Sequential(nn.Linear(N, M)), imc=imc.IMCConfig.jia22_16nm())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(steps):
        x = torch.rand(B, N, requires_grad=True)
        net(x).pow(2).sum().backward()
        inn.before_step(net)
        opt.step()
        inn.after_step(net)
        opt.zero_grad()
    rep = inn.collect_work(net)
    assert rep["steps"] == steps and rep["batch"] == B
    (layer,) = rep["layers"]
    assert layer["shape"] == [N, M] and layer["positions"] == 1
    f, b, w = (layer["mvms"][m] for m in inn.MVMS)
    assert f["macs"] == b["macs"] == w["macs"] == steps * B * N * M
    assert f["write_bits"] == b["write_bits"] == steps * N * M * 4      # W and W^T per update
    assert w["write_bits"] == steps * B * N * 4                         # Xq every step
    for d, cols in ((f, M * 4), (b, N * 4), (w, N * 4)):
        assert d["conversions"] == d["cycles"] * cols                   # one row tile each
        assert 0 < d["cycles"] and 0 < d["row_drives"]
    assert f["cycles"] <= steps * B * 4                                 # <= 4 input planes
    import json
    json.dumps(rep)
    inn.reset_work(net)
    assert inn.collect_work(net)["layers"][0]["mvms"]["forward"]["macs"] == 0


def test_shared_ranges_are_pooled_under_two_level():
    torch.manual_seed(9)
    net = inn.convert(_mlp(9, (12, 32, 32, 5)), adaptability="two-level")
    net(torch.rand(8, 12)).sum().backward()
    layers = [m for _, m in inn.imc_layers(net)]
    inn.after_step(net)
    for i in (0, 1):                                    # forward, backward: one range each
        assert len({float(m.adc_range[i]) for m in layers if m.adc_range[i] > 0}) == 1
    assert all(float(m.adc_range[2]) == 0 for m in layers)      # MVM 3 digital: no range


def test_nonfinite_gradient_is_flagged():
    layer = inn.IMCLinear(4, 2, imc=imc.IMCConfig.ideal())
    y = layer(torch.rand(3, 4))
    y.backward(torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0]]))
    assert inn.nonfinite_grad_seen(layer)
    layer.zero_grad()
    layer(torch.rand(3, 4)).sum().backward()
    assert not inn.nonfinite_grad_seen(layer)


def test_state_dict_round_trip_is_weights_only_safe():
    net = inn.convert(_mlp(), imc=imc.IMCConfig.jia22_16nm())
    net(torch.rand(4, 12)).sum().backward()
    inn.after_step(net)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = inn.convert(_mlp())
    other.load_state_dict(torch.load(buf, weights_only=True))
    a = [m for _, m in inn.imc_layers(net)]
    b = [m for _, m in inn.imc_layers(other)]
    assert torch.equal(a[0].adc_range, b[0].adc_range)
    assert a[0]._generators["cpu"].get_state().equal(b[0]._generators["cpu"].get_state())


# --------------------------------------------------------------------------- training

def _train_digits(seed=0, epochs=10, **overrides):
    from imckit import data, models, train

    ds = data.digits(seed=0)
    model = models.mlp(64, (64,), seed=seed)
    if overrides:
        model = inn.convert(model, **overrides)
    h = train.fit(model, ds, epochs=epochs, seed=seed, progress=False)
    return h.test_accuracy[-1]


@pytest.mark.slow
def test_digits_imc_full_adaptability_within_3_points_of_fp32():
    """Seeds 0 and 1, 10 epochs, MLP 64-64-10, 16 nm preset, every layer and MVM on IMC."""
    fp32 = [_train_digits(s) for s in (0, 1)]
    on_imc = [_train_digits(s, adaptability="full") for s in (0, 1)]
    assert min(fp32) >= 0.93
    assert sum(on_imc) / 2 >= sum(fp32) / 2 - 0.03, (fp32, on_imc)


@pytest.mark.slow
def test_accuracy_falls_with_extreme_cap_mismatch():
    accs = {}
    for cm in (0.002, 0.5):
        cfg = imc.IMCConfig.jia22_16nm(cap_mismatch=cm)
        accs[cm] = sum(_train_digits(s, epochs=4, adaptability="full",
                                     imc=dataclasses.replace(cfg, seed=s)) for s in (0, 1)) / 2
    assert accs[0.5] < accs[0.002] - 0.05, accs


def test_adc_ranges_recalibrate_on_schedule():
    torch.manual_seed(10)
    net = inn.convert(nn.Sequential(nn.Linear(12, 8)), recalibrate_every=2)
    (layer,) = [m for _, m in inn.imc_layers(net)]
    calls = []
    orig = layer._adc_range

    def spy(name, A, X, kw, cfg):
        due = layer._due[name]
        calls.append((name, due))
        return orig(name, A, X, kw, cfg)

    layer._adc_range = spy
    for _ in range(4):
        net(torch.rand(8, 12)).sum().backward()
        inn.after_step(net)
    due_forward = [d for n, d in calls if n == "forward"]
    assert due_forward == [True, False, True, False]        # steps 0 and 2 calibrate
    assert float(layer.adc_range[0]) > 0 and math.log2(float(layer.adc_range[0])).is_integer()


def test_weight_clip_mask_only_where_the_forward_quantized():
    """Forward on fp32 saw the unclipped weights: no STE mask on the weight gradient."""
    torch.manual_seed(11)
    layer = inn.IMCLinear(16, 8, placement="digital", w_clip="mse")
    layer.mvm_placements = {"forward": "fp32", "backward": "digital", "weight_grad": "fp32"}
    ref = nn.Linear(16, 8)
    ref.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x, g = torch.rand(5, 16, requires_grad=True), torch.randn(5, 8)
    layer(x).backward(g)
    ref(x.detach()).backward(g)
    assert torch.equal(layer.weight.grad, ref.weight.grad)


def test_eval_before_training_leaves_first_calibration_due():
    net = inn.convert(nn.Sequential(nn.Linear(12, 8)))
    (layer,) = [m for _, m in inn.imc_layers(net)]
    net.eval()
    net(torch.rand(4, 12) * 0.01)                       # fills the missing forward range
    assert float(layer.adc_range[0]) > 0 and layer._due["forward"]
    net.train()
    net(torch.rand(4, 12)).sum().backward()
    assert not layer._due["forward"]                    # the first training step calibrated


def test_conv_positions_survive_a_state_dict_round_trip():
    conv = inn.convert(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)))
    conv(torch.rand(2, 1, 6, 6)).sum().backward()
    other = inn.convert(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)))
    other.load_state_dict(conv.state_dict())
    assert inn.collect_work(other)["layers"][0]["positions"] == 36


# ------------------------------------------------- the conv backward is a transposed convolution

@pytest.mark.parametrize("geom", [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=1, stride=1, padding=0),
    dict(kernel_size=1, stride=2, padding=0),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
])
def test_conv_ideal_imc_equals_torch_conv_gradients_exactly(geom):
    """Ideal arrays + the transposed-convolution mapping of MVM 2 give exactly the gradients of
    torch's conv on the same quantized operands (an independent oracle: conv2d_input /
    conv2d_weight in float64)."""
    torch.manual_seed(11)
    conv = inn.IMCConv2d(3, 4, cfg=None, imc=imc.IMCConfig.ideal(), adc_percentile=100,
                         input_kind="unsigned", **geom)
    x = torch.rand(2, 3, 7, 6, requires_grad=True)
    y = conv(x)
    G = torch.randn_like(y)
    (y * G).sum().backward()
    from imckit.nn.engine import quantize_input, quantize_weight, radix4
    xl, xs, xmask = quantize_input(x.detach(), float(conv.a_max), False, 4)
    wl, ws, _ = quantize_weight(conv.weight.detach(), conv.cfg)
    S = conv._gs.scale_for(G.permute(0, 2, 3, 1).reshape(-1, 4))
    g = G.permute(0, 2, 3, 1).reshape(-1, 4)
    d0 = radix4(g, S, 0, "nearest", None).reshape(G.shape[0], G.shape[2], G.shape[3], 4)
    d0 = d0.permute(0, 3, 1, 2).double()
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    want_y = F.conv2d(xl.double(), wl.double(), **kw) * (xs * ws) + conv.bias.double().view(1, -1, 1, 1)
    want_gx = torch.nn.grad.conv2d_input(x.shape, wl.double(), d0, **kw) * ws * xmask  # STE
    assert torch.allclose(y.double(), want_y, rtol=1e-6, atol=1e-6)
    assert torch.allclose(x.grad.double(), want_gx, rtol=1e-6, atol=1e-7)
    rec = inn.collect_work(nn.Sequential(conv))["layers"][0]
    B, (H, W) = 2, (7, 6)
    assert rec["mvms"]["backward"]["outputs"] == B * 3 * H * W      # one vector per input position
    assert rec["in_positions"] == H * W and rec["kernel_area"] == conv.kernel_area


@pytest.mark.parametrize("fallback", ["fp32", "bf16", "int8", "digital"])
def test_two_level_fallback_computes_what_it_is_priced_as(fallback):
    """The weight-gradient MVM of two-level computes at ``fallback_placement``: fp32 equals the
    float product of the same operands, bf16 / int8 round them, digital is the radix-4 product."""
    torch.manual_seed(2)
    lin = inn.IMCLinear(16, 8, adaptability="two-level", fallback_placement=fallback,
                        imc=imc.IMCConfig.ideal())
    x = torch.rand(32, 16)
    G = torch.randn(32, 8)
    (lin(x) * G).sum().backward()
    assert lin.mvm_placements["weight_grad"] == fallback
    from imckit.nn.engine import quantize_input
    xl, xs, _ = quantize_input(x, float(lin.a_max), False, 4)
    exact = G.t().double() @ (xl * xs).double()
    err = float((lin.weight.grad.double() - exact).abs().max() / exact.abs().max())
    assert {"fp32": err < 1e-6, "bf16": 1e-4 < err < 2e-2, "int8": 1e-4 < err < 5e-2,
            "digital": err > 1e-3}[fallback]
    rec = inn.collect_work(nn.Sequential(lin))["layers"][0]["mvms"]["weight_grad"]
    assert rec["placement"] == fallback and rec["macs"] == 32 * 16 * 8 and rec["conversions"] == 0


def test_digital_conv_path_is_exact_beyond_float32():
    """The digital placement runs the plain conv kernels in float32 with split operands
    (issue 12): a weight gradient whose integer sums exceed 2^24 still equals the float64
    im2col product exactly."""
    torch.manual_seed(4)
    conv = inn.IMCConv2d(8, 16, 3, padding=1, placement="digital", input_kind="unsigned")
    x = torch.rand(16, 8, 16, 16, requires_grad=True)
    y = conv(x)
    G = torch.randn_like(y)
    (y * G).sum().backward()
    from imckit.nn.engine import F32_EXACT, quantize_input, quantize_weight, radix4
    xl, xs, xmask = quantize_input(x.detach(), float(conv.a_max), False, 4)
    wl, ws, _ = quantize_weight(conv.weight.detach(), conv.cfg)
    g = G.permute(0, 2, 3, 1).reshape(-1, 16)
    S = conv._gs.scale_for(g)
    cols = F.unfold(xl, 3, padding=1).transpose(1, 2).reshape(-1, 72)
    assert cols.shape[0] * 4096 * 15 > F32_EXACT                  # the split path is needed
    d1 = radix4(g, S, 1, "nearest", None)
    gw = (d1.double().t() @ cols.double()).float() * xs
    assert torch.equal(conv.weight.grad, gw.reshape(conv.weight.shape))
    d0 = radix4(g, S, 0, "nearest", None)
    gcols = (d0.double() @ wl.reshape(16, -1).double()).float()   # im2col-space input grad
    gx = F.fold(gcols.reshape(16, 256, 72).transpose(1, 2), (16, 16), 3, padding=1) * ws
    assert torch.allclose(x.grad, gx * xmask, rtol=1e-6, atol=1e-9)
    yref = (cols.double() @ wl.reshape(16, -1).double().t()).float() * (xs * ws)
    yref = yref.reshape(16, 16, 16, 16).permute(0, 3, 1, 2) + conv.bias.view(1, -1, 1, 1)
    assert torch.equal(y, yref)


def test_fast_fidelity_records_the_same_work_as_bit_true():
    """LayerConfig(fidelity="fast") runs imc.mvm_fast: same work counts (so the same energy),
    outputs close to bit-true's (issue 14)."""
    torch.manual_seed(0)
    x = torch.rand(32, 64)
    outs, works = {}, {}
    for fid in ("bit-true", "fast"):
        layer = inn.convert(torch.nn.Sequential(torch.nn.Linear(64, 16)), recipe="strict",
                            adaptability="full", fidelity=fid)
        layer[0].weight.data = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
        y = layer(x)
        y.sum().backward()
        outs[fid], works[fid] = y.detach(), inn.collect_work(layer)
    for m in ("forward", "weight_grad"):
        a = works["bit-true"]["layers"][0]["mvms"][m]
        b = works["fast"]["layers"][0]["mvms"][m]
        for k in ("conversions", "cycles", "row_drives", "macs", "outputs"):
            assert a[k] == b[k], (m, k)
    ref = outs["bit-true"]
    rms = lambda t: float(t.pow(2).mean().sqrt())                         # noqa: E731
    assert rms(outs["fast"] - ref) < 0.3 * rms(ref)      # two noisy draws of the same product
    with pytest.raises(ValueError, match="fidelity='exact'"):
        inn.LayerConfig(fidelity="exact")


# --- the fast mode's conv rows (imckit.nn.rows): counted on the image, no im2col -----------

_GEOMETRIES = [dict(k=3, stride=1, pad=1, dil=1), dict(k=3, stride=2, pad=1, dil=1),
               dict(k=1, stride=1, pad=0, dil=1), dict(k=3, stride=1, pad=2, dil=2),
               dict(k=1, stride=2, pad=0, dil=1), dict(k=2, stride=3, pad=1, dil=1)]


@pytest.mark.parametrize("geo", _GEOMETRIES)
def test_conv_rows_count_what_the_im2col_rows_hold(geo):
    from imckit.imc.planes import input_planes, trusted_operands
    from imckit.nn.rows import ConvRows
    g = torch.Generator().manual_seed(1)
    k, s, p, d = geo["k"], geo["stride"], geo["pad"], geo["dil"]
    lv = torch.randint(0, 16, (3, 5, 9, 9), generator=g).to(torch.int8)
    lv[lv < 6] = 0                                          # sparse, as after ReLU
    e = torch.randint(0, 7, (3, 5, 9, 9), generator=g).float()
    sgn = torch.where(torch.rand(3, 5, 9, 9, generator=g) < 0.5, -1.0, 1.0)
    r4 = torch.where(torch.rand(3, 5, 9, 9, generator=g) < 0.4, 0.0, sgn * 4.0 ** -e * 64)
    for img, kind, xs in ((lv, "unsigned", 1.0), (r4, "radix4", 64.0)):
        rows = ConvRows(img, (k, k), (d, d), (p, p), (s, s))
        X = rows.materialize()
        assert X.shape == rows.shape
        with trusted_operands():
            got = rows.planes(kind, 4, 2, xs, 0, 1152, k * k, "two-cycle")
        ref = input_planes(X, kind, 4, 2, xs, 0, 1152, k * k, "two-cycle", True)
        assert torch.equal(got.counts, ref.counts.to(torch.int64)), kind
        assert torch.equal(got.weights, ref.weights) and got.drives == ref.drives
        A = torch.randint(-8, 8, (X.shape[1], 7), generator=g).float()
        assert torch.allclose(rows.product(A, torch.float64), X.double() @ A.double())


def test_conv_rows_fall_back_where_they_do_not_count():
    from imckit.nn.rows import ConvRows
    img = torch.zeros(2, 200, 4, 4)
    rows = ConvRows(img, (3, 3), (1, 1), (1, 1), (1, 1))        # 1800 rows: two row tiles
    assert rows.planes("unsigned", 4, 2, 1.0, 0, 1152, 9, "two-cycle") is None
    small = ConvRows(torch.zeros(2, 3, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1))
    assert small.planes("radix4", 4, 2, 1.0, 0, 1152, 9, "one-cycle") is None
    assert small.planes("radix4", 4, 2, 3.0, 0, 1152, 9, "two-cycle") is None   # not 2^k


@pytest.mark.parametrize("geo", _GEOMETRIES[:5])
@pytest.mark.parametrize("preset", ["jia22_16nm", "measured"])
def test_fast_conv_on_the_image_equals_fast_conv_on_rows(geo, preset, monkeypatch):
    # the same counts and the same draws: equal where the linear part is exact in float32
    # (integer levels x integer weights), float32 rounding where mismatch is folded in
    from imckit.nn import rows as R
    k, s, p, d = geo["k"], geo["stride"], geo["pad"], geo["dil"]
    cfg = getattr(imc.IMCConfig, preset)()

    def run(lazy):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 16, k, stride=s, padding=p, dilation=d), nn.ReLU(),
                          nn.Flatten())
        m = inn.convert(m, adaptability="full", recipe="strict", fidelity="fast", imc=cfg)
        used = []
        real = R.ConvRows.planes
        monkeypatch.setattr(R.ConvRows, "planes",
                            lambda self, *a: used.append(1) or (real(self, *a) if lazy else None))
        x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))
        for _ in range(3):
            m.zero_grad()
            out = m(x)
            out.square().sum().backward()
            inn.after_step(m)
        monkeypatch.setattr(R.ConvRows, "planes", real)
        return out.detach(), [q.grad.clone() for q in m.parameters()], len(used)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # the fast mode's range warnings
        (a, ga, na), (b, gb, nb) = run(True), run(False)
    assert na > 0 and nb > 0
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))



def test_step_operands_of_a_fast_conv_are_tensors():
    # inn.step_operands hands the MVMs' operands to imc.mvm: the fast mode's lazy conv rows
    # are materialized there (shaped as the bit-true layer's; values differ with the noise)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                      nn.Flatten(), nn.Linear(144, 3))
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([0, 2])
    ops = {f: inn.step_operands(inn.convert(m, adaptability="full", recipe="strict",
                                            fidelity=f), x, y)
           for f in ("fast", "bit-true")}
    assert len(ops["fast"]) == len(ops["bit-true"]) == 3
    for lf, lb in zip(ops["fast"], ops["bit-true"]):
        for kind, (A, X, kw) in lf["operands"].items():
            assert isinstance(X, torch.Tensor), (lf["name"], kind)
            assert X.shape == lb["operands"][kind][1].shape
            ideal = imc.mvm(A, X, imc.IMCConfig.ideal(), **kw)
            assert torch.equal(ideal, (X.double() @ A.double()).to(ideal.dtype))


def test_exact_bilinear_takes_one_float32_call_when_the_data_allow_it():
    # above the worst-case bound, op(|a|, |b|) < 2^24 decides: one float32 call of op(a, b)
    # (plus the bound), equal to float64; when the data reach 2^24 the split keeps it exact
    from imckit.nn.engine import F32_EXACT, exact_bilinear
    calls = []

    def op(x, y):
        calls.append(x.dtype)
        return x @ y
    g = torch.Generator().manual_seed(0)
    k = 40000
    a = torch.randint(-3, 4, (3, k), generator=g).double()      # small here: data bound holds
    a[0, 0] = 4096                                               # a_max 4096
    b = torch.randint(0, 16, (k, 5), generator=g).double()
    assert k * 4096 * 15 >= F32_EXACT
    assert torch.equal(exact_bilinear(op, a, b, 4096, 15, k), a @ b) and len(calls) == 2
    calls.clear()
    a = torch.full((3, k), 4095.0, dtype=torch.float64); a[0, 1] = 4096.0; a[1, ::7] = -4093.0
    b = torch.full((k, 5), 15.0, dtype=torch.float64); b[1::3] = 13.0    # sums beyond 2^24
    want = a @ b
    assert float((a.abs() @ b.abs()).max()) >= F32_EXACT
    assert not torch.equal((a.float() @ b.float()).double(), want)  # one float32 call is not
    assert torch.equal(exact_bilinear(op, a, b, 4096, 15, k), want) and len(calls) > 2


def test_ste_masks_are_floats_equal_to_the_bool_comparisons():
    from imckit.nn.engine import _inside, quantize_input, quantize_weight
    x = torch.tensor([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 1.0000001, float("inf"), -float("inf")])
    for signed in (False, True):
        _, _, m = quantize_input(x, 1.0, signed, 4)
        want = (x.abs() <= 1.0) if signed else ((x >= 0) & (x <= 1.0))
        assert m.dtype == x.dtype and torch.equal(m, want.to(x.dtype))
    assert _inside(torch.tensor([float("nan")]), -1.0, 1.0).tolist() == [0.0]
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    wl, ws, m = quantize_weight(w, inn.LayerConfig())
    alpha = ws * 7
    assert torch.equal(m, (w.abs() <= alpha).float()) and 0 < float(m.mean()) < 1


@pytest.mark.parametrize("geo", [dict(), dict(stride=2, padding=1), dict(dilation=2, padding=2),
                                 dict(kernel=1)])
def test_reduction_bound_bounds_every_weight_gradient_output(geo):
    # max_o sum|d_o| * x_max bounds conv2d_weight(|x|, |d|) for any stride, padding, dilation
    from imckit.nn.engine import reduction_bound
    g = torch.Generator().manual_seed(1)
    k = geo.pop("kernel", 3)
    x = torch.randint(0, 16, (4, 5, 9, 9), generator=g).float()
    wshape = (6, 5, k, k)
    ho = F.conv2d(x, torch.zeros(wshape), **geo).shape[-1]
    d = (4.0 ** torch.randint(0, 7, (4, 6, ho, ho), generator=g)) * torch.randint(-1, 2, (4, 6, ho, ho), generator=g)
    exact = torch.nn.grad.conv2d_weight(x.abs(), wshape, d.abs(), **geo).max()
    assert reduction_bound(d, 15.0) >= float(exact)
    assert reduction_bound(d.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), 15.0) == reduction_bound(d, 15.0)
    half = torch.ones(4097, 1, dtype=torch.float16)                  # half sums: widened
    assert reduction_bound(half, 1.0) >= 4097
    rows = d.permute(0, 2, 3, 1).reshape(-1, 6)                       # linear: d^T x
    xr = torch.randint(0, 16, (rows.shape[0], 3), generator=g).float()
    assert reduction_bound(rows, 15.0) >= float((rows.abs().t() @ xr).max())


def test_exact_bilinear_skips_the_bound_op_when_the_cheap_bound_holds():
    from imckit.nn.engine import exact_bilinear, reduction_bound
    calls = []

    def op(a, b):
        calls.append(1)
        return a.t() @ b
    g = torch.Generator().manual_seed(2)
    d = torch.randint(-2, 3, (40000, 3), generator=g).float()
    x = torch.randint(0, 16, (40000, 4), generator=g).float()
    out = exact_bilinear(op, d, x, 4096, 15, 40000, bound=lambda a: reduction_bound(a, 15))
    assert torch.equal(out, d.double().t() @ x.double()) and len(calls) == 1
    calls.clear()
    d[:, 0] = 4096.0                                            # sums beyond 2^24: split, exact
    out = exact_bilinear(op, d, x, 4096, 15, 40000, bound=lambda a: reduction_bound(a, 15),
                         dtype=torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, (d.double().t() @ x.double()).float())
    assert len(calls) > 2


def test_percentile_clip_equals_kthvalue_of_the_clamped_sample():
    lin = inn.IMCLinear(8, 4, a_clip="percentile")
    g = torch.Generator().manual_seed(4)
    for n, p in ((300000, 99.0), (70000, 99.9), (5000, 50.0), (100, 100.0)):
        lin.cfg = dataclasses.replace(lin.cfg, a_percentile=p)
        x = torch.randn(n, generator=g)
        x[::97] = float("nan") if n == 70000 else x[::97]
        v = x.clamp(min=0)
        if n > 65536:
            v = v[:: n // 65536]
        k = max(1, min(v.numel(), math.ceil(p / 100 * v.numel())))
        want = v.kthvalue(k).values
        got = lin._batch_clip(x, False)
        assert torch.equal(got, want) or (bool(got.isnan()) and bool(want.isnan()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_im2col_equals_unfold_for_every_geometry_and_layout(dtype):
    from imckit.nn.layers import im2col
    g = torch.Generator().manual_seed(0)
    n = 0
    for (B, C, H, W) in ((2, 3, 7, 6), (3, 4, 9, 8)):
        for k in ((1, 1), (3, 3), (2, 3)):
            for d in ((1, 1), (2, 1)):
                for p in ((0, 0), (1, 2)):
                    for s in ((1, 1), (2, 3)):
                        x = (torch.randn(B, C, H, W, generator=g) * 20).to(dtype)
                        for v in (x, x.transpose(2, 3).contiguous().transpose(2, 3), x[:, ::2]):
                            c = v.shape[1]
                            want = F.unfold(v.float(), k, d, p, s).transpose(1, 2)
                            got = im2col(v, k, d, p, s)
                            assert got.dtype == dtype
                            assert torch.equal(got, want.reshape(-1, c * k[0] * k[1]).to(dtype))
                            n += 1
    assert n == 144
