"""Accuracy of the two training recipes (issue 13, part 4): sun20 (the default) vs strict.

For each network: fp32 (the plain torch model), digital radix-4 (INT4 x radix-4 products
computed exactly) and IMC full adaptability at the 16 nm preset, under both recipes of
:data:`imckit.nn.RECIPES`, over seeds; per-seed final test accuracy, means, 95 % intervals
(Student t over seeds) and run times. Networks and targets (issue 13):

- digits small CNN, 10 epochs, 5 seeds: digital within 1 point of fp32, IMC within 2;
- digits MLPs (64) and (64, 64), 10 epochs, 5 seeds: within 1 point (the (64) MLP has two
  layers, so the sun20 recipe keeps both at fp32 and maps nothing: reported, not a test);
- MNIST-5k small CNN, 3 seeds, reported with its run time (``--mnist-epochs``).

Writes ``benchmarks/results/recipe_accuracy.json`` and ``recipe_accuracy.txt``; every finished
run is appended to ``recipe_accuracy.runs.jsonl`` first, so an interrupted run resumes when
the same command is rerun::

    .venv/bin/python benchmarks/bench_recipe.py --n-jobs 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262}
"""Two-sided 95 % Student t quantiles by degrees of freedom (standard table values)."""

OUT = Path(__file__).parent / "results"


def _run(job: dict) -> dict:
    import warnings

    import torch

    from imckit import experiments

    warnings.filterwarnings("ignore", message="convert: keep_ends=True")   # the (64) MLP, known
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    kw = {k: job[k] for k in ("dataset", "model", "placement", "epochs", "seed", "recipe")}
    r = experiments.accuracy(**kw, hidden=tuple(job.get("hidden", (64,))), adaptability="full",
                             baselines=(), threads=1)
    return {**job, "accuracy": r["final_accuracy"], "diverged": r["diverged"],
            "train_loss": r["history"][-1]["train_loss"] if r["history"] else None,
            "placements": r["placements"], "wall_s": time.perf_counter() - t0}


def _jobs(args) -> list[dict]:
    nets = [("digits", "cnn", (64,), args.epochs, args.seeds),
            ("digits", "mlp", (64,), args.epochs, args.seeds),
            ("digits", "mlp", (64, 64), args.epochs, args.seeds)]
    if args.mnist_seeds:
        nets.append(("mnist5k", "cnn", (64,), args.mnist_epochs, args.mnist_seeds))
    jobs = []
    for ds, model, hidden, epochs, seeds in nets:
        for seed in range(seeds):
            base = {"dataset": ds, "model": model, "hidden": list(hidden), "epochs": epochs,
                    "seed": seed}
            jobs.append({**base, "placement": "fp32", "recipe": "sun20"})
            for recipe in ("sun20", "strict"):
                for pl in ("digital", "imc"):
                    jobs.append({**base, "placement": pl, "recipe": recipe})
    # the digits targets first, MNIST-5k last; within each, IMC (longest) first
    return sorted(jobs, key=lambda j: (j["dataset"] == "mnist5k", j["placement"] != "imc"))


def _key(job: dict) -> str:
    return "|".join(str(job[k]) for k in ("dataset", "model", "hidden", "epochs", "seed",
                                          "placement", "recipe"))


def _interval(vals: list[float]) -> dict:
    n = len(vals)
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if n > 1 else 0.0
    half = T975.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": mean, "std": sd, "ci95": None if half is None else
            [mean - half, mean + half], "half_width": half}


def summarize(rows: list[dict]) -> list[dict]:
    """One group per (dataset, model, hidden, recipe, placement): accuracy in points
    (per seed, mean, 95 % interval), the paired gap to fp32 (same seed), run time."""
    groups: dict = {}
    for r in rows:
        key = (r["dataset"], r["model"], tuple(r["hidden"]) if r["model"] == "mlp" else None,
               "-" if r["placement"] == "fp32" else r["recipe"], r["placement"])
        groups.setdefault(key, []).append(r)
    fp32 = {(k[0], k[1], k[2]): {r["seed"]: r["accuracy"] for r in v}
            for k, v in groups.items() if k[4] == "fp32"}
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        members.sort(key=lambda r: r["seed"])
        acc = [100 * r["accuracy"] for r in members]
        ref = fp32.get(key[:3], {})
        gaps = [100 * (r["accuracy"] - ref[r["seed"]]) for r in members if r["seed"] in ref]
        mapped = sorted({m for r in members for layer in (r["placements"] or {}).values()
                         for m in layer.values()})
        out.append({"dataset": key[0], "model": key[1], "hidden": list(key[2] or []) or None,
                    "recipe": key[3], "placement": key[4],
                    "seeds": [r["seed"] for r in members], "accuracy_pct": acc,
                    "accuracy": _interval(acc), "gap_to_fp32_pct": gaps,
                    "gap": _interval(gaps) if gaps else None,
                    "placements_used": mapped,
                    "train_loss": [r["train_loss"] for r in members],
                    "diverged": sum(bool(r["diverged"]) for r in members),
                    "wall_s": [round(r["wall_s"], 2) for r in members],
                    "wall_s_mean": statistics.fmean(r["wall_s"] for r in members),
                    "epochs": members[0]["epochs"]})
    return out


TARGETS = [  # (dataset, model, hidden, placement, max gap in points)
    ("digits", "cnn", None, "digital", 1.0), ("digits", "cnn", None, "imc", 2.0),
    ("digits", "mlp", [64], "digital", 1.0), ("digits", "mlp", [64], "imc", 1.0),
    ("digits", "mlp", [64, 64], "digital", 1.0), ("digits", "mlp", [64, 64], "imc", 1.0),
]


def verdicts(summary: list[dict]) -> list[dict]:
    """Each target of issue 13 per recipe: the mean gap to fp32 and whether it holds."""
    out = []
    for ds, model, hidden, pl, limit in TARGETS:
        for g in summary:
            if (g["dataset"], g["model"], g["hidden"], g["placement"]) == (ds, model, hidden, pl):
                gap = -g["gap"]["mean"]                     # points below fp32
                out.append({"dataset": ds, "model": model, "hidden": hidden, "placement": pl,
                            "recipe": g["recipe"], "limit_points": limit,
                            "mean_points_below_fp32": gap, "met": gap <= limit,
                            "missed_by_points": max(0.0, gap - limit)})
    return out


def table(summary: list[dict], verdict: list[dict], meta: dict) -> str:
    lines = [f"Recipe accuracy (issue 13 part 4) on {meta['hardware']}; "
             f"torch {meta['torch']}, {meta['n_jobs']} worker(s) x 1 thread; "
             f"total {meta['total_wall_s']:.0f} s", "",
             f"{'net':<27}{'recipe':<8}{'placement':<10}{'per seed (%)':<38}"
             f"{'mean [95% CI]':<24}{'gap to fp32 [95% CI]':<26}{'s/run':>7}"]
    for g in summary:
        net = f"{g['dataset']} {g['model']}" + (f" {tuple(g['hidden'])}" if g["hidden"] else "")
        net += f" {g['epochs']}ep"
        a = g["accuracy"]
        ci = (f"{a['mean']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]" if a["ci95"]
              else f"{a['mean']:.2f}")
        if g["placement"] == "fp32":
            gap = "-"
        else:
            h = g["gap"]
            gap = (f"{h['mean']:+.2f} [{h['ci95'][0]:+.2f}, {h['ci95'][1]:+.2f}]" if h["ci95"]
                   else f"{h['mean']:+.2f}")
        per = " ".join(f"{v:.2f}" for v in g["accuracy_pct"])
        lines.append(f"{net:<27}{g['recipe']:<8}{g['placement']:<10}{per:<38}{ci:<24}"
                     f"{gap:<26}{g['wall_s_mean']:>7.1f}")
    lines += ["", "Targets (mean points below fp32):"]
    for v in verdict:
        net = f"{v['dataset']} {v['model']}" + (f" {tuple(v['hidden'])}" if v["hidden"] else "")
        lines.append(f"  {net:<20} {v['placement']:<8} {v['recipe']:<7} "
                     f"{v['mean_points_below_fp32']:+.2f} (limit {v['limit_points']:.0f}): "
                     + ("met" if v["met"] else f"MISSED by {v['missed_by_points']:.2f}"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes (1 thread each)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the digits networks")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the digits networks")
    p.add_argument("--mnist-seeds", type=int, default=3, help="seeds of the MNIST-5k CNN (0: skip)")
    p.add_argument("--mnist-epochs", type=int, default=2, help="epochs of the MNIST-5k CNN")
    p.add_argument("--out", default=str(OUT / "recipe_accuracy.json"))
    args = p.parse_args(argv)
    import torch

    jobs = _jobs(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = out.with_suffix(".runs.jsonl")             # one line per finished run: resumable
    done = {}
    if runs.exists():
        for line in runs.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[_key(r)] = r
    todo = [j for j in jobs if _key(j) not in done]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.n_jobs) as pool, runs.open("a") as fh:
        for fut in as_completed([pool.submit(_run, j) for j in todo]):
            r = fut.result()
            done[_key(r)] = r
            fh.write(json.dumps(r) + "\n")
            fh.flush()
    rows = [done[_key(j)] for j in jobs]
    total = time.perf_counter() - t0 + sum(
        r["wall_s"] for k, r in done.items() if k not in {_key(j) for j in todo}) / args.n_jobs
    meta = {"hardware": "2-core x86 CPU", "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "n_jobs": args.n_jobs, "total_wall_s": total, "argv": vars(args),
            "command": "benchmarks/bench_recipe.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")}
    summary = summarize(rows)
    verdict = verdicts(summary)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "targets": verdict,
                               "runs": rows}, indent=1) + "\n")
    text = table(summary, verdict, meta)
    out.with_suffix(".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
