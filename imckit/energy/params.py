"""Per-event energies, each default with its source (SPEC §4, ``ENERGY-SOURCES.md``).

Every default number below is a dataclass field whose ``metadata`` carries its unit, a tag and a
source key (:mod:`imckit.sources`): ``S`` stated by the source, ``S2`` read from a public model that
encodes the source, ``D`` arithmetic on sourced numbers, ``I`` an assumption of ours.
:func:`sources_table` turns any of these objects into rows the book prints as
"where every number comes from".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._validate import check_range

#: SB17 energy factor from 45 nm at 0.9 V to 16 nm at 0.8 V [D] (ENERGY-SOURCES.md).
SB17_45_TO_16 = 0.142

#: Relative switched capacitance per operation by node (45 nm = 1), from the SB17 factor above
#: with the voltage part (0.8/0.9)^2 taken out [D]. Only the two nodes we use are listed.
NODE_CAP = {45: 1.0, 16: SB17_45_TO_16 / (0.8 / 0.9) ** 2}


def src(default, unit: str, tag: str, source: str, note: str = ""):
    """A dataclass field whose metadata says where its default comes from."""
    return field(default=default, metadata={"unit": unit, "tag": tag, "source": source,
                                            "note": note})


def scale_energy(e_pj: float, from_nm: int = 45, from_v: float = 0.9, to_nm: int = 16,
                 to_v: float = 0.8) -> float:
    """Scale an energy between technology nodes and supplies (SB17; CV^2 in the voltage).

    ``e * cap(to_nm)/cap(from_nm) * (to_v/from_v)**2``, with the capacitance factors of
    :data:`NODE_CAP`. From 45 nm, 0.9 V to 16 nm, 0.8 V this is SB17's factor 0.142.

    >>> round(scale_energy(1.0), 3)
    0.142
    >>> round(scale_energy(1.0, 16, 0.9, 16, 0.8), 4)   # voltage only: (0.8/0.9)^2
    0.7901
    """
    check_range("e_pj", e_pj, 0, None)
    for name, nm in (("from_nm", from_nm), ("to_nm", to_nm)):
        if nm not in NODE_CAP:
            raise ValueError(f"{name}={nm!r} is not allowed: choose one of {sorted(NODE_CAP)}")
    check_range("from_v", from_v, 0, None, lo_open=True)
    check_range("to_v", to_v, 0, None, lo_open=True)
    return e_pj * NODE_CAP[to_nm] / NODE_CAP[from_nm] * (to_v / from_v) ** 2


def _check_fields(obj, skip=()) -> None:
    """Every float/int field must be a number >= 0 (energies, sizes, counts)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name in skip or isinstance(v, str):
            continue
        check_range(f.name, v, 0, None)


