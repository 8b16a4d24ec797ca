"""How each training MVM of a layer sits on IMC arrays: the table the simulator executes and the
energy model counts (SPEC §2-§4).

For one layer (``n`` = reduction length of MVM 1, ``C_in*k*k`` for a convolution; ``m`` =
outputs, ``C_out``; ``P`` output positions and ``P_in`` input positions per sample; batch ``B``):

==============  ============================  ==========  ========  ===========  ================
MVM             stored (K rows x O outputs)   vectors V   groups    input kind   written per step
==============  ============================  ==========  ========  ===========  ================
forward         ``W^T``: n x m                B*P         k*k       INT (x_bits) n*m*w_bits
backward        ``rot W``: m*k*k x C_in       B*P_in      k*k       radix-4      n*m*w_bits
weight_grad     ``Xq``: B*P x n               m           1         radix-4      B*P*n*x_bits
==============  ============================  ==========  ========  ===========  ================

* The **backward MVM of a convolution is a transposed convolution** (the "backward-data" pass:
  the output gradient, zero-inserted by the stride and padded, convolved with the kernel rotated
  by 180 degrees and its channel axes swapped) [DUMOULIN16]: the array stores the rotated kernel
  as ``C_out*k*k`` rows by ``C_in`` weight columns, exactly the forward's layout with the two
  channel axes swapped, and each *input* position gets one vector. This is the mapping a
  designer would pick: the reduction (``C_out*k*k``) fills the rows as well as the forward's
  does, and only ``C_in`` columns are converted per cycle; the im2col-space alternative reduces
  over ``C_out`` rows only and converts ``C_in*k*k`` columns (``k*k / s^2`` times more
  conversions) before a digital col2im [I]. With stride ``s > 1`` the inserted zeros drive no
  row (they cost no row drive), but every input position still gets its vector.
* **Row tiles** hold whole channels: a reduction is split into tiles of
  ``floor(rows / (k*k)) * k*k`` rows (a tile never splits one channel's ``k*k`` taps), each
  tile converted by its own ADCs and the partial sums added digitally.
* **Column tiles**: the ``O * b`` physical columns (bit-parallel: one column per stored bit)
  span ``ceil(O * b / columns)`` arrays; each of them receives every input cycle and converts
  its columns. An input digit is fetched once and broadcast to them (one row drive) [I].
* **Input cycles** (bit-serial, one plane per cycle [JIA20]): an unsigned INT input needs
  ``x_bits`` planes (``ceil(x_bits / log2 L)`` digits with an ``L``-level DAC [LEE21]); a
  radix-4 gradient one plane per non-empty exponent (7 at most; with an ``L``-level DAC the
  exponents whose weights ``1, 4, ..`` fit in ``L - 1`` levels share a cycle [I: our reading of
  GRIMM24]). A signed input (a gradient, or a centred first-layer input) is applied either in
  ``two-cycle`` mode, positive and negative parts in separate cycles, or in ``one-cycle``
  mode, a ternary (0 / +1 / -1) row drive in the same cycle with a bipolar ADC (our assumption
  [I]: it needs a three-level driver, differential cells or an XNOR cell plus a digital
  correction, none of whose costs is priced; LEE21's signed input DAC is the closest published
  precedent) (:data:`SIGN_MODES`). A plane that is empty for a vector within a row tile is skipped: no
  cycle, no conversion, no noise (data-dependent: the *occupancy*).
* **Not needed**: the first layer's input gradient (nothing upstream consumes it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._validate import check_choice, check_range
from ..work import Work

SIGN_MODES = ("two-cycle", "one-cycle")
"""How a signed input is applied: ``two-cycle`` (+ and - parts in separate cycles, one
unipolar ADC) or ``one-cycle`` (+-1 row drive in one cycle, bipolar ADC)."""

INPUT_MODES = ("bit-serial", "multi-level")

NO_ADC_BITS = 16
"""Bits a layer without an ADC (``IMCConfig.adc_bits=None``, an analysis mode) is priced at:
the widest converter :class:`imckit.imc.IMCConfig` allows [I]."""
"""Binary input planes (``bit-serial``) or an ``L``-level input DAC (``multi-level``)."""


def _src(default, unit, tag, source, note=""):
    return field(default=default, metadata={"unit": unit, "tag": tag, "source": source,
                                            "note": note})


@dataclass(frozen=True)
class CountRules:
    """How operands map onto the arrays: bits, input planes, sign handling, DAC. The simulator
    (:class:`imckit.imc.IMCConfig` + :class:`imckit.nn.LayerConfig`) and the energy model read
    the same fields (:meth:`from_layer`). Defaults: SPEC §1-3.

    ``grad_planes`` is only used without a recorded occupancy: the number of non-empty radix-4
    exponent planes assumed per gradient vector (7 = every plane, an upper bound).
    """

    w_bits: int = _src(4, "bits", "S", "SUN20", "INT4 weights (stored, bit-parallel)")
    x_bits: int = _src(4, "bits", "S", "SUN20", "INT4 activations (inputs of MVM 1, stored in 3)")
    grad_planes: int = _src(7, "planes", "I", "SUN20",
                            "non-empty radix-4 exponent planes per gradient vector (max 7)")
    sign_mode: str = _src("two-cycle", "-", "I", "LEE21",
                          "'two-cycle': + and - parts in separate cycles (imckit.imc's default); "
                          "'one-cycle': a ternary (0/+-1) row drive and a bipolar ADC, its "
                          "driver cost not priced (LEE21's signed DAC is the closest precedent)")
    adc_bits: int = _src(8, "bits", "S2", "JIA22", "SAR ADC resolution per column")
    input_mode: str = _src("bit-serial", "-", "S", "JIA20", "or 'multi-level' [LEE21, GRIMM24]")
    dac_levels: int = _src(16, "levels", "D", "LEE21",
                           "magnitude levels 0..15 of LEE21's 5-b signed input DAC [S]")
    transposable: bool = _src(False, "-", "I", "GRIMM22",
                              "True: MVM 2 reads W transposed, no second copy to rewrite")

    def __post_init__(self):
        check_range("w_bits", self.w_bits, 1, 16, integer=True)
        check_range("x_bits", self.x_bits, 1, 16, integer=True)
        check_range("grad_planes", self.grad_planes, 1, 7, integer=True)
        check_choice("sign_mode", self.sign_mode, SIGN_MODES)
        check_range("adc_bits", self.adc_bits, 1, 16, integer=True)
        check_choice("input_mode", self.input_mode, INPUT_MODES)
        check_range("dac_levels", self.dac_levels, 2, 256, integer=True)
        check_choice("transposable", self.transposable, (True, False))

    @property
    def levels(self) -> int:
        """Input DAC levels ``L`` (2 for bit-serial binary planes)."""
        return self.dac_levels if self.input_mode == "multi-level" else 2

    @classmethod
    def from_layer(cls, cfg, **changes) -> "CountRules":
        """The rules a :class:`imckit.nn.LayerConfig` trains with (its ``imc`` config, bits)."""
        import dataclasses

        ic = cfg.imc_config()
        multi = ic.input_levels > 2
        base = cls(w_bits=cfg.w_bits, x_bits=cfg.a_bits, sign_mode=ic.sign_mode,
                   adc_bits=ic.adc_bits if ic.adc_bits is not None else NO_ADC_BITS,
                   input_mode="multi-level" if multi else "bit-serial",
                   dac_levels=ic.input_levels if multi else 16)
        return dataclasses.replace(base, **changes)


def radix4_group(levels: int) -> int:
    """Radix-4 exponents applied in one cycle by an ``levels``-level DAC: the largest ``g``
    with ``4^(g-1) <= levels - 1`` (digits 1, 4, .., 4^(g-1) of one group) [I].

    >>> radix4_group(2), radix4_group(16), radix4_group(64)
    (1, 2, 3)
    """
    check_range("levels", levels, 2, 256, integer=True)
    g = 1
    while 4 ** g <= levels - 1:
        g += 1
    return g


def cycles_per_vector(kind: str, rules: CountRules) -> int:
    """Input cycles per vector per row tile when every plane is non-empty.

    ``unsigned``: ``ceil(x_bits / log2 L)`` digits; ``signed`` (binary planes): ``x_bits - 1``
    magnitude planes, twice in ``two-cycle`` mode; ``radix4``: ``ceil(grad_planes / g)``
    exponent groups, twice in ``two-cycle`` mode.

    >>> r = CountRules()
    >>> [cycles_per_vector(k, r) for k in ("unsigned", "signed", "radix4")]
    [4, 6, 14]
    >>> cycles_per_vector("radix4", CountRules(sign_mode="one-cycle", input_mode="multi-level"))
    4
    """
    check_choice("kind", kind, ("unsigned", "signed", "radix4"))
    signs = 2 if rules.sign_mode == "two-cycle" else 1
    L = rules.levels
    if kind == "unsigned":
        return max(1, math.ceil(rules.x_bits / math.log2(L) - 1e-9))
    if kind == "signed":
        return (rules.x_bits - 1) * signs
    return math.ceil(rules.grad_planes / radix4_group(L)) * signs


def tile_rows(rows: int, group: int = 1) -> int:
    """Rows used per row tile: whole groups (channels of ``k*k`` taps) only.

    >>> tile_rows(1152, 9), tile_rows(1152, 25), tile_rows(16, 25)
    (1152, 1150, 16)
    """
    check_range("rows", rows, 1, None, integer=True)
    check_range("group", group, 1, None, integer=True)
    return (rows // group) * group if group <= rows else rows


def row_tiles(k: int, rows: int, group: int = 1) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` row tiles of a reduction of length ``k``.

    >>> row_tiles(2304, 1152, 9), row_tiles(60, 16, 5)
    ([(0, 1152), (1152, 2304)], [(0, 15), (15, 30), (30, 45), (45, 60)])
    """
    t = tile_rows(rows, group)
    return [(s, min(s + t, k)) for s in range(0, k, t)]


