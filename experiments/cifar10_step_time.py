"""How long would the CIFAR-10 ResNet-20 experiment take? Time training steps on mini data.

Trains ResNet-20 for one epoch on a generated random mini dataset in the CIFAR-10 format
(``imckit.experiments.write_mini_cifar``) for each placement, and prints the seconds per
optimizer step and the extrapolated hours per CIFAR-10 epoch (50000 images). Accuracies on
random data mean nothing and are not printed.

Usage, from the repository root (a GPU is what makes the CIFAR-10 experiment practical)::

    python experiments/cifar10_step_time.py --device cuda --out step_time.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imckit import experiments  # noqa: E402

RUNS = [("fp32", "none"), ("digital", "none"), ("imc", "two-level"), ("imc", "full")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    p.add_argument("--out", default=None, help="write the timings here as JSON")
    args = p.parse_args(argv)
    n = args.batch_size * args.steps // 5            # five training batches of the format
    data = experiments.write_mini_cifar(tempfile.mkdtemp(), n_per_batch=max(n, 2))
    rows = []
    for placement, mode in RUNS:
        t0 = time.perf_counter()
        r = experiments.accuracy("cifar10", "resnet20", adaptability=mode, placement=placement,
                                 epochs=1, data_dir=str(data), batch_size=args.batch_size,
                                 threads=0, device=args.device, baselines=["fp32"])
        wall = time.perf_counter() - t0
        steps = -(-r["n_train"] // args.batch_size)
        per_step = r["history"][0]["wall_s"] / steps
        row = {"placement": placement, "adaptability": mode, "device": args.device,
               "batch_size": args.batch_size, "steps": steps, "s_per_step": per_step,
               "h_per_cifar10_epoch": per_step * -(-50000 // args.batch_size) / 3600,
               "wall_s": wall}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
