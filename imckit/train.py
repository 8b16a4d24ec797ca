"""The training loop: SGD with momentum, a learning-rate schedule, history, checkpoints.

:func:`fit` trains a model on a :class:`imckit.data.Dataset` and returns a :class:`History`
with one record per epoch (``epoch``, ``train_loss``, ``test_accuracy`` in 0..1, ``wall_s``,
``skipped_steps``). :func:`iter_fit` is the same loop as a generator that yields the history
after every epoch (live curves in a notebook).

Reproducibility: the data order comes from a ``torch.Generator`` seeded with ``seed``; any code
in the model that draws from torch's global generator (noise, stochastic rounding) gets its own
stream, seeded with ``seed`` and swapped in only while the loop runs, so the caller's global
random state is left alone. With ``checkpoint=path`` the loop saves model, optimizer, every
random state (including ``torch.Generator`` attributes found on the model's modules), the
history and the data order atomically at the end of every epoch; calling :func:`fit` again with
the same path resumes, and reaches exactly the numbers of an uninterrupted run (wall times aside).

Hooks into :mod:`imckit.nn`: ``before_step(model)`` and ``after_step(model)`` around every
optimizer step, ``nonfinite_grad_seen(model)`` as one more reason to skip a step,
``collect_work(model)`` for ``History.work`` (all no-ops for a model without IMC layers).

Divergence rule: a step whose loss or gradient is not finite is skipped (the weights stay as
they were). After ``skip_patience`` consecutive skipped steps the learning rate is halved (a
warning says so; the factor stays for the rest of the run and travels in the checkpoint), at
most ``max_lr_halvings`` times; one more run of ``skip_patience`` skipped steps raises
:class:`DivergenceError` (CLI: one line, exit status 1). Nothing is written then, so the last
checkpoint, from the end of the last finished epoch, is kept.

A checkpoint that cannot be read (empty, truncated, not written by this loop) raises
:class:`CheckpointError` naming it; delete it (CLI: ``--restart``) to start over.

Checkpoints carry a format number (:data:`CKPT_FORMAT`). Format 1 predates the learned clip
parameters of the sun20 recipe (a PACT ``a_alpha`` per quantized layer); format 2 may hold
them. A format-1 checkpoint is migrated when the model has no parameter or buffer the
checkpoint lacks (a strict-recipe or fp32 model), and refused naming the missing entries
otherwise; a format newer than this loop reads is refused (:class:`CheckpointError`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._validate import check_choice, check_range

__all__ = ["History", "Callback", "LivePlot", "fit", "iter_fit", "learning_rate", "SCHEDULES",
           "DivergenceError", "CheckpointError", "CKPT_FORMAT"]

SCHEDULES = ("constant", "cosine", "step")
AUGMENTS = (None, "crop-flip")
CKPT_FORMAT = 2
"""Format number of the checkpoints this loop writes (module docstring: 1 -> 2 added learned
clip parameters)."""


class DivergenceError(RuntimeError):
    """Training diverged: non-finite steps went on after every learning-rate halving."""


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as one of this loop's checkpoints."""


@dataclass
class History:
    """What a training run produced.

    Attributes:
        records: one dict per finished epoch: ``epoch`` (1-based), ``train_loss`` (mean
            cross-entropy over the steps taken, nats), ``test_accuracy`` (0..1), ``wall_s``
            (seconds for training + evaluation of that epoch), ``skipped_steps`` (optimizer
            steps skipped for a non-finite loss or gradient).
        config: the run's settings (fit arguments plus the caller's ``config``).
        work: per-layer, per-MVM work counts from :func:`imckit.nn.collect_work` (``layers``
            empty for a model without IMC layers; None before the first epoch).

    >>> h = History(records=[{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.9,
    ...                       "wall_s": 0.1, "skipped_steps": 0}])
    >>> h.test_accuracy, h.epochs_done
    ([0.9], 1)
    """

    records: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    work: dict | None = None

    @property
    def epochs_done(self) -> int:
        return len(self.records)

    def column(self, name: str) -> list:
        """The values of one record field over the epochs."""
        return [r[name] for r in self.records]

    @property
    def train_loss(self) -> list[float]:
        return self.column("train_loss")

    @property
    def test_accuracy(self) -> list[float]:
        return self.column("test_accuracy")

    def to_dict(self) -> dict:
        return {"config": dict(self.config), "history": [dict(r) for r in self.records],
                "work": self.work}


