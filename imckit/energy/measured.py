"""Measured energy efficiencies of digital DNN chips, beside the bottom-up baselines.

:data:`imckit.energy.BASELINES` are *models*: Horowitz's 45 nm table scaled to 16 nm plus an SRAM
and reuse we choose [I]. The points below are *measurements* published for real chips, kept
apart from the model (nothing in :mod:`imckit.energy` prices a step with them). Each carries the
stated number and unit, node, supply voltage where the source gives it, precision, whether it is
training or inference, what one "op" is where the source says so, the source key
(:mod:`imckit.sources`), the address its excerpt was read at, the excerpt verbatim, and what is
*not* confirmed by a source.

Converting to energy per MAC needs the number of ops per MAC. The usual convention counts a
multiply-accumulate as 2 ops (or 2 FLOPs for a fused multiply-add); where no source confirms it
for a chip, :attr:`MeasuredPoint.ops_per_mac` is ``None`` and :meth:`MeasuredPoint.pj_per_mac`
needs the assumption passed explicitly.

>>> from imckit.energy import MEASURED
>>> p = MEASURED["simba-16nm-int8"]
>>> p.pj_per_op, p.ops_per_mac is None
(0.11, True)
>>> round(p.pj_per_mac(ops_per_mac=2), 2), round(p.pj_per_mac(ops_per_mac=1), 2)
(0.22, 0.11)
"""
from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_choice, check_range

UNITS = ("pJ/op", "TOPS/W", "TFLOPS/W")
"""Units a point may be stated in (1 TOPS/W = 1 op per pJ)."""


@dataclass(frozen=True)
class MeasuredPoint:
    """One published, measured energy efficiency of a digital chip.

    Attributes:
        chip: what was measured.
        value: the number as the source states it, in ``unit``.
        unit: one of :data:`UNITS`.
        node_nm: technology node (nm).
        voltage_v: supply voltage of this point (V), ``None`` where no source gives it.
        precision: arithmetic of the point (``int8``, ``fp16``, ``hfp8``, ``int4``).
        workload: ``inference`` or ``training`` (what the chip was built and measured for).
        level: ``chip`` (one die) or ``package`` (several dies).
        op: what one op is, as far as the source says.
        ops_per_mac: ops per multiply-accumulate where a source confirms it, else ``None``.
        peak: True when the source calls the number a peak efficiency.
        source: key in :data:`imckit.sources.SOURCES`.
        address: where the excerpt was read.
        excerpt: the source's words, verbatim.
        not_confirmed: what no source we found confirms.
    """

    chip: str
    value: float
    unit: str
    node_nm: int
    voltage_v: float | None
    precision: str
    workload: str
    level: str
    op: str
    ops_per_mac: float | None
    peak: bool
    source: str
    address: str
    excerpt: str
    not_confirmed: str = ""

    def __post_init__(self):
        check_choice("unit", self.unit, UNITS)
        check_range("value", self.value, 0, None, lo_open=True)
        check_range("node_nm", self.node_nm, 1, None, integer=True)
        check_choice("workload", self.workload, ("inference", "training"))
        check_choice("level", self.level, ("chip", "package"))
        if self.voltage_v is not None:
            check_range("voltage_v", self.voltage_v, 0, None, lo_open=True)
        if self.ops_per_mac is not None:
            check_range("ops_per_mac", self.ops_per_mac, 0, None, lo_open=True)

    @property
    def pj_per_op(self) -> float:
        """Energy per op (or FLOP) in pJ: the stated pJ/op, or 1 / (TOPS/W)."""
        return self.value if self.unit == "pJ/op" else 1.0 / self.value

    def pj_per_mac(self, ops_per_mac: float | None = None) -> float:
        """Energy per multiply-accumulate (pJ) with ``ops_per_mac`` ops per MAC.

        Uses the confirmed :attr:`ops_per_mac` if the source gives one; otherwise the caller
        must pass the assumption (e.g. 2, the usual convention, or 1).
        """
        n = ops_per_mac if ops_per_mac is not None else self.ops_per_mac
        if n is None:
            raise ValueError(f"ops_per_mac=None is not allowed for {self.chip!r}: no source "
                             "confirms what one op is; pass the assumption (e.g. 2 or 1)")
        check_range("ops_per_mac", n, 0, None, lo_open=True)
        return self.pj_per_op * n


_SIMBA_ADDR = ("https://research.nvidia.com/publication/2020-01_032-128-tops-scalable-multi-"
               "chip-module-based-deep-neural-network-inference")

