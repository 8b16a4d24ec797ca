"""Analytic work counts of the three training MVMs of a layer, from its shape (SPEC §3).

The counting rules are the simulator's (:func:`imckit.imc.mvm` with ``report=True``), applied to
shapes instead of data:

* the stored operand has ``b`` bits; bit-plane k of an entry lives in its own physical column
  (bit-parallel), so an ``O``-output MVM uses ``O * b`` physical columns;
* inputs are applied one plane per cycle (bit-serial): ``x_bits`` planes for unsigned INT4
  activations, ``grad_planes`` non-empty exponent planes (at most 7) for radix-4 gradients,
  times ``grad_sign_cycles`` (the simulator applies + and - parts separately: 2; the
  ``paper-16nm`` preset assumes a +-1 row drive, 1 [I]);
  a multi-level DAC with ``L`` levels applies several planes per cycle [LEE21, GRIMM24];
* a reduction of length ``K`` is split into ``ceil(K / rows)`` row tiles;
* one ADC conversion per physical column per cycle per row tile;
* rows driven: every row of the reduction in every cycle (dense inputs: an upper bound on the
  simulator's count of rows with a nonzero input) [I];
* written bits per training step: ``W`` (MVM 1) and ``W^T`` (MVM 2) after every update, and the
  activations ``Xq`` for MVM 3.

Which operand is stored and which is applied, per MVM (batch ``B``, ``P`` positions per sample):

==============  =====================  ====================  ===========  ==================
MVM             stored (K rows x O)    inputs (V vectors)    input kind   written per step
==============  =====================  ====================  ===========  ==================
forward         W: N x M               Xq: B*P               INT4         N*M*w_bits
backward        W^T: M*k*k x N/(k*k)   D0: B*P               radix-4      same size as W
weight_grad     Xq: B*P x N            D1: M                 radix-4      B*P*N*x_bits
==============  =====================  ====================  ===========  ==================

For a convolution with a known kernel area ``k*k`` the backward MVM is the transposed
convolution (reduction over ``C_out*k*k``); without it (``kernel_area=1``) the reduction is
over ``M``. Both give the forward MAC count (stride-1 view) [I].
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

from .._validate import check_choice, check_range
from ..mapping import MVMS
from ..work import Work
from .params import src

INPUT_MODES = ("bit-serial", "multi-level")


@dataclass(frozen=True)
class LayerShape:
    """One layer as an MVM: ``n`` = reduction (input) size, ``m`` = outputs.

    Attributes:
        n: reduction length per output (``C_in*k*k`` for a conv via im2col).
        m: outputs per position (``C_out``).
        positions: output positions per sample (``H_out*W_out``; 1 for a linear layer).
        kernel_area: ``k*k`` of a conv (1 for a linear layer, or if unknown).
        name: label used in reports.
    """

    n: int
    m: int
    positions: int = 1
    kernel_area: int = 1
    name: str = ""

    def __post_init__(self):
        for f in ("n", "m", "positions", "kernel_area"):
            check_range(f, getattr(self, f), 1, None, integer=True)
        if self.n % self.kernel_area:
            raise ValueError(f"kernel_area={self.kernel_area!r} is not allowed: it must divide "
                             f"n={self.n!r}")


@dataclass(frozen=True)
class CountRules:
    """How operands map onto the arrays (bits, planes, input mode). Defaults: SPEC §1-3."""

    w_bits: int = src(4, "bits", "S", "SUN20", "INT4 weights (stored, bit-parallel)")
    x_bits: int = src(4, "bits", "S", "SUN20", "INT4 activations (inputs of MVM 1, stored in 3)")
    grad_planes: int = src(7, "planes", "I", "SUN20",
                           "non-empty radix-4 exponent planes per gradient vector (max 7)")
    grad_sign_cycles: int = src(1, "cycles", "I", "JIA20",
                                "1: sign by a +-1 (XNOR-style) row drive in the same cycle; "
                                "2: + and - parts in separate cycles, as imckit.imc does")
    adc_bits: int = src(8, "bits", "S2", "JIA22", "SAR ADC resolution per column")
    input_mode: str = src("bit-serial", "-", "S", "JIA20", "or 'multi-level' [LEE21, GRIMM24]")
    dac_levels: int = src(16, "levels", "D", "LEE21",
                          "magnitude levels 0..15 of LEE21's 5-b signed input DAC [S]")
    transposable: bool = src(False, "-", "I", "GRIMM22",
                             "True: MVM 2 reads W transposed, no W^T copy to rewrite")

    def __post_init__(self):
        check_range("w_bits", self.w_bits, 1, 16, integer=True)
        check_range("x_bits", self.x_bits, 1, 16, integer=True)
        check_range("grad_planes", self.grad_planes, 1, 7, integer=True)
        check_range("grad_sign_cycles", self.grad_sign_cycles, 1, 2, integer=True)
        check_range("adc_bits", self.adc_bits, 1, 16, integer=True)
        check_choice("input_mode", self.input_mode, INPUT_MODES)
        check_range("dac_levels", self.dac_levels, 2, 256, integer=True)

    def int_cycles(self) -> int:
        """Cycles to apply one unsigned ``x_bits`` input vector.

        >>> CountRules().int_cycles(), CountRules(input_mode="multi-level").int_cycles()
        (4, 1)
        """
        if self.input_mode == "bit-serial":
            return self.x_bits
        d = 1   # base-L digits needed to cover 2^x_bits values
        while self.dac_levels ** d < 2 ** self.x_bits:
            d += 1
        return d

    def grad_cycles(self) -> int:
        """Cycles to apply one radix-4 gradient vector with ``grad_planes`` non-empty planes.

        A multi-level DAC applies the planes whose weights 1, 4, 16, ... fit in ``L-1`` levels
        together [I: our reading of GRIMM24].

        >>> CountRules().grad_cycles(), CountRules(input_mode="multi-level").grad_cycles()
        (7, 4)
        """
        per_cycle = 1
        if self.input_mode == "multi-level":
            while 4 ** per_cycle <= self.dac_levels - 1:
                per_cycle += 1
        return math.ceil(self.grad_planes / per_cycle) * self.grad_sign_cycles


class MVMCount(NamedTuple):
    """Work of one MVM per training step, plus the values it outputs (for output writes)."""

    work: Work
    outputs: int


def mvm_work(k: int, o: int, v: int, stored_bits: int, cycles: int, rows: int,
             write: bool = True) -> MVMCount:
    """Counts of one MVM: ``v`` input vectors of length ``k`` against a stored ``k x o`` matrix.

    >>> mvm_work(1152, 256, 1, 4, 4, 1152, write=False).work.conversions   # the worked example
    4096
    """
    for name, val in (("k", k), ("o", o), ("v", v), ("stored_bits", stored_bits),
                      ("cycles", cycles), ("rows", rows)):
        check_range(name, val, 1, None, integer=True)
    tiles = -(-k // rows)
    w = Work(macs=v * k * o, conversions=v * cycles * tiles * o * stored_bits,
             cycles=v * cycles * tiles, row_drives=v * cycles * k,
             write_bits=k * o * stored_bits if write else 0)
    return MVMCount(w, v * o)


def layer_work(layer: LayerShape, batch: int, rules: CountRules, rows: int) -> dict:
    """``{mvm: MVMCount}`` of one layer for one training step (all three MVMs as if on IMC)."""
    check_range("batch", batch, 1, None, integer=True)
    vp = batch * layer.positions
    ka = layer.kernel_area
    gc = rules.grad_cycles()
    return {
        "forward": mvm_work(layer.n, layer.m, vp, rules.w_bits, rules.int_cycles(), rows),
        "backward": mvm_work(layer.m * ka, layer.n // ka, vp, rules.w_bits, gc, rows,
                             write=not rules.transposable),
        "weight_grad": mvm_work(vp, layer.n, layer.m, rules.x_bits, gc, rows),
    }


def as_layers(layers, input_shape=None) -> list[LayerShape]:
    """Normalize ``layers``: (N, M) / (N, M, positions) / (N, M, positions, k*k) tuples,
    :class:`LayerShape` objects, or a torch model with ``input_shape`` (one sample, no batch).

    >>> [(l.name, l.n, l.m) for l in as_layers([(1152, 256), (256, 10)])]
    [('L0', 1152, 256), ('L1', 256, 10)]
    """
    if hasattr(layers, "named_modules"):
        if input_shape is None:
            raise ValueError("input_shape=None is not allowed with a torch model: give the "
                             "shape of one sample, e.g. (3, 32, 32)")
        return layers_from_model(layers, input_shape)
    if input_shape is not None:
        raise ValueError("input_shape is only allowed with a torch model")
    out = []
    for i, spec in enumerate(layers):
        if isinstance(spec, LayerShape):
            out.append(spec if spec.name else dataclasses.replace(spec, name=f"L{i}"))
            continue
        spec = tuple(spec)
        if not 2 <= len(spec) <= 4:
            raise ValueError(f"layers[{i}]={spec!r} is not allowed: use (N, M), "
                             "(N, M, positions) or (N, M, positions, kernel_area)")
        out.append(LayerShape(*spec, name=f"L{i}"))
    if not out:
        raise ValueError("layers=[] is not allowed: give at least one layer")
    return out


def layers_from_model(model, input_shape) -> list[LayerShape]:
    """Conv2d and Linear layers of a torch model, found with forward hooks on a zero input."""
    import torch

    found: list[LayerShape] = []

    def hook(mod, inp, out):
        name = names[mod]
        if isinstance(mod, torch.nn.Conv2d):
            kk = mod.kernel_size[0] * mod.kernel_size[1]
            found.append(LayerShape(mod.in_channels // mod.groups * kk, mod.out_channels,
                                    out.shape[-2] * out.shape[-1], kk, name))
        else:
            found.append(LayerShape(mod.in_features, mod.out_features,
                                    max(1, out[0].numel() // mod.out_features), 1, name))

    names = {m: (n or type(m).__name__) for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    handles = [m.register_forward_hook(hook) for m in names]
    try:
        p = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), dtype=p.dtype if p is not None else torch.float32,
                        device=p.device if p is not None else "cpu")
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ValueError("model has no Conv2d or Linear layer to count")
    return found


def step_work(layers, batch: int, rules: CountRules | None = None, rows: int = 1152,
              input_shape=None) -> list[tuple[LayerShape, dict]]:
    """Per-layer ``{mvm: MVMCount}`` for one training step (see :func:`layer_work`)."""
    rules = rules or CountRules()
    return [(l, layer_work(l, batch, rules, rows)) for l in as_layers(layers, input_shape)]


assert tuple(layer_work(LayerShape(1, 1), 1, CountRules(), 1)) == MVMS
