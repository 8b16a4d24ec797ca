"""Layers that train on simulated IMC hardware: :class:`IMCLinear`, :class:`IMCConv2d`.

Each layer owns what its arrays need between steps: the activation clip (a running maximum),
one ADC range per MVM (calibrated from observed column values), a gradient scale
(:class:`imckit.formats.GradScale`), a random generator, and the work its MVMs did. The train
loop calls :func:`imckit.nn.before_step` / :func:`imckit.nn.after_step` around
``optimizer.step()`` so that weight writes are counted and ADC ranges recalibrated on schedule.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import formats
from ..work import Work
from .config import LayerConfig, make_config
from .engine import MVM_INDEX, TrainingMVMs, exact_product

MVMS = tuple(MVM_INDEX)


class IMCModule(nn.Module):
    """Shared machinery of the IMC layers (not used directly)."""

    def _copy_params(self, src: nn.Module) -> "IMCModule":
        """Copy ``src``'s weight (and bias) into this layer; on ``src``'s device."""
        with torch.no_grad():
            self.weight.copy_(src.weight)
            if src.bias is not None:
                self.bias.copy_(src.bias)
        return self.to(src.weight.device)

    def _setup(self, cfg: LayerConfig, layer_index: int) -> None:
        self.cfg = cfg
        self.layer_index = int(layer_index)
        self.layer_name = ""
        self.mvm_placements = cfg.placements()
        self.all_fp32 = all(p == "fp32" for p in self.mvm_placements.values())
        self.register_buffer("a_max", torch.zeros(()))
        self.register_buffer("signed_seen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("adc_range", torch.zeros(3))  # per MVM; 0 = not calibrated yet
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._imc_cfgs: dict = {}
        self._generators: dict = {}
        self._gs = formats.GradScale(rule=cfg.grad_scale)
        self._due = {m: True for m in MVMS}
        self._candidate: dict[str, float] = {}
        self._writes_pending = True
        self._nonfinite = False
        self.reset_work()

    # --- records -----------------------------------------------------------------------
    def reset_work(self) -> None:
        """Forget the work and error records (the layer's state is kept)."""
        self._work = {m: Work() for m in MVMS}
        self._errors = {m: [0.0, 0.0, 0] for m in MVMS}  # sum sq. error, sum sq. exact, count
        self._work_steps = 0
        self._batch = 0

    def _record(self, name: str, placement: str, work: Work) -> None:
        if self.training:
            self._work[name] = self._work[name] + work

    def work_report(self) -> dict:
        """This layer's entry of :func:`collect_work`."""
        mvms = {}
        for m in MVMS:
            d = {"placement": self.mvm_placements[m], **self._work[m].to_dict()}
            sse, ssr, n = self._errors[m]
            if self.cfg.record_errors and n:
                d["error"] = {"n": n, "rel_rmse": math.sqrt(sse / ssr) if ssr > 0 else 0.0,
                              "sqnr_db": 10 * math.log10(ssr / sse) if sse > 0 else math.inf}
            if self.mvm_placements[m] == "imc":
                d["adc_range"] = float(self.adc_range[MVM_INDEX[m]])
            mvms[m] = d
        return {"name": self.layer_name, "shape": list(self.mvm_shape),
                "positions": int(self.positions), "mvms": mvms}

    # --- helpers called by TrainingMVMs -------------------------------------------------
    def _generator(self, like: torch.Tensor) -> torch.Generator:
        key = str(like.device)
        if key not in self._generators:
            g = torch.Generator(device=like.device)
            g.manual_seed(1_000_003 * self.cfg.seed + 7919 * self.layer_index + 17)
            self._generators[key] = g
        return self._generators[key]

    def _imc_cfg(self, name: str):
        if name not in self._imc_cfgs:
            base = self.cfg.imc_config()
            self._imc_cfgs[name] = dataclasses.replace(
                base, seed=base.seed + 3 * self.layer_index + MVM_INDEX[name])
        return self._imc_cfgs[name]

    def _input_signed(self, x: torch.Tensor) -> bool:
        kind = self.cfg.input_kind
        if kind != "auto":
            return kind == "signed"
        if not bool(self.signed_seen) and x.numel() and bool(x.detach().min() < 0):
            self.signed_seen.fill_(True)
        return bool(self.signed_seen)

    def _activation_clip(self, x: torch.Tensor, signed: bool) -> float:
        xd = x.detach()
        if self.training and xd.numel():
            m = self._batch_clip(xd, signed).to(self.a_max.dtype)
            if float(self.a_max) <= 0:
                self.a_max.copy_(m)
            else:
                self.a_max.mul_(self.cfg.a_momentum).add_((1 - self.cfg.a_momentum) * m)
        a = float(self.a_max)
        return a if a > 0 else 1.0

    def _batch_clip(self, xd: torch.Tensor, signed: bool) -> torch.Tensor:
        rule = self.cfg.a_clip
        v = xd.abs() if signed else xd.clamp(min=0)
        if rule == "max" or v.numel() < 2:
            return v.max()
        if rule == "mse":
            fmt = formats.Int(bits=self.cfg.a_bits, signed=signed)
            return torch.tensor(float(formats.clip_scale(xd, fmt, rule="mse")))
        v = v.reshape(-1)
        if v.numel() > 65536:                          # a fixed-stride sample bounds the cost
            v = v[:: v.numel() // 65536]
        k = max(1, min(v.numel(), math.ceil(self.cfg.a_percentile / 100 * v.numel())))
        return v.kthvalue(k).values

    def _grad_scale(self, g: torch.Tensor) -> float:
        S = float(self._gs.scale_for(g))
        return S if (math.isfinite(S) and S > 0) else 1.0

    def _program_weights(self, shape, backward: bool) -> None:
        """Count the bits written when the arrays of MVM 1 (``W^T``) and 2 (``W``, only when an
        input gradient is needed) are (re)programmed with the re-quantized weights: at the first
        training step and after every update."""
        if not self._writes_pending:
            return
        self._writes_pending = False
        bits = int(shape[0]) * int(shape[1]) * self.cfg.w_bits
        for m in ("forward", "backward") if backward else ("forward",):
            if self.mvm_placements[m] == "imc":
                self._work[m] = self._work[m] + Work(write_bits=bits)

    def _adc_range(self, name: str, A, X, kw, cfg) -> float:
        from .. import imc

        i = MVM_INDEX[name]
        if (self._due[name] and self.training) or float(self.adc_range[i]) <= 0:
            counts = imc.column_counts(A, X, cfg, **kw)
            r = float(imc.calibrate_adc_range(counts, cfg.rows,
                                              percentile=self.cfg.adc_percentile))
            self._candidate[name] = r
            self.adc_range[i] = r
            if self.training:                  # an eval call only fills a missing range
                self._due[name] = False
        return float(self.adc_range[i])

    def _mvm(self, name: str, A: torch.Tensor, X: torch.Tensor, kw: dict) -> torch.Tensor:
        """``X @ A`` on the placement of MVM ``name`` (``digital`` or ``imc``)."""
        macs = X.shape[0] * X.shape[1] * A.shape[1]
        if self.mvm_placements[name] == "digital":
            self._record(name, "digital", Work(macs=macs))
            return exact_product(X, A)
        from .. import imc

        cfg = self._imc_cfg(name)
        r = self._adc_range(name, A, X, kw, cfg)
        y, work = imc.mvm(A, X, cfg, report=True, adc_range=r, generator=self._generator(X),
                           count_write=False, **kw)
        if self.training:
            w = work.to_dict()
            # Stationary weights are written once per update (_program_weights), not per call;
            # the weight-gradient array is rewritten with the activations at every call.
            w["write_bits"] = (A.shape[0] * A.shape[1] * kw["a_bits"]
                               if name == "weight_grad" else 0)
            w["macs"] = macs
            self._record(name, "imc", Work(**w))
            if self.cfg.record_errors:
                ref = exact_product(X, A)
                e = self._errors[name]
                e[0] += float(((y.double() - ref.double()) ** 2).sum())
                e[1] += float((ref.double() ** 2).sum())
                e[2] += int(ref.numel())
        return y.to(X.dtype)

    def _call(self, x2: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._nonfinite = False
            self._batch = max(self._batch, self._batch_of_call)
        return TrainingMVMs.apply(x2, w2, self)

    # --- step hooks ----------------------------------------------------------------------
    def after_step(self) -> None:
        """One optimizer step happened: re-program the arrays, recalibrate on schedule."""
        self.steps += 1
        self._work_steps += 1
        self._writes_pending = True
        k = self.cfg.recalibrate_every
        if k and int(self.steps) % k == 0:
            self._due = {m: True for m in MVMS}

    # --- checkpoints: everything that makes a resumed run equal an uninterrupted one ------
    def get_extra_state(self):
        return {"generators": {k: g.get_state() for k, g in self._generators.items()},
                "grad_scale": self._gs.state_dict(),
                "due": dict(self._due), "candidate": dict(self._candidate),
                "writes_pending": self._writes_pending,
                "work": {m: self._work[m].to_dict() for m in MVMS},
                "errors": {m: list(v) for m, v in self._errors.items()},
                "work_steps": self._work_steps, "batch": self._batch,
                "positions": int(self.positions)}

    def set_extra_state(self, state) -> None:
        for k, s in state.get("generators", {}).items():
            if k not in self._generators:
                self._generators[k] = torch.Generator(device=k)
            self._generators[k].set_state(s)
        if "grad_scale" in state:
            self._gs.load_state_dict(state["grad_scale"])
        self._due = dict(state.get("due", self._due))
        self._candidate = dict(state.get("candidate", {}))
        self._writes_pending = state.get("writes_pending", True)
        self._work = {m: Work.from_dict(d) for m, d in state.get("work", {}).items()} or self._work
        self._errors = {m: list(v) for m, v in state.get("errors", {}).items()} or self._errors
        self._work_steps = state.get("work_steps", 0)
        self._batch = state.get("batch", 0)
        self.positions = state.get("positions", self.positions)  # of the last call (conv)

    def extra_repr(self) -> str:
        pl = ", ".join(f"{m}={p}" for m, p in self.mvm_placements.items())
        return f"{super().extra_repr()}, {pl}, adaptability={self.cfg.adaptability}"


class IMCLinear(IMCModule):
    """A linear layer whose three training MVMs run as ``cfg`` places them.

    >>> layer = IMCLinear(8, 3, placement="digital")
    >>> layer(torch.rand(5, 8)).shape
    torch.Size([5, 3])
    >>> IMCLinear(8, 3, placement="fp32").mvm_placements["backward"]
    'fp32'
    """

    def __init__(self, in_features: int, out_features: int, cfg: LayerConfig | None = None, *,
                 bias: bool = True, layer_index: int = 0, **overrides):
        super().__init__()
        ref = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.weight = ref.weight
        self.bias = ref.bias
        self._setup(make_config(cfg, **overrides), layer_index)

    @property
    def mvm_shape(self) -> tuple[int, int]:
        """``(N, M)``: the reduction length and the number of outputs of MVM 1."""
        return (self.in_features, self.out_features)

    positions = 1

    @classmethod
    def from_float(cls, linear: nn.Linear, cfg: LayerConfig | None = None, *,
                   layer_index: int = 0, **overrides) -> "IMCLinear":
        """An :class:`IMCLinear` with a copy of ``linear``'s weights."""
        new = cls(linear.in_features, linear.out_features, cfg, bias=linear.bias is not None,
                  layer_index=layer_index, **overrides)
        return new._copy_params(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_fp32:
            return F.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        self._batch_of_call = x2.shape[0]
        y = self._call(x2, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}" + super().extra_repr())


class IMCConv2d(IMCModule):
    """A 2-D convolution trained through the same three MVMs via im2col.

    The B x H' x W' output positions of a batch play the role of the batch B of a linear layer:
    MVM 3 reduces over all of them.

    >>> conv = IMCConv2d(2, 4, 3, padding=1, placement="digital")
    >>> conv(torch.rand(2, 2, 5, 5)).shape
    torch.Size([2, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, cfg: LayerConfig | None = None, *, bias: bool = True,
                 layer_index: int = 0, **overrides):
        super().__init__()
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, bias=bias)
        if isinstance(ref.padding, str):
            raise ValueError(f"padding={padding!r} is not allowed: give integers")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = ref.kernel_size, ref.stride
        self.padding, self.dilation = ref.padding, ref.dilation
        self.weight, self.bias = ref.weight, ref.bias
        self.positions = 0
        self._setup(make_config(cfg, **overrides), layer_index)

    @property
    def mvm_shape(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (self.in_channels * kh * kw, self.out_channels)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, cfg: LayerConfig | None = None, *,
                   layer_index: int = 0, **overrides) -> "IMCConv2d":
        """An :class:`IMCConv2d` with a copy of ``conv``'s weights (``groups`` must be 1)."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"conv={conv!r} is not allowed: only groups=1, zero padding given as "
                             "integers are supported")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, cfg, bias=conv.bias is not None,
                  layer_index=layer_index, **overrides)
        return new._copy_params(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_fp32:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        B, _, H, Wd = x.shape
        kh, kw = self.kernel_size
        Ho = (H + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        Wo = (Wd + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        x2 = cols.transpose(1, 2).reshape(B * Ho * Wo, -1)
        self.positions = Ho * Wo
        self._batch_of_call = B
        y = self._call(x2, self.weight.reshape(self.out_channels, -1))
        y = y.reshape(B, Ho * Wo, self.out_channels).transpose(1, 2)
        y = y.reshape(B, self.out_channels, Ho, Wo)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


__all__ = ["IMCModule", "IMCLinear", "IMCConv2d"]