#: Measured reference points, by a short name. Values are exactly as the sources state them.
MEASURED: dict[str, MeasuredPoint] = {
    "simba-16nm-int8": MeasuredPoint(
        chip="NVIDIA RC18 / Simba, one chip", value=0.11, unit="pJ/op", node_nm=16,
        voltage_v=None, precision="int8", workload="inference", level="chip",
        op="not defined in the abstract", ops_per_mac=None, peak=False, source="SIMBA20",
        address=_SIMBA_ADDR,
        excerpt="The 16-nm prototype achieves 1.29-TOPS/mm^2 area efficiency, 0.11 pJ/op "
                "(9.5 TOPS/W) energy efficiency, 4.01-TOPS peak performance for a one-chip "
                "system",
        not_confirmed="the supply voltage of the 0.11 pJ/op point, and whether an op is a MAC "
                      "or half a MAC (2 ops per MAC would give 0.22 pJ/MAC); INT8 precision is "
                      "from the Hot Chips 2019 abstract (\"4 TOPS (8b int) peak performance on "
                      "1 chip\")"),
    "simba-16nm-package": MeasuredPoint(
        chip="NVIDIA Simba, 36-chiplet package", value=6.1, unit="TOPS/W", node_nm=16,
        voltage_v=None, precision="int8", workload="inference", level="package",
        op="not defined in the abstract", ops_per_mac=None, peak=False, source="SHAO19",
        address="https://research.nvidia.com/index.php/publication/2019-10_simba-scaling-deep-"
                "learning-inference-multi-chip-module-based-architecture",
        excerpt="Each chiplet achieves 4 TOPS peak performance, and the 36-chiplet MCM package "
                "achieves up to 128 TOPS and up to 6.1 TOPS/W.",
        not_confirmed="voltage; ops per MAC; INT8 is the one-chip papers' precision, assumed for "
                      "the package; includes the chiplets' communication"),
    "ibm-14nm-fp16": MeasuredPoint(
        chip="IBM 14 nm AI core (training and inference)", value=1.4, unit="TFLOPS/W",
        node_nm=14, voltage_v=0.54, precision="fp16", workload="training", level="chip",
        op="FLOP (fp16)", ops_per_mac=None, peak=False, source="OH20",
        address="https://doi.org/10.1109/VLSICircuits18222.2020.9162917",
        excerpt="The 14nm AI core achieves fp16 peak performance of 3.0 TFLOPS at 0.62V and "
                "1.4 TFLOPS/W at 0.54V.",
        not_confirmed="whether a fused multiply-add counts as 2 FLOPs"),
    "ibm-7nm-hfp8": MeasuredPoint(
        chip="IBM 7 nm four-core AI chip", value=3.58, unit="TFLOPS/W", node_nm=7,
        voltage_v=None, precision="hfp8", workload="training", level="chip",
        op="FLOP (hybrid FP8)", ops_per_mac=None, peak=True, source="LEE22",
        address="https://doi.org/10.1109/JSSC.2021.3120113",
        excerpt="The AI chip demonstrates 3.58-TFLOPS/W peak energy efficiency and 26.2-TFLOPS "
                "peak performance for HFP8 iso-accuracy training",
        not_confirmed="voltage of this point; whether a fused multiply-add counts as 2 FLOPs"),
    "ibm-7nm-int4": MeasuredPoint(
        chip="IBM 7 nm four-core AI chip", value=16.9, unit="TOPS/W", node_nm=7,
        voltage_v=None, precision="int4", workload="inference", level="chip",
        op="not defined in the abstract", ops_per_mac=None, peak=True, source="LEE22",
        address="https://doi.org/10.1109/JSSC.2021.3120113",
        excerpt="and 16.9-TOPS/W peak energy efficiency and 104.9-TOPS peak performance for "
                "INT4 iso-accuracy inference.",
        not_confirmed="voltage of this point; ops per MAC"),
}


def measured_table(ops_per_mac: float = 2.0) -> list[dict]:
    """Rows for the book: each point with pJ/op and pJ/MAC at ``ops_per_mac`` where the
    source leaves it open (``assumed`` says so).

    >>> rows = measured_table()
    >>> rows[0]["name"], rows[0]["pJ/MAC"], rows[0]["ops/MAC"]
    ('simba-16nm-int8', 0.22, '2 (assumed)')
    """
    rows = []
    for name, p in MEASURED.items():
        n = p.ops_per_mac if p.ops_per_mac is not None else ops_per_mac
        rows.append({"name": name, "chip": p.chip, "stated": f"{p.value:g} {p.unit}",
                     "node nm": p.node_nm,
                     "V": "not given" if p.voltage_v is None else f"{p.voltage_v:g}",
                     "precision": p.precision, "workload": p.workload, "level": p.level,
                     "pJ/op": round(p.pj_per_op, 4), "pJ/MAC": round(p.pj_per_mac(n), 4),
                     "ops/MAC": f"{n:g}" + ("" if p.ops_per_mac is not None else " (assumed)"),
                     "source": p.source, "not confirmed": p.not_confirmed})
    return rows


__all__ = ["MEASURED", "MeasuredPoint", "UNITS", "measured_table"]
