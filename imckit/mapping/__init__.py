"""The one mapping of training onto IMC arrays: which MVM runs where, and how (SPEC §2, §3).

Training a linear layer ``y = W x`` needs three matrix-vector multiplies (MVMs):

=====  ================  =======================  =================================
MVM    name              computes                 operands
=====  ================  =======================  =================================
1      ``forward``       ``Y = Wq Xq``            INT4 x INT4
2      ``backward``      ``dX = Wq^T D0``         INT4 x radix-4 (phase 0)
3      ``weight_grad``   ``dW = D1 Xq^T``         radix-4 (phase 1) x INT4
=====  ================  =======================  =================================

This package is the one place that decides, for the simulator (:mod:`imckit.nn` executes it
through :func:`imckit.imc.mvm`) and the energy model (:mod:`imckit.energy` counts it):

* **where** each MVM runs (:func:`placements`): on IMC, or on a digital engine at a stated
  precision. *Quantizer adaptability* is our reading of the seed paper's term [GRIMM22] (its
  body is not available to us, so this interpretation is ours, stated as such in the book): how
  many distinct ADC reference ranges the hardware can hold. ``full``: all three MVMs on IMC;
  ``two-level``: MVMs 1 and 2 (which one falls back is ``fallback``); ``one-level``: MVM 1;
  ``none``: none. What an MVM that falls back computes, and so what it is priced at, is ONE
  setting, ``fallback_placement`` (default ``fp32``: the baseline's precision, under which the
  abstract's "3x with two-level adaptability" follows by Amdahl's law).
* **how** an MVM sits on the arrays (:mod:`imckit.mapping.arrays`): which operand is stored,
  the reduction length and its row tiles, column tiles, input cycles per input kind and sign
  handling, what is written per step, and which MVMs are not needed at all.
"""
from __future__ import annotations

from .._validate import check_choice

MVMS: tuple[str, ...] = ("forward", "backward", "weight_grad")
"""The three training MVMs of a layer, in SPEC order (MVM 1, 2, 3)."""

ADAPTABILITY: tuple[str, ...] = ("full", "two-level", "one-level", "none")
"""Quantizer-adaptability modes, from most to least capable."""

PLACEMENTS: tuple[str, ...] = ("imc", "digital", "fp32", "bf16", "int8")
"""Where one MVM runs and what it computes: simulated IMC; ``digital``, the same quantized
product (INT4 x INT4 or INT4 x radix-4) computed exactly; or a digital engine at ``fp32``,
``bf16`` or ``int8`` precision (operands rounded to that format, fp32 accumulation)."""

DIGITAL_PLACEMENTS: tuple[str, ...] = PLACEMENTS[1:]
"""The placements that run on a digital engine (priced at that engine's precision)."""

PRECISION_OF: dict[str, str] = {"digital": "int4", "fp32": "fp32", "bf16": "bf16",
                                "int8": "int8"}
"""The arithmetic a digital placement prices: ``digital`` is INT4 x radix-4 (4-bit operands,
priced as an INT4 MAC)."""


def placements(adaptability: str = "full", *, fallback: str = "weight_grad",
               base: str = "imc", fallback_placement: str = "fp32") -> dict[str, str]:
    """Placement of each MVM for an adaptability mode.

    Args:
        adaptability: one of :data:`ADAPTABILITY`.
        fallback: under ``two-level``, the MVM that stays digital (default MVM 3, the weight
            gradient, whose column statistics differ most; our assumption).
        base: placement of the MVMs the mode allows on IMC. ``"imc"`` (default) gives the
            hardware mapping; any other placement puts every MVM there, whatever the mode.
        fallback_placement: what an MVM the mode keeps off IMC computes (one of
            :data:`DIGITAL_PLACEMENTS`). Default ``fp32``: the baseline's precision, the
            reading under which two-level saves ~3x [I].

    Returns:
        ``{"forward": ..., "backward": ..., "weight_grad": ...}``.

    >>> placements("two-level")
    {'forward': 'imc', 'backward': 'imc', 'weight_grad': 'fp32'}
    >>> placements("one-level", fallback_placement="digital")
    {'forward': 'imc', 'backward': 'digital', 'weight_grad': 'digital'}
    """
    check_choice("adaptability", adaptability, ADAPTABILITY)
    check_choice("fallback", fallback, MVMS)
    check_choice("base", base, PLACEMENTS)
    check_choice("fallback_placement", fallback_placement, DIGITAL_PLACEMENTS)
    if base != "imc":
        return {m: base for m in MVMS}
    on_imc = {
        "full": set(MVMS),
        "two-level": set(MVMS) - {fallback},
        "one-level": {"forward"},
        "none": set(),
    }[adaptability]
    return {m: ("imc" if m in on_imc else fallback_placement) for m in MVMS}


def n_mapped(adaptability: str, **kwargs) -> int:
    """Number of the three MVMs on IMC under ``adaptability``.

    >>> [n_mapped(a) for a in ADAPTABILITY]
    [3, 2, 1, 0]
    """
    return sum(p == "imc" for p in placements(adaptability, **kwargs).values())


from .arrays import (INPUT_MODES, SIGN_MODES, CountRules, LayerShape, MVMMap,  # noqa: E402
                     cycles_per_vector, layer_maps, radix4_group, row_tiles, tile_rows)

__all__ = ["MVMS", "ADAPTABILITY", "PLACEMENTS", "DIGITAL_PLACEMENTS", "PRECISION_OF",
           "placements", "n_mapped", "INPUT_MODES", "SIGN_MODES", "CountRules", "LayerShape",
           "MVMMap", "cycles_per_vector", "layer_maps", "radix4_group", "row_tiles",
           "tile_rows"]
