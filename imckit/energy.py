"""Energy model (SPEC §4). Placeholder: the full model is built under issue 6."""
from __future__ import annotations

from ._validate import check_range


def amdahl_savings(gain: float, n_mapped: int, n_total: int = 3) -> float:
    """Savings when ``n_mapped`` of ``n_total`` equal-cost MVMs get ``gain`` times cheaper.

    ``n_total / (n_total - n_mapped * (1 - 1/gain))`` (SPEC §2.1): ``gain`` when every MVM is
    mapped, and at most ``n_total / (n_total - n_mapped)`` otherwise, however large the gain
    (Amdahl's law).

    >>> round(amdahl_savings(400, 3), 6)
    400.0
    >>> round(amdahl_savings(400, 2), 3)
    2.985
    """
    check_range("gain", gain, 0, None, lo_open=True)
    check_range("n_total", n_total, 1, None, integer=True)
    check_range("n_mapped", n_mapped, 0, n_total, integer=True)
    return n_total / (n_total - n_mapped * (1.0 - 1.0 / gain))
