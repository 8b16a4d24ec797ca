"""Number formats for 4-bit training (SPEC §1): INT-b, radix-4 FP4 with two-phase rounding,
GradScale, and the base-2 comparison formats, behind one ``quantize`` entry point.

>>> from imckit import formats
>>> fmt = formats.Radix4()
>>> formats.quantize(torch.tensor([0.3, -0.02]), fmt, scale=1.0).tolist()
[0.25, -0.015625]
>>> formats.quantize(torch.tensor([0.3, -0.02]), fmt, scale=1.0, phase=1).tolist()
[0.125, -0.03125]
>>> formats.quantize(torch.tensor([0.9]), fmt, scale=1.0, phase=1).tolist()  # phase 1 tops at 2S
[0.5]
>>> formats.quantize(torch.tensor([100.3]), formats.FP8E4M3).tolist()
[104.0]

Modules: :mod:`.radix` (radix-4 FP4), :mod:`.integer` (INT-b, PACT, running clip),
:mod:`.minifloat` (base-2 minifloats and the named formats), :mod:`.gradscale`,
:mod:`.api` (quantize, quantize_ste, clip_scale, error_stats).
"""
from __future__ import annotations

import torch  # noqa: F401  (doctests)

from ._core import PHASES, ROUNDINGS, Format, phase_factor
from .api import CLIP_RULES, ErrorStats, clip_scale, error_stats, quantize, quantize_ste
from .gradscale import GradScale
from .integer import INT8, Int, RunningClip, pact_quantize
from .minifloat import (BF16, FP4E2M1, FP8E4M3, FP8E5M2, FP16, FP32, SPECIALS, Minifloat,
                        Radix2FP4)
from .radix import Radix4

COMPARISON = (Radix2FP4, FP4E2M1, FP8E4M3, FP8E5M2, INT8, BF16, FP16, FP32)
"""The comparison formats of SPEC §1.2, in order of bits."""

__all__ = [
    "Format", "Radix4", "Int", "Minifloat", "GradScale", "RunningClip", "ErrorStats",
    "quantize", "quantize_ste", "pact_quantize", "clip_scale", "error_stats",
    "FP8E4M3", "FP8E5M2", "BF16", "FP16", "FP4E2M1", "Radix2FP4", "INT8", "FP32",
    "COMPARISON", "ROUNDINGS", "PHASES", "CLIP_RULES", "SPECIALS", "phase_factor",
]