@dataclass(frozen=True)
class Horowitz45:
    """The 45 nm, 0.9 V energy table of [HOR14] (all [S]), in pJ per operation."""

    int_add8_pj: float = src(0.03, "pJ", "S", "HOR14", "8-bit integer add")
    int_add32_pj: float = src(0.1, "pJ", "S", "HOR14", "32-bit integer add")
    int_mult8_pj: float = src(0.2, "pJ", "S", "HOR14", "8-bit integer multiply")
    int_mult32_pj: float = src(3.1, "pJ", "S", "HOR14", "32-bit integer multiply")
    fp_add16_pj: float = src(0.4, "pJ", "S", "HOR14", "fp16 add")
    fp_add32_pj: float = src(0.9, "pJ", "S", "HOR14", "fp32 add")
    fp_mult16_pj: float = src(1.1, "pJ", "S", "HOR14", "fp16 multiply")
    fp_mult32_pj: float = src(3.7, "pJ", "S", "HOR14", "fp32 multiply")
    sram8k_64b_pj: float = src(10.0, "pJ per 64-bit read", "S", "HOR14", "8 KB SRAM")
    sram32k_64b_pj: float = src(20.0, "pJ per 64-bit read", "S", "HOR14", "32 KB SRAM")
    sram1m_64b_pj: float = src(100.0, "pJ per 64-bit read", "S", "HOR14", "1 MB SRAM")

    def __post_init__(self):
        _check_fields(self)

    def mac_pj(self, precision: str) -> float:
        """Energy of one MAC (multiply + add) at 45 nm, 0.9 V.

        ``int4`` (also used for radix-4 x INT4, a shift) is our assumption [I]: multiplier
        energy ~ bits^2, so a quarter of the 8-bit multiply, plus the 8-bit add.

        >>> round(Horowitz45().mac_pj("fp32"), 6)
        4.6
        """
        table = {
            "fp32": self.fp_mult32_pj + self.fp_add32_pj,
            "fp16": self.fp_mult16_pj + self.fp_add16_pj,
            "bf16": self.fp_mult16_pj + self.fp_add16_pj,   # [I] no bf16 entry in HOR14
            "int8": self.int_mult8_pj + self.int_add8_pj,
            "int4": self.int_mult8_pj / 4 + self.int_add8_pj,
        }
        if precision not in table:
            raise ValueError(f"precision={precision!r} is not allowed: choose one of "
                             + ", ".join(repr(k) for k in table))
        return table[precision]

    def sram_bit_pj(self, sram_kb: float) -> float:
        """Read energy per bit at 45 nm: the HOR14 point at or above ``sram_kb`` (8/32/1024 KB)."""
        check_range("sram_kb", sram_kb, 0, 1024, lo_open=True)
        for kb, e in ((8, self.sram8k_64b_pj), (32, self.sram32k_64b_pj),
                      (1024, self.sram1m_64b_pj)):
            if sram_kb <= kb:
                return e / 64


def adc_energy_pj(bits, e4_pj: float = 0.07, e8_pj: float = 0.13, corner_bits: float = 9.0):
    """Energy of one ADC conversion vs resolution: floor + Walden (2^B) + thermal (4^B) terms.

    The functional form follows the survey envelope that [ADCMODEL] builds on: a resolution-
    independent floor (SAR logic, references), a term doubling per bit (Walden figure of merit)
    and a term quadrupling per bit (thermal-noise limit, Schreier figure of merit), which takes
    over above ``corner_bits``. The three coefficients are fixed by ADCMODEL's 16 nm values at
    4 and 8 bits [S2]/[D] and the corner [I]. ``bits`` may be a float, int or numpy array.

    It does not depend on the ADC's reference range (``IMCConfig.adc_range``): the survey
    envelope is per conversion at a given resolution, and the part that does scale with the
    reference (the capacitive DAC's switching, ~C V_ref^2) only shrinks at a smaller range, so
    a range-independent price is an upper bound [I]. The energy model therefore needs no
    ranges from the work record.

    >>> round(adc_energy_pj(8), 6), round(adc_energy_pj(4), 6)
    (0.13, 0.07)
    >>> adc_energy_pj(12) / adc_energy_pj(10) > adc_energy_pj(8) / adc_energy_pj(6)
    True
    """
    # e(B) = a + b 2^B + c 4^B with c 4^corner = b 2^corner, e(4) = e4, e(8) = e8.
    r = 2.0 ** -corner_bits
    b = (e8_pj - e4_pj) / ((2 ** 8 - 2 ** 4) + r * (4 ** 8 - 4 ** 4))
    c = b * r
    a = e4_pj - b * 2 ** 4 - c * 4 ** 4
    return a + b * 2.0 ** bits + c * 4.0 ** bits


