"""Point functions for the sweep tests (importable by joblib workers).

torch is imported inside the functions that need it, so workers of the process tests
(``slow``) start in a fraction of a second.
"""
import math
import os
import pathlib
import time


def noisy(x, seed, log_dir=None, stop_file=None):
    """Seeded random result; logs each call; while ``stop_file`` exists, x == 3 is interrupted."""
    import torch
    if log_dir is not None:
        with open(pathlib.Path(log_dir) / "calls", "a") as f:
            f.write(f"{x} {seed} {os.getpid()}\n")
    if stop_file is not None and x == 3 and os.path.exists(stop_file):
        raise KeyboardInterrupt("simulated interruption")
    g = torch.Generator().manual_seed(1000 * seed + x)
    return {"value": float(torch.randn(1000, generator=g).sum()), "x2": x * x}


def noisy_xy(x, y, seed):
    import torch
    g = torch.Generator().manual_seed(1000 * seed + 10 * x + len(y))
    return {"value": float(torch.randn(100, generator=g).sum()), "label": f"{y}{x}"}


def fails_on(x, seed, bad, log_dir):
    """Raises ValueError for ``x == bad`` while ``log_dir/fail`` exists; logs every call."""
    with open(pathlib.Path(log_dir) / "calls", "a") as f:
        f.write(f"{x} {seed}\n")
    if x == bad and (pathlib.Path(log_dir) / "fail").exists():
        raise ValueError(f"x={x} is cursed\nsecond line")
    return {"x": x}


def odd_values(seed, kind):
    """Results JSON cannot hold as they are (``kind="convertible"``) or at all (``"set"``)."""
    import numpy as np
    import torch
    if kind == "set":
        return {"ok": 1, "bad": {1, 2}}
    return {"nan": math.nan, "inf": -math.inf, "tensor": torch.tensor([1.5, math.nan]),
            "scalar_tensor": torch.tensor(2.0), "array": np.arange(3), "np_float": np.float32(0.5),
            "np_int": np.int64(7), "np_bool": np.bool_(True), "tuple": (1, (2, 3)),
            "nested": {4: [math.inf]}}


def with_history(x, seed):
    """A result with a per-epoch history, as imckit.experiments.accuracy returns."""
    t0 = time.perf_counter()
    history = [{"epoch": e, "loss": 1.0 / (e + x), "wall_s": time.perf_counter() - t0 + e}
               for e in range(1, 3)]
    return {"history": history, "final": history[-1]["loss"]}


def slow(x, seed, log_dir):
    """Logs its worker PID, then sleeps (for the Ctrl-C and SIGKILL tests)."""
    with open(pathlib.Path(log_dir) / f"worker-{x}", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return {"x": x}