@dataclass(frozen=True)
class LayerShape:
    """One layer as three MVMs.

    Attributes:
        n: reduction length of MVM 1 (``C_in*k*k`` for a conv).
        m: outputs per position (``C_out``).
        positions: output positions per sample (``H_out*W_out``; tokens for a linear layer).
        kernel_area: ``k*k`` of a conv (1 for a linear layer).
        in_positions: input positions per sample (``H_in*W_in``; ``None``: ``positions``).
        name: label used in reports.
        input_grad: whether the layer's input gradient (MVM 2) is needed (False for the first
            layer: nothing upstream consumes it).
        signed_input: whether MVM 1's inputs are signed (a centred first-layer input).
    """

    n: int
    m: int
    positions: int = 1
    kernel_area: int = 1
    name: str = ""
    in_positions: int | None = None
    input_grad: bool = True
    signed_input: bool = False

    def __post_init__(self):
        for f in ("n", "m", "positions", "kernel_area"):
            check_range(f, getattr(self, f), 1, None, integer=True)
        if self.in_positions is None:
            object.__setattr__(self, "in_positions", self.positions)
        check_range("in_positions", self.in_positions, 1, None, integer=True)
        if self.n % self.kernel_area:
            raise ValueError(f"kernel_area={self.kernel_area!r} is not allowed: it must divide "
                             f"n={self.n!r}")
        check_choice("input_grad", self.input_grad, (True, False))
        check_choice("signed_input", self.signed_input, (True, False))

    @property
    def c_in(self) -> int:
        """Input channels (``n / k*k``; ``n`` for a linear layer)."""
        return self.n // self.kernel_area


