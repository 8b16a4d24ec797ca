"""The three training MVMs of one layer as one autograd function (SPEC §2).

For a linear layer ``y = W x`` (``W`` is M x N, a batch of B inputs as the rows of ``X``):

1. forward ``Y = Xq Wq^T``: INT weights stored in the array (``Wq^T``, N rows x M columns),
   INT activations streamed in;
2. backward ``dX = D0 Wq``: a second array holding ``Wq`` (M rows x N columns), the output
   gradient streamed in as radix-4 values quantized with TPR phase 0. For a convolution this is
   the transposed convolution (rotated kernel, ``C_out*k*k`` rows x ``C_in`` columns, one vector
   per input position), as :mod:`imckit.mapping.arrays` maps it;
3. weight gradient ``dW = D1^T Xq``: the activations ``Xq`` written into an array (B rows x N
   columns, the batch is the reduction), the gradient streamed in as radix-4 phase 1.

Each MVM runs where :meth:`LayerConfig.placements` puts it: ``imc`` (the simulator
:func:`imckit.imc.mvm`), ``digital`` (the same quantized product, exact through the layer's
float32 kernels by a split-operand scheme, :func:`exact_bilinear`), or a digital engine at
``fp32``, ``bf16`` or ``int8`` (:func:`digital_product`: the MVM's float operands rounded to
that format). Rounding of weights and activations passes gradients straight through (STE), zero
where an operand was clipped. Master weights stay fp32.

With ``a_clip="pact"`` the activation clip ``alpha`` is a Parameter of the layer and an input
of :class:`TrainingMVMs`: PACT's gradient ``dL/dalpha`` is the sum of the input gradient (the
backward MVM's result, before the clip's STE mask) where the input was clipped (``x >= alpha``;
for a signed input ``|x| >= alpha``, times ``sign(x)``), plus ``cfg.pact_decay * alpha``. A
layer whose input needs no gradient runs no backward MVM, so its ``alpha`` gets none and keeps
its initial value.
"""
from __future__ import annotations

import math

import torch

from .. import formats
from .._device import exact_kernels
from .._scan import all_finite
from ..formats.clip import sawb_clip

MVM_INDEX = {"forward": 0, "backward": 1, "weight_grad": 2}
QUANTIZED = ("imc", "digital")
"""Placements whose operands are INT4 / radix-4."""


def quantize_weight(w: torch.Tensor, cfg):
    """Signed INT levels of ``w`` and their step: ``w ~ levels * step`` (SPEC §1.1).

    Returns ``(levels, step, mask)``; ``mask`` is 1.0 where ``|w| <= alpha`` (STE passes
    there), 0.0 elsewhere, in ``w``'s dtype (or None with the ``max`` clip).
    """
    fmt = formats.Int(bits=cfg.w_bits, signed=True)
    if cfg.w_clip == "sawb":
        alpha = sawb_clip(w.detach(), cfg.w_bits)
    else:
        alpha = float(formats.clip_scale(w.detach(), fmt, rule=cfg.w_clip))
    if not alpha > 0:
        alpha = 1.0
    wd = w.detach()
    levels = fmt.encode(wd, scale=alpha, dtype=w.dtype)
    step = alpha / (2 ** (cfg.w_bits - 1) - 1)
    mask = None if cfg.w_clip == "max" else _inside(wd, -alpha, alpha)
    return levels, step, mask


