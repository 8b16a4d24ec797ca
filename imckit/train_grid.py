"""The runs of the chapter "Training on IMC, live": one grid, one schema, one way to train a point.

The chapter's explorer has four controls: the model (the digits MLP or the small digits CNN),
quantizer adaptability, ADC bits and capacitor mismatch; every point is trained for each seed of
:data:`GRID` so that the page shows a band over seeds, not one run. ``experiments/train_grid.py``
trains every point with :func:`run_grid` and writes ``book/data/train_grid.json``, which ships
with the package (:func:`load` reads it wherever imckit is installed). In JupyterLab the chapter
trains any other point live with :func:`iter_point`, the same function the script ran, and
prices it with :func:`price`, so a stored run and a live one can never be computed differently.

Every run, the fp32 and digital radix-4 baselines included, is converted with
:func:`imckit.nn.convert` at the 16 nm IMC preset (:meth:`imckit.imc.IMCConfig.jia22_16nm`),
records its work over all its training steps (:func:`imckit.nn.collect_work`) and is priced from
that record with :func:`imckit.energy.energy_from_work` against the fp32 baseline of the
``paper-16nm`` energy preset: a point's accuracy and its energy come from the same run.

The file's schema (:data:`SCHEMA`, described in ``book/data/README.md``) keys ``points`` and
``baselines`` by their grid values (:func:`point_key`, :func:`baseline_key`); every run names its
``model`` and ``seed``.
"""
from __future__ import annotations

import itertools
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch

from . import __version__, data, energy, imc, models, train
from . import nn as inn

SCHEMA = "imckit.train_grid/2"
#: Training settings per model name (a grid point adds its seed). The CNN trains for 5 epochs
#: at batch 32 (as the accuracy sweeps of chapter 7 do): each of its steps costs about five MLP
#: steps in the simulator, and 5 epochs already reach the MLP's accuracy.
MODELS = {
    "mlp": {"builder": "imckit.models.mlp", "dataset": "digits", "split_seed": 0,
            "in_features": 64, "hidden": [64], "epochs": 10, "batch_size": 64,
            "lr": 0.1, "momentum": 0.9, "schedule": "cosine"},
    "cnn": {"builder": "imckit.models.small_cnn", "dataset": "digits", "split_seed": 0,
            "in_channels": 1, "image_size": 8, "channels": [16, 32], "epochs": 5,
            "batch_size": 32, "lr": 0.1, "momentum": 0.9, "schedule": "cosine"},
}
#: The stored grid: 2 models x 3 seeds x 27 settings (about 10 minutes on a 2-core x86 CPU with
#: two processes). Three seeds make the spread visible; the live chapter offers finer values.
GRID = {"model": ["mlp", "cnn"], "seed": [0, 1, 2],
        "adaptability": ["full", "two-level", "one-level"],
        "adc_bits": [4, 6, 8], "cap_mismatch": [0.002, 0.05, 0.3]}
BASELINES = ("fp32", "digital")
#: How every run is priced: imckit.energy.energy_from_work(work, PRESET, baseline=BASELINE).
PRESET, BASELINE = "paper-16nm", "fp32"
POINT_KEY = ("model", "seed", "adaptability", "adc_bits", "cap_mismatch")
BASELINE_KEY = ("model", "seed", "placement")
#: Runs of this seed keep their whole work record in the file (others keep the priced energy
#: only), so that the file stays small and any setting can still be re-priced.
WORK_SEED = 0
DATA_FILE = "train_grid.json"


def point_key(model: str, seed: int, adaptability: str, adc_bits: int,
              cap_mismatch: float) -> str:
    """Key of an IMC run in ``points``: its grid values joined by ``|``.

    >>> point_key("mlp", 0, "full", 8, 0.002)
    'mlp|0|full|8|0.002'
    """
    return "|".join(str(v) for v in (model, seed, adaptability, adc_bits, cap_mismatch))


def baseline_key(model: str, seed: int, placement: str) -> str:
    """Key of a baseline run in ``baselines`` (``placement``: fp32 or digital).

    >>> baseline_key("cnn", 2, "digital")
    'cnn|2|digital'
    """
    return "|".join(str(v) for v in (model, seed, placement))