@dataclass(frozen=True)
class IMCEnergy:
    """Per-event energies of the charge-domain IMC core at 16 nm, 0.8 V (SPEC §4).

    One column conversion (a 1152-row binary dot product, its ADC conversion and the BPBS
    shift-add step) costs ``e_conversion_8b_pj`` at 8 bits [JIA22]. We split it into array, ADC
    and digital parts: the ADC part from :func:`adc_energy_pj`, the rest in JIA20's ratio of
    array (9.7) to near-memory digital (8.3 pJ per column op) [S2 CIMLOOP].

    >>> p = IMCEnergy()
    >>> round(p.e_col_pj + p.e_adc_pj(8) + p.e_shift_add_pj, 12)
    1.2
    """

    rows: int = src(1152, "rows", "S2", "JIA22", "rows per core array (3x3x128)")
    columns: int = src(256, "columns", "S2", "JIA22", "physical columns (ADCs) per core")
    e_conversion_8b_pj: float = src(
        1.2, "pJ per column conversion", "D", "JIA22",
        "66.7 fJ per 8-b MAC (30 TOPS/W) x 1152 / 64 conversions")
    array_share: float = src(
        9.7 / (9.7 + 8.3), "fraction", "D", "CIMLOOP",
        "array : near-memory digital = 9.7 : 8.3 pJ [S2] (JIA20 Table I, 65 nm) of the non-ADC "
        "part; that 16 nm splits the same way is our assumption [I]")
    e_adc4_pj: float = src(0.07, "pJ per conversion", "S2", "ADCMODEL", "4-bit SAR at 16 nm")
    e_adc8_pj: float = src(0.13, "pJ per conversion", "S2", "ADCMODEL", "8-bit SAR at 16 nm")
    adc_corner_bits: float = src(9.0, "bits", "I", "ADCMODEL",
                                 "resolution above which thermal noise (4^B) dominates")
    e_drive_pj: float = src(
        round(scale_energy(20.0 / 64), 4), "pJ per row drive", "D", "HOR14",
        "input bit fetched from a 32 KB buffer (HOR14 x SB17 0.142); driver inside the 1.2 pJ")
    e_write_bit_pj: float = src(
        0.05, "pJ per bit", "I", "CACTI",
        "SRAM bit write: 0.26 pJ (45 nm, CACTI) x 0.142 = 0.037; 0.04-0.06 at 16 nm [I]")
    e_out_pj: float = src(
        round(16 * scale_energy(20.0 / 64), 4), "pJ per output value", "D", "HOR14",
        "16-bit result written to a 32 KB buffer [I width] (HOR14 x SB17)")

    def __post_init__(self):
        _check_fields(self)
        check_range("rows", self.rows, 1, None, integer=True)
        check_range("columns", self.columns, 1, None, integer=True)
        check_range("array_share", self.array_share, 0, 1)
        if self.e_adc8_pj < self.e_adc4_pj:
            raise ValueError(f"e_adc8_pj={self.e_adc8_pj!r} is out of range: allowed "
                             f">= e_adc4_pj={self.e_adc4_pj!r}")
        if self.e_conversion_8b_pj < self.e_adc8_pj:
            raise ValueError(f"e_conversion_8b_pj={self.e_conversion_8b_pj!r} is out of range:"
                             f" allowed >= e_adc8_pj={self.e_adc8_pj!r}")

    def e_adc_pj(self, bits) -> float:
        """ADC energy per conversion at ``bits`` (see :func:`adc_energy_pj`)."""
        return adc_energy_pj(bits, self.e_adc4_pj, self.e_adc8_pj, self.adc_corner_bits)

    @property
    def e_col_pj(self) -> float:
        """Array part of a column conversion (binary dot product on the capacitors) [D]."""
        return (self.e_conversion_8b_pj - self.e_adc8_pj) * self.array_share

    @property
    def e_shift_add_pj(self) -> float:
        """Near-memory digital part (BPBS shift-add) of a column conversion [D]."""
        return (self.e_conversion_8b_pj - self.e_adc8_pj) * (1 - self.array_share)


PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
_OPERAND_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}
_OUT_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 16, "int4": 16}   # [I] result widths


