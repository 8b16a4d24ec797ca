"""Which of a layer's three training MVMs run on IMC, by quantizer adaptability (SPEC §2.1).

Training a linear layer ``y = W x`` needs three matrix-vector multiplies (MVMs):

=====  ================  =======================  =================================
MVM    name              computes                 operands
=====  ================  =======================  =================================
1      ``forward``       ``Y = Wq Xq``            INT4 x INT4
2      ``backward``      ``dX = Wq^T D0``         INT4 x radix-4 (phase 0)
3      ``weight_grad``   ``dW = D1 Xq^T``         radix-4 (phase 1) x INT4
=====  ================  =======================  =================================

*Quantizer adaptability* is our reading of the seed paper's term [GRIMM22] (its body is not
available to us, so this interpretation is ours, stated as such in the book): how many distinct
ADC reference ranges the hardware can hold. An MVM can only go on IMC if its column values get
an ADC range that suits them; the others fall back to exact digital arithmetic.

* ``full``: every (layer, MVM) has its own range, so all three MVMs run on IMC;
* ``two-level``: two ranges; MVMs 1 and 2 on IMC, MVM 3 digital (which one falls back is an
  option: ``fallback``);
* ``one-level``: one global range; only MVM 1 on IMC;
* ``none``: everything digital.

This module is the one place that decides; training (:mod:`imckit.nn`) and the energy model
(:mod:`imckit.energy`) both call :func:`placements`, so accuracy and energy always describe the
same mapping.
"""
from __future__ import annotations

from ._validate import check_choice

MVMS: tuple[str, ...] = ("forward", "backward", "weight_grad")
"""The three training MVMs of a layer, in SPEC order (MVM 1, 2, 3)."""

ADAPTABILITY: tuple[str, ...] = ("full", "two-level", "one-level", "none")
"""Quantizer-adaptability modes, from most to least capable."""

PLACEMENTS: tuple[str, ...] = ("imc", "digital", "fp32")
"""Where one MVM runs: simulated IMC, exact quantized digital arithmetic, or unquantized fp32."""


def placements(adaptability: str = "full", *, fallback: str = "weight_grad",
               base: str = "imc") -> dict[str, str]:
    """Placement of each MVM for an adaptability mode.

    Args:
        adaptability: one of :data:`ADAPTABILITY`.
        fallback: under ``two-level``, the MVM that stays digital (default MVM 3, the weight
            gradient, whose column statistics differ most; our assumption).
        base: placement of the MVMs the mode allows on IMC. ``"imc"`` (default) gives the
            hardware mapping; ``"digital"`` or ``"fp32"`` put every MVM there, whatever the mode.

    Returns:
        ``{"forward": ..., "backward": ..., "weight_grad": ...}``.

    >>> placements("two-level")
    {'forward': 'imc', 'backward': 'imc', 'weight_grad': 'digital'}
    >>> placements("one-level")
    {'forward': 'imc', 'backward': 'digital', 'weight_grad': 'digital'}
    """
    check_choice("adaptability", adaptability, ADAPTABILITY)
    check_choice("fallback", fallback, MVMS)
    check_choice("base", base, PLACEMENTS)
    if base != "imc":
        return {m: base for m in MVMS}
    on_imc = {
        "full": set(MVMS),
        "two-level": set(MVMS) - {fallback},
        "one-level": {"forward"},
        "none": set(),
    }[adaptability]
    return {m: ("imc" if m in on_imc else "digital") for m in MVMS}


def n_mapped(adaptability: str, **kwargs) -> int:
    """Number of the three MVMs on IMC under ``adaptability``.

    >>> [n_mapped(a) for a in ADAPTABILITY]
    [3, 2, 1, 0]
    """
    return sum(p == "imc" for p in placements(adaptability, **kwargs).values())
