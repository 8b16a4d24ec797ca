"""imckit: train neural networks on simulated in-memory-computing (IMC) hardware.

A compact toolkit behind the interactive book on Grimm & Verma, "Neural Network Training on
In-Memory-Computing Hardware With Radix-4 Gradients" (IEEE TCAS-I 69(10), 2022).

Layers, imported in one direction only (STYLE.md):

1. pure model: :mod:`imckit.formats`, :mod:`imckit.imc`, :mod:`imckit.energy`;
2. training glue: :mod:`imckit.nn`, :mod:`imckit.train`, :mod:`imckit.data`, :mod:`imckit.sweep`;
3. presentation: :mod:`imckit.widgets`, :mod:`imckit.plots`.

Submodules load on first use, so ``import imckit as ik`` is cheap and ``ik.formats`` works.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "formats", "imc", "energy", "nn", "models", "train", "data", "sweep",
    "widgets", "plots", "sources", "mapping", "work", "train_grid", "exercises", "fast_validation",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'imckit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