@dataclass(frozen=True)
class DigitalBaseline:
    """A digital MVM engine at 16 nm, 0.8 V: MAC energy + SRAM operand fetches + output writes.

    Per MVM: ``macs * (e_mac + 2/reuse * operand_bits * e_sram_bit) + n_out * out_bits *
    e_sram_bit``. ``reuse`` = MACs served by one operand read from SRAM (1: both operands
    fetched for every MAC; 16: e.g. a systolic array reusing each fetched word 16 times) [I].

    >>> b = DigitalBaseline.preset("fp32")
    >>> round(b.e_mac_pj, 3), round(b.e_per_mac_pj, 2)
    (0.653, 14.85)
    """

    name: str = "fp32"
    precision: str = src("fp32", "-", "I", "HOR14", "arithmetic of the MAC")
    sram_kb: float = src(1024.0, "KB", "I", "HOR14", "SRAM the operands are read from")
    reuse: float = src(1.0, "MACs per operand read", "I", "HOR14",
                       "1 = every MAC reads both operands from SRAM")
    hor14: Horowitz45 = field(default_factory=Horowitz45)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not allowed: choose one of "
                             + ", ".join(repr(p) for p in PRECISIONS))
        check_range("sram_kb", self.sram_kb, 0, 1024, lo_open=True)
        check_range("reuse", self.reuse, 1, None)

    @property
    def e_mac_pj(self) -> float:
        """MAC energy at 16 nm, 0.8 V: HOR14 scaled by SB17 [D]."""
        return scale_energy(self.hor14.mac_pj(self.precision))

    @property
    def e_sram_bit_pj(self) -> float:
        """SRAM read energy per bit at 16 nm, 0.8 V: HOR14 scaled by SB17 [D]."""
        return scale_energy(self.hor14.sram_bit_pj(self.sram_kb))

    @property
    def operand_bits(self) -> int:
        return _OPERAND_BITS[self.precision]

    @property
    def out_bits(self) -> int:
        return _OUT_BITS[self.precision]

    @property
    def e_fetch_per_mac_pj(self) -> float:
        """Operand fetch energy per MAC: two operands, each read once per ``reuse`` MACs."""
        return 2.0 / self.reuse * self.operand_bits * self.e_sram_bit_pj

    @property
    def e_per_mac_pj(self) -> float:
        return self.e_mac_pj + self.e_fetch_per_mac_pj

    @classmethod
    def preset(cls, name: str, **changes) -> "DigitalBaseline":
        """A named baseline (:data:`BASELINES`), optionally with fields changed."""
        if name not in BASELINES:
            raise ValueError(f"baseline={name!r} is not allowed: choose one of "
                             + ", ".join(repr(k) for k in BASELINES))
        return dataclasses.replace(BASELINES[name], **changes)


#: Named digital baselines: precision, SRAM size and reuse are all our choices [I] over HOR14.
BASELINES: dict[str, DigitalBaseline] = {
    # The baseline under which the abstract's numbers follow with our IMC counts (SPEC §4).
    "fp32": DigitalBaseline("fp32", "fp32", 1024.0, 1.0),
    "fp32-32KB": DigitalBaseline("fp32-32KB", "fp32", 32.0, 1.0),
    "fp16": DigitalBaseline("fp16", "fp16", 32.0, 1.0),
    "bf16": DigitalBaseline("bf16", "bf16", 32.0, 1.0),
    "int8": DigitalBaseline("int8", "int8", 32.0, 1.0),
    # A lean INT8 accelerator: small SRAM, each fetched word reused 16 times.
    "int8-lean": DigitalBaseline("int8-lean", "int8", 8.0, 16.0),
    "int4": DigitalBaseline("int4", "int4", 8.0, 16.0),
}


def sources_table(obj) -> list[dict]:
    """Rows ``{field, value, unit, tag, source, note}`` for every sourced field of ``obj``.

    >>> rows = sources_table(IMCEnergy())
    >>> rows[0]["field"], rows[0]["value"], rows[0]["tag"], rows[0]["source"]
    ('rows', 1152, 'S2', 'JIA22')
    """
    rows = []
    for f in dataclasses.fields(obj):
        if "tag" in f.metadata:
            rows.append({"field": f.name, "value": getattr(obj, f.name), **f.metadata})
    return rows
