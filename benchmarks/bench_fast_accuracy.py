"""Fast vs bit-true IMC training: final test accuracy over seeds (issue 14, validation part 2).

Trains the digits small CNN (10 epochs) and the MNIST-5k MLP 784-64-10 (3 epochs), every layer
mapped (``keep_ends=False``, the default SUN20-style clip rules), full adaptability, 16 nm
preset, once with ``fidelity="bit-true"`` and once with ``fidelity="fast"`` per seed, through
``imckit.experiments.accuracy`` (the function the claims sweeps use). Target: mean final accuracy
of fast within 1 point of bit-true. Prints per-seed accuracies, means, the paired difference
with a 95 % Student-t interval, run times, and writes ``results/fast_accuracy.json`` and
``.txt``. Results, not a test.

Run: ``python benchmarks/bench_fast_accuracy.py --seeds 5 --n-jobs 2``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

from joblib import Parallel, delayed

OUT = Path(__file__).parent / "results"
NETS = [("digits", "cnn", 10, 32), ("mnist5k", "mlp", 3, 64)]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262}
"""Two-sided 95 % Student-t quantiles by degrees of freedom."""


def _run(dataset, model, epochs, batch, fidelity, seed):
    import torch

    from imckit import experiments

    warnings.filterwarnings("ignore")          # fast mode's regime warnings are not at issue here
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = experiments.accuracy(dataset, model, placement="imc", adaptability="full", epochs=epochs,
                             seed=seed, batch_size=batch, keep_ends=False, fidelity=fidelity,
                             baselines=(), threads=1)
    return {"dataset": dataset, "model": model, "epochs": epochs, "fidelity": fidelity,
            "seed": seed, "accuracy": r["final_accuracy"], "diverged": r["diverged"],
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args(argv)
    jobs = [(d, m, e, b, f, s) for d, m, e, b in NETS for s in range(args.seeds)
            for f in ("bit-true", "fast")]
    t0 = time.perf_counter()
    runs = Parallel(n_jobs=args.n_jobs)(delayed(_run)(*j) for j in jobs)
    wall = time.perf_counter() - t0
    lines = [f"Fast vs bit-true IMC training (issue 14), 2-core x86 CPU, {args.n_jobs} worker(s) "
             f"x 1 thread; total {wall:.0f} s", ""]
    summary = []
    for d, m, e, _ in NETS:
        acc = {f: [r["accuracy"] for r in runs if (r["dataset"], r["fidelity"]) == (d, f)]
               for f in ("bit-true", "fast")}
        secs = {f: statistics.mean(r["wall_s"] for r in runs
                                   if (r["dataset"], r["fidelity"]) == (d, f))
                for f in acc}
        diff = [100 * (a - b) for a, b in zip(acc["fast"], acc["bit-true"])]
        mean = statistics.mean(diff)
        half = (T975.get(len(diff) - 1, 1.96) * statistics.stdev(diff) / math.sqrt(len(diff))
                if len(diff) > 1 else float("nan"))
        row = {"net": f"{d} {m} {e} epochs", "bit_true": acc["bit-true"], "fast": acc["fast"],
               "diff_points_mean": mean, "diff_points_ci95": [mean - half, mean + half],
               "wall_s": secs, "target_met": abs(mean) <= 1.0}
        summary.append(row)
        for f in ("bit-true", "fast"):
            lines.append(f"{row['net']:<24} {f:<9} " + " ".join(f"{100 * a:6.2f}" for a in acc[f])
                         + f"   mean {100 * statistics.mean(acc[f]):6.2f}   {secs[f]:6.1f} s/run")
        lines.append(f"{'':<24} fast - bit-true: {mean:+.2f} points [95 % CI {mean - half:+.2f}, "
                     f"{mean + half:+.2f}]: target |mean| <= 1 "
                     f"{'met' if row['target_met'] else 'MISSED'}; speed-up "
                     f"{secs['bit-true'] / secs['fast']:.1f}x")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "fast_accuracy.txt").write_text(text + "\n")
    (OUT / "fast_accuracy.json").write_text(json.dumps(
        {"command": "python benchmarks/bench_fast_accuracy.py " + " ".join(argv or sys.argv[1:]),
         "wall_s": wall, "summary": summary, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
