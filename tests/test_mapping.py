"""The one mapping: what the simulator executes is what the energy model counts (issue 10).

Contract: for a converted model, the energy of one recorded steady-state training step
(:func:`imckit.energy.energy_from_work` of :func:`imckit.nn.collect_work`) equals the analytic
energy of the same model and batch with that step's occupancy
(:func:`imckit.energy.training_step_energy` with ``occupancy=``), within 1 %, and so do the
column conversions of every MVM.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imckit import energy as E
from imckit import imc, mapping, models
from imckit import nn as inn


@pytest.fixture(autouse=True)
def _strict_recipe(monkeypatch):
    """These tests check the layer machinery with the strict recipe's rules, which their
    hand-written oracles follow (running activation clip, max weight clip, max GradScale,
    every layer mapped); tests/test_recipe.py checks the sun20 recipe (the default)."""
    from imckit.nn import config
    monkeypatch.setattr(config, "DEFAULT_RECIPE", "strict")


B = 8


def _conv_net(stride=1, padding=1, k=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 8, k, stride=stride, padding=padding), nn.ReLU(),
                         nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def _net(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (64,)
    if kind == "small_cnn":
        return models.small_cnn(), (1, 8, 8)
    if kind.startswith("conv"):
        stride, padding, k = {"conv_s1": (1, 1, 3), "conv_s2": (2, 1, 3),
                              "conv_s2_nopad": (2, 0, 3), "conv_1x1_s2": (2, 0, 1)}[kind]
        net = _conv_net(stride, padding, k)
        net(torch.zeros(1, 1, 8, 8))              # materialize the lazy linear
        return net, (1, 8, 8)
    if kind == "resnet_block":
        net = models.resnet20(n_classes=10)
        return net, (3, 8, 8)
    raise ValueError(kind)


def _one_step(model, shape, seed=0, batch=B):
    """Two warm-up steps, reset, one recorded step (the issue's protocol)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for i in range(3):
        if i == 2:
            inn.reset_work(model)
        x = torch.rand(batch, *shape, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        inn.before_step(model)
        opt.step()
        inn.after_step(model)
    return inn.collect_work(model)


def _check(model, shape, batch=B):
    rec = _one_step(model, shape, batch=batch)
    got = E.energy_from_work(rec)
    want = E.training_step_energy(model, batch, input_shape=shape, occupancy=rec)
    merged: dict = {}                         # a module called twice is one record entry
    for layer, mvms in want.work.items():
        acc = merged.setdefault(layer.split("#")[0], {})
        for m, w in mvms.items():
            acc[m] = acc[m] + w if m in acc else w
    assert set(got.work) == set(merged)
    for layer, mvms in merged.items():
        assert set(mvms) == set(got.work[layer]), layer
        for m, w in mvms.items():
            r = got.work[layer][m]
            assert w.macs == r.macs and w.outputs == r.outputs, (layer, m)
            assert w.write_bits == r.write_bits, (layer, m, w, r)
            assert abs(w.conversions - r.conversions) <= 0.01 * max(r.conversions, 1), (layer, m)
            assert abs(w.row_drives - r.row_drives) <= 0.01 * max(r.row_drives, 1), (layer, m)
    assert want.total_j == pytest.approx(got.total_j, rel=0.01)
    assert want.baseline_j == pytest.approx(got.baseline_j, rel=0.01)
    return rec, got, want


@pytest.mark.parametrize("kind", ["mlp", "small_cnn", "conv_s1", "conv_s2", "conv_s2_nopad",
                                  "conv_1x1_s2"])
@pytest.mark.parametrize("adaptability", mapping.ADAPTABILITY)
def test_recorded_step_equals_analytic_energy(kind, adaptability):
    net, shape = _net(kind)
    model = inn.convert(net, adaptability=adaptability)
    rec, got, _ = _check(model, shape)
    first = rec["layers"][0]
    assert first["mvms"]["backward"]["macs"] == 0          # the first input gradient never runs
    assert "backward" not in got.work[first["name"]]


@pytest.mark.parametrize("sign_mode", mapping.SIGN_MODES)
@pytest.mark.parametrize("keep_ends", [False, True])
def test_contract_holds_for_sign_modes_and_kept_ends(sign_mode, keep_ends):
    net, shape = _net("conv_s2")
    model = inn.convert(net, imc=imc.IMCConfig.jia22_16nm(sign_mode=sign_mode),
                        keep_ends=keep_ends, ends_placement="bf16")
    _, got, want = _check(model, shape)
    names = list(want.placements)
    assert (want.placements[names[0]]["forward"] == "bf16") == keep_ends
    assert (want.placements[names[-1]]["weight_grad"] == "bf16") == keep_ends


def test_contract_holds_for_resnet20_blocks():
    net, shape = _net("resnet_block")
    _check(inn.convert(net, adaptability="full"), shape)


def test_one_cycle_halves_the_gradient_cycles_and_stays_exact():
    """+-1 drive: a signed radix-4 vector needs one cycle per exponent instead of one per
    (sign, exponent), as the mapping counts; the ideal bipolar ADC still gives the exact
    product."""
    g = torch.Generator().manual_seed(0)
    e = torch.randint(1, 8, (16, 256), generator=g).double()     # every (sign, exponent)
    sign = torch.where(torch.rand(16, 256, generator=g) < 0.5, -1.0, 1.0).double()
    X = sign * 4.0 ** (e - 7)
    A = torch.randint(-7, 8, (256, 32), generator=g)
    out = {}
    for sm in mapping.SIGN_MODES:
        cfg = imc.IMCConfig.ideal(rows=256)
        cfg = imc.IMCConfig(**{**cfg.__dict__, "sign_mode": sm})
        y, w = imc.mvm(A, X, cfg, x_kind="radix4", report=True)
        assert torch.allclose(y.double(), X @ A.double(), rtol=0, atol=1e-9)
        rules = mapping.CountRules(sign_mode=sm)
        assert w.cycles == 16 * mapping.cycles_per_vector("radix4", rules)  # every plane used
        out[sm] = w.conversions
    assert out["one-cycle"] * 2 == out["two-cycle"]


def test_old_records_are_refused_in_one_line():
    old = {"steps": 1, "batch": 1, "layers": [{"name": "fc", "shape": [4, 2], "mvms": {}}]}
    with pytest.raises(ValueError, match="schema"):
        E.energy_from_work(old)


def test_fallback_priced_as_what_it_computes():
    """Two-level with an fp32 fallback saves ~3x (Amdahl); the same mapping with an exact
    INT4 x radix-4 fallback is priced as that and saves far more."""
    net = E.jia22_cnn()
    fp32 = E.training_step_energy(net, 64, adaptability="two-level")
    exact = E.training_step_energy(net, 64, adaptability="two-level", fallback_placement="digital")
    assert 2.9 < fp32.savings < 3.05
    assert exact.savings > 5 * fp32.savings
    assert fp32.placements["conv2"]["weight_grad"] == "fp32"
    assert exact.placements["conv2"]["weight_grad"] == "digital"


def test_short_last_batch_is_priced_as_what_ran():
    """A run whose last batch is short: recorded outputs follow the samples that ran."""
    net, shape = _net("mlp")
    model = inn.convert(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for b in (8, 3):
        x = torch.rand(b, *shape)
        F.cross_entropy(model(x), torch.randint(0, 10, (b,))).backward()
        opt.step(); inn.after_step(model)
    rec = inn.collect_work(model)
    assert rec["layers"][1]["samples"] == 11
    assert rec["layers"][1]["mvms"]["forward"]["outputs"] == 11 * 10


def test_first_layer_input_gradient_counts_when_it_ran():
    """An input that requires grad makes the first layer's backward MVM run: the record says
    so and the analytic count with that occupancy follows it."""
    net, shape = _net("mlp")
    model = inn.convert(net)
    x = torch.rand(B, *shape, requires_grad=True)
    F.cross_entropy(model(x), torch.randint(0, 10, (B,))).backward()
    inn.after_step(model)
    rec = inn.collect_work(model)
    assert rec["layers"][0]["input_grad"] and rec["layers"][0]["mvms"]["backward"]["macs"] > 0
    got = E.energy_from_work(rec)
    want = E.training_step_energy(model, B, input_shape=shape, occupancy=rec)
    assert "backward" in want.work["0"] and want.total_j == pytest.approx(got.total_j, rel=0.01)


class _Tied(nn.Module):
    """One Linear called twice (tied weights): it runs its MVMs twice per step."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.mid = nn.Linear(32, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.mid(h))
        return self.out(torch.relu(self.mid(h)))


def test_contract_holds_for_a_module_called_twice():
    torch.manual_seed(0)
    model = inn.convert(_Tied())
    # each call rounds its share of the averaged occupancy to whole cycles: batch 64 keeps that
    # rounding below the 1 % tolerance
    rec, got, want = _check(model, (16,), batch=64)
    assert len(rec["layers"]) == 3 and len(want.work) == 4       # mid runs twice per step
    assert sum(w.macs for w in want.work["mid"].values()) > 0


def test_occupancy_above_one_is_refused():
    net, shape = _net("mlp")
    model = inn.convert(net)
    rec = _one_step(model, shape)
    rec["layers"][1]["mvms"]["forward"]["cycles"] *= 3
    with pytest.raises(ValueError, match="above 1"):
        E.training_step_energy(model, B, input_shape=shape, occupancy=rec)


@pytest.mark.parametrize("kind", ["small_cnn", "conv_s2", "resnet_block"])
@pytest.mark.parametrize("ends", ["fp32", "int8"])
def test_contract_holds_for_the_sun20_recipe(kind, ends):
    """The default recipe (first and last layers kept at ``ends_placement``, learned PACT
    clips, SAWB, adaptive GradScale): recorded step == analytic energy, and the kept ends are
    priced as what they compute."""
    net, shape = _net(kind)
    model = inn.convert(net, recipe="sun20", ends_placement=ends)
    _, got, want = _check(model, shape)
    names = list(want.placements)
    for n in (names[0], names[-1]):
        assert set(want.placements[n].values()) == {ends}
    assert "imc" in set(want.placements[names[1]].values())