@dataclass(frozen=True)
class MVMMap:
    """One training MVM of one layer on the arrays, for one call with ``v`` vectors.

    Attributes:
        mvm: ``forward``, ``backward`` or ``weight_grad``.
        stored: what the arrays hold (for reports).
        k: reduction length (rows, before tiling); ``o``: outputs per vector.
        v: input vectors; ``group``: rows a tile keeps together.
        stored_bits: bits per stored entry (one physical column each).
        kind: input kind (``unsigned``, ``signed``, ``radix4``).
        macs: logical multiply-accumulates of the training MVM (the forward's count).
        write_bits: bits written into arrays per training step for this MVM.
        needed: False when the MVM never runs (the first layer's input gradient).
    """

    mvm: str
    stored: str
    k: int
    o: int
    v: int
    group: int
    stored_bits: int
    kind: str
    macs: int
    write_bits: int
    needed: bool = True

    def tiles(self, rows: int) -> int:
        """Row tiles of the reduction."""
        return len(row_tiles(self.k, rows, self.group))

    def col_tiles(self, columns: int) -> int:
        """Arrays side by side holding the ``o * stored_bits`` physical columns."""
        return -(-self.o * self.stored_bits // columns)

    @property
    def outputs(self) -> int:
        """Values the digital back end delivers (``v * o``)."""
        return self.v * self.o

    def dense(self, rules: CountRules, rows: int, columns: int) -> dict[str, int]:
        """Cycles and row drives when every input plane is non-empty (the occupancy's 100 %):
        ``cycles`` counts (row tile, column tile, vector, plane) cycles; ``row_drives`` the
        non-zero input digits fetched for them (broadcast to the column tiles): every digit of
        an unsigned input, the ``x_bits - 1`` magnitude bits of a signed one (its sign picks one
        of the two cycles), and ONE digit of a radix-4 input (it sits in exactly one plane)."""
        cpv = cycles_per_vector(self.kind, rules)
        ct = self.col_tiles(columns)
        digits = {"unsigned": cpv, "signed": rules.x_bits - 1, "radix4": 1}[self.kind]
        return {"cycles": self.v * self.tiles(rows) * cpv * ct,
                "row_drives": self.v * digits * self.k}

    def work(self, rules: CountRules, rows: int, columns: int,
             occupancy: tuple[float, float] = (1.0, 1.0)) -> Work:
        """The work of this MVM: ``occupancy`` = (fraction of the dense cycles that run,
        fraction of the dense row drives), both 1 without a record.

        >>> mp = layer_maps(LayerShape(1152, 256), 1, CountRules())["forward"]
        >>> mp.work(CountRules(), 1152, 256).conversions       # 4 cycles x 1024 columns
        4096
        """
        if not self.needed:
            return Work()
        d = self.dense(rules, rows, columns)
        ct = self.col_tiles(columns)
        cyc_rt = round(occupancy[0] * d["cycles"] / ct)       # cycles per column tile
        return Work(macs=self.macs, conversions=cyc_rt * self.o * self.stored_bits,
                    cycles=cyc_rt * ct, row_drives=round(occupancy[1] * d["row_drives"]),
                    write_bits=self.write_bits, outputs=self.outputs)


def layer_maps(shape: LayerShape, batch: int, rules: CountRules) -> dict[str, MVMMap]:
    """The three MVMs of ``shape`` for one training step with ``batch`` samples.

    >>> maps = layer_maps(LayerShape(16 * 9, 32, positions=16, kernel_area=9, in_positions=64),
    ...                   2, CountRules())
    >>> [(m.k, m.o, m.v) for m in maps.values()]         # conv 16->32, 3x3, stride 2, 8x8 in
    [(144, 32, 32), (288, 16, 128), (32, 144, 32)]
    """
    check_range("batch", batch, 1, None, integer=True)
    s, kk = shape, shape.kernel_area
    vp = batch * s.positions
    macs = vp * s.n * s.m
    w_write = s.n * s.m * rules.w_bits
    return {
        "forward": MVMMap("forward", "W^T", s.n, s.m, vp, kk, rules.w_bits,
                          "signed" if s.signed_input else "unsigned", macs, w_write),
        "backward": MVMMap("backward", "rotated W (transposed convolution)" if kk > 1 else "W",
                           s.m * kk, s.c_in, batch * s.in_positions, kk, rules.w_bits, "radix4",
                           macs if s.input_grad else 0,
                           0 if (rules.transposable or not s.input_grad) else w_write,
                           needed=s.input_grad),
        "weight_grad": MVMMap("weight_grad", "Xq", vp, s.n, s.m, 1, rules.x_bits, "radix4",
                              macs, vp * s.n * rules.x_bits),
    }


__all__ = ["SIGN_MODES", "INPUT_MODES", "NO_ADC_BITS", "CountRules", "LayerShape", "MVMMap", "radix4_group",
           "cycles_per_vector", "tile_rows", "row_tiles", "layer_maps"]
