"""How one layer trains on simulated IMC hardware: :class:`LayerConfig` (SPEC §2, §2.1).

A layer's three training MVMs (forward, backward, weight gradient) are each placed on ``imc``,
``digital`` or ``fp32``. The placement of each one follows from two fields: ``placement`` (the
base: where the MVMs the hardware allows go) and ``adaptability`` (how many ADC ranges the
hardware holds, which decides how many MVMs it allows; :func:`imckit.mapping.placements` is the
one place that decides). Everything else says how operands are quantized and how ADC ranges are
calibrated.

Two recipes (presets) say how the quantized layers train:

* ``sun20`` (the default, ``LayerConfig()`` and ``LayerConfig.sun20()``): after [SUN20], the
  first and last layers at higher precision (``keep_ends``, ``ends_placement``), SAWB weight
  clips (``w_clip="sawb"``), learned PACT activation clips (``a_clip="pact"``) and an adaptive
  per-layer gradient scale (``grad_scale="adaptive"``);
* ``strict`` (``LayerConfig.strict()``): every layer mapped, with the rules of our first
  version (``max`` weight clip, running-percentile activation clip, ``max`` GradScale).

Mapping every layer while keeping the SUN20 clip rules is the one flag ``keep_ends=False``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import mapping
from .._validate import check_choice, check_range

ROUNDINGS = ("nearest", "stochastic")
SCALE_RULES = ("max", "delayed", "adaptive")
W_CLIPS = ("max", "mse", "sawb")
A_CLIPS = ("max", "percentile", "mse", "pact")
INPUT_KINDS = ("auto", "unsigned", "signed")
FIDELITIES = ("bit-true", "fast")


@dataclass(frozen=True)
class LayerConfig:
    """Configuration of one IMC-trained layer. Validated at construction.

    >>> LayerConfig().keep_ends, LayerConfig.strict().keep_ends      # sun20 is the default
    (True, False)
    >>> cfg = LayerConfig(adaptability="two-level")
    >>> cfg.placements()
    {'forward': 'imc', 'backward': 'imc', 'weight_grad': 'fp32'}
    >>> LayerConfig(placement="fp32").placements()["weight_grad"]
    'fp32'
    >>> LayerConfig(w_bits=1)
    Traceback (most recent call last):
    ...
    ValueError: w_bits=1 is out of range: allowed 2..8 (integer)
    """

    placement: str = "imc"
    """Base placement of the MVMs: ``imc`` (the hardware mapping, ``adaptability`` decides
    which MVMs fall back to ``digital``), ``digital`` (every MVM exact with quantized operands)
    or ``fp32`` (every MVM unquantized: the baseline)."""

    adaptability: str = "full"
    """Quantizer adaptability (SPEC §2.1, our reading of [GRIMM22]): ``full``, ``two-level``,
    ``one-level`` or ``none``."""

    fallback: str = "weight_grad"
    """Under ``two-level``, the MVM that stays digital ([I] our default: the weight gradient)."""

    fallback_placement: str = "fp32"
    """What an MVM the adaptability mode keeps off IMC computes, and so what the energy model
    prices it at: ``fp32`` (default: the baseline's precision, under which two-level saves
    ~3x), ``bf16``, ``int8`` or ``digital`` (exact INT4 x radix-4) [I]."""

    imc: Any = None
    """The :class:`imckit.imc.IMCConfig` of the arrays; ``None`` means ``IMCConfig.jia22_16nm()``
    (the 16 nm prototype [JIA22]). Each (layer, MVM) array gets its own chip seed
    ``imc.seed + 3 * layer_index + mvm_index``."""

    fidelity: str = "bit-true"
    """How the ``imc`` MVMs are simulated: ``"bit-true"`` (every input plane, column and
    conversion, :func:`imckit.imc.mvm`) or ``"fast"`` (one matmul plus an error model fitted to
    the same physics, :func:`imckit.imc.mvm_fast`: the chip's mismatch folded into the weights,
    one normal per output with the summed variance of the conversions; validated against
    bit-true within 0.8-1.25 in error variance for 8-bit ADCs, it warns outside that regime).
    Both record the same work, so the energy is the same."""

    w_bits: int = 4
    """Weight bits, signed symmetric INT (levels -7..7 at 4 bits) [SUN20]."""

    a_bits: int = 4
    """Activation bits, unsigned INT after ReLU (0..15 at 4 bits); a signed input (the first
    layer's, when data are centred) uses signed symmetric levels [SUN20]."""

    w_clip: str = "sawb"
    """Weight clip rule: ``sawb`` (default: SAWB's two-moment clip, as [SUN20] used for
    weights; coefficients in :mod:`imckit.formats.clip`, [S2] at 4 bits), or ``max`` / ``mse``
    of :func:`imckit.formats.clip_scale` ([I] our rules; ``max`` is the strict recipe's)."""

    a_clip: str = "pact"
    """Activation clip rule: ``pact`` (default: a learned clip ``alpha`` per layer, PACT as
    [SUN20] used for activations; ``dL/dalpha`` = the sum of the gradient where the input was
    clipped, plus ``pact_decay * alpha``), or a per-batch rule smoothed by a running average
    ([I] ours): ``max`` (the batch maximum), ``percentile`` (the ``a_percentile`` percentile
    of the batch: the strict recipe's) or ``mse`` (:func:`imckit.formats.clip_scale`)."""

    a_percentile: float = 99.0
    """Percentile of ``|x|`` used by ``a_clip="percentile"``, and by ``pact`` for its initial
    ``alpha`` (the first training batch's percentile). [I] our default."""

    pact_decay: float = 1e-4
    """L2 penalty on each PACT ``alpha`` (added to its gradient as ``pact_decay * alpha``; the
    training loop's ``weight_decay`` applies on top). PACT regularizes ``alpha`` with L2; the
    value is ours [I] (PACT's own we could not confirm from a stored source)."""

    a_momentum: float = 0.9
    """Momentum of the running average of the per-batch clip values ([I] our choice; SPEC §1.1
    allows a running statistic)."""

    input_kind: str = "auto"
    """Layer input kind: ``unsigned``, ``signed`` or ``auto`` (signed once a negative input has
    been seen, then kept signed)."""

    grad_rounding: str = "nearest"
    """Radix-4 rounding of the output gradient: ``nearest`` (default; [SUN20] rounds to
    nearest, its two-phase rounding reducing the bias) or ``stochastic`` (unbiased, as
    [LUQ] rounds log-scale gradients)."""

    grad_scale: str = "adaptive"
    """GradScale rule of the per-layer gradient scale S (:class:`imckit.formats.GradScale`):
    ``adaptive`` (default: after [SUN20]'s per-layer scale, one binade per step up or down,
    from the previous step), ``max`` ([I] ours: from the current gradient's maximum; the
    strict recipe's) or ``delayed`` ([I] loss-scaling style back-off)."""

    backward_phase: int = 0
    """TPR phase of the gradient fed to MVM 2 ([I] our default 0, SPEC §1.2)."""

    weight_grad_phase: int = 1
    """TPR phase of the gradient fed to MVM 3 ([I] our default 1, SPEC §1.2)."""

    keep_ends: bool = True
    """Keep the first and last layers of a converted model at ``ends_placement``, as [SUN20]
    kept the first and last layers at higher precision (default). ``False`` maps every layer
    (the strict recipe; a model of two layers has nothing mapped otherwise)."""

    ends_placement: str = "fp32"
    """Placement of the first and last layers when ``keep_ends``: one of ``fp32``, ``bf16``,
    ``int8``, ``digital``; priced as what it computes (the energy model reads each layer's
    placements). [I] fp32 stands in for SUN20's higher precision: which precision SUN20 used
    for them we could not confirm from a stored source, and fp32 is the baseline's own, so the
    kept layers save nothing and flatter no saving."""

    adc_percentile: float = 99.9
    """ADC range rule: the range r is this percentile of observed column values (as a fraction
    of the full swing), rounded up to a power of two ([I] our rule, SPEC §2.1)."""

    recalibrate_every: int = 50
    """Recalibrate every ADC range after this many optimizer steps (0: calibrate once, at the
    first training step). [I] our default."""

    record_errors: bool = False
    """Also compute the exact digital product of every IMC MVM and accumulate error statistics
    (costs one extra matmul per MVM)."""

    seed: int = 0
    """Seed of the layer's random generators (thermal/ADC noise, stochastic rounding)."""

    def __post_init__(self):
        check_choice("placement", self.placement, mapping.PLACEMENTS)
        check_choice("fidelity", self.fidelity, FIDELITIES)
        check_choice("adaptability", self.adaptability, mapping.ADAPTABILITY)
        check_choice("fallback", self.fallback, mapping.MVMS)
        check_range("w_bits", self.w_bits, 2, 8, integer=True)
        check_range("a_bits", self.a_bits, 2, 8, integer=True)
        check_choice("w_clip", self.w_clip, W_CLIPS)
        check_choice("a_clip", self.a_clip, A_CLIPS)
        check_range("a_percentile", self.a_percentile, 0.0, 100.0, lo_open=True)
        check_range("pact_decay", self.pact_decay, 0.0, None)
        check_range("a_momentum", self.a_momentum, 0.0, 1.0)
        check_choice("input_kind", self.input_kind, INPUT_KINDS)
        check_choice("grad_rounding", self.grad_rounding, ROUNDINGS)
        check_choice("grad_scale", self.grad_scale, SCALE_RULES)
        check_choice("backward_phase", self.backward_phase, (0, 1))
        check_choice("weight_grad_phase", self.weight_grad_phase, (0, 1))
        check_choice("keep_ends", self.keep_ends, (True, False))
        check_choice("ends_placement", self.ends_placement, mapping.DIGITAL_PLACEMENTS)
        check_choice("fallback_placement", self.fallback_placement, mapping.DIGITAL_PLACEMENTS)
        check_range("adc_percentile", self.adc_percentile, 0.0, 100.0, lo_open=True)
        check_range("recalibrate_every", self.recalibrate_every, 0, None, integer=True)
        check_choice("record_errors", self.record_errors, (True, False))
        check_range("seed", self.seed, 0, None, integer=True)
        if self.imc is not None and type(self.imc).__name__ != "IMCConfig":
            raise ValueError(f"imc={self.imc!r} is not allowed: give an imckit.imc.IMCConfig or None")

    @classmethod
    def sun20(cls, **overrides) -> "LayerConfig":
        """The SUN20-style recipe (the default): ends kept, SAWB, PACT, adaptive GradScale."""
        return cls(**{**RECIPES["sun20"], **overrides})

    @classmethod
    def strict(cls, **overrides) -> "LayerConfig":
        """Every layer mapped, with our first version's rules (``max`` weight clip,
        running-percentile activation clip, ``max`` GradScale)."""
        return cls(**{**RECIPES["strict"], **overrides})

    @property
    def recipe(self) -> str | None:
        """``"sun20"`` or ``"strict"`` when the recipe fields match one preset, else None."""
        for name, fields in RECIPES.items():
            if all(getattr(self, k) == v for k, v in fields.items()):
                return name
        return None

    def placements(self) -> dict[str, str]:
        """Placement of each of the three MVMs (``forward``, ``backward``, ``weight_grad``)."""
        return mapping.placements(self.adaptability, fallback=self.fallback, base=self.placement,
                                  fallback_placement=self.fallback_placement)

    def imc_config(self):
        """The IMC configuration in use (``jia22_16nm()`` when ``imc`` is ``None``)."""
        if self.imc is not None:
            return self.imc
        from .. import imc as _imc

        return _imc.IMCConfig.jia22_16nm()

    def replace(self, **overrides) -> "LayerConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **overrides)


RECIPES: dict[str, dict] = {
    "sun20": {"keep_ends": True, "w_clip": "sawb", "a_clip": "pact", "grad_scale": "adaptive"},
    "strict": {"keep_ends": False, "w_clip": "max", "a_clip": "percentile", "grad_scale": "max"},
}
"""The fields each recipe sets (the others keep their defaults)."""

DEFAULT_RECIPE = "sun20"
"""The recipe :func:`make_config` (and so :func:`imckit.nn.convert` and the layers) starts from
when given neither ``cfg`` nor ``recipe``."""


def make_config(cfg: LayerConfig | None = None, *, recipe: str | None = None,
                **overrides) -> LayerConfig:
    """``cfg`` (default: the ``recipe`` preset, else :class:`LayerConfig`) with keyword
    overrides applied.

    >>> make_config(placement="digital").placement
    'digital'
    >>> make_config(recipe="strict", w_clip="sawb").w_clip
    'sawb'
    >>> make_config(colour="red")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: colour='red' is not a LayerConfig field: allowed a_bits, a_clip, ...
    """
    if cfg is not None and not isinstance(cfg, LayerConfig):
        raise ValueError(f"cfg={cfg!r} is not allowed: give an imckit.nn.LayerConfig or None")
    if recipe is not None:
        check_choice("recipe", recipe, RECIPES)
        if cfg is not None:
            raise ValueError(f"recipe={recipe!r} is not allowed together with cfg: a cfg "
                             "already fixes the recipe fields")
    names = [f.name for f in dataclasses.fields(LayerConfig)]
    for k, v in overrides.items():
        if k not in names:
            raise ValueError(f"{k}={v!r} is not a LayerConfig field: allowed "
                             + ", ".join(sorted(names)))
    base = cfg or LayerConfig(**RECIPES[recipe or DEFAULT_RECIPE])
    return dataclasses.replace(base, **overrides)


__all__ = ["LayerConfig", "make_config", "RECIPES", "W_CLIPS", "A_CLIPS", "SCALE_RULES"]
