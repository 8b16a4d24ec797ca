"""Precompute the runs of the chapter "Training on IMC, live" (book/data/train_grid.json).

The chapter's explorer has three controls: quantizer adaptability, ADC bits and capacitor
mismatch. In the web book every point shows the curves and the energy of a run stored in this
file; in JupyterLab the chapter reruns the same experiment live (it reads the settings from the
file's ``models``). Each point trains the digits MLP (64-64-10, imckit.models.mlp) with
imckit.train.iter_fit on the digits split of imckit.data.digits(seed=0); every layer is
converted with imckit.nn.convert at the 16 nm IMC preset (imckit.imc.IMCConfig.jia22_16nm) with
the point's adc_bits and cap_mismatch. Two baselines share the plot: fp32 and digital radix-4
(the same INT4 / radix-4 arithmetic computed exactly). Every run, baselines included, is priced
from its own work record (imckit.nn.collect_work, summed over all its training steps) with
imckit.energy.energy_from_work against the fp32 baseline of the paper-16nm energy preset, so a
point's accuracy and its energy savings come from the same run.

The file has one versioned schema (SCHEMA, described in book/data/README.md): ``points`` and
``baselines`` are keyed by their grid values (point_key, baseline_key) and every run names its
``model`` and ``seed``, so more models and seeds can be added to GRID without a new format.

Usage (from the repository root; about 2 minutes on a busy 2-core machine)::

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
from imckit import data, energy, imc, models, train
from imckit import nn as inn

SCHEMA = "imckit.train_grid/2"
#: Training settings per model name (a grid point adds its seed).
MODELS = {"mlp": {"builder": "imckit.models.mlp", "dataset": "digits", "split_seed": 0,
                  "in_features": 64, "hidden": [64], "epochs": 10, "batch_size": 64,
                  "lr": 0.1, "momentum": 0.9, "schedule": "cosine"}}
GRID = {"model": ["mlp"], "seed": [0], "adaptability": ["full", "two-level", "one-level"],
        "adc_bits": [4, 6, 8], "cap_mismatch": [0.002, 0.05, 0.3]}
BASELINES = ("fp32", "digital")
#: How every run is priced: imckit.energy.energy_from_work(work, PRESET, baseline=BASELINE).
PRESET, BASELINE = "paper-16nm", "fp32"
POINT_KEY = ("model", "seed", "adaptability", "adc_bits", "cap_mismatch")
BASELINE_KEY = ("model", "seed", "placement")


def point_key(model: str, seed: int, adaptability: str, adc_bits: int,
              cap_mismatch: float) -> str:
    """Key of an IMC run in ``points``: its grid values joined by ``|``.

    >>> point_key("mlp", 0, "full", 8, 0.002)
    'mlp|0|full|8|0.002'
    """
    return "|".join(str(v) for v in (model, seed, adaptability, adc_bits, cap_mismatch))


def baseline_key(model: str, seed: int, placement: str) -> str:
    """Key of a baseline run in ``baselines`` (``placement``: fp32 or digital)."""
    return "|".join(str(v) for v in (model, seed, placement))


def load(path) -> dict:
    """The stored grid, refusing files of another schema with one line."""
    grid = json.loads(Path(path).read_text())
    if grid.get("schema") != SCHEMA:
        raise ValueError(f"{path} has schema {grid.get('schema')!r}, not {SCHEMA!r}: regenerate "
                         "it with `.venv/bin/python experiments/train_grid.py`")
    return grid


def layer_overrides(placement: str, adaptability: str = "full", adc_bits: int = 8,
                    cap_mismatch: float = 0.002) -> dict:
    """Keyword overrides for :func:`imckit.nn.convert` at one point.

    The fp32 baseline is converted too (every MVM at ``placement="fp32"``, which trains exactly
    as the unconverted model) so that it records its work like every other run.
    """
    if placement in ("fp32", "digital"):
        return {"placement": placement}
    return {"adaptability": adaptability,
            "imc": imc.IMCConfig.jia22_16nm(adc_bits=adc_bits, cap_mismatch=cap_mismatch)}


def iter_point(config: dict, placement: str, seed: int = 0, **point):
    """Train one point, yielding its :class:`imckit.train.History` after every epoch."""
    ds = data.digits(seed=config["split_seed"])
    model = models.mlp(config["in_features"], tuple(config["hidden"]), seed=seed)
    model = inn.convert(model, **layer_overrides(placement, **point))
    yield from train.iter_fit(model, ds, epochs=config["epochs"],
                              batch_size=config["batch_size"], lr=config["lr"],
                              momentum=config["momentum"], schedule=config["schedule"],
                              seed=seed, progress=False)


def price(work: dict) -> dict:
    """The ``energy`` entry of a run: its work record priced against the fp32 baseline."""
    rep = energy.energy_from_work(work, PRESET, baseline=BASELINE)
    return {"preset": PRESET, "savings": rep.savings, "total_j": rep.total_j,
            "by_mvm_j": rep.by_mvm(), "steps": rep.steps,
            "baseline": {"name": BASELINE, "total_j": rep.baseline_j,
                         "by_mvm_j": rep.by_mvm(baseline=True)}}


def summarize(hist: train.History) -> dict:
    """What the file stores of a (finished or partial) run, besides its grid values."""
    placed = {lay["name"]: {m: w["placement"] for m, w in lay["mvms"].items() if w["macs"]}
              for lay in hist.work["layers"]}                  # MVMs that never ran are absent
    return {"history": [{k: r[k] for k in ("epoch", "train_loss", "test_accuracy",
                                           "skipped_steps")} for r in hist.records],
            "final_accuracy": hist.records[-1]["test_accuracy"],
            "energy": price(hist.work), "placements": placed, "work": hist.work}


def run_point(config: dict, placement: str, seed: int = 0, **point) -> dict:
    """Train one point to the end and summarize it."""
    t0 = time.perf_counter()
    for hist in iter_point(config, placement, seed, **point):
        pass
    return {**summarize(hist), "wall_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="book/data/train_grid.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    baselines, points = {}, {}
    for model, seed in itertools.product(GRID["model"], GRID["seed"]):
        for p in BASELINES:
            run = run_point(MODELS[model], p, seed)
            baselines[baseline_key(model, seed, p)] = {"model": model, "seed": seed,
                                                       "placement": p, **run}
            print(f"{model} seed={seed} {p:>9} acc={run['final_accuracy']:.4f} "
                  f"savings={run['energy']['savings']:.2f}x ({run['wall_s']:.1f} s)", flush=True)
        for a, b, c in itertools.product(GRID["adaptability"], GRID["adc_bits"],
                                         GRID["cap_mismatch"]):
            run = run_point(MODELS[model], "imc", seed, adaptability=a, adc_bits=b,
                            cap_mismatch=c)
            points[point_key(model, seed, a, b, c)] = {
                "model": model, "seed": seed, "placement": "imc", "adaptability": a,
                "adc_bits": b, "cap_mismatch": c, **run}
            print(f"{model} seed={seed} {a:>9} adc={b} cap={c:<5} "
                  f"acc={run['final_accuracy']:.4f} savings={run['energy']['savings']:.2f}x "
                  f"({run['wall_s']:.1f} s)", flush=True)
    wall = time.perf_counter() - t0
    out = {"schema": SCHEMA,
           "description": "Training curves and energy of runs on simulated IMC (16 nm preset) "
                          "over a grid of model x seed x adaptability x ADC bits x capacitor "
                          "mismatch, with fp32 and digital radix-4 baselines; every run priced "
                          "from its own work record. Produced by experiments/train_grid.py.",
           "command": "python experiments/train_grid.py" + (f" --threads {args.threads}"
                                                            if args.threads != 1 else ""),
           "wall_s": round(wall, 1),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
           "versions": {"imckit": imckit.__version__, "torch": torch.__version__,
                        "python": platform.python_version()},
           "models": MODELS, "grid": GRID,
           "imc": "imckit.imc.IMCConfig.jia22_16nm(adc_bits=..., cap_mismatch=...)",
           "energy": {"function": "imckit.energy.energy_from_work", "preset": PRESET,
                      "baseline": BASELINE},
           "point_key": list(POINT_KEY), "baseline_key": list(BASELINE_KEY),
           "baselines": baselines, "points": points}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
