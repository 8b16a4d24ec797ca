"""Energy of a training step, per layer, per MVM and per component (SPEC §4).

IMC MVM: ``conversions * (e_col + e_adc(B) + e_shift_add) + row_drives * e_drive
+ write_bits * e_write + outputs * e_out``. Digital MVM: ``macs * (e_mac + operand fetch)
+ outputs * out_bits * e_sram_bit``. Which MVM is where comes from
:func:`imckit.mapping.placements`, the same call training makes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .._validate import check_choice, check_range
from ..mapping import (ADAPTABILITY, DIGITAL_PLACEMENTS, MVMS, PLACEMENTS, PRECISION_OF,
                       placements)
from ..mapping.arrays import NO_ADC_BITS, CountRules, LayerShape, layer_maps
from ..work import Work, check_schema
from .counts import _hooked, _mvm_modules, as_layers
from .params import BASELINES, DigitalBaseline, IMCEnergy

PJ = 1e-12
_WORK_FIELDS = {f.name for f in dataclasses.fields(Work)}
IMC_COMPONENTS = ("array", "adc", "shift_add", "input", "write", "output")
DIGITAL_COMPONENTS = ("mac", "fetch", "output")


@dataclass(frozen=True)
class EnergyPreset:
    """IMC energies + counting rules + the digital baseline they are compared with.

    An MVM on a digital placement (:data:`imckit.mapping.DIGITAL_PLACEMENTS`: a fallback MVM,
    a kept end layer) is priced on the baseline's memory system at the precision it computes
    (:meth:`engine`), so what is trained is what is priced.
    """

    name: str = "paper-16nm"
    imc: IMCEnergy = field(default_factory=IMCEnergy)
    rules: CountRules = field(default_factory=CountRules)
    baseline: DigitalBaseline = field(default_factory=lambda: BASELINES["fp32"])
    fallback: str = "weight_grad"

    def __post_init__(self):
        check_choice("fallback", self.fallback, MVMS)

    @classmethod
    def preset(cls, name: str) -> "EnergyPreset":
        """``paper-16nm``: IMC calibrated to JIA22 (30 TOPS/W at 8 b) against an FP32 engine
        that reads both 32-bit operands from a 1 MB SRAM for every MAC: the baseline under
        which the abstract's >400x follows from our counts [I]. ``lean-int8``: the same IMC
        against an INT8 engine with 8 KB SRAM and 16x operand reuse [I].

        >>> EnergyPreset.preset("paper-16nm").baseline.name
        'fp32'
        """
        presets = {"paper-16nm": lambda: cls(),
                   "lean-int8": lambda: cls(name="lean-int8", baseline=BASELINES["int8-lean"])}
        if name not in presets:
            raise ValueError(f"preset={name!r} is not allowed: choose one of "
                             + ", ".join(repr(p) for p in presets))
        return presets[name]()

    def with_options(self, **options) -> "EnergyPreset":
        """Override count rules (``adc_bits=6``, ``sign_mode="one-cycle"``...), ``baseline``
        (a name or object), ``fallback`` or ``imc``."""
        rule_names = {f.name for f in dataclasses.fields(CountRules)}
        own = {"baseline", "fallback", "imc"}
        unknown = set(options) - rule_names - own
        if unknown:
            raise ValueError(f"option {sorted(unknown)[0]!r} is not known: allowed "
                             + ", ".join(sorted(rule_names | own)))
        rules = dataclasses.replace(self.rules, **{k: v for k, v in options.items()
                                                   if k in rule_names})
        mine = {k: v for k, v in options.items() if k in own}
        if isinstance(mine.get("baseline"), str):
            mine["baseline"] = DigitalBaseline.preset(mine["baseline"])
        return dataclasses.replace(self, rules=rules, **mine)

    def engine(self, placement: str) -> DigitalBaseline:
        """The digital engine of a placement: the baseline's SRAM and reuse, the placement's
        precision (``digital`` = INT4 x radix-4, priced as INT4).

        >>> EnergyPreset().engine("fp32") == EnergyPreset().baseline
        True
        >>> EnergyPreset().engine("digital").precision
        'int4'
        """
        check_choice("placement", placement, DIGITAL_PLACEMENTS)
        prec = PRECISION_OF[placement]
        if prec == self.baseline.precision:
            return self.baseline
        return dataclasses.replace(self.baseline, name=f"{self.baseline.name}@{prec}",
                                   precision=prec)


def imc_energy_j(work: Work, imc: IMCEnergy, adc_bits: int) -> dict[str, float]:
    """Component energies (J) of IMC work.

    >>> from imckit.energy.counts import mvm_work
    >>> e = imc_energy_j(mvm_work(1152, 256, 1, 4, 4, 1152, write=False), IMCEnergy(), 8)
    >>> round((e["array"] + e["adc"] + e["shift_add"]) / 1e-12, 6)   # 4096 x 1.2 pJ
    4915.2
    """
    check_range("adc_bits", adc_bits, 1, 16, integer=True)
    n = work.conversions
    return {"array": n * imc.e_col_pj * PJ, "adc": n * imc.e_adc_pj(adc_bits) * PJ,
            "shift_add": n * imc.e_shift_add_pj * PJ,
            "input": work.row_drives * imc.e_drive_pj * PJ,
            "write": work.write_bits * imc.e_write_bit_pj * PJ,
            "output": work.outputs * imc.e_out_pj * PJ}


def digital_energy_j(macs: int, outputs: int, base: DigitalBaseline) -> dict[str, float]:
    """Component energies (J) of ``macs`` MACs on a digital engine.

    >>> e = digital_energy_j(1000, 0, DigitalBaseline.preset("int8"))
    >>> round(e["mac"] / 1e-12, 2)   # 1000 x (0.2 + 0.03) pJ x 0.142
    32.66
    """
    return {"mac": macs * base.e_mac_pj * PJ, "fetch": macs * base.e_fetch_per_mac_pj * PJ,
            "output": outputs * base.out_bits * base.e_sram_bit_pj * PJ}


@dataclass(frozen=True)
class EnergyReport:
    """Energy of the mapped run and of the all-digital baseline.

    Attributes:
        breakdown: ``{layer: {mvm: {component: joules}}}`` of the mapped run (IMC components
            for MVMs on IMC, digital ones otherwise).
        baseline_breakdown: the same for every MVM on the baseline engine.
        placements: ``{layer: {mvm: placement}}`` (the one mapping's, or the record's).
        work: ``{layer: {mvm: Work}}`` the energies were computed from (MVMs that never run,
            such as the first layer's input gradient, are absent).
        total_j, baseline_j: sums of the two breakdowns; ``savings = baseline_j / total_j``.
    """

    preset: EnergyPreset
    adaptability: str
    placements: dict
    breakdown: dict
    baseline_breakdown: dict
    work: dict
    steps: int = 1
    total_j: float = field(init=False)
    baseline_j: float = field(init=False)

    def __post_init__(self):
        tot = lambda b: sum(sum(c.values()) for mv in b.values() for c in mv.values())
        object.__setattr__(self, "total_j", tot(self.breakdown))
        object.__setattr__(self, "baseline_j", tot(self.baseline_breakdown))

    @property
    def savings(self) -> float:
        return self.baseline_j / self.total_j

    def by_mvm(self, baseline: bool = False) -> dict[str, float]:
        """Joules per MVM, summed over layers."""
        b = self.baseline_breakdown if baseline else self.breakdown
        return {m: sum(sum(b[l].get(m, {}).values()) for l in b) for m in MVMS}

    def by_component(self) -> dict[str, float]:
        """Joules per component of the mapped run, summed over layers and MVMs."""
        out: dict[str, float] = {}
        for r in self.to_rows():
            out[r["component"]] = out.get(r["component"], 0.0) + r["energy_j"]
        return out

    def to_rows(self, baseline: bool = False) -> list[dict]:
        """Tidy rows ``{layer, mvm, placement, component, energy_j}``."""
        b = self.baseline_breakdown if baseline else self.breakdown
        return [{"layer": l, "mvm": m,
                 "placement": "baseline" if baseline else self.placements[l][m],
                 "component": c, "energy_j": e}
                for l, mv in b.items() for m, comps in mv.items() for c, e in comps.items()]

    def table(self) -> str:
        """A small text table: energy per MVM (mapped vs baseline) and the savings."""
        mine, base = self.by_mvm(), self.by_mvm(baseline=True)
        lines = [f"{'MVM':<12} {'placement':<9} {'mapped uJ':>11} {'baseline uJ':>12}"]
        for m in MVMS:
            # one placement per MVM, or "mixed" when layers differ (e.g. kept-digital ends)
            pl = {w[m] for w in self.placements.values() if m in w}
            place = pl.pop() if len(pl) == 1 else ("mixed" if pl else "-")
            lines.append(f"{m:<12} {place:<9} {mine[m] * 1e6:11.3f} {base[m] * 1e6:12.3f}")
        lines.append(f"{'total':<22} {self.total_j * 1e6:11.3f} {self.baseline_j * 1e6:12.3f}")
        lines.append(f"savings {self.savings:.3g}x ({self.adaptability}, {self.preset.name}, "
                     f"baseline {self.preset.baseline.name})")
        return "\n".join(lines)


def _resolve(preset, options) -> EnergyPreset:
    if isinstance(preset, str):
        preset = EnergyPreset.preset(preset)
    elif not isinstance(preset, EnergyPreset):
        raise ValueError(f"preset={preset!r} is not allowed: a preset name or an EnergyPreset")
    return preset.with_options(**options) if options else preset


def _price(counts: dict, where: dict, p: EnergyPreset, adc_bits: dict):
    """Mapped and baseline breakdowns of ``{layer: {mvm: Work}}`` under ``where``: IMC MVMs
    from their counts, digital placements on :meth:`EnergyPreset.engine`, and every MVM's MACs
    and outputs on the baseline."""
    mapped, base = {}, {}
    for lname, mvms in counts.items():
        mapped[lname], base[lname] = {}, {}
        for m, w in mvms.items():
            base[lname][m] = digital_energy_j(w.macs, w.outputs, p.baseline)
            pl = where[lname][m]
            mapped[lname][m] = (imc_energy_j(w, p.imc, adc_bits[lname]) if pl == "imc"
                                else digital_energy_j(w.macs, w.outputs, p.engine(pl)))
    return mapped, base


def _unique(names):
    seen: dict = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _occupancy(record, n_layers: int | None) -> dict[str, dict]:
    """``{layer name: {mvm: (cycle fraction, drive fraction), "input_grad": ...}}`` of a
    collect_work record (in record order; ``n_layers``: the count it must have, if given)."""
    check_schema(record, "occupancy")
    lays = record.get("layers") or []
    if n_layers is not None and len(lays) != n_layers:
        raise ValueError(f"occupancy has {len(lays)} layers, the model {n_layers}: give the "
                         "record of this model's training")
    out = {}
    for i, lay in enumerate(lays):
        occ = {"input_grad": lay.get("input_grad")}
        for m, d in lay.get("mvms", {}).items():
            dc, dd = d.get("dense_cycles", 0), d.get("dense_drives", 0)
            occ[m] = (d.get("cycles", 0) / dc if dc else 1.0,
                      d.get("row_drives", 0) / dd if dd else 1.0)
            if max(occ[m]) > 1 + 1e-9:            # more than every plane: not this mapping
                raise ValueError(f"occupancy of {lay.get('name')!r} {m} is {max(occ[m]):.3f}, "
                                 "above 1: the record ran more cycles or drives than the mapping "
                                 "allows (a record of another imckit?)")
        out[lay.get("name") or f"L{i}"] = occ
    return out


def training_step_energy(layers, batch: int = 64, preset="paper-16nm",
                         adaptability: str | None = None, *, input_shape=None, occupancy=None,
                         keep_ends: bool = False, ends_placement: str = "fp32",
                         fallback_placement: str = "fp32", **options) -> EnergyReport:
    """Energy of one training step (three MVMs per layer) and the savings vs the baseline.

    The counts come from the one mapping (:mod:`imckit.mapping.arrays`) that the simulator
    executes. Given a model converted by :func:`imckit.nn.convert`, each layer's own
    configuration fixes everything (placements, bits, rows, sign mode, DAC): the model as
    trained is what is priced.

    Args:
        layers: (N, M[, positions[, kernel_area]]) tuples, :class:`LayerShape` objects, or a
            torch model, plain or converted (with ``input_shape`` of one sample).
        batch: samples per step.
        preset: a name (``"paper-16nm"``, ``"lean-int8"``) or an :class:`EnergyPreset`.
        adaptability: ``full`` (default), ``two-level``, ``one-level`` or ``none`` (SPEC §2.1);
            for a converted model, its layers' own (giving another is a ValueError).
        occupancy: a record of :func:`imckit.nn.collect_work` for these layers: the fraction
            of input planes that were non-empty per (layer, MVM) replaces the default (every
            plane non-empty), so one recorded step and this estimate count the same work.
        keep_ends: first and last layers on ``ends_placement`` (``fp32``, ``bf16``, ``int8``,
            ``digital``), priced as what they compute.
        fallback_placement: what an MVM the adaptability mode keeps off IMC computes
            (default ``fp32``, as :class:`imckit.nn.LayerConfig`).
        **options: overrides, e.g. ``adc_bits=6``, ``input_mode="multi-level"``,
            ``sign_mode="one-cycle"``, ``baseline="int8-lean"``, ``grad_planes=5``,
            ``fallback="backward"`` (rules only for shapes and plain models).

    >>> rep = training_step_energy([LayerShape(1152, 256)], batch=64, adaptability="two-level")
    >>> 2.9 < rep.savings < 3.0
    True
    """
    check_range("batch", batch, 1, None, integer=True)
    check_choice("ends_placement", ends_placement, DIGITAL_PLACEMENTS)
    check_choice("fallback_placement", fallback_placement, DIGITAL_PLACEMENTS)
    if adaptability is not None:
        check_choice("adaptability", adaptability, ADAPTABILITY)
    if not isinstance(keep_ends, bool):
        raise ValueError(f"keep_ends={keep_ends!r} is not allowed: True or False")
    imc_mods = _imc_modules(layers)
    if imc_mods:
        fixed = {"keep_ends": (keep_ends, False), "ends_placement": (ends_placement, "fp32"),
                 "fallback_placement": (fallback_placement, "fp32")}
        for k, (v, default) in fixed.items():
            if v != default:
                raise ValueError(f"{k}={v!r} is not allowed with a converted model: its layers' "
                                 "configurations fix it (set it in imckit.nn.convert)")
        rule_opts = set(options) & {f.name for f in dataclasses.fields(CountRules)}
        if rule_opts:
            raise ValueError(f"option {sorted(rule_opts)[0]!r} is not allowed with a converted "
                             "model: its layers' configurations fix the mapping")
        modes = {m.cfg.adaptability for m in imc_mods}
        if adaptability is not None and modes != {adaptability}:
            raise ValueError(f"adaptability={adaptability!r} is not allowed: the converted "
                             f"model's layers use {sorted(modes)}")
        adaptability = modes.pop() if len(modes) == 1 else "mixed"
    adaptability = adaptability or "full"
    p = _resolve(preset, options)
    if imc_mods:                                  # per call: a tied module runs twice
        if input_shape is None:
            raise ValueError("input_shape=None is not allowed with a torch model: give the "
                             "shape of one sample, e.g. (3, 32, 32)")
        shapes, imc_mods = map(list, zip(*_hooked(layers, input_shape)))
    else:
        shapes = as_layers(layers, input_shape)
    names = _unique([l.name for l in shapes])
    occ = None
    if occupancy is not None:
        if imc_mods:                              # the record has one entry per module
            by_name = _occupancy(occupancy, None)
            missing = [m.layer_name for m in imc_mods if m.layer_name not in by_name]
            if missing:
                raise ValueError(f"occupancy has no layer {missing[0]!r}: give the record of "
                                 "this model's training")
            occ = [by_name[m.layer_name] for m in imc_mods]
        else:
            occ = list(_occupancy(occupancy, len(shapes)).values())
    counts, where, bits = {}, {}, {}
    seen: set = set()
    for i, (shape, name) in enumerate(zip(shapes, names)):
        if occ and occ[i]["input_grad"] is not None:     # the record knows what ran
            shape = dataclasses.replace(shape, input_grad=bool(occ[i]["input_grad"]))
        if imc_mods:
            mod = imc_mods[i]
            rules, ic = CountRules.from_layer(mod.cfg), mod.cfg.imc_config()
            rows, cols, pl = ic.rows, ic.columns, dict(mod.mvm_placements)
        else:
            rules, rows, cols = p.rules, p.imc.rows, p.imc.columns
            ends = keep_ends and i in (0, len(shapes) - 1)
            pl = placements(adaptability, fallback=p.fallback,
                            base=ends_placement if ends else "imc",
                            fallback_placement=fallback_placement)
        counts[name], where[name], bits[name] = {}, {}, rules.adc_bits
        for m, mp in layer_maps(shape, batch, rules).items():
            if not mp.needed:
                continue
            if pl[m] == "imc":
                o = occ[i].get(m, (1.0, 1.0)) if occ else (1.0, 1.0)
                w = mp.work(rules, rows, cols, o)
                if m != "weight_grad" and imc_mods and imc_mods[i] in seen:
                    w = dataclasses.replace(w, write_bits=0)   # weights written once per step
                counts[name][m] = w
            else:
                counts[name][m] = Work(macs=mp.macs, outputs=mp.outputs)
            where[name][m] = pl[m]
        if imc_mods:
            seen.add(imc_mods[i])
    mapped, base = _price(counts, where, p, bits)
    return EnergyReport(p, adaptability, where, mapped, base, counts)


def _imc_modules(layers) -> list:
    """The IMC layers of a converted model, in the order the shape hooks find them."""
    if not hasattr(layers, "named_modules"):
        return []
    from ..nn.layers import IMCModule

    mods = [m for _, m in layers.named_modules() if isinstance(m, IMCModule)]
    if mods and len(mods) != len(_mvm_modules(layers)):
        raise ValueError("layers is a partly converted model: convert every Linear/Conv2d "
                         "(imckit.nn.convert) or none")
    return mods


def _load(record):
    if isinstance(record, (str, os.PathLike)):
        text = str(record)
        if not text.lstrip().startswith("{"):
            with open(record) as fh:
                text = fh.read()
        record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"work={type(record).__name__} is not allowed: a dict, JSON or path")
    check_schema(record)
    for key in ("steps", "batch", "layers"):
        if key not in record:
            raise ValueError(f"work[{key!r}] is missing: a work record needs 'steps', 'batch' "
                             "and 'layers'")
    return record


def energy_from_work(work, preset="paper-16nm", baseline=None, **options) -> EnergyReport:
    """Energy of a finished training run from its recorded work (totals over all steps).

    ``work`` is the record of :func:`imckit.nn.collect_work` (dict, JSON text or a path; schema
    :data:`imckit.work.WORK_SCHEMA`). IMC MVMs are priced from their recorded counts
    (conversions at each layer's recorded ``adc_bits``), digital placements on the engine of
    their precision, and every MVM's recorded MACs and outputs on ``baseline`` (default: the
    preset's) for the savings.

    >>> rec = {"schema": "imckit.work/2", "steps": 2, "batch": 1, "layers": [{"name": "fc",
    ...        "adc_bits": 8, "mvms": {"forward": {"placement": "imc", "macs": 589824,
    ...        "conversions": 8192, "outputs": 512}}}]}
    >>> rep = energy_from_work(rec)
    >>> round(rep.breakdown["fc"]["forward"]["adc"] / 1e-12, 2)   # 8192 x 0.13 pJ
    1064.96
    """
    rec = _load(work)
    if baseline is not None:
        options["baseline"] = baseline
    p = _resolve(preset, options)
    steps, batch = rec["steps"], rec["batch"]
    check_range("steps", steps, 1, None, integer=True)
    check_range("batch", batch, 1, None, integer=True)
    if not isinstance(rec["layers"], list) or not rec["layers"]:
        raise ValueError(f"work['layers']={rec['layers']!r} is not allowed: a non-empty list")
    names = _unique([lay.get("name") or f"L{i}" for i, lay in enumerate(rec["layers"])])
    counts, where, bits = {}, {}, {}
    for i, (lay, name) in enumerate(zip(rec["layers"], names)):
        counts[name], where[name] = {}, {}
        # no ADC (adc_bits None, an analysis mode): NO_ADC_BITS, as CountRules.from_layer
        bits[name] = lay.get("adc_bits", p.rules.adc_bits) or NO_ADC_BITS
        for m, rec_m in lay.get("mvms", {}).items():
            check_choice(f"layers[{i}].mvms", m, MVMS)
            pl = rec_m.get("placement", "imc")
            check_choice(f"layers[{i}].mvms[{m!r}].placement", pl, PLACEMENTS)
            w = Work.from_dict({k: v for k, v in rec_m.items() if k in _WORK_FIELDS})
            if w.macs == 0:
                continue                              # never ran (first layer's input gradient)
            counts[name][m], where[name][m] = w, pl
    if not any(counts.values()):
        raise ValueError("work has no MVM with MACs: nothing was recorded (train in "
                         "training mode between reset_work and collect_work)")
    mapped, base = _price(counts, where, p, bits)
    return EnergyReport(p, "recorded", where, mapped, base, counts, steps=steps)
