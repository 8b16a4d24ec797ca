"""Energy of one ResNet-20 training step (imckit.energy) vs one fp32 forward pass (plain torch).

The energy model is pure arithmetic on layer shapes; the target is "well under 50 ms" per
network and step. For scale we time one fp32 forward pass of the same network at the same
batch. Run: ``.venv/bin/python benchmarks/bench_energy.py``.
"""
from __future__ import annotations

import statistics
import time

import torch

from imckit import energy, models
from imckit.mapping import ADAPTABILITY


def timed(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in ms."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def main() -> None:
    torch.manual_seed(0)
    batch = 64
    net = models.resnet20(seed=0).eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shapes = energy.resnet20()
    with torch.no_grad():
        net(x)   # warm-up
        t_fwd = timed(lambda: net(x), 5)
    t_shapes = timed(lambda: energy.training_step_energy(shapes, batch), 50)
    t_model = timed(lambda: energy.training_step_energy(net, batch, input_shape=(3, 32, 32)), 10)
    t_all = timed(lambda: [energy.training_step_energy(shapes, batch, adaptability=a, baseline=b)
                           for a in ADAPTABILITY for b in energy.BASELINES], 5)
    n = len(ADAPTABILITY) * len(energy.BASELINES)
    print(f"ResNet-20, batch {batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'what':<46} {'ms':>9} {'vs fp32 fwd':>12}")
    for what, t in (("fp32 forward pass (plain torch)", t_fwd),
                    ("training_step_energy from shapes", t_shapes),
                    ("training_step_energy from the torch model", t_model),
                    (f"  per point of a {n}-point explorer grid", t_all / n)):
        print(f"{what:<46} {t:9.3f} {t / t_fwd:12.4f}")


if __name__ == "__main__":
    main()
