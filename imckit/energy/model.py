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
from ..mapping import ADAPTABILITY, MVMS, PLACEMENTS, placements
from ..work import Work
from .counts import CountRules, LayerShape, MVMCount, step_work
from .params import BASELINES, DigitalBaseline, IMCEnergy

PJ = 1e-12
_WORK_FIELDS = {f.name for f in dataclasses.fields(Work)}
IMC_COMPONENTS = ("array", "adc", "shift_add", "input", "write", "output")
DIGITAL_COMPONENTS = ("mac", "fetch", "output")


@dataclass(frozen=True)
class EnergyPreset:
    """IMC energies + counting rules + the digital baseline they are compared with.

    ``fallback_baseline`` prices the MVMs the adaptability mode leaves digital (``None``: the
    baseline itself, as in SPEC §2.1's Amdahl argument).
    """

    name: str = "paper-16nm"
    imc: IMCEnergy = field(default_factory=IMCEnergy)
    rules: CountRules = field(default_factory=CountRules)
    baseline: DigitalBaseline = field(default_factory=lambda: BASELINES["fp32"])
    fallback_baseline: DigitalBaseline | None = None
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
        """Override count rules (``adc_bits=6``...), ``baseline``/``fallback_baseline`` (names
        or objects), ``fallback`` or ``imc``."""
        rule_names = {f.name for f in dataclasses.fields(CountRules)}
        own = {"baseline", "fallback_baseline", "fallback", "imc"}
        unknown = set(options) - rule_names - own
        if unknown:
            raise ValueError(f"option {sorted(unknown)[0]!r} is not known: allowed "
                             + ", ".join(sorted(rule_names | own)))
        rules = dataclasses.replace(self.rules, **{k: v for k, v in options.items()
                                                   if k in rule_names})
        mine = {k: v for k, v in options.items() if k in own}
        for key in ("baseline", "fallback_baseline"):
            if isinstance(mine.get(key), str):
                mine[key] = DigitalBaseline.preset(mine[key])
        return dataclasses.replace(self, rules=rules, **mine)


def imc_energy_j(work: Work, outputs: int, imc: IMCEnergy, adc_bits: int) -> dict[str, float]:
    """Component energies (J) of IMC work.

    >>> from imckit.energy.counts import mvm_work
    >>> c = mvm_work(1152, 256, 1, 4, 4, 1152, write=False)
    >>> e = imc_energy_j(c.work, c.outputs, IMCEnergy(), 8)
    >>> round((e["array"] + e["adc"] + e["shift_add"]) / 1e-12, 6)   # 4096 x 1.2 pJ
    4915.2
    """
    check_range("adc_bits", adc_bits, 1, 16, integer=True)
    n = work.conversions
    return {"array": n * imc.e_col_pj * PJ, "adc": n * imc.e_adc_pj(adc_bits) * PJ,
            "shift_add": n * imc.e_shift_add_pj * PJ,
            "input": work.row_drives * imc.e_drive_pj * PJ,
            "write": work.write_bits * imc.e_write_bit_pj * PJ,
            "output": outputs * imc.e_out_pj * PJ}


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
        placements: ``{mvm: placement}`` from :func:`imckit.mapping.placements`.
        work: ``{layer: {mvm: MVMCount}}`` the energies were computed from.
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
                 "placement": "digital" if baseline else self.placements[l][m],
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


def _price(counts: dict, where: dict, p: EnergyPreset):
    """Mapped and baseline breakdowns of ``{layer: {mvm: MVMCount}}`` under ``where``.

    IMC MVMs are priced from their counts, ``digital`` ones on the fallback engine, ``fp32``
    ones (unquantized) on the baseline engine.
    """
    engine = {"digital": p.fallback_baseline or p.baseline, "fp32": p.baseline}
    mapped, base = {}, {}
    for lname, mvms in counts.items():
        mapped[lname], base[lname] = {}, {}
        for m, (w, outs) in mvms.items():
            base[lname][m] = digital_energy_j(w.macs, outs, p.baseline)
            pl = where[lname][m]
            mapped[lname][m] = (imc_energy_j(w, outs, p.imc, p.rules.adc_bits) if pl == "imc"
                                else digital_energy_j(w.macs, outs, engine[pl]))
    return mapped, base


