"""Tests for imckit.train: determinism, exact resume, skipped non-finite steps, nn hooks."""
from __future__ import annotations

import time
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import imckit
from imckit import data, models, train


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (two threads on a loaded 2-core machine run ~50x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def _strip(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


class NoisyMLP(nn.Module):
    """An MLP with dropout (global RNG) and input noise from its own torch.Generator attribute,
    so determinism and resume also cover random state that lives outside the data order."""

    def __init__(self, seed=0):
        super().__init__()
        self.net = models.mlp(64, (32,), 10, seed=seed)
        self.net.insert(3, nn.Dropout(0.2))
        self.gen = torch.Generator().manual_seed(123)

    def forward(self, x):
        if self.training:
            x = x + 0.1 * torch.randn(x.shape, generator=self.gen)
        return self.net(x)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fp32_mlp_on_digits_reaches_093_quickly(digits):
    t0 = time.perf_counter()
    h = train.fit(models.mlp(64, (64,), 10, seed=0), digits, epochs=10, batch_size=64, lr=0.1,
                  seed=0, progress=False)
    wall = time.perf_counter() - t0
    assert [r["epoch"] for r in h.records] == list(range(1, 11))
    assert h.test_accuracy[-1] >= 0.93
    assert h.train_loss[-1] < h.train_loss[0]
    assert all(r["skipped_steps"] == 0 for r in h.records)
    assert all(0 <= a <= 1 for a in h.test_accuracy)
    assert wall < 10, wall                     # ~0.2 s on an idle 2-core machine
    assert h.work is None or h.work["layers"] == []     # plain torch model: no IMC layers


def test_same_seed_same_history_other_seed_differs(digits):
    state = torch.get_rng_state()
    a = NoisyMLP()
    ha = train.fit(a, digits, epochs=3, seed=5, progress=False)
    b = NoisyMLP()
    hb = train.fit(b, digits, epochs=3, seed=5, progress=False)
    assert _strip(ha.records) == _strip(hb.records)
    assert torch.equal(_weights(a), _weights(b))
    assert torch.equal(torch.get_rng_state(), state)          # caller's global RNG untouched
    hc = train.fit(NoisyMLP(), digits, epochs=3, seed=6, progress=False)
    assert _strip(hc.records) != _strip(ha.records)


class Interrupt(Exception):
    pass


def _stop_after(k):
    def cb(history):
        if history.epochs_done == k:
            raise Interrupt
    return cb


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_resume_equals_uninterrupted(digits, tmp_path, schedule):
    kw = dict(epochs=5, batch_size=32, lr=0.05, seed=3, schedule=schedule, progress=False)
    ref_model = NoisyMLP()
    ref = train.fit(ref_model, digits, **kw)

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupt):
        train.fit(NoisyMLP(), digits, checkpoint=ckpt, callbacks=[_stop_after(2)], **kw)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp*"))     # atomic: no temp left
    torch.manual_seed(999)                    # a different global state must not matter
    resumed_model = NoisyMLP()
    begun = []

    class Begin(train.Callback):
        def on_train_begin(self, history):
            begun.append(history.epochs_done)
    resumed = train.fit(resumed_model, digits, checkpoint=ckpt, callbacks=[Begin()], **kw)
    assert begun == [2]
    assert _strip(resumed.records) == _strip(ref.records)
    assert torch.equal(_weights(resumed_model), _weights(ref_model))

    # a finished checkpoint: fit returns the stored history and trains nothing
    again = train.fit(NoisyMLP(), digits, checkpoint=ckpt, **kw)
    assert _strip(again.records) == _strip(ref.records)


def test_checkpoint_from_other_settings_is_refused(digits, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    train.fit(models.mlp(64, (16,)), digits, epochs=1, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"other settings.*\['lr'\]"):
        train.fit(models.mlp(64, (16,)), digits, epochs=1, lr=0.01, checkpoint=ckpt, progress=False)


class NaNAt(nn.Module):
    """Wraps a model; on the given training forward calls makes the loss (or only a gradient)
    non-finite."""

    def __init__(self, inner, calls, where="loss"):
        super().__init__()
        self.inner, self.calls, self.where, self.n = inner, set(calls), where, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.n += 1
            if self.n in self.calls:
                if self.where == "loss":
                    return out * float("nan")
                return _NaNGrad.apply(out)
        return out


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_nonfinite_steps_are_skipped_and_training_continues(digits, where):
    model = NaNAt(models.mlp(64, (64,)), calls=[3, 30, 31], where=where)
    h = train.fit(model, digits, epochs=3, progress=False)
    assert [r["skipped_steps"] for r in h.records] == [1, 2, 0]        # 23 steps per epoch
    assert torch.isfinite(_weights(model)).all()
    assert h.test_accuracy[-1] >= 0.9
    assert all(r["train_loss"] == r["train_loss"] for r in h.records)  # no NaN in the mean


def test_callbacks_and_iter_fit(digits):
    drawn = []
    live = train.LivePlot(lambda h: drawn.append(h.test_accuracy[-1]))
    seen = [h.epochs_done for h in train.iter_fit(models.mlp(64, (16,)), digits, epochs=3,
                                                  callbacks=[live], progress=False)]
    assert seen == [1, 2, 3] and len(drawn) == 3


def test_nn_hooks_called_around_every_step(digits, monkeypatch):
    calls, checks = [], []
    fake = types.SimpleNamespace(
        before_step=lambda m: calls.append("before"),
        after_step=lambda m: calls.append("after"),
        collect_work=lambda m: {"steps": calls.count("after")},
        nonfinite_grad_seen=lambda m: checks.append(1) or len(checks) == 3,   # skip step 3
    )
    monkeypatch.setattr(imckit, "nn", fake, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "imckit.nn", fake)
    h = train.fit(models.mlp(64, (16,)), digits, epochs=2, progress=False)
    assert calls[:6] == ["before", "after"] * 3
    assert calls.count("before") == calls.count("after") == 2 * 23 - 1
    assert h.records[0]["skipped_steps"] == 1
    assert h.work == {"steps": 45}


def test_bad_arguments(digits):
    m = models.mlp(64, (16,))
    for kw, field in [({"epochs": 0}, "epochs"), ({"schedule": "linear"}, "schedule"),
                      ({"lr": 0.0}, "lr"), ({"momentum": 1.5}, "momentum"),
                      ({"batch_size": 0}, "batch_size"), ({"augment": "mixup"}, "augment")]:
        with pytest.raises(ValueError, match=field):
            train.fit(m, digits, progress=False, **kw)


def test_crop_flip_matches_per_image_reference():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = train._augment_crop_flip(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(0, 9, (2, 2), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(2):
        dy, dx = shifts[b].tolist()
        ref = padded[b, :, dy:dy + 8, dx:dx + 8]
        if flip[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)


def _imc_model():
    from imckit import imc
    from imckit import nn as inn
    return inn.convert(models.mlp(64, (32,), seed=0), placement="imc", adaptability="full",
                       imc=imc.IMCConfig.jia22_16nm())


@pytest.mark.slow
def test_imc_training_resume_equals_uninterrupted(digits, tmp_path):
    kw = dict(epochs=3, batch_size=64, lr=0.05, seed=1, progress=False)
    ref_model = _imc_model()
    ref = train.fit(ref_model, digits, **kw)
    assert ref.work is not None and ref.work["layers"]
    ckpt = tmp_path / "imc.ckpt"
    with pytest.raises(Interrupt):
        train.fit(_imc_model(), digits, checkpoint=ckpt, callbacks=[_stop_after(1)], **kw)
    model = _imc_model()
    resumed = train.fit(model, digits, checkpoint=ckpt, **kw)
    assert _strip(resumed.records) == _strip(ref.records)
    assert torch.equal(_weights(model), _weights(ref_model))
    assert resumed.work == ref.work


def test_small_cnn_trains_on_digits(digits):
    h = train.fit(models.small_cnn(1, 10, image_size=8, seed=0), digits, epochs=3, progress=False)
    assert h.test_accuracy[-1] >= 0.9


def test_resnet20_with_crop_flip_runs_and_resumes(tmp_path):
    g = torch.Generator().manual_seed(0)
    ds = data.Dataset("fake32", torch.randn(48, 3, 32, 32, generator=g),
                      torch.randint(0, 10, (48,), generator=g), torch.randn(16, 3, 32, 32, generator=g),
                      torch.randint(0, 10, (16,), generator=g), 10, (3, 32, 32))
    kw = dict(epochs=2, batch_size=16, lr=0.05, weight_decay=5e-4, augment="crop-flip",
              progress=False)
    ref_model = models.resnet20(seed=0)
    ref = train.fit(ref_model, ds, **kw)
    ckpt = tmp_path / "r.ckpt"
    with pytest.raises(Interrupt):
        train.fit(models.resnet20(seed=0), ds, checkpoint=ckpt, callbacks=[_stop_after(1)], **kw)
    model = models.resnet20(seed=0)                 # BatchNorm running stats travel too
    resumed = train.fit(model, ds, checkpoint=ckpt, **kw)
    assert _strip(resumed.records) == _strip(ref.records)
    assert torch.equal(model.blocks[0].bn1.running_mean, ref_model.blocks[0].bn1.running_mean)


# --- issue 11: non-finite settings, divergence, unreadable checkpoints ------------------------

@pytest.mark.parametrize("kw, needle", [
    ({"lr": float("inf")}, "lr=inf is not finite"),
    ({"lr": float("nan")}, "lr=nan is not a number"),
    ({"weight_decay": float("inf")}, "weight_decay=inf is not finite"),
    ({"skip_patience": 0}, "skip_patience=0 is out of range"),
    ({"max_lr_halvings": -1}, "max_lr_halvings=-1 is out of range"),
])
def test_nonfinite_or_bad_settings_are_refused_before_training(digits, kw, needle):
    model = models.mlp(64, (16,))
    before = _weights(model).clone()
    with pytest.raises(ValueError) as e:
        train.fit(model, digits, epochs=1, progress=False, **kw)
    assert needle in str(e.value) and "allowed" in str(e.value) and "\n" not in str(e.value)
    assert torch.equal(_weights(model), before)


def test_huge_lr_diverges_after_bounded_backoff(digits):
    with pytest.warns(RuntimeWarning, match="learning rate halved") as seen, \
            pytest.raises(train.DivergenceError) as e:
        train.fit(models.mlp(64, (64,)), digits, epochs=1, batch_size=16, lr=1e6, progress=False)
    assert len([w for w in seen if "halved" in str(w.message)]) == 3
    msg = str(e.value)
    assert "diverged at epoch 1" in msg and "3 learning-rate halvings" in msg and "\n" not in msg
    assert isinstance(e.value, RuntimeError)


def test_divergence_keeps_the_last_good_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    model = NaNAt(models.mlp(64, (32,)), calls=range(30, 10 ** 6))    # NaN from step 7 of epoch 2
    with pytest.warns(RuntimeWarning), pytest.raises(train.DivergenceError,
                                                     match=r"run\.ckpt.*is kept"):
        train.fit(model, digits, epochs=4, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert [r["epoch"] for r in state["history"]] == [1, 2]            # 23 steps per epoch
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_backoff_recovers_from_a_burst_and_is_checkpointed(digits, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    model = NaNAt(models.mlp(64, (64,)), calls=range(5, 15))         # 10 non-finite steps
    with pytest.warns(RuntimeWarning, match=r"halved to 0.5 x lr \(1 of 3"):
        h = train.fit(model, digits, epochs=2, checkpoint=ckpt, progress=False)
    assert [r["skipped_steps"] for r in h.records] == [10, 0] and h.test_accuracy[-1] > 0.8
    assert torch.load(ckpt, weights_only=True)["backoff"] == {"lr_scale": 0.5, "halvings": 1,
                                                               "streak": 0}


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "other-pickle"])
def test_unreadable_checkpoint_is_one_clear_line(digits, tmp_path, damage):
    ckpt = tmp_path / "run.ckpt"
    train.fit(models.mlp(64, (16,)), digits, epochs=1, checkpoint=ckpt, progress=False)
    blob = ckpt.read_bytes()
    if damage == "other-pickle":
        torch.save({"weights": torch.zeros(2)}, ckpt)
    else:
        ckpt.write_bytes({"empty": b"", "truncated": blob[:len(blob) // 2],
                          "garbage": b"\x00not a checkpoint" * 10}[damage])
    with pytest.raises(train.CheckpointError) as e:
        train.fit(models.mlp(64, (16,)), digits, epochs=2, checkpoint=ckpt, progress=False)
    msg = str(e.value)
    assert str(ckpt) in msg and "--restart" in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_failed_checkpoint_write_leaves_no_temp_file(digits, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"

    def full_disk(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        train.fit(models.mlp(64, (16,)), digits, epochs=1, checkpoint=ckpt, progress=False)
    assert list(tmp_path.iterdir()) == []
