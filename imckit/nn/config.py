"""How one layer trains on simulated IMC hardware: :class:`LayerConfig` (SPEC §2, §2.1).

A layer's three training MVMs (forward, backward, weight gradient) are each placed on ``imc``,
``digital`` or ``fp32``. The placement of each one follows from two fields: ``placement`` (the
base: where the MVMs the hardware allows go) and ``adaptability`` (how many ADC ranges the
hardware holds, which decides how many MVMs it allows; :func:`imckit.mapping.placements` is the
one place that decides). Everything else says how operands are quantized and how ADC ranges are
calibrated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import mapping
from .._validate import check_choice, check_range

ROUNDINGS = ("nearest", "stochastic")
SCALE_RULES = ("max", "delayed")
INPUT_KINDS = ("auto", "unsigned", "signed")


@dataclass(frozen=True)
class LayerConfig:
    """Configuration of one IMC-trained layer. Validated at construction.

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

    w_bits: int = 4
    """Weight bits, signed symmetric INT (levels -7..7 at 4 bits) [SUN20]."""

    a_bits: int = 4
    """Activation bits, unsigned INT after ReLU (0..15 at 4 bits); a signed input (the first
    layer's, when data are centred) uses signed symmetric levels [SUN20]."""

    w_clip: str = "max"
    """Weight clip rule of :func:`imckit.formats.clip_scale` (``max`` or ``mse``)."""

    a_clip: str = "percentile"
    """Activation clip rule, per batch, then smoothed by a running average: ``max`` (the
    batch maximum), ``percentile`` (the ``a_percentile`` percentile of the batch, so rare
    outliers are clipped instead of coarsening every other value) or ``mse`` (the clip
    minimizing the quantization MSE, :func:`imckit.formats.clip_scale`). [I] our default."""

    a_percentile: float = 99.0
    """Percentile of ``|x|`` used by ``a_clip="percentile"``. [I] our default."""

    a_momentum: float = 0.9
    """Momentum of the running average of the per-batch clip values ([I] our choice; SPEC §1.1
    allows a running statistic)."""

    input_kind: str = "auto"
    """Layer input kind: ``unsigned``, ``signed`` or ``auto`` (signed once a negative input has
    been seen, then kept signed)."""

    grad_rounding: str = "nearest"
    """Radix-4 rounding of the output gradient: ``nearest`` or ``stochastic`` [SUN20]."""

    grad_scale: str = "max"
    """GradScale rule of the per-layer gradient scale S: ``max`` or ``delayed`` (SPEC §1.2)."""

    backward_phase: int = 0
    """TPR phase of the gradient fed to MVM 2 ([I] our default 0, SPEC §1.2)."""

    weight_grad_phase: int = 1
    """TPR phase of the gradient fed to MVM 3 ([I] our default 1, SPEC §1.2)."""

    keep_ends: bool = False
    """Keep the first and last layers of a converted model at ``ends_placement``, as SUN20 did.
    Default ``False``: every layer is mapped, so small models show the effect (SPEC §2)."""

    ends_placement: str = "fp32"
    """Placement of the first and last layers when ``keep_ends``: one of ``fp32``, ``bf16``,
    ``int8``, ``digital``; priced as what it computes ([I] fp32 stands in for SUN20's
    higher-precision end layers)."""

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
        check_choice("adaptability", self.adaptability, mapping.ADAPTABILITY)
        check_choice("fallback", self.fallback, mapping.MVMS)
        check_range("w_bits", self.w_bits, 2, 8, integer=True)
        check_range("a_bits", self.a_bits, 2, 8, integer=True)
        check_choice("w_clip", self.w_clip, ("max", "mse"))
        check_choice("a_clip", self.a_clip, ("max", "percentile", "mse"))
        check_range("a_percentile", self.a_percentile, 0.0, 100.0, lo_open=True)
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


def make_config(cfg: LayerConfig | None = None, **overrides) -> LayerConfig:
    """``cfg`` (default :class:`LayerConfig`) with keyword overrides applied.

    >>> make_config(placement="digital").placement
    'digital'
    >>> make_config(colour="red")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: colour='red' is not a LayerConfig field: allowed a_bits, a_clip, ...
    """
    if cfg is not None and not isinstance(cfg, LayerConfig):
        raise ValueError(f"cfg={cfg!r} is not allowed: give an imckit.nn.LayerConfig or None")
    names = [f.name for f in dataclasses.fields(LayerConfig)]
    for k, v in overrides.items():
        if k not in names:
            raise ValueError(f"{k}={v!r} is not a LayerConfig field: allowed "
                             + ", ".join(sorted(names)))
    return dataclasses.replace(cfg or LayerConfig(), **overrides)


__all__ = ["LayerConfig", "make_config"]
