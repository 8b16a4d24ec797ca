"""Precompute the training curves of the chapter "Training on IMC, live" (book/data/train_grid.json).

The chapter's explorer has three controls: quantizer adaptability, ADC bits and capacitor
mismatch. In the web book every point shows curves from this file; in JupyterLab the chapter
reruns the same experiment live (it reads the settings from the file's ``config``). Each point
trains the same digits MLP (64-64-10, imckit.models.mlp, seed 0) with imckit.train.fit on the
digits split of imckit.data.digits(seed=0); every layer is converted with imckit.nn.convert at
the 16 nm IMC preset (imckit.imc.IMCConfig.jia22_16nm) with the point's adc_bits and
cap_mismatch. Two baselines share the plot: fp32 (no quantization) and digital radix-4 (the
same INT4 / radix-4 arithmetic computed exactly).

Usage (from the repository root; about 2 minutes on a 2-core machine)::

    .venv/bin/python experiments/train_grid.py            # writes book/data/train_grid.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import torch

import imckit
from imckit import data, imc, models, train
from imckit import nn as inn

CONFIG = {"dataset": "digits", "split_seed": 0, "hidden": [64], "epochs": 10, "batch_size": 64,
          "lr": 0.1, "momentum": 0.9, "schedule": "cosine", "seed": 0}
GRID = {"adaptability": ["full", "two-level", "one-level"], "adc_bits": [4, 6, 8],
        "cap_mismatch": [0.002, 0.05, 0.3]}


def layer_overrides(placement: str, adaptability: str = "full", adc_bits: int = 8,
                    cap_mismatch: float = 0.002) -> dict:
    """Keyword overrides for :func:`imckit.nn.convert` at one point (``{}`` for fp32)."""
    if placement == "fp32":
        return {}
    if placement == "digital":
        return {"placement": "digital"}
    return {"adaptability": adaptability,
            "imc": imc.IMCConfig.jia22_16nm(adc_bits=adc_bits, cap_mismatch=cap_mismatch)}


def iter_point(config: dict, placement: str, **point):
    """Train one point, yielding the history records after every epoch."""
    ds = data.digits(seed=config["split_seed"])
    model = models.mlp(64, tuple(config["hidden"]), seed=config["seed"])
    over = layer_overrides(placement, **point)
    if over:
        model = inn.convert(model, **over)
    for h in train.iter_fit(model, ds, epochs=config["epochs"], batch_size=config["batch_size"],
                            lr=config["lr"], momentum=config["momentum"],
                            schedule=config["schedule"], seed=config["seed"], progress=False):
        yield [{k: r[k] for k in ("epoch", "train_loss", "test_accuracy", "skipped_steps")}
               for r in h.records]


def run_point(config: dict, placement: str, **point) -> list[dict]:
    records = []
    for records in iter_point(config, placement, **point):
        pass
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="book/data/train_grid.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    baselines = {p: run_point(CONFIG, p) for p in ("fp32", "digital")}
    points = []
    for a, b, c in itertools.product(*GRID.values()):
        t = time.perf_counter()
        hist = run_point(CONFIG, "imc", adaptability=a, adc_bits=b, cap_mismatch=c)
        points.append({"adaptability": a, "adc_bits": b, "cap_mismatch": c, "history": hist})
        print(f"{a:>9} adc={b} cap={c:<5} acc={hist[-1]['test_accuracy']:.4f} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    wall = time.perf_counter() - t0
    out = {"description": "Digits MLP training curves on simulated IMC (16 nm preset) over a grid "
                          "of adaptability x ADC bits x capacitor mismatch, with fp32 and digital "
                          "radix-4 baselines. Produced by experiments/train_grid.py.",
           "command": "python experiments/train_grid.py" + (f" --threads {args.threads}"
                                                            if args.threads != 1 else ""),
           "wall_s": round(wall, 1),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
           "versions": {"imckit": imckit.__version__, "torch": torch.__version__,
                        "python": platform.python_version()},
           "config": CONFIG, "grid": GRID, "baselines": baselines, "points": points}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