class Callback:
    """Base class for training callbacks; override what you need. Raising stops training."""

    def on_train_begin(self, history: History) -> None:
        """Called once before the first epoch that runs (after a resume: with restored records)."""

    def on_epoch_end(self, history: History) -> None:
        """Called after every epoch, once its record is appended and the checkpoint written."""

    def on_train_end(self, history: History) -> None:
        """Called once after the last epoch."""


class LivePlot(Callback):
    """Redraw a figure after every epoch: ``draw(history)`` does the drawing and displaying.

    The figure code stays outside this module (presentation layer, e.g. a widget's output area),
    so training never imports ipywidgets or pyplot.

    >>> seen = []
    >>> LivePlot(lambda h: seen.append(h.epochs_done)).on_epoch_end(History(records=[{}]))
    >>> seen
    [1]
    """

    def __init__(self, draw: Callable[[History], Any]):
        self.draw = draw

    def on_epoch_end(self, history: History) -> None:
        self.draw(history)


def learning_rate(schedule: str, lr: float, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``; ``cosine``: ``lr/2 * (1 + cos(pi*step/total))``; ``step``: ``lr``, times 0.1
    from 50 % and 0.01 from 75 % of the run.

    >>> learning_rate("cosine", 0.1, 0, 100), learning_rate("cosine", 0.1, 50, 100)
    (0.1, 0.05)
    >>> learning_rate("step", 1.0, 80, 100)
    0.01
    """
    frac = step / max(total_steps, 1)
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return round(lr * 0.5 * (1.0 + math.cos(math.pi * frac)), 15)
    if schedule == "step":
        return lr / 10 ** ((frac >= 0.5) + (frac >= 0.75))
    check_choice("schedule", schedule, SCHEDULES)
    raise AssertionError


def _generators(model: nn.Module) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` reachable from the model's modules (two levels of attributes)."""
    found: dict[str, torch.Generator] = {}

    def scan(obj: Any, prefix: str, depth: int) -> None:
        items = obj.items() if isinstance(obj, dict) else (
            enumerate(obj) if isinstance(obj, (list, tuple)) else
            vars(obj).items() if hasattr(obj, "__dict__") else ())
        for k, v in items:
            if isinstance(v, torch.Generator):
                found[f"{prefix}.{k}"] = v
            elif depth > 0 and not isinstance(v, (nn.Module, torch.Tensor, str, bytes, int, float)):
                scan(v, f"{prefix}.{k}", depth - 1)

    for name, mod in model.named_modules():
        attrs = {k: v for k, v in vars(mod).items()
                 if k not in ("_parameters", "_buffers", "_modules") and not k.endswith("hooks")}
        scan(attrs, name or "<root>", 2)
    return found


def _augment_crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip per image (standard CIFAR augmentation)."""
    b, _, h, w = x.shape
    shifts = torch.randint(0, 9, (b, 2), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    xp = F.pad(x, (4, 4, 4, 4))
    rows = shifts[:, :1] + torch.arange(h, device=x.device)                  # (B, H)
    cols = shifts[:, 1:] + torch.arange(w, device=x.device)                  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()                             # (B, H, W, C) -> NCHW


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``(x, y)``, in eval mode, in chunks."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def _save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temp file, then rename; the temp file is removed if anything fails."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path) -> dict:
    """The checkpoint's state dict; :class:`CheckpointError` (one line) if it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:           # empty, truncated, garbage, a foreign pickle
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(
            f"checkpoint={str(path)!r} cannot be read ({size} bytes; {type(exc).__name__}: "
            f"{reason}): it is empty, truncated or not an imckit checkpoint; delete it (CLI: "
            "--restart) to start over") from None
    need = {"format", "config", "model", "optimizer", "data_gen", "rng_cpu", "generators",
            "history"}
    if not isinstance(state, dict) or not need <= set(state):
        raise CheckpointError(f"checkpoint={str(path)!r} is not an imckit training checkpoint "
                              "(keys missing); delete it (CLI: --restart) to start over")
    return state


def _migrate(state: dict, model: nn.Module, path: Path) -> dict:
    """``state`` readable by the current format, or :class:`CheckpointError` saying why not."""
    fmt = state.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CheckpointError(f"checkpoint={str(path)!r} has format={fmt!r}, not an imckit "
                              f"checkpoint format (1..{CKPT_FORMAT}); delete it (CLI: "
                              "--restart) to start over")
    if fmt > CKPT_FORMAT:
        raise CheckpointError(f"checkpoint={str(path)!r} has format {fmt}, written by a newer "
                              f"imckit (this one reads formats 1..{CKPT_FORMAT}): resume it "
                              "with that version, or delete it (CLI: --restart)")
    if fmt == 1:
        missing = sorted(set(model.state_dict()) - set(state["model"]))
        if missing:
            raise CheckpointError(
                f"checkpoint={str(path)!r} has format 1, written before the learned clip "
                f"parameters of the sun20 recipe, and lacks {missing[:3]}"
                f"{' and more' if len(missing) > 3 else ''} of this model: resume it with "
                "recipe='strict' settings, or delete it (CLI: --restart) to start over")
        state = {**state, "format": CKPT_FORMAT}
    return state


@contextlib.contextmanager
def _own_rng(state: dict, device: torch.device):
    """Swap the loop's global RNG stream in for the block; keep its advanced state in ``state``."""
    outer = torch.get_rng_state()
    cuda = device.type == "cuda"
    outer_cuda = torch.cuda.get_rng_state(device) if cuda else None
    torch.set_rng_state(state["cpu"])
    if cuda and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    try:
        yield
    finally:
        state["cpu"] = torch.get_rng_state()
        if cuda:
            state["cuda"] = torch.cuda.get_rng_state(device)
            torch.cuda.set_rng_state(outer_cuda, device)
        torch.set_rng_state(outer)


def _check_args(epochs, batch_size, lr, momentum, weight_decay, schedule, seed, augment,
                skip_patience=10, max_lr_halvings=3):
    check_range("epochs", epochs, 1, None, integer=True)
    check_range("batch_size", batch_size, 1, None, integer=True)
    check_range("lr", lr, 0, None, lo_open=True)             # finite: inf gave NaN weights
    check_range("momentum", momentum, 0, 1)
    check_range("weight_decay", weight_decay, 0, None)       # finite, as lr
    check_range("skip_patience", skip_patience, 1, None, integer=True)
    check_range("max_lr_halvings", max_lr_halvings, 0, 60, integer=True)
    check_choice("schedule", schedule, SCHEDULES)
    check_range("seed", seed, 0, 2 ** 63 - 1, integer=True)
    check_choice("augment", augment, AUGMENTS)


def _back_off(backoff: dict, patience: int, max_halvings: int, lr: float, epoch: int,
              step: int, ckpt: Path | None, bar) -> None:
    """One more skipped step: halve the learning rate, or stop, per the divergence rule."""
    backoff["streak"] += 1
    if backoff["streak"] < patience:
        return
    backoff["streak"] = 0
    if backoff["halvings"] < max_halvings:
        backoff["halvings"] += 1
        backoff["lr_scale"] /= 2
        warnings.warn(f"{patience} consecutive steps had a non-finite loss or gradient (epoch "
                      f"{epoch + 1}, step {step + 1}): learning rate halved to "
                      f"{backoff['lr_scale']:g} x lr ({backoff['halvings']} of {max_halvings} "
                      "halvings)", RuntimeWarning, stacklevel=4)
        return
    bar.close()
    kept = (f"; the last good checkpoint {str(ckpt)!r} (end of the last finished epoch) is kept"
            if ckpt is not None and ckpt.exists() else "")
    raise DivergenceError(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {patience} consecutive steps "
        f"had a non-finite loss or gradient after {max_halvings} learning-rate halvings "
        f"(lr={lr:g} -> {lr * backoff['lr_scale']:g}); lower lr{kept}")


def fit(model: nn.Module, dataset, **kwargs) -> History:
    """Train ``model`` on ``dataset``; see :func:`iter_fit` for the arguments.

    >>> from imckit import data, models
    >>> ds = data.digits()
    >>> h = fit(models.mlp(64, (64,)), ds, epochs=2, progress=False)
    >>> [r["epoch"] for r in h.records], h.test_accuracy[-1] > 0.9
    ([1, 2], True)
    """
    history = History()
    for history in iter_fit(model, dataset, **kwargs):
        pass
    return history


def iter_fit(model: nn.Module, dataset, *, epochs: int = 10, batch_size: int = 64,
             lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
             schedule: str = "cosine", seed: int = 0, augment: str | None = None,
             callbacks: Sequence[Callback | Callable[[History], Any]] = (),
             checkpoint: str | os.PathLike | None = None, progress: bool = True,
             config: dict | None = None, skip_patience: int = 10,
             max_lr_halvings: int = 3) -> Iterator[History]:
    """Train with SGD + momentum, yielding the :class:`History` after every epoch.

    Args:
        model: a torch module producing logits; trained in place on its own device.
        dataset: an :class:`imckit.data.Dataset` (moved to the model's device).
        epochs: total epochs of the run (>= 1); a resumed run continues up to this number.
        batch_size: examples per optimizer step (the last step of an epoch may be smaller).
        lr: peak learning rate (> 0).
        momentum: SGD momentum in [0, 1].
        weight_decay: L2 penalty (>= 0).
        schedule: ``"constant"``, ``"cosine"`` or ``"step"``, per optimizer step
            (:func:`learning_rate`).
        seed: seeds the data order and the loop's own global-RNG stream.
        augment: ``None`` or ``"crop-flip"`` (random crops and flips for CIFAR-sized images).
        callbacks: :class:`Callback` objects, or plain callables treated as ``on_epoch_end``.
        checkpoint: path of a checkpoint file; resumed from if it exists, rewritten
            (atomically) after every epoch.
        progress: show a tqdm bar per epoch.
        config: extra JSON-able settings recorded in ``History.config``; a checkpoint only
            resumes a run whose settings all match.
        skip_patience: consecutive skipped (non-finite) steps before the learning rate is
            halved, or, after ``max_lr_halvings`` halvings, before the run stops (>= 1; 10:
            isolated overflows, which the loop skips, never reach it).
        max_lr_halvings: learning-rate halvings before a run of skipped steps stops the run
            (0..60; 3: down to 1/8 of ``lr``, a mistyped ``lr`` then fails fast).

    Yields:
        The same :class:`History` object, after each epoch that ran (once, unchanged, when a
        checkpoint says the run is already complete).

    Raises:
        ValueError: a bad argument, or a checkpoint written by a run with other settings.
        CheckpointError: the checkpoint file cannot be read (a ``ValueError``).
        DivergenceError: non-finite steps went on after every halving (module docstring).
    """
    _check_args(epochs, batch_size, lr, momentum, weight_decay, schedule, seed, augment,
                skip_patience, max_lr_halvings)
    cbs = [c if isinstance(c, Callback) else LivePlot(c) for c in callbacks]
    device = next(model.parameters()).device
    x_tr, y_tr = dataset.x_train.to(device), dataset.y_train.to(device)
    x_te, y_te = dataset.x_test.to(device), dataset.y_test.to(device)
    n = len(y_tr)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * epochs

    run_config = {"dataset": getattr(dataset, "name", "?"), "n_train": n, "epochs": epochs,
                  "batch_size": batch_size, "lr": lr, "momentum": momentum,
                  "weight_decay": weight_decay, "schedule": schedule, "seed": seed,
                  "augment": augment, **(config or {})}
    history = History(config=run_config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    data_gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    gens = _generators(model)
    from . import nn as inn                    # same layer (training glue); imported lazily
    before, after = inn.before_step, inn.after_step
    nonfinite_seen, collect = inn.nonfinite_grad_seen, inn.collect_work

    # divergence back-off: learning-rate factor, halvings so far, consecutive skipped steps
    backoff = {"lr_scale": 1.0, "halvings": 0, "streak": 0}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = _migrate(_load_checkpoint(ckpt), model, ckpt)
        if state.get("config") != run_config:
            old = state.get("config") or {}
            diff = sorted(k for k in set(old) | set(run_config) if old.get(k) != run_config.get(k))
            raise ValueError(f"checkpoint={str(ckpt)!r} was written by a run with other settings "
                             f"(differs in {diff}): delete it or use the same settings")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        data_gen.set_state(state["data_gen"])
        rng = {"cpu": state["rng_cpu"], "cuda": state.get("rng_cuda")}
        for k, s in state["generators"].items():
            if k in gens:
                gens[k].set_state(s)
        history.records = list(state["history"])
        history.work = collect(model)
        backoff.update(state.get("backoff") or {})

    for cb in cbs:
        cb.on_train_begin(history)
    if history.epochs_done >= epochs:          # resumed a finished run: nothing left to train
        yield history
    for epoch in range(history.epochs_done, epochs):
        t0 = time.perf_counter()
        model.train()
        loss_sum, loss_n, skipped = 0.0, 0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        with _own_rng(rng, device):
            perm = torch.randperm(n, generator=data_gen).to(device)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                if augment == "crop-flip":
                    xb = _augment_crop_flip(xb, data_gen)
                for g in optimizer.param_groups:
                    g["lr"] = backoff["lr_scale"] * learning_rate(
                        schedule, lr, epoch * steps_per_epoch + i, total_steps)
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss_value = float(loss.detach())
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                finite = math.isfinite(loss_value) and (not grads or bool(
                    torch.stack([torch.isfinite(g).all() for g in grads]).all()))
                if finite and nonfinite_seen(model):
                    finite = False
                if finite:
                    before(model)
                    optimizer.step()
                    after(model)
                    loss_sum += loss_value * len(yb)
                    loss_n += len(yb)
                    backoff["streak"] = 0
                else:
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    _back_off(backoff, skip_patience, max_lr_halvings, lr, epoch, i, ckpt, bar)
                bar.update(1)
                if progress and i % 10 == 0:
                    bar.set_postfix(loss=f"{loss_value:.3f}")
            acc = evaluate(model, x_te, y_te)
        bar.close()
        history.records.append({
            "epoch": epoch + 1,
            "train_loss": loss_sum / loss_n if loss_n else float("nan"),
            "test_accuracy": acc,
            "wall_s": time.perf_counter() - t0,
            "skipped_steps": skipped,
        })
        history.work = collect(model)
        if ckpt is not None:
            _save_atomic({"format": CKPT_FORMAT, "config": run_config,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "data_gen": data_gen.get_state(), "rng_cpu": rng["cpu"],
                          "rng_cuda": rng["cuda"],
                          "generators": {k: g.get_state() for k, g in gens.items()},
                          "history": history.records, "backoff": dict(backoff)}, ckpt)
        for cb in cbs:
            cb.on_epoch_end(history)
        yield history
    for cb in cbs:
        cb.on_train_end(history)
