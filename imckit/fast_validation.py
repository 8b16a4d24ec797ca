"""The fast IMC mode checked against bit-true, MVM by MVM (issue 14).

:func:`imckit.imc.mvm_fast` replaces the bit-true :func:`imckit.imc.mvm` by one matmul and an
error model fitted to the same chip. Its check: on the same operands, chip and ADC range, the
output error (against the exact integer product) of the fast MVM must have the variance of the
bit-true one, within :data:`BAND`, for each training MVM (forward, backward, weight gradient) of
the book's layers (:data:`LAYERS`) at the 16 nm and the ``measured`` presets; and where the model
does not hold (:data:`BREAKS`: few ADC bits, heavy clipping) the ratio leaves the band and
:func:`~imckit.imc.mvm_fast` warns. ``tests/test_fast.py`` asserts it on small cases with
:func:`variance_ratio`; ``benchmarks/fast_validation.py`` computes the whole :func:`table` and
writes ``book/data/fast_validation.json`` (schema :data:`SCHEMA`), which the chapter "Training on
IMC, live" reads with :func:`load` and prints with :func:`rows`.

Operands are synthetic, quantized as training quantizes them
(:func:`imckit.imc.training_operands`: a stand-in for one layer's statistics, not a
measurement); the ADC range is the one the layers calibrate (99.9 % of the column counts, a
power of two, never under the LSB floor).

>>> round(variance_ratio("forward", 64, "jia22_16nm", seeds=1, outputs=16, vectors=16), 1) > 0
True
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from . import imc

SCHEMA = "imckit.fast_validation/1"
PRESETS = ("jia22_16nm", "measured")
MVM_KINDS = ("forward", "backward", "weight_grad")
BAND = (0.8, 1.25)
"""Allowed range of the error variance ratio fast / bit-true (issue 14)."""

def _conv3x3(c_in: int, c_out: int, positions: int, wgrad_positions: int, what: str,
             seeds: int) -> dict:
    """The three MVMs of a 3x3 convolution (rows kept per channel: its 9 taps)."""
    return {"what": what, "seeds": seeds,
            "forward": dict(reduction=9 * c_in, outputs=c_out, vectors=positions, row_group=9),
            "backward": dict(reduction=9 * c_out, outputs=c_in, vectors=positions, row_group=9),
            "weight_grad": dict(reduction=wgrad_positions, outputs=9 * c_in, vectors=c_out)}


LAYERS = {
    "digits MLP 64-64": {
        "what": "a 64 -> 64 fully connected layer of the digits MLPs, batch 64",
        "seeds": 400,
        "forward": dict(reduction=64, outputs=64, vectors=64),
        "backward": dict(reduction=64, outputs=64, vectors=64),
        "weight_grad": dict(reduction=64, outputs=64, vectors=64),
    },
    "digits CNN conv 16-32": _conv3x3(
        16, 32, 512, 512, "the digits small CNN's second 3x3 convolution (16 -> 32 channels, "
        "4x4 positions), batch 32", seeds=100),
    "ResNet-20 conv 16-16": _conv3x3(
        16, 16, 256, 1152, "a 3x3 convolution of ResNet-20's first stage (16 -> 16 channels, "
        "32x32 positions), batch 32; 256 of the positions as vectors, the weight gradient over "
        "one full row tile (1152 positions) of the 32768", seeds=200),
    "ResNet-20 conv 64-64": _conv3x3(
        64, 64, 256, 1152, "a 3x3 convolution of ResNet-20's last stage (64 -> 64 channels, 8x8 "
        "positions), batch 32; 256 of the positions as vectors, the weight gradient over one "
        "full row tile (1152 positions) of the 2048", seeds=32),
}
"""The book's layers: per MVM the reduction (rows filled), outputs, vectors and the rows a tile
keeps together (a channel's 3x3 taps). Conv positions are vectors of the forward and backward
MVMs and the reduction of the weight gradient. ``seeds``: independent draws (operands, chip,
noise) pooled per entry; the gradient MVMs of small layers have heavy-tailed errors (a rare
flipped count in a high radix-4 plane), so they need many draws for a stable ratio."""

BREAKS = {
    "4-bit ADC": {"what": "adc_bits=4 at the calibrated range", "changes": {"adc_bits": 4},
                  "range_scale": 1.0},
    "5-bit ADC": {"what": "adc_bits=5 at the calibrated range", "changes": {"adc_bits": 5},
                  "range_scale": 1.0},
    "6-bit ADC": {"what": "adc_bits=6 at the calibrated range", "changes": {"adc_bits": 6},
                  "range_scale": 1.0},
    "7-bit ADC": {"what": "adc_bits=7 at the calibrated range", "changes": {"adc_bits": 7},
                  "range_scale": 1.0},
    "range 1/2": {"what": "the ADC range half the calibrated one", "changes": {},
                  "range_scale": 0.5},
    "range 1/4": {"what": "the ADC range a quarter of the calibrated one", "changes": {},
                  "range_scale": 0.25},
    "heavy clipping": {"what": "the ADC range 1/8 of the calibrated one (many counts clip)",
                       "changes": {}, "range_scale": 0.125},
    "30 % mismatch": {"what": "cap_mismatch=0.3, the largest of the chapter's grid",
                      "changes": {"cap_mismatch": 0.3}, "range_scale": 1.0},
}
"""Regimes at and beyond the edge of the model, computed on :data:`BREAK_LAYER`: fewer ADC bits,
ranges below the calibrated one (with the fraction of conversions that clip), and the grid's
largest mismatch. Which of them leave :data:`BAND` is measured, not assumed."""
BREAK_LAYER = "ResNet-20 conv 64-64"
BREAK_SEEDS = 32


def _config(preset: str, seed: int, changes: dict | None = None) -> imc.IMCConfig:
    return getattr(imc.IMCConfig, preset)(seed=seed, **(changes or {}))


def calibrated_range(A, X, cfg: imc.IMCConfig, kw: dict, counts=None) -> float:
    """The ADC range a layer calibrates for this MVM (fraction of the full column swing), from
    its column ``counts`` (computed when not given)."""
    if counts is None:
        counts = imc.column_counts(A, X, cfg, **kw)
    return imc.calibrate_adc_range(counts, cfg.rows, percentile=cfg.adc_percentile,
                                   floor=cfg.adc_range_floor())


def compare(kind: str, reduction: int, preset: str, *, seeds: int = 6, outputs: int = 192,
            vectors: int = 64, changes: dict | None = None, range_scale: float = 1.0,
            **kw_extra) -> dict:
    """Output error of fast and bit-true on the same operands, chip and ADC range.

    Per seed: operands of one ``kind`` of MVM (:func:`imckit.imc.training_operands`), the chip
    ``IMCConfig.<preset>(seed=seed, **changes)``, the range the layers calibrate times
    ``range_scale``, and fresh noise for each simulator. The mean square errors against the
    exact product (bias included: an MSE ratio, which the book calls the error-variance ratio
    because both errors are nearly unbiased) are pooled over seeds as a ratio of sums, so a seed
    with larger errors weighs more.

    Returns ``mse_fast``, ``mse_bit_true``, ``ratio`` (fast / bit-true), ``ratio_ci95`` (a
    seeded BCa bootstrap over seeds, :func:`_bootstrap`), ``per_seed`` (each
    seed's ratio), ``clipped`` (the fraction of bit-true conversions whose exact count lies
    above the ADC range), ``warned_seeds`` (in how many seeds :func:`~imckit.imc.mvm_fast`
    warned) and ``warning`` (its first message, or None).
    """
    ef, eb = [], []
    seen: list[str] = []
    warned = clip_n = clip_d = 0
    for s in range(seeds):
        g = torch.Generator().manual_seed(s)
        A, X, kw, _, _ = imc.training_operands(kind, reduction, outputs=outputs, vectors=vectors,
                                               generator=g)
        kw.update(kw_extra)
        cfg = _config(preset, s, changes)
        counts = imc.column_counts(A, X, cfg, **kw)
        r = range_scale * calibrated_range(A, X, cfg, kw, counts)
        if cfg.adc_bits is not None:
            step = r * cfg.rows / cfg.adc_levels(False)
            clip_n += int((counts > cfg.adc_levels(False) * step + 0.5 * step).sum())
            clip_d += counts.numel()
        ref = X.double() @ A.double()
        yb = imc.mvm(A, X, cfg, adc_range=r, generator=torch.Generator().manual_seed(100 + s),
                     **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yf = imc.mvm_fast(A, X, cfg, adc_range=r,
                              generator=torch.Generator().manual_seed(200 + s), **kw)
        msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        warned += bool(msgs)
        seen += msgs
        eb.append(float(((yb.double() - ref) ** 2).mean()))
        ef.append(float(((yf.double() - ref) ** 2).mean()))
    return {"mse_fast": sum(ef) / seeds, "mse_bit_true": sum(eb) / seeds,
            "ratio": sum(ef) / sum(eb), "ratio_ci95": _bootstrap(ef, eb),
            "per_seed": [f / b if b > 0 else None for f, b in zip(ef, eb)],
            "clipped": clip_n / clip_d if clip_d else 0.0,
            "warned_seeds": warned, "warning": seen[0] if seen else None}


def _bootstrap(ef: list[float], eb: list[float], n: int = 2000) -> list[float]:
    """95 % interval of the pooled ratio ``sum(ef) / sum(eb)``, resampling seeds in pairs:
    bias-corrected and accelerated (BCa, ``scipy.stats.bootstrap``), which a skewed ratio needs
    (a percentile interval under-covers there); the percentile interval where BCa is undefined
    (too few or identical draws). Seeded: repeatable."""
    import warnings as _w

    from scipy.stats import bootstrap

    f, b = np.asarray(ef, dtype=float), np.asarray(eb, dtype=float)
    if len(f) < 3 or not (b > 0).any():
        r = float(f.sum() / b.sum()) if b.sum() > 0 else float("nan")
        return [r, r]

    def ratio(x, y, axis=-1):
        return x.sum(axis=axis) / y.sum(axis=axis)

    for method in ("BCa", "percentile"):
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            ci = bootstrap((f, b), ratio, paired=True, vectorized=True, n_resamples=n,
                           method=method, confidence_level=0.95,
                           random_state=np.random.default_rng(0)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return [float(ci.low), float(ci.high)]


def variance_ratio(kind: str, reduction: int, preset: str, seeds: int = 6, outputs: int = 192,
                   **kw) -> float:
    """Pooled output error variance of fast over bit-true (:func:`compare`'s ``ratio``)."""
    return compare(kind, reduction, preset, seeds=seeds, outputs=outputs, **kw)["ratio"]


def table(seeds: int | None = None, progress=None) -> dict:
    """The validation table: every layer x MVM x preset, then :data:`BREAKS` on
    :data:`BREAK_LAYER` (each MVM, 16 nm preset). ``seeds`` overrides every entry's number of
    draws (None: the layer's ``seeds``, :data:`BREAK_SEEDS`); ``progress(text)`` is called per
    entry."""
    out = {"rows": [], "breaks": []}
    for layer, spec in LAYERS.items():
        n = seeds or spec["seeds"]
        for preset in PRESETS:
            for kind in MVM_KINDS:
                if progress:
                    progress(f"{layer} {preset} {kind}")
                c = compare(kind, preset=preset, seeds=n, **spec[kind])
                out["rows"].append({"layer": layer, "preset": preset, "mvm": kind, **spec[kind],
                                    "seeds": n, **c,
                                    "in_band": BAND[0] <= c["ratio"] <= BAND[1]})
    for name, brk in BREAKS.items():
        for kind in MVM_KINDS:
            if progress:
                progress(f"{name} {kind}")
            spec = LAYERS[BREAK_LAYER][kind]
            n = seeds or BREAK_SEEDS
            c = compare(kind, preset="jia22_16nm", seeds=n, changes=brk["changes"],
                        range_scale=brk["range_scale"], **spec)
            out["breaks"].append({"regime": name, "layer": BREAK_LAYER, "preset": "jia22_16nm",
                                  "mvm": kind, **spec, "seeds": n, **c,
                                  "in_band": BAND[0] <= c["ratio"] <= BAND[1]})
    return out


def load(path: str | Path | None = None) -> dict:
    """The stored validation (``book/data/fast_validation.json``, shipped with the package);
    refuses a file of another schema with one line."""
    from .data import book_file

    p = Path(path) if path is not None else book_file("fast_validation.json")
    d = json.loads(p.read_text())
    if d.get("schema") != SCHEMA:
        raise ValueError(f"{p.name}: schema {d.get('schema')!r}, expected {SCHEMA!r}")
    return d


def rows(d: dict, which: str = "variance") -> list[dict]:
    """Table rows of a stored validation (:func:`load`): one per layer and preset
    (``which="variance"``) or per regime (``which="breaks"``), with each MVM's ratio and its
    95 % interval (``**out**`` outside :data:`BAND`) and whether the fast mode warned; regimes
    also give the fraction of conversions that clip, per MVM."""
    out: dict[tuple, dict] = {}
    for r in d[which]:
        key = (r.get("regime"), r["layer"], r["preset"])
        row = out.setdefault(key, {**({"regime": r["regime"]} if "regime" in r else {}),
                                   "layer": r["layer"], "preset": r["preset"], "warned": "no"})
        lo, hi = r["ratio_ci95"]
        row[r["mvm"]] = (f"{r['ratio']:.2f} ({lo:.2f}-{hi:.2f})"
                         + ("" if r["in_band"] else " **out**"))
        if r["warned_seeds"]:
            row["warned"] = "yes"
        if which == "breaks":
            row.setdefault("_clip", []).append(r.get("clipped", 0.0))
    for row in out.values():
        clip = row.pop("_clip", None)
        if clip is not None:                       # forward / backward / weight gradient
            row["clipped"] = " / ".join(f"{100 * c:.2g} %" for c in clip)
    return list(out.values())


def accuracy_rows(d: dict) -> list[dict]:
    """Final test accuracy (%) per seed of bit-true and fast training, the mean, the paired
    difference with its 95 % interval, and the mean seconds per run, one row per network and
    mode (from the ``accuracy`` part of a stored validation)."""
    out = []
    for s in d["accuracy"]["summary"]:
        lo, hi = s["diff_points_ci95"]
        for mode, key in (("bit-true", "bit_true"), ("fast", "fast")):
            acc = [100 * a for a in s[key]]
            diff = f"{s['diff_points_mean']:+.2f} ({lo:+.2f} to {hi:+.2f})"
            out.append({"network": s["net"], "mode": mode,
                        "per seed (%)": ", ".join(f"{a:.1f}" for a in acc),
                        "mean (%)": f"{sum(acc) / len(acc):.2f}",
                        "fast - bit-true, points (95 % interval)": diff if mode == "fast" else "",
                        "s per run": f"{s['wall_s'][mode]:.1f}"})
    return out
