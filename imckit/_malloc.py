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
free heap top) instead of going back to the OS at once; peak memory is unchanged. It runs once,
when :mod:`imckit.imc` is imported, on Linux with glibc only; ``IMCKIT_MALLOC_TUNE=0`` turns it
off. A process that already preloads another allocator (jemalloc, tcmalloc) is left alone: those
have no ``mallopt`` effect.
"""
from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_BYTES = 1 << 30
"""Blocks below 1 GiB come from the heap (glibc's default caps the dynamic threshold at 32 MB)."""

TRIM_BYTES = 1 << 30
"""Free memory at the top of the heap kept for reuse before it is returned to the OS."""

TOP_PAD_BYTES = 64 << 20
"""Extra memory requested with each heap extension (fewer ``brk`` calls)."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done: bool | None = None


def tune() -> bool:
    """Apply the thresholds once per process; True if glibc accepted them.

    >>> isinstance(tune(), bool)
    True
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("IMCKIT_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()                     # glibc only (not musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _done
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # the trim threshold first: setting it fixes the mmap threshold (no dynamic adjustment)
    ok = (mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1
          and mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1
          and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
    _done = ok
    return _done
