"""Point functions for the experiments behind the chapter "The paper's claims, checked".

Each point function takes its parameters and a ``seed`` and returns a JSON-able dict, so
:func:`imckit.sweep.run` (or ``python -m imckit sweep FILE.yaml``) can run it over a grid:

- :func:`noise_budget`: the SQNR of one representative forward MVM, split into ADC
  quantization, capacitor mismatch and thermal (kT/C) noise (:func:`imckit.imc.sqnr_split`).
- :func:`accuracy`: train one network (fp32, digital or simulated IMC, one adaptability mode)
  with :func:`imckit.train.fit` and return its test accuracy, its history, its recorded work and
  the energy of that work per digital baseline (:func:`imckit.energy.energy_from_work`), next to
  the analytic count for the same network (:func:`imckit.energy.training_step_energy`).

:func:`summarize` turns sweep records into mean / std / n per group (the committed summaries
under ``book/data/``); :func:`write_mini_cifar` writes a tiny random dataset in the CIFAR-10
python format for testing the CIFAR-10 script without the real data (its numbers mean nothing).

>>> r = noise_budget(cap_mismatch=0.002, adc_bits=8, rows=1152, seed=0, m=8, batch=8)
>>> r["sqnr_db"]["mismatch"] > r["sqnr_db"]["thermal"] > r["sqnr_db"]["adc"]   # dB: higher = less
True
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ._validate import check_choice, check_range
from .mapping import PLACEMENTS   # fp32 here = the plain torch model, every MVM unquantized

__all__ = ["noise_budget", "noise_budget_mvm", "accuracy", "summarize", "write_mini_cifar", "DATASETS", "MODELS",
           "BASELINES", "PLACEMENTS"]

DATASETS = ("digits", "mnist5k", "cifar10")
MODELS = ("mlp", "cnn", "resnet20")
#: Digital baselines the recorded work is priced against (names of imckit.energy.BASELINES).
BASELINES = ("fp32", "fp16", "int8", "int8-lean")


def _finite(x: float) -> float | None:
    """JSON-safe float: inf/nan -> None."""
    return float(x) if math.isfinite(x) else None


def noise_budget_mvm(mvm: str = "forward", rows_filled: int = 1152, seed: int = 0, *,
                     preset: str = "jia22_16nm", cap_unit_ff: float | None = None,
                     cap_mismatch: float | None = None, adc_noise_uv: float | None = None,
                     adc_bits: int = 8) -> dict:
    """Experiment 1: the noise budget of one training MVM (``forward``, ``backward``,
    ``weight_grad``) per cause, against the ADC's and the operands' quantization error, at the
    range training calibrates (:func:`imckit.imc.budget_point`, which documents the result).

    >>> r = noise_budget_mvm("backward", 144, 0, preset="measured")
    >>> sorted(r["sqnr_db"])
    ['adc', 'all', 'analog', 'comparator', 'ktc', 'mismatch', 'operand']
    """
    from .imc.analysis import budget_point

    return budget_point(mvm=mvm, rows_filled=rows_filled, preset=preset, cap_unit_ff=cap_unit_ff,
                        cap_mismatch=cap_mismatch, adc_noise_uv=adc_noise_uv,
                        adc_bits=adc_bits, seed=seed)


def noise_budget(cap_mismatch: float, adc_bits: int, rows: int, seed: int, *, m: int = 64,
                 batch: int = 64, temperature_k: float = 300.0,
                 adc_calibration: str = "percentile", adc_percentile: float = 99.9,
                 act_density: float = 0.5) -> dict:
    """SQNR of one representative forward MVM, split by cause, at the 16 nm preset otherwise.

    Operands: ``rows x m`` INT4 weights (levels -7..7, a Gaussian layer quantized with the
    ``max`` clip rule, so most levels are small, as in a trained layer) and ``batch x rows``
    unsigned INT4 activations (ReLU of a Gaussian, about ``act_density`` of them non-zero, clip
    at the 99th percentile) [I] our stand-in for a hidden layer. With
    ``adc_calibration="percentile"`` the ADC range is recalibrated to the power of two covering
    ``adc_percentile`` % of the column values, the rule training uses (SPEC §2.1); ``"fixed"``
    spans the full column swing (no calibration).

    Args:
        cap_mismatch: relative sigma of the unit capacitors (0..0.5).
        adc_bits: ADC resolution (1..16).
        rows: rows of the array = length of the reduction (one tile).
        seed: seeds the operands and the chip (mismatch pattern, noise).
        m: output columns (stored operand entries per row).
        batch: input vectors.
        temperature_k: temperature of the kT/C noise.
        adc_calibration: ``"percentile"`` or ``"fixed"`` (full swing).
        adc_percentile: percentile of column values the ADC range covers.
        act_density: fraction of non-zero activations (0..1].

    Returns:
        ``sqnr_db`` per cause (``adc``, ``mismatch``, ``thermal``, ``all``; ``None`` = no
        error at all), ``error_power`` and ``signal_power`` (squared integer-product units),
        ``sigma_thermal`` and ``lsb`` (fractions of the full column swing).
    """
    from . import imc

    check_range("rows", rows, 1, None, integer=True)
    check_range("m", m, 1, None, integer=True)
    check_range("batch", batch, 1, None, integer=True)
    check_range("act_density", act_density, 0, 1, lo_open=True)
    check_range("seed", seed, 0, None, integer=True)
    check_choice("adc_calibration", adc_calibration, ("percentile", "fixed"))
    cfg = imc.IMCConfig.jia22_16nm(rows=rows, adc_bits=adc_bits, cap_mismatch=cap_mismatch,
                                   temperature_k=temperature_k, adc_calibration=adc_calibration,
                                   adc_percentile=adc_percentile, seed=seed)
    A, X = _operands(rows, m, batch, act_density, torch.Generator().manual_seed(seed))
    split = imc.sqnr_split(A, X, cfg, generator=torch.Generator().manual_seed(seed + 1))
    lsb = None if adc_bits is None else 1.0 / (2 ** adc_bits - 1)
    return {"sqnr_db": {k: _finite(v) for k, v in split.sqnr_db.items()},
            "error_power": split.error_power, "signal_power": split.signal_power,
            "sigma_thermal": cfg.sigma_thermal, "lsb": lsb}


def _operands(rows: int, m: int, batch: int, act_density: float, g: torch.Generator):
    """INT4 weights ``A`` (rows x m) and unsigned INT4 activations ``X`` (batch x rows): the
    forward operands of :func:`imckit.imc.training_operands` (a Gaussian layer quantized with
    the max rule; ReLU'd Gaussian activations, a fraction ``act_density`` non-zero)."""
    from .imc import training_operands

    A, X, _, _, _ = training_operands("forward", rows, outputs=m, vectors=batch,
                                      act_density=act_density, generator=g)
    return A, X


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _dataset(name: str, data_dir: str | None):
    from . import data

    if name == "digits":
        return data.digits()
    if name == "mnist5k":
        return data.mnist5k()
    return data.cifar10(data_dir or "data")


def _model(name: str, ds, hidden: Sequence[int], seed: int):
    from . import models

    c, hw = ds.input_shape[0], ds.input_shape[-1]
    if name == "mlp":
        return models.mlp(ds.in_features, tuple(hidden), ds.n_classes, seed=seed)
    if name == "cnn":
        return models.small_cnn(c, ds.n_classes, hw, seed=seed)
    return models.resnet20(ds.n_classes, c, seed=seed)


def _energy_summary(rep) -> dict:
    return {"savings": rep.savings, "total_j": rep.total_j, "baseline_j": rep.baseline_j,
            "by_mvm_j": rep.by_mvm(), "baseline_by_mvm_j": rep.by_mvm(baseline=True)}


def accuracy(dataset: str = "mnist5k", model: str = "mlp", adaptability: str = "full",
             cap_mismatch: float = 0.002, adc_bits: int = 8, placement: str = "imc",
             epochs: int = 3, seed: int = 0, *, hidden: Sequence[int] = (64,),
             batch_size: int = 64, lr: float = 0.1, momentum: float = 0.9,
             weight_decay: float = 0.0, schedule: str = "cosine", recipe: str = "sun20",
             keep_ends: bool | None = None, fidelity: str = "bit-true",
             data_dir: str | None = None, augment: str | None = None, threads: int = 1,
             baselines: Iterable[str] = BASELINES, device: str = "cpu") -> dict:
    """Train one network and return its accuracy, history, recorded work and energy savings.

    Args:
        dataset: ``digits``, ``mnist5k`` or ``cifar10`` (python batches in ``data_dir``). The
            train/test split is fixed (data seed 0); ``seed`` changes everything else.
        model: ``mlp`` (hidden widths ``hidden``), ``cnn`` (:func:`imckit.models.small_cnn`)
            or ``resnet20``.
        adaptability: ``full``, ``two-level``, ``one-level`` or ``none`` (SPEC §2.1); used with
            ``placement="imc"``.
        cap_mismatch: relative capacitor sigma of the simulated arrays (16 nm preset otherwise).
        adc_bits: ADC resolution of the arrays (1..16); also prices the ADC in the energy.
        placement: ``fp32`` (plain torch model: the standard-training reference), ``digital``
            (INT4 / radix-4 products computed exactly: the digital-radix-4 reference) or
            ``imc`` (simulated arrays).
        epochs: training epochs; seed: weights, data order, chip and noise.
        recipe: ``sun20`` (default: first and last layers kept at fp32, SAWB, PACT, adaptive
            GradScale) or ``strict`` (every layer mapped, our first rules); see
            :data:`imckit.nn.RECIPES`. ``keep_ends`` overrides the recipe's (None: keep it).
        fidelity: ``bit-true`` or ``fast`` simulation of the IMC MVMs
            (:attr:`imckit.nn.LayerConfig.fidelity`).
        threads: torch CPU threads while training (1 = best for parallel sweeps; 0 = leave).
        baselines: digital baselines the recorded work is priced against.
        device: torch device.

    Returns:
        ``final_accuracy`` (0..1), ``history`` (per epoch: ``train_loss``, ``test_accuracy``,
        ``wall_s``, ``skipped_steps``), ``diverged`` (None, or the message of
        :class:`imckit.train.DivergenceError`: the run stopped and ``final_accuracy`` is the
        test accuracy of the model as it stopped), ``placements``, ``work`` (``None`` for fp32),
        ``energy_recorded`` and ``energy_analytic`` per baseline (``savings``, joules), and
        ``n_train``, ``n_test``.
    """
    from . import energy, imc, mapping, train

    check_choice("dataset", dataset, DATASETS)
    check_choice("model", model, MODELS)
    check_choice("placement", placement, PLACEMENTS)
    check_choice("adaptability", adaptability, mapping.ADAPTABILITY)
    check_range("cap_mismatch", cap_mismatch, 0, 0.5)
    check_range("adc_bits", adc_bits, 1, 16, integer=True)
    check_range("epochs", epochs, 1, None, integer=True)
    check_range("seed", seed, 0, None, integer=True)
    check_range("threads", threads, 0, None, integer=True)
    check_choice("recipe", recipe, ("sun20", "strict"))
    if keep_ends is not None:
        check_choice("keep_ends", keep_ends, (True, False))
    baselines = list(baselines)
    for b in baselines:
        check_choice("baselines", b, list(energy.BASELINES))
    with _threads(threads):
        ds = _dataset(dataset, data_dir)
        net = _model(model, ds, hidden, seed)
        if placement != "fp32":
            from . import nn as inn

            cfg = imc.IMCConfig.jia22_16nm(cap_mismatch=cap_mismatch, adc_bits=adc_bits,
                                           seed=seed)
            ends = {} if keep_ends is None else {"keep_ends": keep_ends}
            net = inn.convert(net, recipe=recipe, placement=placement, fidelity=fidelity,
                              adaptability=adaptability, imc=cfg, seed=seed, **ends)
        net = net.to(device)
        hist, diverged = train.History(), None
        try:                                   # a diverged run is a result, not a failure
            for hist in train.iter_fit(net, ds, epochs=epochs, batch_size=batch_size, lr=lr,
                                       momentum=momentum, weight_decay=weight_decay,
                                       schedule=schedule, seed=seed, augment=augment,
                                       progress=False):
                pass
        except train.DivergenceError as exc:
            diverged = str(exc)
            if placement != "fp32":
                from . import nn as inn

                hist.work = inn.collect_work(net)
        final = (hist.test_accuracy[-1] if hist.records and not diverged else
                 train.evaluate(net, ds.x_test.to(device), ds.y_test.to(device)))
    out = {"final_accuracy": final, "diverged": diverged, "history": hist.records,
           "n_train": len(ds.y_train), "n_test": len(ds.y_test),
           "work": hist.work if placement != "fp32" else None,
           "placements": None, "energy_recorded": None, "energy_analytic": None}
    if placement == "fp32" or not hist.work or not hist.work.get("layers"):
        return out
    from . import nn as inn

    out["placements"] = inn.placements_of(net)
    out["energy_recorded"] = {b: _energy_summary(energy.energy_from_work(
        hist.work, baseline=b)) for b in baselines}
    # the same converted model, one step at batch_size, every input plane non-empty (the
    # analytic default) -- the run's own record prices what actually ran
    out["energy_analytic"] = {b: _energy_summary(energy.training_step_energy(
        net, batch=batch_size, input_shape=tuple(ds.input_shape), baseline=b))
        for b in baselines}
    return out


def summarize(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    """Mean, sample std and count of ``metrics`` over the rows of each ``by`` group.

    ``rows`` are flat dicts (:func:`imckit.sweep.table`); a metric may be a dotted path into
    nested results (``"energy_recorded.fp32.savings"``). Missing/None values are skipped.

    >>> rows = [{"a": 1, "y": 1.0}, {"a": 1, "y": 3.0}, {"a": 2, "y": 5.0}]
    >>> summarize(rows, ["a"], ["y"])
    [{'a': 1, 'n': 2, 'y_mean': 2.0, 'y_std': 1.4142135623730951}, {'a': 2, 'n': 1, 'y_mean': 5.0, 'y_std': 0.0}]
    """
    def get(row, path):
        v = row
        for part in path.split("."):
            if not isinstance(v, dict) or part not in v:
                return None
            v = v[part]
        return v

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = tuple(json_key(r.get(k)) for k in by)
        groups.setdefault(key, []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: [str(type(x)) + repr(x) for x in k]):
        members = groups[key]
        row = dict(zip(by, key))
        row["n"] = len(members)
        for mname in metrics:
            vals = [get(r, mname) for r in members]
            vals = np.array([v for v in vals if isinstance(v, (int, float))], dtype=float)
            name = mname.replace(".", "_")
            row[f"{name}_mean"] = float(vals.mean()) if len(vals) else None
            row[f"{name}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else (
                0.0 if len(vals) else None)
        out.append(row)
    return out


def json_key(v):
    """A hashable stand-in for a JSON value (lists -> tuples)."""
    return tuple(v) if isinstance(v, list) else v


def write_mini_cifar(folder: str | os.PathLike, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Write a tiny random dataset in the CIFAR-10 python-batch format (for tests only).

    Five ``data_batch_i`` files and a ``test_batch`` of ``n_per_batch`` random 3x32x32 images
    each, labels cycling 0..9. Its accuracies mean nothing: never report them as CIFAR-10.

    >>> import tempfile
    >>> from imckit import data
    >>> d = write_mini_cifar(tempfile.mkdtemp(), n_per_batch=10)
    >>> ds = data.cifar10(d)
    >>> tuple(ds.x_train.shape), tuple(ds.x_test.shape)
    ((50, 3, 32, 32), (10, 3, 32, 32))
    """
    check_range("n_per_batch", n_per_batch, 1, None, integer=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3 * 32 * 32), dtype=np.uint8),
                 b"labels": [int(i % 10) for i in range(n_per_batch)],
                 b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder

