"""Argument checks shared by every module.

Every check raises :class:`ValueError` naming the field, the offending value and what is
allowed, *before* any compute happens (STYLE.md, "Validation at construction").
"""
from __future__ import annotations

import math
from typing import Any, Iterable


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, integer: bool = False, lo_open: bool = False, finite: bool = True) -> None:
    """Raise ``ValueError`` unless ``lo <= value <= hi`` (``lo < value`` if ``lo_open``).

    ``None`` bounds are open ends. The value must be finite unless ``finite=False`` (then
    ``+-inf`` passes where the bounds allow it); NaN is never a number.

    >>> check_range("adc_bits", 8, 1, 16, integer=True)
    >>> check_range("adc_bits", 0, 1, 16, integer=True)
    Traceback (most recent call last):
    ...
    ValueError: adc_bits=0 is out of range: allowed 1..16 (integer)
    >>> check_range("v_dd", float("inf"), 0, None, lo_open=True)
    Traceback (most recent call last):
    ...
    ValueError: v_dd=inf is not finite: allowed (0..inf), finite
    """
    kind = " (integer)" if integer else ""
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    close = (")" if hi is None else "]") if lo_open else ""
    allowed = f"{'(' if lo_open else ''}{lo_s}..{hi_s}{close}{kind}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{name}={value!r} is not a number: allowed {allowed}")
    if finite and isinstance(value, float) and math.isinf(value):
        raise ValueError(f"{name}={value!r} is not finite: allowed {allowed}, finite")
    if integer and not float(value).is_integer():
        raise ValueError(f"{name}={value!r} is not an integer: allowed {allowed}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name}={value!r} is out of range: allowed {allowed}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}={value!r} is out of range: allowed {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``.

    >>> check_choice("rounding", "up", ["nearest", "stochastic"])
    Traceback (most recent call last):
    ...
    ValueError: rounding='up' is not allowed: choose one of 'nearest', 'stochastic'
    """
    choices = list(choices)
    try:
        allowed = value in choices
    except Exception:                  # e.g. an array, whose == has no single truth value
        allowed = False
    if not allowed:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {opts}")
