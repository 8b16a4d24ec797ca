"""The configuration of one charge-domain IMC array and its converters (SPEC §3).

Every default cites its source key and a tag: S stated by the source, S2 read from a public model
of it, D derived by arithmetic, I an assumption of ours (ENERGY-SOURCES.md).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .._validate import check_choice, check_range
from ..mapping.arrays import SIGN_MODES

BOLTZMANN = 1.380649e-23
"""Boltzmann constant k in J/K (SI exact)."""

ADC_RANGE_MIN = 2.0 ** -32
"""Smallest ``adc_range``: one count of a ``2**32``-row column; a smaller range overflows the
ADC gain (float32) and gave NaN."""


@dataclass(frozen=True)
class IMCConfig:
    """One charge-domain IMC array and its converters. Defaults are the 16 nm preset [JIA22].

    Tags after each source key: S stated, D derived, I our assumption (ENERGY-SOURCES.md).
    """

    rows: int = 1152
    """Rows (capacitors) per column of one array; a longer reduction is row-tiled. 1152 [JIA22, S2]."""
    columns: int = 256
    """Physical columns (each with its own ADC) per array. 256 [JIA22, S2]."""
    adc_bits: int | None = 8
    """ADC resolution in bits, 1..16 (8-bit SAR [JIA22, S2]); ``None`` = no quantization at all
    (an infinitely fine converter, for analysis only)."""
    adc_range: float = 1.0
    """Top of the ADC input range as a fraction of full column swing, in [2**-32, 1] (below, the
    range is under one count of any array with fewer than 2**32 rows). 1.0 [I]."""
    adc_calibration: str = "fixed"
    """``"fixed"``: use ``adc_range``; ``"percentile"``: recalibrate per call to the power of two
    covering ``adc_percentile`` % of this call's column values (a programmable reference) [I]."""
    adc_percentile: float = 99.9
    """Percentile used by ``adc_calibration="percentile"``, in (0, 100]. 99.9 [I]."""
    adc_noise_uv: float = 100.0
    """Input-referred noise of the ADC's comparator in microvolts rms, fresh per conversion, in
    volts at the column (so it does NOT shrink with the ADC range), 0..1e6. 100 uV [I]: a
    low-power dynamic comparator sized for ~1/30 LSB at a full-swing 8-bit range; JIA22 gives
    no number we can cite."""
    adc_lsb_min_uv: float = 250.0
    """Smallest ADC step (LSB) in microvolts that the programmable reference may reach, 0..1e6:
    range calibration never picks a range whose LSB is finer (:meth:`adc_range_floor`). 250 uV
    [I]: about twice the column's total noise at the 16 nm preset (kT/C of two samplings, 85 uV,
    and the comparator's 100 uV): a finer step would digitize mostly noise, and a reference
    that small is not what a SAR designer offers. 0 = no floor (analysis only)."""
    round_counts: bool | str = "auto"
    """Digital back end rounds each count estimate to the nearest integer count. ``"auto"``
    (default): exactly when one ADC step is at most one column count (then the ideal column
    value, an integer, is recovered whenever the analog error stays below half a count);
    True / False force it [I]."""
    cap_unit_ff: float = 1.0
    """Unit bit-cell capacitance C_u in fF. 1 fF [I], guided by JIA20's 1.2 fF MOM cap [S]."""
    col_parasitic_ff: float = 0.0
    """Extra column capacitance in fF, only lowering kT/C noise (its gain error is assumed
    calibrated out by the ADC reference). 0 [I], the pessimistic choice."""
    cap_mismatch: float = 0.002
    """Relative sigma of each bit-cell capacitor, 0..0.5. 0.2 % [I] (fF MOM caps match to
    ~0.1-1 %; JIA22 does not state a number we can cite)."""
    thermal_noise: bool = True
    """Add kT/C noise of the shared column capacitance to every conversion."""
    ktc_samplings: int = 2
    """Sampling events whose kT/C noise adds to one conversion, 1..16: each time a switch opens
    on the column capacitance it freezes a fresh kT/C [SCHMID]; here the column reset before
    the compute phase and the ADC's sampling of the shared charge. 2 [I] (1 was the model of
    the first edition: a lower bound)."""
    temperature_k: float = 300.0
    """Temperature in kelvin for kT/C noise. 300 K [I]."""
    v_dd: float = 0.8
    """Supply voltage in volts = full column swing. 0.8 V [JIA22, S2]."""
    input_levels: int = 2
    """Levels of the input DAC: 2 = binary planes; L > 2 applies base-L digits (multi-level inputs
    [LEE21], as in GRIMM24); the column value range grows by (L - 1). 2 [JIA22]."""
    sign_mode: str = "two-cycle"
    """How signed inputs (radix-4 gradients, centred inputs) are applied: ``"two-cycle"``, the
    positive and negative parts in separate cycles through a unipolar ADC, or ``"one-cycle"``, a
    ternary (0 / +1 / -1) row drive in one cycle and a bipolar ADC whose codes span ``[-r, r]``
    of the swing. Both [I]; the ternary drive (a three-level driver, differential cells, or an
    XNOR cell plus a digital correction) is our assumption, its cost not priced; LEE21's signed
    input DAC is the closest published precedent."""
    seed: int = 0
    """Chip seed: fixes the capacitor mismatch pattern (and the default noise generator)."""

    def __post_init__(self):
        check_range("rows", self.rows, 1, None, integer=True)
        check_range("columns", self.columns, 1, None, integer=True)
        if self.adc_bits is not None:
            check_range("adc_bits", self.adc_bits, 1, 16, integer=True)
        check_range("adc_range", self.adc_range, ADC_RANGE_MIN, 1)
        check_choice("adc_calibration", self.adc_calibration, ["fixed", "percentile"])
        check_range("adc_percentile", self.adc_percentile, 0, 100, lo_open=True)
        check_range("adc_noise_uv", self.adc_noise_uv, 0, 1e6)
        check_range("adc_lsb_min_uv", self.adc_lsb_min_uv, 0, 1e6)
        check_choice("round_counts", self.round_counts, [True, False, "auto"])
        check_range("ktc_samplings", self.ktc_samplings, 1, 16, integer=True)
        check_range("cap_unit_ff", self.cap_unit_ff, 0, None, lo_open=True)
        check_range("col_parasitic_ff", self.col_parasitic_ff, 0, None)
        check_range("cap_mismatch", self.cap_mismatch, 0, 0.5)
        check_choice("thermal_noise", self.thermal_noise, [True, False])
        check_range("temperature_k", self.temperature_k, 0, None, lo_open=True)
        check_range("v_dd", self.v_dd, 0, None, lo_open=True)
        check_range("input_levels", self.input_levels, 2, 256, integer=True)
        check_choice("sign_mode", self.sign_mode, SIGN_MODES)
        if self.sign_mode == "one-cycle" and self.adc_bits == 1:
            raise ValueError("adc_bits=1 is not allowed with sign_mode='one-cycle': allowed 2..16 "
                             "(the bipolar ADC spends one bit on the sign)")
        check_range("seed", self.seed, 0, 2**62, integer=True)
        self._check_thermal_noise()

    def _check_thermal_noise(self) -> None:
        """kT/C noise of at most the full column swing (rms), else one ValueError naming the
        fields it comes from: finite fields can still make it 0/0, inf or absurd."""
        s = self.sigma_thermal
        if not s <= 1.0:
            raise ValueError(
                f"temperature_k={self.temperature_k!r}, cap_unit_ff={self.cap_unit_ff!r}, "
                f"col_parasitic_ff={self.col_parasitic_ff!r}, rows={self.rows!r}, "
                f"v_dd={self.v_dd!r} give kT/C noise of {s:.3g} of the full swing (rms): allowed "
                "0..1 (a column noisier than its swing computes nothing), or thermal_noise=False")

    @property
    def sigma_thermal(self) -> float:
        """kT/C noise rms as a fraction of full column swing, summed over ``ktc_samplings``
        events: ``sqrt(n k T / C_col) / V_DD`` (0 when ``thermal_noise`` is off).

        >>> round(IMCConfig.jia22_16nm().sigma_thermal * 1e5, 1)   # ~1.06e-4 of 0.8 V (85 uV)
        10.6
        """
        if not self.thermal_noise:
            return 0.0
        c_col = (self.rows * self.cap_unit_ff + self.col_parasitic_ff) * 1e-15
        if c_col == 0:                                # underflow of a tiny, finite capacitance
            return math.inf
        return math.sqrt(self.ktc_samplings * BOLTZMANN * self.temperature_k / c_col) / self.v_dd

    @property
    def sigma_comparator(self) -> float:
        """The ADC comparator's noise rms as a fraction of full column swing (0 without an ADC).

        >>> round(IMCConfig.jia22_16nm().sigma_comparator * 0.8 * 1e6, 6)    # 100 uV at 0.8 V
        100.0
        """
        return 0.0 if self.adc_bits is None else self.adc_noise_uv * 1e-6 / self.v_dd

    def adc_levels(self, bipolar: bool = False) -> int:
        """Codes above zero: ``2^B - 1`` (unipolar) or ``2^(B-1) - 1`` per sign (bipolar)."""
        return 2 ** (self.adc_bits - 1) - 1 if bipolar else 2 ** self.adc_bits - 1

    def adc_range_floor(self, bipolar: bool = False) -> float:
        """Smallest ADC range (fraction of the swing) whose LSB is at least ``adc_lsb_min_uv``:
        ``lsb_min * levels / v_dd``, within [ADC_RANGE_MIN, 1]. What calibration never goes
        below.

        >>> round(IMCConfig.jia22_16nm().adc_range_floor(), 4)       # 250 uV x 255 / 0.8 V
        0.0797
        """
        if self.adc_bits is None:
            return ADC_RANGE_MIN
        f = self.adc_lsb_min_uv * 1e-6 * self.adc_levels(bipolar) / self.v_dd
        return min(1.0, max(ADC_RANGE_MIN, f))

    @property
    def full_scale(self) -> int:
        """Ideal count of a fully charged column: ``rows * (input_levels - 1)``."""
        return self.rows * (self.input_levels - 1)

    @classmethod
    def ideal(cls, rows: int = 1152, columns: int = 256, input_levels: int = 2) -> "IMCConfig":
        """No mismatch, no noise, an ADC fine enough for every count plus a rounding back end:
        :func:`mvm` equals the integer product exactly. Uses a 16-bit ADC over the full swing
        when ``rows * (input_levels - 1) <= 2**16 - 1`` (one LSB < 1 count), else no ADC.

        >>> IMCConfig.ideal().adc_bits, IMCConfig.ideal(rows=100_000).adc_bits
        (16, None)
        """
        bits = 16 if rows * (input_levels - 1) <= 2**16 - 1 else None
        return cls(rows=rows, columns=columns, adc_bits=bits, adc_range=1.0, round_counts=True,
                   cap_mismatch=0.0, thermal_noise=False, adc_noise_uv=0.0, adc_lsb_min_uv=0.0,
                   input_levels=input_levels)

    @classmethod
    def jia22_16nm(cls, **changes) -> "IMCConfig":
        """The 16 nm prototype [JIA22]: 1152 x 256 per core, 8-bit SAR ADC per column, 0.8 V (S2).
        C_u = 1 fF, 0.2 % mismatch, 300 K are ours [I]."""
        return dataclasses.replace(cls(rows=1152, columns=256, adc_bits=8, v_dd=0.8), **changes)

    @classmethod
    def measured(cls, **changes) -> "IMCConfig":
        """The 16 nm array with a pessimistic, silicon-like noise budget [I]: total column noise
        of 1 LSB rms of an 8-bit converter over the full swing (3137 uV at 0.8 V), taken as the
        comparator's input-referred noise, with an LSB no finer than that (so the range stays
        at the full swing), kT/C of 0.3 fF unit caps and 1 % mismatch.

        No public silicon measurement of a charge-domain column's total noise could be
        confirmed: JIA20 reports "excellent matching" without a number in its abstract, and
        GRIMM24 calibrates to silicon-measured noise without stating it there, saying only that
        it costs up to 10 % CIFAR-10 accuracy and that a feasible reduction brings that within
        2 %. This preset is our stand-in for that regime, not a measured number [I].

        >>> round(IMCConfig.measured().adc_noise_uv)
        3137
        """
        base = cls(rows=1152, columns=256, adc_bits=8, v_dd=0.8, cap_unit_ff=0.3,
                   cap_mismatch=0.01, adc_noise_uv=3137.0, adc_lsb_min_uv=3140.0)
        return dataclasses.replace(base, **changes)

    @classmethod
    def jia20_65nm(cls, **changes) -> "IMCConfig":
        """The 65 nm predecessor [JIA20]: 2304 x 256, 8-bit ADC, 1.2 fF MOM caps, 0.85 V (S).
        Mismatch and temperature as in :meth:`jia22_16nm` [I]."""
        return dataclasses.replace(cls(rows=2304, columns=256, adc_bits=8, v_dd=0.85,
                                       cap_unit_ff=1.2), **changes)
