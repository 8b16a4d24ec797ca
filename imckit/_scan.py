"""One-pass scans of a tensor for non-finite values.

``bool(torch.isfinite(t).all())`` builds a bool tensor and reduces it: two passes, and on CPU
about 20x slower than one ``aminmax`` over a float32 activation (1.26 vs 0.06 ms for 0.5 M
values on 2 threads). A min / max reduction propagates NaN, and a tensor is finite exactly when
its min and max are, so one reduction decides. The hot paths (every training MVM checks its
gradient, every quantizer its input) use these.
"""
from __future__ import annotations

import math

import torch


def all_finite(t: torch.Tensor) -> bool:
    """True when no entry of ``t`` is NaN or +-inf (an empty tensor is finite).

    >>> all_finite(torch.tensor([1.0, -2.0])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    >>> all_finite(torch.tensor([float("-inf"), 0.0])), all_finite(torch.tensor([]))
    (False, True)
    """
    if not t.numel() or not (t.is_floating_point() or t.is_complex()):
        return True
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    lo, hi = torch.aminmax(t.detach())
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def has_nan(t: torch.Tensor) -> bool:
    """True when some entry of ``t`` is NaN (``max`` propagates NaN; complex: elementwise).

    >>> has_nan(torch.tensor([1.0, float("inf")])), has_nan(torch.tensor([float("nan"), 1.0]))
    (False, True)
    """
    if not t.numel() or not (t.is_floating_point() or t.is_complex()):
        return False
    if t.is_complex():
        return bool(torch.isnan(t).any())
    return math.isnan(float(t.detach().max()))


__all__ = ["all_finite", "has_nan"]