def training_step_energy(layers, batch: int = 64, preset="paper-16nm",
                         adaptability: str = "full", *, input_shape=None,
                         **options) -> EnergyReport:
    """Energy of one training step (three MVMs per layer) and the savings vs the baseline.

    Args:
        layers: (N, M[, positions[, kernel_area]]) tuples, :class:`LayerShape` objects, or a
            torch model (with ``input_shape`` of one sample; convs counted via im2col).
        batch: samples per step.
        preset: a name (``"paper-16nm"``, ``"lean-int8"``) or an :class:`EnergyPreset`.
        adaptability: ``full``, ``two-level``, ``one-level`` or ``none`` (SPEC §2.1).
        **options: overrides, e.g. ``adc_bits=6``, ``input_mode="multi-level"``,
            ``baseline="int8-lean"``, ``grad_planes=5``, ``fallback="backward"``.

    >>> rep = training_step_energy([(1152, 256)], batch=64, adaptability="two-level")
    >>> 2.9 < rep.savings < 3.0
    True
    """
    check_choice("adaptability", adaptability, ADAPTABILITY)
    check_range("batch", batch, 1, None, integer=True)
    p = _resolve(preset, options)
    where1 = placements(adaptability, fallback=p.fallback)
    per_layer = step_work(layers, batch, p.rules, p.imc.rows, input_shape=input_shape)
    counts, names = {}, {}
    for layer, mv in per_layer:
        name = layer.name
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}#{names[name]}"
        counts[name] = mv
    where = {l: where1 for l in counts}
    mapped, base = _price(counts, where, p)
    return EnergyReport(p, adaptability, where, mapped, base, counts)


def _load(record):
    if isinstance(record, (str, os.PathLike)):
        text = str(record)
        if not text.lstrip().startswith("{"):
            with open(record) as fh:
                text = fh.read()
        record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"work={type(record).__name__} is not allowed: a dict, JSON or path")
    for key in ("steps", "batch", "layers"):
        if key not in record:
            raise ValueError(f"work[{key!r}] is missing: a work record needs 'steps', 'batch' "
                             "and 'layers'")
    return record


def energy_from_work(work, preset="paper-16nm", baseline=None, **options) -> EnergyReport:
    """Energy of a finished training run from its recorded work (totals over all steps).

    ``work`` is the training run's record (dict, JSON text or a path)::

        {"steps": 120, "batch": 64, "layers": [{"name": "fc1", "shape": [N, M],
         "positions": 1, "mvms": {"forward": {"placement": "imc", "macs": ...,
         "conversions": ..., "cycles": ..., "row_drives": ..., "write_bits": ...}, ...}}]}

    ``shape`` is ``[N, M]`` as in :func:`training_step_energy` (optional ``kernel_area``);
    digital MVMs need ``macs`` only; other keys (``error``, ``adc_range``...) are ignored. IMC MVMs are priced from their counts; every MVM's MACs
    are also priced on ``baseline`` (default: the preset's) for the savings. Output counts come
    from the shapes. An optional top-level ``adc_bits`` is used unless given in ``options``.

    >>> rec = {"steps": 2, "batch": 1, "layers": [{"name": "fc", "shape": [1152, 256],
    ...        "mvms": {"forward": {"placement": "imc", "macs": 589824, "conversions": 8192}}}]}
    >>> rep = energy_from_work(rec)
    >>> round(rep.breakdown["fc"]["forward"]["adc"] / 1e-12, 2)   # 8192 x 0.13 pJ
    1064.96
    """
    rec = _load(work)
    if baseline is not None:
        options["baseline"] = baseline
    if "adc_bits" in rec and "adc_bits" not in options:
        options["adc_bits"] = rec["adc_bits"]
    p = _resolve(preset, options)
    steps, batch = rec["steps"], rec["batch"]
    check_range("steps", steps, 1, None, integer=True)
    check_range("batch", batch, 1, None, integer=True)
    if not isinstance(rec["layers"], list) or not rec["layers"]:
        raise ValueError(f"work['layers']={rec['layers']!r} is not allowed: a non-empty list")
    counts, where = {}, {}
    for i, lay in enumerate(rec["layers"]):
        name = lay.get("name", f"L{i}")
        if "shape" not in lay or len(lay["shape"]) != 2:
            raise ValueError(f"layers[{i}]['shape']={lay.get('shape')!r} is not allowed: [N, M]")
        shape = LayerShape(*lay["shape"], lay.get("positions", 1), lay.get("kernel_area", 1),
                           name)
        vp = batch * shape.positions
        outs = {"forward": vp * shape.m, "backward": vp * shape.n // shape.kernel_area,
                "weight_grad": shape.n * shape.m}
        counts[name], where[name] = {}, {}
        for m, rec_m in lay.get("mvms", {}).items():
            check_choice(f"layers[{i}].mvms", m, MVMS)
            pl = rec_m.get("placement", "imc")
            check_choice(f"layers[{i}].mvms[{m!r}].placement", pl, PLACEMENTS)
            w = Work.from_dict({k: v for k, v in rec_m.items() if k in _WORK_FIELDS})
            counts[name][m] = MVMCount(w, outs[m] * steps)
            where[name][m] = pl
    mapped, base = _price(counts, where, p)
    return EnergyReport(p, "recorded", where, mapped, base, counts, steps=steps)
