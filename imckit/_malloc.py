"""Keep freed memory in the process, so large temporaries do not page-fault again (issue 12).

The simulator makes many large, short-lived tensors (plane products, noise, ADC codes: tens of
MB each per layer and step). glibc's ``malloc`` serves blocks above its ``mmap`` threshold
(dynamic, at most 32 MB) with fresh ``mmap`` calls and hands small freed heap tops back to the
OS, so every such tensor costs a page fault per 4 KB page on first touch: measured on a 2-core
x86 CPU, ``torch.randn`` of 80 MB ran at 255 M normals/s against 430 M/s into reused memory, and
a bit-true ResNet-20 step (batch 32, 1 thread) took 9.6 s of CPU instead of 6.0 s.

:func:`tune` raises the thresholds with ``mallopt`` (the knobs glibc documents for this; the
same as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, which
would have to be set before Python starts). Results do not change, only where memory comes
from. The cost: memory freed inside the process is kept for reuse (up to :data:`TRIM_BYTES` of
free heap top per process, so each sweep worker may hold that much beyond its own peak) instead
of going back to the OS at once; :func:`release` hands it back (``malloc_trim``).

It is process-wide and runs once, when :mod:`imckit.imc` is imported, on Linux with glibc only
(not musl), and not when ``LD_PRELOAD`` names another allocator (jemalloc, tcmalloc, mimalloc).
``IMCKIT_MALLOC_TUNE=0`` (or ``false``/``off``/``no``) in the environment before the import
turns it off. glibc versions that refuse a 1 GiB mmap threshold get 32 MiB (their maximum).
"""
from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_BYTES = 1 << 30
"""Blocks below 1 GiB come from the heap (glibc's default caps the dynamic threshold at 32 MB)."""

TRIM_BYTES = 512 << 20
"""Free memory at the top of the heap kept for reuse before it is returned to the OS."""

FALLBACK_MMAP_THRESHOLD_BYTES = 32 << 20
"""The largest mmap threshold older glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit)."""

TOP_PAD_BYTES = 64 << 20
"""Extra memory requested with each heap extension (fewer ``brk`` calls)."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done: bool | None = None


def _enabled() -> bool:
    if os.environ.get("IMCKIT_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    preload = os.environ.get("LD_PRELOAD", "")
    return sys.platform.startswith("linux") and not any(
        name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))


def _mallopt():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()                     # glibc only (not musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt


def tune() -> bool:
    """Apply the thresholds once per process; True if glibc accepted them.

    >>> isinstance(tune(), bool)
    True
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    mallopt = _mallopt() if _enabled() else None
    if mallopt is None:
        return _done
    # the mmap threshold first (with the fallback older glibc accepts), then the trim
    # threshold: setting either fixes the mmap threshold (no dynamic adjustment), so a refused
    # value must never leave glibc's 128 KiB default fixed in place
    ok = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
          or mallopt(_M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD_BYTES) == 1)
    if ok:
        ok = (mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1
              and mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1)
    _done = ok
    return _done


def release() -> bool:
    """Return the free heap memory this process keeps to the OS now (glibc ``malloc_trim``);
    True if some was released. Useful after a large run in a long-lived kernel.

    >>> isinstance(release(), bool)
    True
    """
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False