def load(path=None) -> dict:
    """The stored grid (by default the copy shipped with the package), refusing other schemas.

    >>> load()["schema"]
    'imckit.train_grid/2'
    """
    path = data.book_file(DATA_FILE) if path is None else Path(path)
    grid = json.loads(Path(path).read_text())
    if grid.get("schema") != SCHEMA:
        raise ValueError(f"{path} has schema {grid.get('schema')!r}, not {SCHEMA!r}: regenerate "
                         "it with `python experiments/train_grid.py`")
    return grid


def build_model(config: dict, seed: int = 0) -> torch.nn.Module:
    """The untrained model of ``config`` (an entry of :data:`MODELS`) with weights of ``seed``.

    >>> build_model(MODELS["cnn"])(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    if config["builder"] == "imckit.models.mlp":
        return models.mlp(config["in_features"], tuple(config["hidden"]), seed=seed)
    if config["builder"] == "imckit.models.small_cnn":
        return models.small_cnn(config["in_channels"], 10, config["image_size"],
                                tuple(config["channels"]), seed=seed)
    raise ValueError(f"builder={config['builder']!r} is not allowed: choose "
                     "imckit.models.mlp or imckit.models.small_cnn")


def layer_overrides(placement: str, adaptability: str = "full", adc_bits: int = 8,
                    cap_mismatch: float = 0.002) -> dict:
    """Keyword overrides for :func:`imckit.nn.convert` at one point.

    The fp32 baseline is converted too (every MVM at ``placement="fp32"``, which trains exactly
    as the unconverted model) so that it records its work like every other run. Every layer is
    mapped (``keep_ends=False``), the first and last included: the two small networks have two
    and three layers, and keeping the ends off the arrays would leave nothing or one layer on them.
    """
    if placement in ("fp32", "digital"):
        return {"placement": placement, "keep_ends": False}
    return {"adaptability": adaptability, "keep_ends": False,
            "imc": imc.IMCConfig.jia22_16nm(adc_bits=adc_bits, cap_mismatch=cap_mismatch)}


def make_point(config: dict, placement: str, seed: int = 0, **point):
    """The converted, untrained model of one point and its dataset: ``(model, dataset)``."""
    model = inn.convert(build_model(config, seed), **layer_overrides(placement, **point))
    return model, data.digits(seed=config["split_seed"])


def fit_point(model, dataset, config: dict, seed: int = 0) -> Iterator[train.History]:
    """Train a model of :func:`make_point` with the settings of ``config``, yielding its
    :class:`imckit.train.History` after every epoch."""
    yield from train.iter_fit(model, dataset, epochs=config["epochs"],
                              batch_size=config["batch_size"], lr=config["lr"],
                              momentum=config["momentum"], schedule=config["schedule"],
                              seed=seed, progress=False)


def iter_point(config: dict, placement: str, seed: int = 0, **point) -> Iterator[train.History]:
    """Train one point, yielding its :class:`imckit.train.History` after every epoch."""
    yield from fit_point(*make_point(config, placement, seed, **point), config, seed)


def price(work: dict) -> dict:
    """The ``energy`` entry of a run: its work record priced against the fp32 baseline."""
    rep = energy.energy_from_work(work, PRESET, baseline=BASELINE)
    return {"preset": PRESET, "savings": rep.savings, "total_j": rep.total_j,
            "by_mvm_j": rep.by_mvm(), "steps": rep.steps,
            "baseline": {"name": BASELINE, "total_j": rep.baseline_j,
                         "by_mvm_j": rep.by_mvm(baseline=True)}}


def summarize(hist: train.History, keep_work: bool = True) -> dict:
    """What the file stores of a (finished or partial) run, besides its grid values."""
    placed = {lay["name"]: {m: w["placement"] for m, w in lay["mvms"].items() if w["macs"]}
              for lay in hist.work["layers"]}                  # MVMs that never ran are absent
    out = {"history": [{k: r[k] for k in ("epoch", "train_loss", "test_accuracy",
                                          "skipped_steps")} for r in hist.records],
           "final_accuracy": hist.records[-1]["test_accuracy"],
           "energy": price(hist.work), "placements": placed}
    if keep_work:
        out["work"] = hist.work
    return out


def iter_run(config: dict, placement: str, seed: int = 0, keep_work: bool = True,
             **point) -> Iterator[dict]:
    """Train one point, yielding its summary (:func:`summarize`) after every epoch; the last
    one is the finished run.

    A run that diverges (:class:`imckit.train.DivergenceError`: its loss stayed non-finite
    after every learning-rate halving) is a result, not an error: its last summary has
    ``diverged`` (the message), the epochs it finished, and a final record with the test
    accuracy and work of the model as it stood when training stopped. ``lr_halvings`` counts
    the learning-rate back-offs (their warnings are recorded here, not printed).
    """
    model, ds = make_point(config, placement, seed, **point)
    hist, diverged = train.History(), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for hist in fit_point(model, ds, config, seed):
                yield {**summarize(hist, keep_work), "lr_halvings": _halvings(caught)}
        except train.DivergenceError as exc:
            diverged = str(exc)
    if diverged is not None:
        acc = train.evaluate(model, ds.x_test, ds.y_test)
        last = hist.records[-1]["epoch"] if hist.records else 0
        hist = train.History(records=[*hist.records, {
            "epoch": last + 1, "train_loss": None, "test_accuracy": acc,
            "skipped_steps": None}], work=inn.collect_work(model))
        yield {**summarize(hist, keep_work), "diverged": diverged,
               "lr_halvings": _halvings(caught)}


def _halvings(caught) -> int:
    return sum("learning rate halved" in str(w.message) for w in caught)


def run_point(config: dict, placement: str, seed: int = 0, **point) -> dict:
    """Train one point to the end (see :func:`iter_run`); the work record is kept for
    :data:`WORK_SEED` only."""
    torch.set_num_threads(1)                 # small matmuls: one thread is fastest, repeatable
    t0 = time.perf_counter()
    for run in iter_run(config, placement, seed, keep_work=seed == WORK_SEED, **point):
        pass
    return {**run, "wall_s": round(time.perf_counter() - t0, 2)}


def iter_band(config: dict, seeds, **point) -> Iterator[tuple[list[dict], float]]:
    """Train one IMC point for every seed in turn, yielding ``(runs, fraction_done)`` after
    every epoch: the finished runs and the one in progress (for a live seed band)."""
    seeds = list(seeds)
    done: list[dict] = []
    for i, seed in enumerate(seeds):
        for run in iter_run(config, "imc", seed, keep_work=False, **point):
            epochs = len(run["history"]) if "diverged" not in run else config["epochs"]
            yield [*done, {**point, "seed": seed, **run}], \
                (i * config["epochs"] + epochs) / (len(seeds) * config["epochs"])
        done.append({**point, "seed": seed, **run})


def grid_runs(grid: dict | None = None) -> list[dict]:
    """Every run of ``grid`` (default :data:`GRID`) as ``{"key", "kind", ...grid values}``.

    >>> runs = grid_runs({"model": ["mlp"], "seed": [0], "adaptability": ["full"],
    ...                   "adc_bits": [8], "cap_mismatch": [0.002, 0.3]})
    >>> [r["key"] for r in runs]
    ['mlp|0|fp32', 'mlp|0|digital', 'mlp|0|full|8|0.002', 'mlp|0|full|8|0.3']
    """
    grid = GRID if grid is None else grid
    runs = []
    for model, seed in itertools.product(grid["model"], grid["seed"]):
        runs += [{"key": baseline_key(model, seed, p), "kind": "baselines", "model": model,
                  "seed": seed, "placement": p} for p in BASELINES]
        runs += [{"key": point_key(model, seed, a, b, c), "kind": "points", "model": model,
                  "seed": seed, "placement": "imc", "adaptability": a, "adc_bits": b,
                  "cap_mismatch": c}
                 for a, b, c in itertools.product(grid["adaptability"], grid["adc_bits"],
                                                  grid["cap_mismatch"])]
    return runs


def _train(spec: dict) -> dict:
    point = {k: spec[k] for k in ("adaptability", "adc_bits", "cap_mismatch") if k in spec}
    return run_point(MODELS[spec["model"]], spec["placement"], spec["seed"], **point)


def run_grid(grid: dict | None = None, n_jobs: int = 1, log=print) -> dict:
    """Train every run of ``grid`` and return the file's content (schema :data:`SCHEMA`).

    Each run is a pure function of its grid values (seeded weights, data order, chip pattern and
    noise), so the result does not depend on ``n_jobs`` or on the order the runs finish in;
    only the ``wall_s`` fields differ between two calls.
    """
    from joblib import Parallel, delayed

    grid = GRID if grid is None else grid
    specs = grid_runs(grid)
    t0 = time.perf_counter()
    results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_train)(s) for s in specs)
    out: dict[str, dict] = {"baselines": {}, "points": {}}
    for spec, run in zip(specs, results):
        values = {k: v for k, v in spec.items() if k not in ("key", "kind")}
        out[spec["kind"]][spec["key"]] = {**values, **run}
        if log:
            log(f"{spec['key']:<28} acc={run['final_accuracy']:.4f} "
                f"savings={run['energy']['savings']:.3g}x ({run['wall_s']:.1f} s)")
    return {"schema": SCHEMA,
            "description": "Training curves and energy of runs on simulated IMC (16 nm preset) "
                           "over a grid of model x seed x adaptability x ADC bits x capacitor "
                           "mismatch, with fp32 and digital radix-4 baselines; every run priced "
                           "from its own work record. Produced by experiments/train_grid.py.",
            "command": "python experiments/train_grid.py" + (f" --n-jobs {n_jobs}"
                                                             if n_jobs != 1 else ""),
            "wall_s": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.machine()}, {n_jobs} process(es) of 1 torch thread",
            "versions": {"imckit": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "models": MODELS, "grid": grid,
            "imc": "imckit.imc.IMCConfig.jia22_16nm(adc_bits=..., cap_mismatch=...)",
            "energy": {"function": "imckit.energy.energy_from_work", "preset": PRESET,
                       "baseline": BASELINE},
            "work_seed": WORK_SEED,
            "point_key": list(POINT_KEY), "baseline_key": list(BASELINE_KEY),
            "baselines": out["baselines"], "points": out["points"]}


def seed_band(runs: list[dict]) -> dict:
    """Runs of one setting over several seeds as one run-like dict: the mean curves and final
    accuracy, with ``lo``/``hi`` (min and max over seeds), ``seeds`` and ``diverged_seeds``;
    the energy is the mean over seeds of every number in the runs' ``energy`` entries.

    >>> r = lambda a: {"history": [{"epoch": 1, "train_loss": 1.0, "test_accuracy": a}],
    ...                "final_accuracy": a, "energy": {"savings": 2.0}, "seed": 0}
    >>> b = seed_band([r(0.8), r(0.9)])
    >>> round(b["final_accuracy"], 3), b["final_accuracy_lo"], b["final_accuracy_hi"]
    (0.85, 0.8, 0.9)
    """
    if not runs:
        raise ValueError("runs=[] is not allowed: give at least one run")
    hist = []
    for i in range(max(len(r["history"]) for r in runs)):   # runs still training are shorter
        have = [r["history"][i] for r in runs if len(r["history"]) > i]
        rec = {"epoch": have[0]["epoch"]}
        for k in ("train_loss", "test_accuracy"):
            vals = [h[k] for h in have if h[k] is not None]
            rec[k], rec[k + "_lo"], rec[k + "_hi"] = ((sum(vals) / len(vals), min(vals), max(vals))
                                                      if vals else (None, None, None))
        hist.append(rec)
    finals = [r["history"][-1]["test_accuracy"] for r in runs]
    band = {k: v for k, v in runs[0].items()
            if k not in ("history", "final_accuracy", "seed", "diverged", "work")}
    band.update(history=hist, final_accuracy=sum(finals) / len(finals),
                final_accuracy_lo=min(finals), final_accuracy_hi=max(finals),
                seeds=[r.get("seed") for r in runs],
                diverged_seeds=[r.get("seed") for r in runs if "diverged" in r])
    if "energy" in runs[0]:
        band["energy"] = _mean_tree([r["energy"] for r in runs])
    return band


def _mean_tree(items: list):
    """The mean of numbers at the same place in nested dicts (other values from the first)."""
    first = items[0]
    if isinstance(first, dict):
        return {k: _mean_tree([it[k] for it in items]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(items) / len(items)
    return first
    return band
