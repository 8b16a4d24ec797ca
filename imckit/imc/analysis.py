"""The error of an IMC MVM split into its physical causes: ADC, mismatch, kT/C, comparator.

:func:`sqnr_split` splits one call; :func:`noise_budget` does it at the ADC range training
would calibrate, with the comparator as its own cause and, given the float operands the
quantized ones stand for, the operand quantization error beside it (the two readings of
"quantization effects"); :func:`training_operands` makes synthetic operands of each of the
three training MVMs (SPEC §2) for it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .array import calibrate_adc_range, column_counts, mvm
from .config import IMCConfig
from .planes import as_tensor


@dataclass(frozen=True)
class SQNRSplit:
    """Error of an IMC MVM vs the exact product, one effect at a time (powers are mean squares
    over outputs; SQNR in dB = 10 log10(signal / error), inf when the error is zero)."""

    signal_power: float
    error_power: dict
    """Mean squared error for ``"adc"`` (quantization, clipping and ADC noise as configured),
    ``"mismatch"``, ``"thermal"`` (each alone: the others off and the ADC ideal) and ``"all"``
    (cfg as is)."""

    @property
    def sqnr_db(self) -> dict:
        s = self.signal_power
        return {k: (math.inf if e == 0 else 10 * math.log10(s / e) if s > 0 else -math.inf)
                for k, e in self.error_power.items()}

    def __str__(self):
        return "  ".join(f"{k} {v:.1f} dB" for k, v in self.sqnr_db.items())


def sqnr_split(A, X, cfg: IMCConfig, *, generator: torch.Generator | None = None,
               **kwargs) -> SQNRSplit:
    """Split the error of :func:`mvm` vs the exact product ``X @ A`` into its causes.

    Each effect is simulated alone (others off, ADC unquantized unless the effect is the ADC):
    ``adc`` = quantization, clipping and ADC noise with ``cfg``'s bits and range; ``mismatch``;
    ``thermal`` (kT/C); ``all`` = ``cfg`` unchanged. kwargs go to :func:`mvm`.

    >>> A = torch.randint(-8, 8, (256, 16), generator=torch.Generator().manual_seed(0))
    >>> X = torch.randint(0, 16, (8, 256), generator=torch.Generator().manual_seed(1))
    >>> s = sqnr_split(A, X, IMCConfig.jia22_16nm())
    >>> s.sqnr_db["thermal"] > s.sqnr_db["adc"] + 20          # analog noise far below the ADC's
    True
    """
    A, X = as_tensor("A", A), as_tensor("X", X)
    no_adc = dict(adc_bits=None, round_counts=False)
    runs = {"adc": dataclasses.replace(cfg, cap_mismatch=0.0, thermal_noise=False),
            "mismatch": dataclasses.replace(cfg, thermal_noise=False, **no_adc),
            "thermal": dataclasses.replace(cfg, cap_mismatch=0.0, **no_adc),
            "all": cfg}
    ys = {name: mvm(A, X, c, generator=generator, **kwargs) for name, c in runs.items()}
    ref = X.to(torch.float64) @ A.to(torch.float64)      # after mvm has validated the operands
    if ref.numel() == 0:
        return SQNRSplit(signal_power=0.0, error_power={name: 0.0 for name in ys})
    err = {name: float(((y.to(torch.float64) - ref) ** 2).mean()) for name, y in ys.items()}
    return SQNRSplit(signal_power=float((ref**2).mean()), error_power=err)


MVM_KINDS = ("forward", "backward", "weight_grad")
"""The three training MVMs (SPEC §2): forward ``Y = X W^T``, backward ``dX = D0 W`` (radix-4
phase 0), weight gradient ``dW = D1^T X`` (radix-4 phase 1, the batch is the reduction)."""


@dataclass(frozen=True)
class NoiseBudget:
    """Error powers of one MVM at one ADC range, per cause, in squared product units.

    ``error_power`` keys: ``adc`` (quantization and clipping alone), ``mismatch`` and ``ktc`` (kT/C)
    (each alone, before any ADC: no rounding), ``comparator`` and ``analog`` (the comparator
    alone / every analog effect together, as the change they make in the ADC's outputs, so
    rounding to counts removes what it can), ``all`` (the configuration as is)
    and, when float operands were given, ``operand`` (the exact product of the quantized
    operands vs the float product they stand for: INT4 / radix-4 rounding)."""

    signal_power: float
    error_power: dict
    adc_range: float
    lsb_counts: float | None
    """One ADC step in column counts (None without an ADC)."""

    @property
    def sqnr_db(self) -> dict:
        s = self.signal_power
        return {k: (math.inf if e <= 0 else 10 * math.log10(s / e) if s > 0 else -math.inf)
                for k, e in self.error_power.items()}

    def ratio_db(self, cause: str, against: str) -> float:
        """``cause`` power below ``against`` power, in dB (positive: ``cause`` is smaller)."""
        a, b = self.error_power[cause], self.error_power[against]
        if a <= 0:
            return math.inf
        return -math.inf if b <= 0 else 10 * math.log10(b / a)


def noise_budget(A, X, cfg: IMCConfig, *, A_float=None, X_float=None,
                 generator: torch.Generator | None = None, **kwargs) -> NoiseBudget:
    """Split the error of :func:`mvm` into its causes at the ADC range training calibrates.

    The range is calibrated once from the ideal column counts, as training does
    (``cfg.adc_percentile``, never below :meth:`IMCConfig.adc_range_floor`; a ``"fixed"`` cfg
    keeps ``cfg.adc_range``), and every run uses it. With ``A_float`` / ``X_float`` (the float
    operands that ``A`` and ``X`` quantize, in the same units) the budget also holds the
    operand quantization error. kwargs go to :func:`mvm`.

    >>> g = torch.Generator().manual_seed(0)
    >>> A, X, kw, Af, Xf = training_operands("forward", 256, generator=g)
    >>> b = noise_budget(A, X, IMCConfig.jia22_16nm(), A_float=Af, X_float=Xf, **kw)
    >>> sorted(b.error_power)
    ['adc', 'all', 'analog', 'comparator', 'ktc', 'mismatch', 'operand']
    """
    A, X = as_tensor("A", A), as_tensor("X", X)
    kw = dict(kwargs)
    kw.pop("adc_range", None)
    r = cfg.adc_range
    levels = cfg.input_levels if kw.get("x_kind") in ("multilevel", "radix4") else 2
    bipolar = cfg.sign_mode == "one-cycle" and kw.get("x_kind") in ("signed", "radix4")
    if cfg.adc_calibration == "percentile" and cfg.adc_bits is not None:
        r = calibrate_adc_range(column_counts(A, X, cfg, **kw), cfg.rows, levels=levels,
                                percentile=cfg.adc_percentile,
                                floor=cfg.adc_range_floor(bipolar))
    quiet = dict(cap_mismatch=0.0, thermal_noise=False, adc_noise_uv=0.0)
    no_adc = dict(adc_bits=None, round_counts=False)
    fixed = dict(adc_calibration="fixed")
    rep = dataclasses.replace
    runs = {"adc": rep(cfg, **quiet, **fixed),
            "mismatch": rep(cfg, **{**quiet, "cap_mismatch": cfg.cap_mismatch}, **no_adc),
            "ktc": rep(cfg, **{**quiet, "thermal_noise": cfg.thermal_noise}, **no_adc),
            "comparator": rep(cfg, **{**quiet, "adc_noise_uv": cfg.adc_noise_uv}, **fixed),
            "all": rep(cfg, **fixed)}
    ys = {name: mvm(A, X, c, generator=generator, adc_range=r if c.adc_bits else None, **kw)
          for name, c in runs.items()}
    ref = X.to(torch.float64) @ A.to(torch.float64)
    err = {name: float(((y.to(torch.float64) - ref) ** 2).mean()) if ref.numel() else 0.0
           for name, y in ys.items()}
    # through the ADC: what the noise changes in the converted outputs (>= 0 by construction)
    base = ys["adc"].to(torch.float64)
    moved = lambda y: float(((y.to(torch.float64) - base) ** 2).mean()) if ref.numel() else 0.0  # noqa: E731
    err["comparator"], err["analog"] = moved(ys["comparator"]), moved(ys["all"])
    if A_float is not None and X_float is not None:
        fl = X_float.to(torch.float64) @ A_float.to(torch.float64)
        err["operand"] = float(((ref - fl) ** 2).mean()) if fl.numel() else 0.0
    fs = cfg.rows * (levels - 1)
    lsb = None if cfg.adc_bits is None else r * fs / cfg.adc_levels(bipolar)
    return NoiseBudget(signal_power=float((ref**2).mean()) if ref.numel() else 0.0,
                       error_power=err, adc_range=r, lsb_counts=lsb)


def training_operands(mvm_kind: str, reduction: int, *, outputs: int = 64, vectors: int = 64,
                      act_density: float = 0.5, grad_sigma: float = 2.0,
                      grad_zeros: float = 0.3, generator: torch.Generator | None = None):
    """Synthetic operands of one training MVM, quantized as training quantizes them, and the
    float operands they stand for (same units: ``X_float @ A_float`` ~ ``X @ A``).

    ``reduction`` is the MVM's reduction length (rows filled in the array): the layer's fan-in
    N for ``forward``, its fan-out M for ``backward``, the batch for ``weight_grad``.
    Weights ~ N(0, 1) as symmetric INT4 levels (max scale); activations a ReLU'd Gaussian with
    ``act_density`` non-zero, unsigned INT4 clipped at their 99th percentile; gradients
    log-normal magnitudes (sigma ``grad_sigma``), random signs, ``grad_zeros`` exact zeros,
    radix-4 with the GradScale ``max`` rule, stochastic rounding (phase 0 backward, phase 1
    weight gradient). All [I]: a stand-in for one layer's statistics, not a measurement.

    Returns ``(A, X, kwargs, A_float, X_float)``; kwargs for :func:`mvm` / :func:`noise_budget`.
    """
    from .. import formats
    from .._validate import check_choice, check_range

    check_choice("mvm_kind", mvm_kind, MVM_KINDS)
    check_range("reduction", reduction, 1, None, integer=True)
    check_range("outputs", outputs, 1, None, integer=True)
    check_range("vectors", vectors, 1, None, integer=True)
    check_range("act_density", act_density, 0, 1, lo_open=True)
    check_range("grad_sigma", grad_sigma, 0, 10)
    check_range("grad_zeros", grad_zeros, 0, 0.99)
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def weights(n, m):
        w = torch.randn(n, m, generator=g, dtype=torch.float64)
        s = float(w.abs().max()) / 7
        return torch.round(w / s), w / s

    def acts(b, n):
        shift = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(min(act_density, 1 - 1e-6)))
        a = torch.relu(torch.randn(b, n, generator=g, dtype=torch.float64) + float(shift))
        top = float(torch.quantile(a[a > 0], 0.99)) if bool((a > 0).any()) else 1.0
        af = a / top * 15
        return torch.clamp(torch.round(af), 0, 15), af

    def grads(b, m, phase):
        mag = torch.exp(grad_sigma * torch.randn(b, m, generator=g, dtype=torch.float64))
        sign = torch.where(torch.rand(b, m, generator=g) < 0.5, -1.0, 1.0).double()
        keep = (torch.rand(b, m, generator=g) >= grad_zeros).double()
        d = mag * sign * keep
        S = 2.0 ** math.ceil(math.log2(float(d.abs().max()) or 1.0))
        q = formats.quantize(d, formats.Radix4(), scale=S, phase=phase, rounding="stochastic",
                             generator=g)
        return q, d, S

    if mvm_kind == "forward":                      # Y = X W^T: W^T stored (N x M)
        A, Af = weights(reduction, outputs)
        X, Xf = acts(vectors, reduction)
        kw = dict(a_bits=4, a_signed=True, x_kind="unsigned", x_bits=4)
    elif mvm_kind == "backward":                   # dX = D0 W: W stored (M x N), D0 streamed
        A, Af = weights(reduction, outputs)
        X, Xf, S = grads(vectors, reduction, 0)
        kw = dict(a_bits=4, a_signed=True, x_kind="radix4", x_scale=S, phase=0)
    else:                                          # dW = D1^T X: X written (B x N), D1^T in
        A, Af = acts(reduction, outputs)
        X, Xf, S = grads(vectors, reduction, 1)
        kw = dict(a_bits=4, a_signed=False, x_kind="radix4", x_scale=S, phase=1)
    return A, X, kw, Af, Xf


def budget_point(mvm: str = "forward", rows_filled: int = 1152, preset: str = "jia22_16nm",
                 cap_unit_ff: float | None = None, cap_mismatch: float | None = None,
                 adc_noise_uv: float | None = None, adc_bits: int = 8, seed: int = 0) -> dict:
    """One point of the per-MVM noise budget sweep (``experiments/noise_budget.yaml``).

    The array keeps its 1152 rows (kT/C of the whole column); ``rows_filled`` is the
    reduction length. ``preset``: ``"jia22_16nm"`` or ``"measured"``; ``cap_unit_ff``,
    ``cap_mismatch`` and ``adc_noise_uv`` override the preset's. Returns SQNR per cause (dB), the analog error
    below the ADC's and below the operands' quantization error (dB; positive = smaller), the
    calibrated range and the LSB in counts.
    """
    from .._validate import check_choice

    check_choice("preset", preset, ("jia22_16nm", "measured"))
    changes = dict(adc_bits=adc_bits, adc_calibration="percentile", seed=seed)
    if cap_unit_ff is not None:
        changes["cap_unit_ff"] = cap_unit_ff
    if cap_mismatch is not None:
        changes["cap_mismatch"] = cap_mismatch
    if adc_noise_uv is not None:
        changes["adc_noise_uv"] = adc_noise_uv
    cfg = getattr(IMCConfig, preset)(**changes)
    g = torch.Generator().manual_seed(seed)
    A, X, kw, Af, Xf = training_operands(mvm, rows_filled, generator=g)
    b = noise_budget(A, X, cfg, A_float=Af, X_float=Xf,
                     generator=torch.Generator().manual_seed(seed + 1), **kw)
    fin = lambda v: None if not math.isfinite(v) else v          # noqa: E731 (strict JSON)
    return {"sqnr_db": {k: fin(v) for k, v in b.sqnr_db.items()},
            "analog_below_adc_db": fin(b.ratio_db("analog", "adc")),
            "analog_below_operand_db": fin(b.ratio_db("analog", "operand")),
            "adc_range": b.adc_range, "lsb_counts": b.lsb_counts,
            "sigma_thermal": cfg.sigma_thermal, "sigma_comparator": cfg.sigma_comparator}
