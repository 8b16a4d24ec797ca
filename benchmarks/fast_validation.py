"""The fast IMC mode validated against bit-true (issue 14): the table the training chapter prints.

Part 1, computed here: the output error variance ratio fast / bit-true of each training MVM
(forward, backward, weight gradient) on the book's layers at the ``jia22_16nm`` and ``measured``
presets, with a 95 % bootstrap interval over the draws, and the regimes where the fast model
breaks or may break (4-6-bit ADCs, ADC ranges 1/2-1/8 of the calibrated one with the fraction
of conversions that clip, 30 % mismatch), with whether ``imc.mvm_fast`` warned. The layers, settings
and the comparison are in ``imckit/fast_validation.py`` (shared with ``tests/test_fast.py``).
Seeded: a rerun on the same code gives the same numbers.

Part 2, folded in: the final accuracy per seed of fast vs bit-true training, read from
``benchmarks/results/fast_accuracy.json`` (``bench_fast_accuracy.py``; rerun that first if the
fast mode changed).

Writes ``book/data/fast_validation.json`` (schema ``imckit.fast_validation/1``). About 2-3
minutes on a 2-core x86 CPU (one process, one torch thread).

Run: ``.venv/bin/python benchmarks/fast_validation.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import imckit
from imckit import fast_validation as fv
from imckit import imc
from imckit.imc import fast

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "data" / "fast_validation.json"
ACCURACY = ROOT / "benchmarks" / "results" / "fast_accuracy.json"
HARDWARE = "2-core x86 CPU"


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def accuracy_results(path: Path = ACCURACY) -> dict:
    """The per-seed accuracies of bench_fast_accuracy.py, with where and how they were made."""
    d = json.loads(path.read_text())
    txt = path.with_suffix(".txt")
    header = txt.read_text().splitlines()[0] if txt.exists() else ""
    rel = str(path.relative_to(ROOT))
    return {"source": rel, "command": d["command"], "wall_s": d["wall_s"],
            "header": header, "hardware": HARDWARE if HARDWARE in header else None,
            "committed": _git("log", "-1", "--format=%cs", "--", rel).strip() or None,
            "summary": d["summary"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=None,
                    help="draws per entry (default: each layer's own, imckit.fast_validation)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tab = fv.table(seeds=args.seeds, progress=lambda s: print(f"  {s}", flush=True))
    wall = time.perf_counter() - t0
    dirty = [ln[3:] for ln in _git("status", "--porcelain", "--", "imckit").splitlines()
             if not ln.startswith("??")]
    out = {
        "schema": fv.SCHEMA,
        "what": "output error variance ratio fast / bit-true per training MVM (imc.mvm_fast vs "
                "imc.mvm on the same operands, chip and ADC range), and final accuracy per seed "
                "of fast vs bit-true training",
        "config": {
            "band": list(fv.BAND), "presets": list(fv.PRESETS), "mvms": list(fv.MVM_KINDS),
            "layers": fv.LAYERS, "breaks": fv.BREAKS, "break_layer": fv.BREAK_LAYER,
            "operands": "imckit.imc.training_operands (synthetic layer statistics [I])",
            "adc_range": "calibrated as the layers do (99.9 % of the column counts, a power of "
                         "two, never under the LSB floor), times the regime's range_scale",
            "error": "mean square error against the exact integer product, pooled over seeds; "
                     "ratio_ci95: 95 % bootstrap interval resampling seeds",
            "warn_thresholds": {"clip_fraction": fast.CLIP_WARN, "few_adc_bits": fast.FEW_BITS,
                                "cap_mismatch": fast.MISMATCH_WARN},
            "preset_configs": {p: repr(getattr(imc.IMCConfig, p)()) for p in fv.PRESETS},
        },
        "variance": tab["rows"],
        "breaks": tab["breaks"],
        "accuracy": accuracy_results(),
        "provenance": {
            "command": "python benchmarks/fast_validation.py"
                       + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
            "hardware": HARDWARE, "threads": 1,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": round(wall, 1), "git_commit": _git("rev-parse", "HEAD").strip() or None,
            "modified_package_files": dirty,
            "versions": {"imckit": imckit.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        },
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    bad = [r for r in tab["rows"] if not r["in_band"]]
    print(f"{len(tab['rows'])} entries, {len(bad)} outside {fv.BAND}; wrote {args.out} "
          f"({wall:.0f} s)")
    for r in tab["rows"] + tab["breaks"]:
        print(f"{r.get('regime', ''):15s} {r['layer']:22s} {r['preset']:10s} {r['mvm']:11s} "
              f"{r['ratio']:6.3f} [{r['ratio_ci95'][0]:.2f}, {r['ratio_ci95'][1]:.2f}] "
              f"warned in {r['warned_seeds']}/{r['seeds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
