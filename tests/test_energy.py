"""Tests of the energy model (SPEC §4): the abstract's numbers, hand-computed examples, Amdahl,
monotonicity, the baseline sensitivity, the torch-model walk and the work-record path."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from imckit import energy as E
from imckit.mapping import ADAPTABILITY, MVMS, placements
from imckit.sources import SOURCES, TAGS

PJ = 1e-12


def savings(adaptability, layers=None, **kw):
    layers = E.jia22_cnn() if layers is None else layers
    return E.training_step_energy(layers, batch=kw.pop("batch", 64), adaptability=adaptability,
                                  **kw).savings


# ---- the abstract [GRIMM22] ---------------------------------------------------------------
def test_abstract_numbers_on_jia22_cnn():
    s = {a: savings(a) for a in ADAPTABILITY}
    print("paper-16nm, JIA22-style CNN:", {a: round(v, 2) for a, v in s.items()})
    assert s["full"] > 400
    assert 2.9 <= s["two-level"] <= 3.1
    assert 1.45 <= s["one-level"] <= 1.55
    assert s["none"] == 1.0


def test_two_level_is_structural_across_baselines_and_networks():
    # whatever the gain, two of three MVMs mapped can never exceed 3x (Amdahl)
    for net in E.NETWORKS.values():
        for b in E.BASELINES:
            assert savings("two-level", net(), baseline=b) < 3.0
            assert savings("one-level", net(), baseline=b) < 1.5


# ---- hand-computed examples (numbers typed from ENERGY-SOURCES.md) ---------------------------
def test_worked_example_1152x256_forward_to_the_pj():
    c = E.mvm_work(1152, 256, 1, stored_bits=4, cycles=4, rows=1152, write=False)
    assert c.work.conversions == 4 * 256 * 4 == 4096
    assert c.work.row_drives == 1152 * 4
    e = E.imc_energy_j(c.work, c.outputs, E.IMCEnergy(), adc_bits=8)
    core = 4096 * 1.2                           # pJ: array + 8-b ADC + BPBS shift-add
    inputs = 1152 * 4 * (20 / 64 * 0.142)       # input bits from a 32 KB buffer, HOR14 x SB17
    outputs = 256 * 16 * (20 / 64 * 0.142)      # 16-bit results written back
    total_pj = sum(e.values()) / PJ
    assert abs((e["array"] + e["adc"] + e["shift_add"]) / PJ - core) < 1e-6
    assert abs(total_pj - (core + inputs + outputs)) < 1.0          # to the pJ
    assert 4900 < core < 4930 and 190 < inputs < 220                # "~4.9 nJ + ~0.2 nJ"
    assert 16e-3 < total_pj / (1152 * 256) < 19e-3                  # "~17 fJ/MAC"


def test_step_forward_includes_weight_write_and_adc_split():
    rep = E.training_step_energy([(1152, 256)], batch=1)
    f = rep.breakdown["L0"]["forward"]
    assert abs(f["write"] / PJ - 1152 * 256 * 4 * 0.05) < 1e-6      # W rewritten each step
    assert abs(f["adc"] / PJ - 4096 * 0.13) < 1e-6                  # ADCMODEL 8 b
    assert abs(E.IMCEnergy().e_adc_pj(4) - 0.07) < 1e-12


def test_digital_baseline_hand_computed():
    b = E.DigitalBaseline.preset("fp32")
    per_mac = (3.7 + 0.9) * 0.142 + 2 * 32 * (100 / 64) * 0.142      # MAC + 2 x 32 b from 1 MB
    e = E.digital_energy_j(1000, 10, b)
    assert abs(e["mac"] + e["fetch"] - 1000 * per_mac * PJ) < 1e-18
    assert abs(e["output"] - 10 * 32 * (100 / 64) * 0.142 * PJ) < 1e-18


def test_16nm_estimates_of_energy_sources():
    assert abs(E.scale_energy(1.0) - 0.142) < 1e-12
    for prec, want in (("fp32", 0.66), ("fp16", 0.21), ("int8", 0.033)):
        got = E.DigitalBaseline.preset("fp32", precision=prec).e_mac_pj
        assert abs(got / want - 1) < 0.03, prec
    for kb, want in ((8, 0.022), (32, 0.045), (1024, 0.22)):
        got = E.DigitalBaseline.preset("fp32", sram_kb=kb).e_sram_bit_pj
        assert abs(got / want - 1) < 0.03, kb


# ---- Amdahl identity -----------------------------------------------------------------------
@pytest.mark.parametrize("baseline", ["fp32", "fp16", "int8", "int8-lean"])
@pytest.mark.parametrize("adc_bits", [4, 8, 10])
def test_amdahl_identity_equal_mvms(baseline, adc_bits):
    # A square layer with batch = N and as many gradient planes as input bits: the three MVMs
    # then have identical counts, so the model must reduce to SPEC §2.1's formula exactly.
    layer, kw = [(1152, 1152)], dict(batch=1152, grad_planes=4, baseline=baseline,
                                     adc_bits=adc_bits)
    rep = E.training_step_energy(layer, adaptability="full", **kw)
    per = [sum(c.values()) for c in rep.breakdown["L0"].values()]
    assert max(per) / min(per) - 1 < 1e-12
    g = rep.savings
    for a in ADAPTABILITY:
        n = sum(p == "imc" for p in placements(a).values())
        got = E.training_step_energy(layer, adaptability=a, **kw).savings
        assert math.isclose(got, E.amdahl_savings(g, n), rel_tol=1e-12), (a, g)


@pytest.mark.parametrize("adaptability", ADAPTABILITY)
def test_generalized_amdahl_on_a_real_network(adaptability):
    rep = E.training_step_energy(E.resnet20(), batch=32, adaptability=adaptability,
                                 fallback="backward")
    full = E.training_step_energy(E.resnet20(), batch=32, adaptability="full")
    d = rep.baseline_j
    saved = sum(sum(full.baseline_breakdown[l][m].values()) - sum(full.breakdown[l][m].values())
                for l in rep.breakdown for m in MVMS if rep.placements[l][m] == "imc")
    assert math.isclose(rep.savings, d / (d - saved), rel_tol=1e-12)


# ---- monotonicity --------------------------------------------------------------------------
def test_energy_rises_with_adc_bits_and_faster_above_8():
    tot = [E.training_step_energy(E.jia22_cnn(), adc_bits=b).total_j for b in range(1, 17)]
    assert all(b > a for a, b in zip(tot, tot[1:]))
    e = [E.adc_energy_pj(b) for b in range(1, 17)]
    ratio = [b / a for a, b in zip(e, e[1:])]
    assert ratio[9] > ratio[7] > ratio[3] and ratio[12] > 3.0   # 4^B regime above ~9 b


def test_energy_rises_with_input_cycles():
    net = E.jia22_cnn()
    fwd = [E.training_step_energy(net, x_bits=b).by_mvm()["forward"] for b in range(1, 9)]
    assert all(b > a for a, b in zip(fwd, fwd[1:]))
    grad = [E.training_step_energy(net, grad_planes=g).total_j for g in range(1, 8)]
    assert all(b > a for a, b in zip(grad, grad[1:]))
    two = E.training_step_energy(net, grad_sign_cycles=2).total_j
    assert two > grad[-1]
    ml = E.training_step_energy(net, input_mode="multi-level")
    assert ml.total_j < grad[-1] and ml.savings > savings("full")
    r = E.CountRules(input_mode="multi-level")
    assert (r.int_cycles(), r.grad_cycles()) == (1, 4)


# ---- the baseline decides the 400x ---------------------------------------------------------
def test_savings_fall_against_lean_int8_with_reuse():
    paper = savings("full")
    lean = savings("full", baseline="int8-lean")
    lean_preset = E.training_step_energy(E.jia22_cnn(), preset="lean-int8").savings
    print(f"full adaptability: {paper:.0f}x vs fp32/1MB, {lean:.2f}x vs lean INT8 (8 KB, reuse 16)")
    assert lean == lean_preset
    assert lean < paper / 50
    order = [savings("full", baseline=b) for b in ("fp32", "fp32-32KB", "fp16", "int8",
                                                   "int8-lean")]
    assert all(b < a for a, b in zip(order, order[1:]))


def test_fallback_on_cheaper_digital_engine_raises_two_level():
    s = savings("two-level", fallback_baseline="int4")
    assert s > 3.1   # the 3x ceiling holds only when the fallback pays the baseline's price


# ---- layers from a torch model -------------------------------------------------------------
def test_layers_from_torch_model_match_im2col_shapes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10))
    got = E.as_layers(model, input_shape=(3, 16, 16))
    want = [(27, 8, 256, 9), (72, 16, 16, 9), (256, 10, 1, 1)]
    assert [(l.n, l.m, l.positions, l.kernel_area) for l in got] == want
    assert [l.name for l in got] == ["0", "3", "5"]
    a = E.training_step_energy(model, batch=8, input_shape=(3, 16, 16))
    b = E.training_step_energy([w for w in want], batch=8)
    assert math.isclose(a.total_j, b.total_j, rel_tol=1e-12)
    # forward MACs of the model = an independent count from conv arithmetic
    macs = sum(c.work.macs for c in (mv["forward"] for mv in a.work.values()))
    assert macs == 8 * (16 * 16 * 8 * 27 + 4 * 4 * 16 * 72 + 256 * 10)


def test_mac_counts_equal_across_the_three_mvms():
    for lay, mv in E.step_work(E.resnet20(), batch=4):
        assert len({c.work.macs for c in mv.values()}) == 1, lay.name


# ---- a finished run's recorded work --------------------------------------------------------
def _record(layers, batch, steps, adaptability):
    where = placements(adaptability)
    out = {"steps": steps, "batch": batch, "layers": []}
    for lay, mv in E.step_work(layers, batch):
        mvms = {}
        for m, c in mv.items():
            d = c.work.scaled(steps).to_dict()
            mvms[m] = ({"placement": "imc", **d} if where[m] == "imc"
                       else {"placement": where[m], "macs": d["macs"]})
        out["layers"].append({"name": lay.name, "shape": [lay.n, lay.m],
                              "positions": lay.positions, "kernel_area": lay.kernel_area,
                              "mvms": mvms})
    return out


@pytest.mark.parametrize("adaptability", ["full", "two-level"])
def test_energy_from_work_equals_steps_times_step_energy(adaptability, tmp_path):
    rec = _record(E.jia22_cnn(), 16, 5, adaptability)
    path = tmp_path / "work.json"
    path.write_text(json.dumps(rec))
    got = E.energy_from_work(str(path))
    want = E.training_step_energy(E.jia22_cnn(), batch=16, adaptability=adaptability)
    assert math.isclose(got.total_j, 5 * want.total_j, rel_tol=1e-12)
    assert math.isclose(got.baseline_j, 5 * want.baseline_j, rel_tol=1e-12)
    assert math.isclose(got.savings, want.savings, rel_tol=1e-12)
    rec["layers"][0]["mvms"]["forward"]["error"] = {"n": 3, "rel_rmse": 0.1}   # extra keys
    rec["layers"][0]["mvms"]["forward"]["adc_range"] = 0.25
    assert E.energy_from_work(rec).total_j == got.total_j
    lean = E.energy_from_work(rec, baseline="int8-lean")
    assert lean.savings < got.savings


def test_partial_and_mixed_records_report_per_mvm():
    # a record may hold a subset of MVMs and layers with different placements (kept ends)
    rec = {"steps": 2, "batch": 1, "layers": [
        {"name": "a", "shape": [1152, 256], "mvms": {
            "forward": {"placement": "imc", "macs": 589824, "conversions": 8192}}},
        {"name": "b", "shape": [256, 10], "mvms": {
            "forward": {"placement": "digital", "macs": 5120},
            "backward": {"placement": "fp32", "macs": 5120}}}]}
    rep = E.energy_from_work(rec, fallback_baseline="int4")
    assert math.isclose(sum(rep.by_mvm().values()), rep.total_j, rel_tol=1e-12)
    assert rep.by_mvm()["weight_grad"] == 0.0
    assert "mixed" in rep.table().splitlines()[1]                  # forward: imc and digital
    b = rep.breakdown["b"]
    assert b["forward"] == E.digital_energy_j(5120, 2 * 10, E.DigitalBaseline.preset("int4"))
    assert b["backward"] == rep.baseline_breakdown["b"]["backward"]   # fp32 on the baseline


def test_analytic_counts_match_the_simulator():
    from imckit import imc

    g = torch.Generator().manual_seed(0)
    a = torch.randint(-7, 8, (300, 5), generator=g)
    x = torch.randint(8, 16, (3, 300), generator=g)      # every input plane non-empty
    cfg = dataclasses.replace(imc.IMCConfig.ideal(), rows=128)
    y, work = imc.mvm(a, x, cfg, report=True)
    want = E.mvm_work(300, 5, 3, stored_bits=4, cycles=4, rows=128).work
    assert (work.macs, work.conversions, work.cycles, work.write_bits) == (
        want.macs, want.conversions, want.cycles, want.write_bits)
    assert 0 < work.row_drives <= want.row_drives       # analytic: every row, every cycle
    assert torch.equal(y, (x @ a).float())


# ---- sources and validation ----------------------------------------------------------------
def test_every_default_has_a_known_tag_and_source():
    objs = [E.IMCEnergy(), E.CountRules(), E.DigitalBaseline(), E.Horowitz45()]
    rows = [r for o in objs for r in E.sources_table(o)]
    assert len(rows) >= 30
    for r in rows:
        assert r["tag"] in TAGS and r["source"] in SOURCES and r["unit"], r


def test_tags_agree_with_energy_sources():
    # (object, field) -> (tag, source) as ENERGY-SOURCES.md tags the number
    want = {
        (E.IMCEnergy, "rows"): ("S2", "JIA22"), (E.IMCEnergy, "columns"): ("S2", "JIA22"),
        (E.IMCEnergy, "e_conversion_8b_pj"): ("D", "JIA22"),
        (E.IMCEnergy, "array_share"): ("D", "CIMLOOP"),      # a ratio of two [S2] numbers
        (E.IMCEnergy, "e_adc8_pj"): ("S2", "ADCMODEL"), (E.IMCEnergy, "e_adc4_pj"): ("S2", "ADCMODEL"),
        (E.IMCEnergy, "e_write_bit_pj"): ("I", "CACTI"),
        (E.CountRules, "adc_bits"): ("S2", "JIA22"), (E.CountRules, "dac_levels"): ("D", "LEE21"),
        (E.DigitalBaseline, "sram_kb"): ("I", "HOR14"), (E.DigitalBaseline, "reuse"): ("I", "HOR14"),
        **{(E.Horowitz45, f.name): ("S", "HOR14") for f in dataclasses.fields(E.Horowitz45)},
    }
    got = {(type(o), r["field"]): (r["tag"], r["source"])
           for o in (E.IMCEnergy(), E.CountRules(), E.DigitalBaseline(), E.Horowitz45())
           for r in E.sources_table(o)}
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("call, field", [
    (lambda: E.IMCEnergy(e_write_bit_pj=-0.1), "e_write_bit_pj"),
    (lambda: E.IMCEnergy(e_conversion_8b_pj=-1.0), "e_conversion_8b_pj"),
    (lambda: E.Horowitz45(fp_mult32_pj=-3.7), "fp_mult32_pj"),
    (lambda: E.training_step_energy([(64, 10)], preset="paper-7nm"), "preset"),
    (lambda: E.training_step_energy([(64, 10)], adaptability="three-level"), "adaptability"),
    (lambda: E.training_step_energy([(0, 10)]), "n=0"),
    (lambda: E.training_step_energy([(64, 10, 0)]), "positions=0"),
    (lambda: E.training_step_energy([]), "layers"),
    (lambda: E.training_step_energy([(64, 10)], batch=0), "batch"),
    (lambda: E.training_step_energy([(64, 10)], adc_bits=0), "adc_bits"),
    (lambda: E.training_step_energy([(64, 10)], input_mode="analog"), "input_mode"),
    (lambda: E.training_step_energy([(64, 10)], baseline="tpu"), "baseline"),
    (lambda: E.training_step_energy([(64, 10)], adc_bitz=8), "adc_bitz"),
    (lambda: E.DigitalBaseline(precision="fp8"), "precision"),
    (lambda: E.energy_from_work({"steps": 1, "batch": 1}), "layers"),
    (lambda: E.energy_from_work({"steps": 1, "batch": 1, "layers": []}), "layers"),
    (lambda: E.energy_from_work({"steps": 1, "batch": 1, "layers": [
        {"shape": [4, 4], "mvms": {"forward": {"placement": "gpu", "macs": 1}}}]}), "placement"),
    (lambda: E.energy_from_work({"steps": 1, "batch": 1, "layers": [
        {"shape": [4, 4], "mvms": {"forward": {"macs": -5}}}]}), "macs"),
])
def test_bad_inputs_raise_value_error_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field.split("=")[0]) as err:
        call()
    assert field in str(err.value)


def test_resnet20_shapes_match_the_torch_model():
    from imckit import models

    got = E.as_layers(models.resnet20(seed=0), input_shape=(3, 32, 32))
    want = E.resnet20()
    key = lambda ls: [(l.n, l.m, l.positions, l.kernel_area) for l in ls]
    assert key(got) == key(want)
