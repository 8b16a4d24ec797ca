"""The error of an IMC MVM split into its physical causes: ADC, mismatch, thermal noise."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .array import mvm
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
