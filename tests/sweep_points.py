"""Point functions for the sweep tests (importable by joblib workers)."""
import os
import pathlib

import torch


def noisy(x, seed, log_dir=None, stop_file=None):
    """Seeded random result; logs each call; while ``stop_file`` exists, x == 3 is interrupted."""
    if log_dir is not None:
        with open(pathlib.Path(log_dir) / "calls", "a") as f:
            f.write(f"{x} {seed} {os.getpid()}\n")
    if stop_file is not None and x == 3 and os.path.exists(stop_file):
        raise KeyboardInterrupt("simulated interruption")
    g = torch.Generator().manual_seed(1000 * seed + x)
    return {"value": float(torch.randn(1000, generator=g).sum()), "x2": x * x}


def noisy_xy(x, y, seed):
    g = torch.Generator().manual_seed(1000 * seed + 10 * x + len(y))
    return {"value": float(torch.randn(100, generator=g).sum()), "label": f"{y}{x}"}
