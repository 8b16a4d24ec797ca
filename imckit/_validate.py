"""Argument checks shared by every module.

Every check raises :class:`ValueError` naming the field, the offending value and what is
allowed, *before* any compute happens (STYLE.md, "Validation at construction").
"""
from __future__ import annotations

import math
from typing import Any, Iterable


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, integer: bool = False, lo_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``lo <= value <= hi`` (``lo < value`` if ``lo_open``).

    >>> check_range("adc_bits", 8, 1, 16, integer=True)
    >>> check_range("adc_bits", 0, 1, 16, integer=True)
    Traceback (most recent call last):
    ...
    ValueError: adc_bits=0 is out of range: allowed 1..16 (integer)
    """
    kind = " (integer)" if integer else ""
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    allowed = f"{'(' if lo_open else ''}{lo_s}..{hi_s}{kind}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{name}={value!r} is not a number: allowed {allowed}")
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
    if value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {opts}")