def _inside(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """1.0 where ``lo <= x <= hi``, else 0.0 (NaN too), in ``x``'s dtype: an STE mask as floats.
    A product with it is 3.5x faster than with a bool mask, and comparing into a float tensor
    3x faster than building one from two bool comparisons (2-core x86 CPU, 0.5 M values).

    >>> _inside(torch.tensor([-1.0, 0.0, 2.0, 3.0, float("nan")]), 0.0, 2.0).tolist()
    [0.0, 1.0, 1.0, 0.0, 0.0]
    """
    return torch.eq(x.clamp(lo, hi), x, out=torch.empty_like(x))


def quantize_input(x: torch.Tensor, alpha: float, signed: bool, bits: int):
    """INT levels of layer inputs with clip ``alpha``; unsigned 0..2^b-1 or signed symmetric.

    Returns ``(levels, step, mask)``: levels as floats of ``x``'s dtype; ``mask`` 1.0 where
    the input was not clipped, 0.0 where it was (floats of ``x``'s dtype).
    """
    fmt = formats.Int(bits=bits, signed=signed)
    xd = x.detach()
    levels = fmt.encode(xd, scale=alpha, dtype=x.dtype)
    step = alpha / ((2 ** (bits - 1) - 1) if signed else (2 ** bits - 1))
    return levels, step, _inside(xd, -alpha if signed else 0.0, alpha)


def radix4(g: torch.Tensor, scale: float, phase: int, rounding: str, generator):
    """Radix-4 FP4 values of a gradient at power-of-two ``scale`` and TPR ``phase``."""
    return formats.quantize(g, formats.Radix4(), scale=scale, phase=phase, rounding=rounding,
                            generator=generator if rounding == "stochastic" else None)


def compact_levels(levels: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """INT levels of a float32 tensor as int8 when they fit (every INT format up to 7 bits
    unsigned / 8 bits signed), else unchanged: the simulator takes integer operands, and an
    im2col of int8 levels moves a quarter of the bytes of float32 ones (issue 12). float64
    stays float64 (the exact-gradient checks run there).

    >>> compact_levels(torch.tensor([0.0, 15.0]), 4, False).dtype
    torch.int8
    """
    if levels.dtype != torch.float32 or _int_max(bits, signed) > 127:
        return levels
    return levels.to(torch.int8)


def exact_product(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``x @ a`` computed exactly for quantized operands (float64), returned in ``x``'s dtype."""
    return (x.double() @ a.double()).to(x.dtype)


F32_EXACT = 2 ** 24
"""Integers up to this magnitude are exact in float32 (24-bit significand)."""

RADIX4_INT_MAX = 4 ** 6
"""Largest radix-4 magnitude in units of the format's smallest value (``S / 4^-6``)."""


def _int_max(bits: int, signed: bool) -> int:
    """Largest magnitude of a ``bits``-bit INT level (symmetric signed or unsigned)."""
    return 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1


def exact_bilinear(op, a: torch.Tensor, b: torch.Tensor, a_max: float, b_max: float,
                   k: int, *, bound=None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``op(a, b)`` of a bilinear ``op`` (matmul, conv and their gradients) for integer-valued
    ``a`` (``|a| <= a_max``) and ``b`` (``|b| <= b_max``), reducing over at most ``k`` products
    per output, computed EXACTLY through float32 kernels and returned correctly rounded to
    ``dtype`` (float64 by default: exact below 2^53; float32 when the caller would round to it
    anyway, which saves the float64 copies where the result is exact in float32).

    Every partial sum of a float32 kernel is exact while it stays below 2^24 in magnitude, so
    when ``k * a_max * b_max < 2^24`` one float32 call is exact. Otherwise the bound is taken
    from the data: first from ``bound(a)`` when the caller gives one (a cheap upper bound of
    ``max |op(|a|, |b|)|``, e.g. :func:`reduction_bound`), then from ``op(|a|, |b|)``, which
    bounds every partial sum of every output: a sum of non-negative terms computed in float32 is
    exact below 2^24 and stays at or above it once there (rounding is monotone), so if its
    largest output is below 2^24 one float32 call of ``op(a, b)`` is exact (two calls in all;
    gradients rarely come near the worst case). Otherwise ``a`` is split into signed
    base-``2^s`` digits with ``k * 2^s * b_max < 2^24`` (split-operand), each digit's product
    computed in float32 and the digits recombined in float64; if no digit width fits, one
    float64 call.

    >>> a = torch.tensor([[4097.0, 1.0]]); b = torch.tensor([[4097.0], [2.0]])
    >>> exact_bilinear(torch.matmul, a, b, 4097, 4097, 2).item(), (a @ b).item()   # odd > 2^24
    (16785411.0, 16785410.0)
    """
    with exact_kernels():
        return _exact_bilinear(op, a, b, a_max, b_max, k, bound).to(dtype)


def _exact_bilinear(op, a, b, a_max, b_max, k, bound=None):
    if k * a_max * b_max < F32_EXACT:
        return op(a.float(), b.float())
    af, bf = a.float(), b.float()
    if bound is not None and bound(af) < F32_EXACT:
        return op(af, bf)
    top = op(af.abs(), bf.abs())
    if top.numel() == 0 or float(top.max()) < F32_EXACT:          # this data: exact in one call
        return op(af, bf)
    room = (F32_EXACT - 1) / max(k * b_max, 1)
    s = int(math.floor(math.log2(room))) if room >= 2 else 0
    if s < 1:
        return op(a.double(), b.double())
    base = float(2 ** s)
    n = max(1, math.ceil(math.log2(a_max + 1) / s))
    mag, sgn = a.abs(), torch.sign(a)
    out = None
    for j in range(n):
        d = torch.remainder(mag, base) if j < n - 1 else mag
        if j < n - 1:
            mag = (mag - d) / base
        term = op((d * sgn).float(), b.float()).double()
        out = term if out is None else out.add_(term, alpha=base ** j)
    return out


def reduction_bound(d: torch.Tensor, x_max: float) -> float:
    """An upper bound of ``max |dW|`` for a weight gradient ``dW[o, i, ...] = sum over the batch
    (and positions) of d[., o, .] * x[., i, .]`` with ``|x| <= x_max``, in which every element
    of ``d`` enters each output at most once (a linear layer's ``d^T x``; a convolution's
    ``conv2d_weight``, whose positions map one to one for every kernel offset):
    ``max_o sum|d_o| * x_max``. One reduction instead of the convolution ``op(|d|, |x|)``
    (:func:`exact_bilinear`). The float32 sum is raised by its worst-case rounding error, so
    the bound holds. On ResNet-20's weight gradients (batch 32, first 6 steps) it was below
    2^24 in 63 of the 108 calls where the exact bound was.

    >>> d = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    >>> reduction_bound(d, 4.0) >= float((d.abs().t() @ torch.full((2, 1), 4.0)).max()) == 16.0
    True
    """
    if not d.numel():
        return 0.0
    if d.dtype not in (torch.float32, torch.float64):      # half sums round coarser: widen
        d = d.double()
    dims = [0] + list(range(2, d.dim()))
    n = d.numel() // max(d.shape[1], 1)                 # terms per sum
    s = float(d.abs().sum(dims).max())
    u = 2.0 ** -24 if d.dtype == torch.float32 else 2.0 ** -53
    if (n - 1) * u >= 0.5:
        return math.inf
    return s / (1 - (n - 1) * u) * x_max


def radix4_ints(d: torch.Tensor, scale: float, phase: int):
    """Radix-4 values as integers ``d / unit`` (``|.| <= 4096``) and the unit (the format's
    smallest positive value at this scale and phase, a power of two)."""
    unit = float(formats.Radix4().values(scale=scale, phase=phase)[8])   # smallest positive
    return d / unit, unit


def cast(t: torch.Tensor, precision: str):
    """``(values, scale)`` of ``t`` rounded to ``precision``: ``fp32`` as is, ``bf16`` rounded
    to bfloat16, ``int8`` symmetric per-tensor INT8 levels (scale ``max|t| / 127``).

    >>> cast(torch.tensor([1.0, -0.5]), "int8")[0].tolist()
    [127.0, -64.0]
    """
    if precision == "fp32":
        return t, 1.0
    if precision == "bf16":
        return t.to(torch.bfloat16).to(t.dtype), 1.0
    amax = float(t.detach().abs().max()) if t.numel() else 0.0
    step = amax / 127 if amax > 0 else 1.0
    return torch.round(t / step).clamp_(-127, 127), step


def digital_product(x: torch.Tensor, a: torch.Tensor, placement: str) -> torch.Tensor:
    """``x @ a`` on a float digital engine: both operands rounded to ``fp32``, ``bf16`` or
    ``int8`` (exact integer sums). The ``digital`` placement (INT4 x radix-4) runs
    :func:`exact_bilinear` through the layer's own kernels instead.

    >>> x, a = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [4.0]])
    >>> digital_product(x, a, "fp32").item(), round(digital_product(x, a, "int8").item(), 4)
    (11.0, 11.0157)
    """
    xv, xs = cast(x, placement)
    av, as_ = cast(a, placement)
    if placement == "int8":
        return (exact_product(xv, av) * (xs * as_)).to(x.dtype)
    return xv @ av


class TrainingMVMs(torch.autograd.Function):
    """``Y = rows(X) W^T`` with the forward, backward and weight-gradient MVMs placed per layer.

    ``layer`` is an :class:`imckit.nn.layers.IMCModule`: it holds the configuration, the ADC
    ranges, the gradient scale, the random generator and the work records, and says how its
    input becomes rows (``_rows``: identity or im2col) and how the backward MVM sits on the
    arrays (``_backward_operands``, ``_input_grad_float``).
    """

    @staticmethod
    def forward(ctx, x, w, a_alpha, layer):
        pl = layer.mvm_placements
        training = layer.training
        quant_x = pl["forward"] in QUANTIZED or pl["weight_grad"] in QUANTIZED
        quant_w = pl["forward"] in QUANTIZED or pl["backward"] in QUANTIZED
        xl = xs = xmask = wl = ws = wmask = None
        signed = False
        w2 = w.reshape(w.shape[0], -1)
        layer._v = layer._positions_of(x)                     # vectors of the forward MVM
        layer._macs = layer._v * w2.numel()                    # logical MACs of each MVM
        if quant_x:
            signed = layer._input_signed(x)
            alpha = layer._activation_clip(x, signed)
            if alpha == float("inf"):                   # a non-finite input: NaN out, the
                layer._nonfinite = True                 # step is skipped (train's divergence
                ctx.layer, ctx.meta = layer, (None, None, False, False, None)   # rule decides)
                ctx.save_for_backward(x, w, None, None, None, None)
                return x.new_full((layer._v, w2.shape[0]), float("nan"))
            xl, xs, xmask = quantize_input(x, alpha, signed, layer.cfg.a_bits)
        if quant_w:
            wl, ws, wmask = quantize_weight(w, layer.cfg)
        if pl["forward"] == "digital":                   # exact, through the plain kernels
            y = layer._exact("forward", xl, wl, _int_max(layer.cfg.a_bits, signed),
                             _int_max(layer.cfg.w_bits, True), x.dtype) * (xs * ws)
        elif pl["forward"] == "imc":
            kw = dict(a_bits=layer.cfg.w_bits, a_signed=True, x_bits=layer.cfg.a_bits,
                      x_kind=layer._x_kind(signed), row_group=layer.kernel_area)
            xr = layer._mvm_rows(compact_levels(xl, layer.cfg.a_bits, signed))
            y = layer._mvm("forward", wl.reshape(w2.shape).t(), xr, kw) * (xs * ws)
        else:
            x2 = layer._rows(x)
            y = layer._digital("forward", x2, w2.t())
        if training and quant_w:
            layer._program_weights(w2.shape, backward=x.requires_grad)
        ctx.layer = layer
        ctx.meta = (xs, ws, signed, pl["forward"] in QUANTIZED,
                    alpha if quant_x and a_alpha is not None else None)
        ctx.save_for_backward(x, w, xl, xmask, wl, wmask)
        return y

    @staticmethod
    def backward(ctx, gy):
        layer = ctx.layer
        x, w, xl, xmask, wl, wmask = ctx.saved_tensors
        xs, ws, signed, fwd_quant, pact = ctx.meta
        pl = layer.mvm_placements
        cfg = layer.cfg
        gx = gw = galpha = None
        finite = all_finite(gy)
        if not finite:
            # The step will be skipped (nonfinite_grad_seen); propagate NaN without running MVMs.
            layer._nonfinite = True
            layer._grad_scale(gy)                      # lets a delayed GradScale back off
            nan = float("nan")
            return (torch.full_like(x, nan) if ctx.needs_input_grad[0] else None,
                    torch.full_like(w, nan) if ctx.needs_input_grad[1] else None,
                    torch.full((), nan) if ctx.needs_input_grad[2] else None, None)
        S = None
        if pl["backward"] in QUANTIZED or pl["weight_grad"] in QUANTIZED:
            S = layer._grad_scale(gy)
        if ctx.needs_input_grad[0]:
            if pl["backward"] in QUANTIZED:
                d0 = radix4(gy, S, cfg.backward_phase, cfg.grad_rounding, layer._generator(gy))
            if pl["backward"] == "digital":
                di, unit = radix4_ints(d0, S, cfg.backward_phase)
                gx = layer._exact("backward", layer._as_grad(di), wl, RADIX4_INT_MAX,
                                  _int_max(cfg.w_bits, True), x.dtype) * (unit * ws)
            elif pl["backward"] == "imc":
                A, X, unrows = layer._backward_operands(d0, wl)
                kw = dict(a_bits=cfg.w_bits, a_signed=True, x_kind="radix4", x_scale=S,
                          phase=cfg.backward_phase, row_group=layer.kernel_area)
                gx = unrows(layer._mvm("backward", A, X, kw)) * ws
            else:
                wu = wl * ws if fwd_quant else w
                gx = layer._input_grad_float(gy, wu, x.shape)
            if pact is not None and fwd_quant and ctx.needs_input_grad[2]:
                galpha = _pact_alpha_grad(gx, x, pact, signed, cfg.pact_decay)
            if xmask is not None and fwd_quant:
                gx = gx * xmask
        if ctx.needs_input_grad[1]:
            if pl["weight_grad"] in QUANTIZED:
                d1 = radix4(gy, S, cfg.weight_grad_phase, cfg.grad_rounding, layer._generator(gy))
            if pl["weight_grad"] == "digital":
                di, unit = radix4_ints(d1, S, cfg.weight_grad_phase)
                gw = layer._exact("weight_grad", layer._as_grad(di), xl, RADIX4_INT_MAX,
                                  _int_max(cfg.a_bits, signed), w.dtype) * (unit * xs)
            elif pl["weight_grad"] == "imc":
                kw = dict(a_bits=cfg.a_bits, a_signed=signed, x_kind="radix4", x_scale=S,
                          phase=cfg.weight_grad_phase)
                xr = layer._rows(compact_levels(xl, cfg.a_bits, signed))
                gw = layer._mvm("weight_grad", xr, d1.t(), kw) * xs
            else:
                xu = layer._rows(xl * xs if fwd_quant else x)
                gw = layer._digital("weight_grad", gy.t(), xu)
            gw = gw.reshape(w.shape)
            if wmask is not None and fwd_quant:        # STE of the forward's weight clip
                gw = gw * wmask
        return gx, gw, galpha, None


def _pact_alpha_grad(gx: torch.Tensor, x: torch.Tensor, alpha: float, signed: bool,
                     decay: float) -> torch.Tensor:
    """PACT's ``dL/dalpha``: ``gx`` summed where the input was clipped (signed: times the
    sign), plus the L2 term ``decay * alpha``; a 0-d float32 tensor.

    >>> x = torch.tensor([-1.0, 0.5, 2.0, 3.0]); g = torch.tensor([1.0, 1.0, 0.5, 0.25])
    >>> _pact_alpha_grad(g, x, 1.5, False, 0.0).item(), _pact_alpha_grad(g, x, 0.8, True, 0.1).item()
    (0.75, -0.17000000178813934)
    """
    xd = x.detach()
    if signed:
        over = torch.sign(xd) * (xd.abs() >= alpha)
    else:
        over = (xd >= alpha).to(gx.dtype)
    return ((gx.detach() * over).sum().double() + decay * alpha).float()


__all__ = ["TrainingMVMs", "quantize_weight", "quantize_input", "radix4", "exact_product",
           "compact_levels",
           "digital_product", "cast", "exact_bilinear", "reduction_bound", "radix4_ints",
           "MVM_INDEX",
           "QUANTIZED", "F32_EXACT", "RADIX4_INT_MAX"]
