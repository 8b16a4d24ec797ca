"""Layers that train on simulated IMC hardware: :class:`IMCLinear`, :class:`IMCConv2d`.

Each layer owns what its arrays need between steps: the activation clip (a learned PACT
Parameter ``a_alpha`` under ``a_clip="pact"``, else a running statistic in ``a_max``),
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
from .._scan import all_finite
from ..imc.planes import trusted_operands
from ..mapping import CountRules, MVMMap
from .rows import ConvRows, is_rows
from ..work import Work
from .config import LayerConfig, make_config
from .engine import (MVM_INDEX, QUANTIZED, TrainingMVMs, cast, digital_product,
                     exact_bilinear, exact_product, reduction_bound)

ALPHA_MIN = 1e-8
"""A PACT clip is kept at or above this after every step (SGD may push it through zero) [I]."""

MVMS = tuple(MVM_INDEX)


def im2col(x: torch.Tensor, kernel, dilation, padding, stride) -> torch.Tensor:
    """Conv input patches as rows ``(B*H_out*W_out, C*kh*kw)``, ordered (b, h_out, w_out) x
    (c, i, j): the values of ``F.unfold(...).transpose(1, 2)``, in two copies that both run
    along contiguous memory: the patches as ``(B, C, kh, kw, H_out, W_out)`` (the input's rows
    read in order), then the batched transpose to rows. 1.6-3.5x faster on a 2-core x86 CPU
    than one copy through the six-dimensional strided view, whose innermost run is one
    kernel row (3 elements).

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> torch.equal(im2col(x, (3, 3), (1, 1), (1, 1), (2, 2)),
    ...             F.unfold(x, 3, 1, 1, 2).transpose(1, 2).reshape(-1, 9))
    True
    """
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    B, C, H, W = x.shape
    Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    sb, sc, s_h, s_w = x.stride()
    v = x.as_strided((B, C, kh, kw, Ho, Wo), (sb, sc, s_h * dh, s_w * dw, s_h * sh, s_w * sw),
                     x.storage_offset()).contiguous()
    return v.view(B, C * kh * kw, Ho * Wo).transpose(1, 2).reshape(B * Ho * Wo, C * kh * kw)


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
        pl = self.mvm_placements
        if cfg.a_clip == "pact" and (pl["forward"] in QUANTIZED or pl["weight_grad"] in QUANTIZED):
            # 0 = not initialized: the first training batch sets it (a_percentile rule)
            self.a_alpha = nn.Parameter(torch.zeros(()))
        else:
            self.a_alpha = None
        self.register_buffer("signed_seen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("adc_range", torch.zeros(3))  # per MVM; 0 = not calibrated yet
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._input_grad_seen = False
        self._imc_cfgs: dict = {}
        self._generators: dict = {}
        self._gs = formats.GradScale(rule=cfg.grad_scale)
        self._due = {m: True for m in MVMS}
        self._candidate: dict[str, float] = {}
        self._writes_pending = True
        self._nonfinite = False
        self._rules = CountRules.from_layer(cfg)
        self.reset_work()

    # --- records -----------------------------------------------------------------------
    def reset_work(self) -> None:
        """Forget the work and error records (the layer's state is kept)."""
        self._work = {m: Work() for m in MVMS}
        self._dense = {m: [0, 0] for m in MVMS}   # cycles, row drives with every plane non-empty
        self._errors = {m: [0.0, 0.0, 0] for m in MVMS}  # sum sq. error, sum sq. exact, count
        self._work_steps = 0
        self._batch = 0
        self._samples = 0

    def _record(self, name: str, work: Work) -> None:
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
                d["dense_cycles"], d["dense_drives"] = self._dense[m]
            mvms[m] = d
        ic = self.cfg.imc_config()
        return {"name": self.layer_name, "kind": self.kind, "shape": list(self.mvm_shape),
                "positions": int(self.positions), "in_positions": int(self.in_positions),
                "kernel_area": int(self.kernel_area), "samples": int(self._samples),
                "input_grad": bool(self._input_grad_seen),
                "signed_input": bool(self.signed_seen), "rows": ic.rows,
                "columns": ic.columns, "adc_bits": ic.adc_bits, "sign_mode": ic.sign_mode,
                "mvms": mvms}

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
        """The activation clip in use; ``inf`` when this batch holds a non-finite value (the
        running clip is then left alone and the caller returns NaN: the step is skipped)."""
        xd = x.detach()
        if self.a_alpha is not None:
            if float(self.a_alpha.detach()) <= 0 and self.training and xd.numel():
                m = self._batch_clip(xd, signed, rule="percentile")
                if not bool(torch.isfinite(m)):
                    return math.inf
                with torch.no_grad():
                    self.a_alpha.fill_(float(m) if float(m) > 0 else 1.0)
            elif not all_finite(xd):
                return math.inf
            a = float(self.a_alpha.detach())
            return a if a > 0 else 1.0
        if self.training and xd.numel():
            m = self._batch_clip(xd, signed).to(self.a_max.dtype)
            if not bool(torch.isfinite(m)):
                return math.inf
            if float(self.a_max) <= 0:
                self.a_max.copy_(m)
            else:
                self.a_max.mul_(self.cfg.a_momentum).add_((1 - self.cfg.a_momentum) * m)
        elif not all_finite(xd):
            return math.inf
        a = float(self.a_max)
        return a if a > 0 else 1.0

    def clip_value(self) -> float:
        """The activation clip in use now: the PACT ``alpha`` or the running clip (1.0 before
        the first training batch)."""
        a = float(self.a_alpha.detach()) if self.a_alpha is not None else float(self.a_max)
        return a if a > 0 else 1.0

    def _batch_clip(self, xd: torch.Tensor, signed: bool, rule: str | None = None) -> torch.Tensor:
        rule = rule or self.cfg.a_clip
        if rule == "percentile" and xd.numel() > 65536:   # a fixed-stride sample bounds
            xd = xd.reshape(-1)[:: xd.numel() // 65536]   # the cost
        v = xd.abs() if signed else xd.clamp(min=0)
        if rule == "max" or v.numel() < 2:
            return v.max()
        if rule == "mse":
            fmt = formats.Int(bits=self.cfg.a_bits, signed=signed)
            return torch.tensor(float(formats.clip_scale(xd, fmt, rule="mse")))
        v = v.reshape(-1)
        n = v.numel()
        k = max(1, min(n, math.ceil(self.cfg.a_percentile / 100 * n)))
        if n - k < 4096:                               # the (n-k+1)-th largest: topk is 4x
            return v.topk(n - k + 1).values[-1]        # faster than kthvalue there (NaN: largest
        return v.kthvalue(k).values                    # in both)

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

    def _calibrating(self, name: str) -> bool:
        """Whether this call of MVM ``name`` calibrates its ADC range (due, or none yet)."""
        return ((self._due[name] and self.training)
                or float(self.adc_range[MVM_INDEX[name]]) <= 0)

    def _adc_range(self, name: str, A, X, kw, cfg) -> float:
        from .. import imc

        i = MVM_INDEX[name]
        if self._calibrating(name):
            counts = imc.column_counts(A, X, cfg, **kw)
            levels = cfg.input_levels if kw["x_kind"] in ("multilevel", "radix4") else 2
            bipolar = cfg.sign_mode == "one-cycle" and kw["x_kind"] in ("signed", "radix4")
            r = float(imc.calibrate_adc_range(counts, cfg.rows, levels=levels,
                                              percentile=self.cfg.adc_percentile,
                                              floor=cfg.adc_range_floor(bipolar)))
            self._candidate[name] = r
            self.adc_range[i] = r
            if self.training:                  # an eval call only fills a missing range
                self._due[name] = False
        return float(self.adc_range[i])

    def _digital(self, name: str, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``x @ a`` of MVM ``name`` on its float placement (``fp32``, ``bf16``, ``int8``;
        records MACs and outputs)."""
        self._record(name, Work(macs=self._macs, outputs=x.shape[0] * a.shape[1]))
        return digital_product(x, a, self.mvm_placements[name])

    def _exact(self, name: str, a: torch.Tensor, b: torch.Tensor, a_max: float,
               b_max: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The ``digital`` placement of MVM ``name``: the quantized product through the plain
        linear / conv kernels, exact (:func:`imckit.nn.engine.exact_bilinear`), correctly
        rounded to ``dtype``. Operands: forward (input levels, weight levels); backward and
        weight_grad (gradient integers as :meth:`_as_grad` lays them out, weight / input
        levels)."""
        op, k = self._exact_op(name)
        bound = (lambda d: reduction_bound(d, b_max)) if name == "weight_grad" else None
        out = self._exact_out(name, exact_bilinear(op, a, b, a_max, b_max, k, bound=bound,
                                                   dtype=dtype))
        self._record(name, Work(macs=self._macs, outputs=out.numel()))
        return out

    def _exact_op(self, name: str):
        """``(op, reduction length)`` of MVM ``name`` for :meth:`_exact` (linear layer)."""
        return {"forward": (lambda x, w: x @ w.t(), self.in_features),
                "backward": (lambda d, w: d @ w, self.out_features),
                "weight_grad": (lambda d, x: d.t() @ x, self._v)}[name]

    def _exact_out(self, name: str, out: torch.Tensor) -> torch.Tensor:
        return out

    def _mvm_rows(self, x: torch.Tensor):
        """The forward MVM's input rows for :meth:`_mvm` (a conv in the fast mode keeps them
        as the image: :class:`imckit.nn.rows.ConvRows`)."""
        return self._rows(x)

    def _as_grad(self, d: torch.Tensor) -> torch.Tensor:
        """Output-gradient rows in the layout the layer's kernels take."""
        return d

    def _mvm(self, name: str, A: torch.Tensor, X: torch.Tensor, kw: dict) -> torch.Tensor:
        """``X @ A`` of MVM ``name`` on the simulated arrays (its placement is ``imc``; the
        ``digital`` placement runs :meth:`_exact`)."""
        from .. import imc

        cfg = self._imc_cfg(name)
        if is_rows(X) and (self.cfg.record_errors or self._calibrating(name)):
            X = X.materialize()                # calibration and error records read the rows
        with trusted_operands():               # levels from our own quantizers: no re-check
            r = self._adc_range(name, A, X, kw, cfg)
            run = imc.mvm_fast if self.cfg.fidelity == "fast" else imc.mvm
            y, work = run(A, X, cfg, report=True, adc_range=r,
                          generator=self._generator(X), count_write=False, **kw)
        if self.training:
            w = work.to_dict()
            # Stationary weights are written once per update (_program_weights), not per call;
            # the weight-gradient array is rewritten with the activations at every call.
            w["write_bits"] = (A.shape[0] * A.shape[1] * kw["a_bits"]
                               if name == "weight_grad" else 0)
            w["macs"] = self._macs
            self._record(name, Work(**w))
            kind = "radix4" if kw["x_kind"] == "radix4" else (
                "signed" if kw["x_kind"] == "signed" else "unsigned")
            mp = MVMMap(name, "", A.shape[0], A.shape[1], X.shape[0], kw.get("row_group", 1),
                        kw["a_bits"], kind, 0, 0)
            dense = mp.dense(self._rules, cfg.rows, cfg.columns)
            self._dense[name][0] += dense["cycles"]
            self._dense[name][1] += dense["row_drives"]
            if self.cfg.record_errors:
                ref = X.double() @ A.double()
                e = self._errors[name]
                e[0] += float(((y.double() - ref.double()) ** 2).sum())
                e[1] += float((ref.double() ** 2).sum())
                e[2] += int(ref.numel())
        return y.to(X.dtype if X.is_floating_point() else A.dtype)   # int8 levels: A is float

    # --- how this layer's operands sit on the arrays (the one mapping, imckit.mapping) ----
    kernel_area = 1
    kind = "linear"

    def _x_kind(self, signed: bool) -> str:
        if signed:
            return "signed"
        return "multilevel" if self.cfg.imc_config().input_levels > 2 else "unsigned"

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """The layer input as MVM rows (one per position)."""
        return x

    def _positions_of(self, x: torch.Tensor) -> int:
        """MVM rows (vectors of the forward) of input ``x``."""
        return x.shape[0]

    def _backward_operands(self, d: torch.Tensor, wl: torch.Tensor):
        """``(A, X, unrows)`` of the backward MVM: stored ``Wq`` (M x N), the gradient rows,
        and how the result becomes the input gradient."""
        return wl, d, lambda g: g

    def _input_grad_float(self, gy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        return self._digital("backward", gy, w)

    def _record_fast(self, x: torch.Tensor, batch: int) -> None:
        """Work of the fp32 fast path (every MVM on fp32: plain torch ops, nothing simulated):
        MACs and outputs of the three MVMs, so a record still prices the run."""
        if not self.training:
            return
        self._count_call(x, batch)
        macs = self._positions_of(x) * self.weight.numel()
        self._record("forward", Work(macs=macs, outputs=self._positions_of(x) * self.weight.shape[0]))
        if x.requires_grad:
            self._record("backward", Work(macs=macs, outputs=x.numel()))
        self._record("weight_grad", Work(macs=macs, outputs=self.weight.numel()))

    def _count_call(self, x: torch.Tensor, batch: int) -> None:
        """A training call: samples, the largest batch, whether the input gradient runs."""
        self._batch = max(self._batch, batch)
        self._samples += batch
        self._input_grad_seen = self._input_grad_seen or x.requires_grad

    def _call(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        if self.training:
            self._nonfinite = False
            self._count_call(x, batch)
        return TrainingMVMs.apply(x, self.weight, self.a_alpha, self)

    # --- step hooks ----------------------------------------------------------------------
    def after_step(self) -> None:
        """One optimizer step happened: re-program the arrays, recalibrate on schedule."""
        self.steps += 1
        self._work_steps += 1
        if self.a_alpha is not None and float(self.a_alpha.detach()) > 0:
            with torch.no_grad():
                self.a_alpha.clamp_(min=ALPHA_MIN)
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
                "dense": {m: list(v) for m, v in self._dense.items()},
                "samples": self._samples, "input_grad": self._input_grad_seen,
                "errors": {m: list(v) for m, v in self._errors.items()},
                "work_steps": self._work_steps, "batch": self._batch,
                "positions": int(self.positions), "in_positions": int(self.in_positions)}

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
        self._dense = {m: list(v) for m, v in state.get("dense", {}).items()} or self._dense
        self._samples = state.get("samples", 0)
        self._input_grad_seen = state.get("input_grad", False)
        self._work_steps = state.get("work_steps", 0)
        self._batch = state.get("batch", 0)
        self.positions = state.get("positions", self.positions)  # of the last call (conv)
        self.in_positions = state.get("in_positions", self.in_positions)

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
    in_positions = 1

    @classmethod
    def from_float(cls, linear: nn.Linear, cfg: LayerConfig | None = None, *,
                   layer_index: int = 0, **overrides) -> "IMCLinear":
        """An :class:`IMCLinear` with a copy of ``linear``'s weights."""
        new = cls(linear.in_features, linear.out_features, cfg, bias=linear.bias is not None,
                  layer_index=layer_index, **overrides)
        return new._copy_params(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, x2 = x.shape[:-1], x.reshape(-1, self.in_features)
        if self.all_fp32:
            self._record_fast(x2, x2.shape[0])
            return F.linear(x, self.weight, self.bias)
        y = self._call(x2, x2.shape[0])
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
        self.positions = self.in_positions = 0
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

    kind = "conv2d"

    @property
    def kernel_area(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return im2col(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def _mvm_rows(self, x: torch.Tensor):
        if self.cfg.fidelity == "fast":
            return ConvRows(x, self.kernel_size, self.dilation, self.padding, self.stride)
        return self._rows(x)

    def _positions_of(self, x: torch.Tensor) -> int:
        return x.shape[0] * self._out_hw[0] * self._out_hw[1]

    def _exact_op(self, name: str):
        geo = (self.stride, self.padding, self.dilation)
        kk = self.kernel_area
        if name == "forward":
            return (lambda x, w: F.conv2d(x, w, None, *geo), self.in_channels * kk)
        if name == "backward":
            return (lambda d, w: torch.nn.grad.conv2d_input(self._x_shape, w, d, *geo),
                    self.out_channels * kk)
        return (lambda d, x: torch.nn.grad.conv2d_weight(x, self.weight.shape, d, *geo),
                self._v)

    def _exact_out(self, name: str, out: torch.Tensor) -> torch.Tensor:
        if name == "forward":                               # image -> rows (b, ho, wo)
            return out.permute(0, 2, 3, 1).reshape(-1, self.out_channels)
        return out

    def _as_grad(self, d: torch.Tensor) -> torch.Tensor:
        return self._grad_image(d)

    def _grad_image(self, d: torch.Tensor) -> torch.Tensor:
        """Output-gradient rows (B*Ho*Wo, C_out) as an image (B, C_out, Ho, Wo)."""
        Ho, Wo = self._out_hw
        return d.reshape(-1, Ho, Wo, self.out_channels).permute(0, 3, 1, 2)

    def _backward_operands(self, d: torch.Tensor, wl: torch.Tensor):
        """The transposed convolution (:mod:`imckit.mapping.arrays`): the output gradient,
        zero-inserted by the stride and padded, unfolded at every INPUT position (rows
        ``C_out*k*k``), against the kernel rotated by 180 degrees with its channel axes swapped
        (stored ``C_out*k*k`` x ``C_in``)."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                   self.dilation)
        B, _, H, W = self._x_shape
        Ho, Wo = self._out_hw
        g = self._grad_image(d)
        z = g.new_zeros(B, self.out_channels, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1)
        z[:, :, ::sh, ::sw] = g
        z = F.pad(z, (dw * (kw - 1) - pw, W - (Wo - 1) * sw - 1 + pw,
                      dh * (kh - 1) - ph, H - (Ho - 1) * sh - 1 + ph))
        if self.cfg.fidelity == "fast":                              # rows kept as z
            X = ConvRows(z, (kh, kw), (dh, dw), (0, 0), (1, 1))
        else:
            X = im2col(z, (kh, kw), (dh, dw), (0, 0), (1, 1))        # (B*H*W, C_out*k*k)
        A = wl.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, self.in_channels)

        def unrows(gx):
            return gx.reshape(B, H, W, self.in_channels).permute(0, 3, 1, 2)

        return A, X, unrows

    def _input_grad_float(self, gy: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        pl = self.mvm_placements["backward"]
        self._record("backward", Work(macs=self._macs, outputs=int(torch.Size(x_shape).numel())))
        (g, gs), (wv, ws) = cast(gy, pl), cast(w, pl)
        g = self._grad_image(g)
        if pl == "int8":                                           # exact integer sums
            g, wv = g.double(), wv.double()
        gx = torch.nn.grad.conv2d_input(x_shape, wv, g, self.stride, self.padding, self.dilation)
        return (gx * (gs * ws)).to(gy.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, Wd = x.shape
        kh, kw = self.kernel_size
        Ho = (H + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        Wo = (Wd + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        self.positions, self.in_positions = Ho * Wo, H * Wd
        self._out_hw, self._x_shape = (Ho, Wo), tuple(x.shape)
        if self.all_fp32:
            self._record_fast(x, B)
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        y = self._call(x, B)
        y = y.reshape(B, Ho * Wo, self.out_channels).transpose(1, 2)
        y = y.reshape(B, self.out_channels, Ho, Wo)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


__all__ = ["IMCModule", "IMCLinear", "IMCConv2d"]
