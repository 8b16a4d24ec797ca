"""Run the experiments of the chapter "The paper's claims, checked" and write their summaries.

Each subcommand runs one or more sweep files of this folder with :func:`imckit.sweep.run`
(resumable: finished points in ``experiments/results/`` are skipped) and writes a compact summary
(mean, std and n over seeds, plus provenance: command, machine, date, wall time, git commit)
under ``book/data/``. The chapter only loads those summaries.

Usage, from the repository root::

    .venv/bin/python experiments/claims.py noise          # exp. 1 -> book/data/claims_noise_mvms.json
    .venv/bin/python experiments/claims.py accuracy-mlp   # exp. 2 -> book/data/claims_accuracy_mlp.json
    .venv/bin/python experiments/claims.py accuracy-cnn   # exp. 2 -> book/data/claims_accuracy_cnn.json
    .venv/bin/python experiments/claims.py energy         # exp. 3 -> book/data/claims_energy.json
    .venv/bin/python experiments/claims.py cifar10 --data-dir DIR --device cuda   # exp. 4 (GPU)
    .venv/bin/python experiments/claims.py cifar10 --fidelity fast --data-dir DIR --device cuda
    .venv/bin/python experiments/claims.py all            # 1-3 in order

``energy`` reads the records of the two accuracy experiments (it trains nothing) and adds the
analytic counts of imckit.energy for four networks (two of them CIFAR-scale). ``cifar10 --mini`` runs experiment 4's
code on a generated random mini dataset in the CIFAR-10 format, a smoke test whose numbers mean
nothing (they are written under ``experiments/results/``, never to ``book/data/``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "book" / "data"

from imckit import energy, experiments, mapping, sweep  # noqa: E402

ACC_FILES = {"mlp": ["accuracy_mlp_references.yaml", "accuracy_mlp_mismatch.yaml",
                     "accuracy_mlp_adcbits.yaml"],
             "cnn": ["accuracy_cnn_references.yaml", "accuracy_cnn_mismatch.yaml",
                     "accuracy_cnn_adcbits.yaml"]}
MODES = ("full", "two-level", "one-level")


def _provenance(argv, wall_s: float, specs: list[dict]) -> dict:
    return {"command": "python experiments/claims.py " + " ".join(shlex.quote(a) for a in argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"{platform.system()} {platform.release()}",
            "wall_s": round(wall_s, 1), "git_commit": sweep.git_commit(),
            "sweeps": [{k: s[k] for k in ("function", "grid", "seeds", "fixed")} for s in specs]}


def _run_specs(files, n_jobs, progress, overrides=None) -> tuple[list[dict], list[dict]]:
    specs, records = [], []
    for name in files:
        spec = sweep.load_spec(HERE / name)
        if overrides:
            spec["fixed"] = {**spec["fixed"], **overrides}
        specs.append(spec)
        recs = sweep.run(spec["function"], spec["grid"], seeds=spec["seeds"],
                         out_dir=spec["out"], fixed=spec["fixed"],
                         n_jobs=n_jobs or spec["n_jobs"], progress=progress)
        if recs.failed:                       # never summarize a partial sweep
            raise SystemExit(f"claims: {len(recs.failed)} point(s) of {name} failed; see "
                             f"{spec['out']}/*.traceback.txt, then rerun (failed points are "
                             "retried)")
        records += recs
    return specs, records


def _write(name: str, obj: dict) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def cmd_noise(args, argv) -> Path:
    t0 = time.perf_counter()
    specs, recs = _run_specs(["noise_budget.yaml", "noise_budget_measured.yaml"], args.n_jobs,
                             not args.quiet)
    rows = sweep.table(recs)
    keys = ["sqnr_db.adc", "sqnr_db.mismatch", "sqnr_db.ktc", "sqnr_db.comparator",
            "sqnr_db.analog", "sqnr_db.all", "sqnr_db.operand", "analog_below_adc_db",
            "analog_below_operand_db", "adc_range", "lsb_counts"]
    summary = experiments.summarize(
        rows, ["preset", "mvm", "rows_filled", "cap_unit_ff", "cap_mismatch", "adc_noise_uv"],
        keys)
    return _write("claims_noise_mvms.json", {
        "schema": "imckit.claims_noise/2",
        "what": "Noise budget of the three training MVMs (imckit.imc.analysis.budget_point): "
                "SQNR (dB) per cause vs the exact integer product at the ADC range training "
                "calibrates (99.9th percentile, never below the LSB floor), and the analog "
                "error (mismatch + kT/C + comparator, through the ADC) below the ADC's "
                "quantization error and below the operands' (INT4 / radix-4) quantization "
                "error, in dB (positive: analog smaller). Synthetic operands [I]: N(0,1) "
                "weights, half-dense ReLU activations, log-normal (sigma 2) gradients with 30 % "
                "zeros; 64 outputs x 64 vectors; mean/std over seeds (operands and chip). "
                "null = no error at all (infinite SQNR).",
        "rows": summary,
        "provenance": _provenance(argv, time.perf_counter() - t0, specs)})


def _acc_summary(rows):
    keys = ["placement", "adaptability", "cap_mismatch", "adc_bits"]
    return experiments.summarize(rows, keys, ["final_accuracy"])


def _curves(rows):
    """Mean test accuracy per epoch for the default point of each mode and the references."""
    out = {}
    for r in rows:
        default = r["placement"] != "imc" or (r["cap_mismatch"] == 0.002 and r["adc_bits"] == 8)
        if not default:
            continue
        key = r["placement"] if r["placement"] != "imc" else r["adaptability"]
        out.setdefault(key, []).append([h["test_accuracy"] for h in r["history"]])
    return {k: [sum(c) / len(c) for c in zip(*v)] for k, v in out.items()}


def cmd_accuracy(args, argv, net: str) -> Path:
    t0 = time.perf_counter()
    specs, recs = _run_specs(ACC_FILES[net], args.n_jobs, not args.quiet)
    rows = sweep.table(recs)
    train_s = [r["wall_s"] for r in rows]
    return _write(f"claims_accuracy_{net}.json", {
        "what": f"final test accuracy (0..1) of the {net}, mean/std/n over seeds",
        "settings": specs[0]["fixed"], "rows": _acc_summary(rows), "curves": _curves(rows),
        "point_wall_s": {"mean": sum(train_s) / len(train_s), "max": max(train_s)},
        "provenance": _provenance(argv, time.perf_counter() - t0, specs)})


#: Experiment 3's axes: digital baselines (names of imckit.energy.BASELINES), how the kept
#: first and last layers compute (None: every layer mapped), and the networks priced.
ENERGY_BASELINES = ("fp32", "fp32-32KB", "fp16", "int8", "int8-lean")
ENDS = (None, "fp32", "bf16")
CIFAR_NETS = {"jia22-cnn": "11-layer CIFAR-10 CNN (energy.jia22_cnn, 128/256 channels)",
              "resnet20": "ResNet-20 for CIFAR-10 (energy.resnet20)"}
ACC_NETS = {"mlp": "MNIST-5k MLP 784-64-10 (models.mlp)",
            "cnn": "digits CNN 16-32 channels (models.small_cnn)"}


#: The placement computing at a baseline's precision (bf16 stands in for fp16: same MAC and
#: operand width in the energy model).
_PLACEMENT_OF_PRECISION = {"fp32": "fp32", "fp16": "bf16", "bf16": "bf16", "int8": "int8",
                           "int4": "digital"}


def _shapes_of_run(work: dict) -> list:
    """The layers a recorded run trained (work record schema imckit.work/2) as LayerShapes."""
    return [energy.LayerShape(lay["shape"][0], lay["shape"][1], lay["positions"],
                              lay["kernel_area"], lay["name"], lay["in_positions"],
                              lay["input_grad"], lay["signed_input"])
            for lay in work["layers"]]


def _check_shapes(net: str, shapes: list, fixed: dict) -> None:
    """The recorded layers are the model's (imckit.models on imckit.data's input shape)."""
    ds = experiments._dataset(fixed["dataset"], fixed.get("data_dir"))
    model = experiments._model(net, ds, fixed.get("hidden", (64,)), 0)
    ref = energy.layers_from_model(model, tuple(ds.input_shape))
    key = lambda l: (l.n, l.m, l.positions, l.kernel_area, l.in_positions, l.input_grad)
    if [key(l) for l in ref] != [key(l) for l in shapes]:
        raise SystemExit(f"claims.py energy: the {net} records' layers differ from "
                         f"imckit.models' ({[key(l) for l in shapes]} vs {[key(l) for l in ref]})")


def _savings_table(name: str, layers, batch: int) -> list[dict]:
    """Savings of one training step over adaptability x baseline x input mode x sign mode x
    ends (the fallback MVMs at fp32, the trainer's default), plus two-level and one-level with
    every layer mapped and the fallback computing exact INT4 x radix-4 (``digital``) or at the
    baseline's precision. ``input_mode``: binary input planes (``bit-serial``, the simulator's
    default) or a 16-level input DAC (``multi-level``, LEE21's DAC; priced like a binary
    conversion, same 8-bit ADC energy and one row drive per digit: our assumption [I])."""
    rows = []

    def row(mode, b, inp, sign, ends, fb, **kw):
        rep = energy.training_step_energy(layers, batch=batch, adaptability=mode, baseline=b,
                                          input_mode=inp, sign_mode=sign,
                                          fallback_placement=fb, **kw)
        rows.append({"network": name, "adaptability": mode, "baseline": b, "input_mode": inp,
                     "sign_mode": sign, "ends": ends, "fallback_placement": fb,
                     "savings": rep.savings, "total_j": rep.total_j,
                     "baseline_j": rep.baseline_j})

    for mode in MODES:
        for b in ENERGY_BASELINES:
            for inp in energy.INPUT_MODES:
                for sign in mapping.SIGN_MODES:
                    for ends in ENDS:
                        row(mode, b, inp, sign, ends or "mapped", "fp32",
                            keep_ends=ends is not None, ends_placement=ends or "fp32")
    for mode in MODES[1:]:
        for b in ENERGY_BASELINES:
            # the fallback MVM(s) as exact INT4 x radix-4, and at the baseline's own precision
            same = _PLACEMENT_OF_PRECISION[energy.BASELINES[b].precision]
            for fb in dict.fromkeys(p for p in ("digital", same) if p != "fp32"):
                for inp in energy.INPUT_MODES:
                    for sign in mapping.SIGN_MODES:
                        row(mode, b, inp, sign, "mapped", fb)
    return rows


def _layer_dicts(layers) -> list[dict]:
    return [dataclasses.asdict(l) for l in layers]          # every LayerShape field


def cmd_energy(args, argv) -> Path:
    """Experiment 3: savings of the recorded accuracy runs (their own work records) and of
    one training step of four networks over baseline x input mode x sign mode x ends x
    adaptability, all counted by the one mapping (imckit.mapping.arrays) the simulator
    executes."""
    t0 = time.perf_counter()
    out = {"what": "training energy savings (digital baseline energy / mapped energy), "
                   "preset paper-16nm: the recorded work of the experiment-2 runs, and one "
                   "training step of four networks over adaptability x baseline x input mode x "
                   "sign mode x ends (default occupancy: every input plane non-empty, an upper "
                   "bound; multi-level conversions priced like binary ones [I])",
           "baselines": list(ENERGY_BASELINES), "input_modes": list(energy.INPUT_MODES),
           "sign_modes": list(mapping.SIGN_MODES),
           "ends": ["mapped" if e is None else e for e in ENDS], "adaptabilities": list(MODES),
           "recorded": {}, "networks": {}, "analytic": []}
    specs_used = []
    for net in ACC_FILES:
        specs = [sweep.load_spec(HERE / f) for f in ACC_FILES[net]]
        specs_used += specs
        # only records of the current sweep files (a folder may hold runs of older settings)
        ids = {sweep.point_id(s["function"], p, seed, s["fixed"])
               for s in specs for p, seed in sweep.grid_points(s["grid"], s["seeds"])}
        recs = [r for r in sweep.load_records(specs[0]["out"])
                if r["id"] in ids and r["params"]["placement"] == "imc"
                and r["params"]["cap_mismatch"] == 0.002 and r["params"]["adc_bits"] == 8]
        if not recs:
            raise SystemExit(f"claims.py energy: no {net} accuracy records; run accuracy-{net} first")
        fixed = specs[0]["fixed"]
        rows = []
        for r in recs:
            work = r["results"]["work"]
            reps = {b: energy.energy_from_work(work, baseline=b) for b in ENERGY_BASELINES}
            rows.append({"adaptability": r["params"]["adaptability"], "seed": r["seed"],
                         "recorded": {b: rep.savings for b, rep in reps.items()},
                         "by_mvm_j": reps["fp32"].by_mvm(),
                         "baseline_by_mvm_j": reps["fp32"].by_mvm(baseline=True),
                         "sign_mode": sorted({l["sign_mode"] for l in work["layers"]}),
                         "steps": work["steps"]})
        shapes = _shapes_of_run(recs[0]["results"]["work"])
        _check_shapes(net, shapes, fixed)
        out["recorded"][net] = {
            "settings": fixed, "sign_mode": sorted({m for r in rows for m in r["sign_mode"]}),
            "record_commits": sorted({r.get("git_commit") or "unknown" for r in recs}),
            "rows": experiments.summarize(rows, ["adaptability"],
                                          [f"recorded.{b}" for b in ENERGY_BASELINES]),
            "by_mvm_j": {r["adaptability"]: {"mapped": r["by_mvm_j"],
                                             "baseline": r["baseline_by_mvm_j"],
                                             "steps": r["steps"]}
                         for r in rows if r["seed"] == 0}}
        out["networks"][net] = {"what": ACC_NETS[net], "batch": fixed["batch_size"],
                                "layers": _layer_dicts(shapes),
                                "shapes_from": "the recorded runs (checked against "
                                               "imckit.models on imckit.data's input shape)"}
    for net, fn in energy.NETWORKS.items():
        out["networks"][net] = {"what": CIFAR_NETS[net], "batch": 64,
                                "layers": _layer_dicts(fn()),
                                "shapes_from": f"imckit.energy.{fn.__name__}()"}
    for net, info in out["networks"].items():
        layers = [energy.LayerShape(**l) for l in info["layers"]]
        info["macs_per_step"] = sum(w.macs for _, mv in energy.step_work(layers, info["batch"])
                                    for w in mv.values())
        out["analytic"] += _savings_table(net, layers, info["batch"])
    out["provenance"] = _provenance(argv, time.perf_counter() - t0, specs_used)
    return _write("claims_energy.json", out)


def cmd_cifar10(args, argv) -> Path:
    over = {"data_dir": args.data_dir, "device": args.device}
    if args.epochs:
        over["epochs"] = args.epochs
    fast = args.fidelity == "fast"
    spec = sweep.load_spec(HERE / ("cifar10_resnet20_fast.yaml" if fast else "cifar10_resnet20.yaml"))
    if args.mini:
        where = Path(args.results) if args.results else HERE / "results"
        mini = experiments.write_mini_cifar(where / "mini_cifar", n_per_batch=4)
        over.update(data_dir=str(mini), epochs=1, batch_size=8, device="cpu", augment=None)
        spec["out"] = str(where / ("cifar10_fast_mini_SMOKE_TEST" if fast else "cifar10_mini_SMOKE_TEST"))
        spec["grid"] = {**spec["grid"], "placement": ["imc"] if fast else ["fp32", "digital"]}
        spec["seeds"] = [0]
    t0 = time.perf_counter()
    fixed = spec["fixed"] = {**spec["fixed"], **over}
    recs = sweep.run(spec["function"], spec["grid"], seeds=spec["seeds"], out_dir=spec["out"],
                     fixed=fixed, n_jobs=args.n_jobs or 1, progress=not args.quiet)
    rows = sweep.table(recs)
    result = {"what": "ResNet-20 test accuracy on CIFAR-10 (fp32 = standard training)"
                      + ("; IMC in the fast mode (imc.mvm_fast)" if fast else ""),
              "settings": fixed, "rows": _acc_summary(rows),
              "provenance": _provenance(argv, time.perf_counter() - t0, [spec])}
    if args.mini:
        result["what"] = ("SMOKE TEST on random mini data in the CIFAR-10 format: meaningless"
                          + ("; IMC in the fast mode (imc.mvm_fast)" if fast else ""))
        path = Path(spec["out"] + "_summary.json")
        path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        return path
    return _write("claims_cifar10_fast.json" if fast else "claims_cifar10.json", result)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=["noise", "accuracy-mlp", "accuracy-cnn", "energy",
                                          "cifar10", "all"])
    p.add_argument("--n-jobs", type=int, default=0, help="parallel workers (0: the file's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data-dir", default="data", help="cifar10: folder of the CIFAR-10 batches")
    p.add_argument("--device", default="cuda", help="cifar10: torch device")
    p.add_argument("--epochs", type=int, default=0, help="cifar10: override the file's epochs")
    p.add_argument("--fidelity", choices=["bit-true", "fast"], default="bit-true",
                   help="cifar10: bit-true (cifar10_resnet20.yaml) or the fast mode "
                   "(cifar10_resnet20_fast.yaml, summary claims_cifar10_fast.json)")
    p.add_argument("--mini", action="store_true",
                   help="cifar10: smoke test on generated random mini data (numbers meaningless)")
    p.add_argument("--results", default=None,
                   help="cifar10 --mini: folder for the mini data and records "
                   "(default experiments/results)")
    args = p.parse_args(argv)
    todo = {"noise": [lambda: cmd_noise(args, argv)],
            "accuracy-mlp": [lambda: cmd_accuracy(args, argv, "mlp")],
            "accuracy-cnn": [lambda: cmd_accuracy(args, argv, "cnn")],
            "energy": [lambda: cmd_energy(args, argv)],
            "cifar10": [lambda: cmd_cifar10(args, argv)]}
    steps = (todo["noise"] + todo["accuracy-mlp"] + todo["accuracy-cnn"] + todo["energy"]
             if args.experiment == "all" else todo[args.experiment])
    for step in steps:
        t0 = time.perf_counter()
        path = step()
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
