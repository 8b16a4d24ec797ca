"""Look inside one training step: the operands each layer sends to its three MVMs.

:func:`step_operands` runs one forward and backward pass of a converted model (no optimizer
step, gradients left untouched) and returns, per IMC layer and MVM, the stored operand ``A``, the
streamed inputs ``X`` and the keywords of :func:`imckit.imc.mvm`, quantized exactly as the
layer quantizes them. The chapters use it to show column-value distributions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import formats
from .engine import quantize_input, quantize_weight, radix4
from .layers import IMCConv2d, IMCModule
from .rows import is_rows


def layer_operands(layer: IMCModule, x: torch.Tensor, gy: torch.Tensor) -> dict:
    """``{mvm: (A, X, kw)}`` of a layer for its input ``x`` (as the layer receives it: 2-D rows
    for a linear layer, an image batch for a conv, whose last forward set its geometry) and its
    output gradient rows ``gy`` (one per output position), with the layer's current clip and a
    fresh ``max`` GradScale. The backward MVM of a conv is its transposed convolution
    (:mod:`imckit.mapping.arrays`)."""
    cfg = layer.cfg
    signed = layer._input_signed(x)
    alpha = layer.clip_value()
    xl, _, _ = quantize_input(x, alpha, signed, cfg.a_bits)
    xl = layer._rows(xl)
    wl, _, _ = quantize_weight(layer.weight.detach(), cfg)
    S = formats.GradScale("max").scale_for(gy)
    g = torch.Generator(device=gy.device).manual_seed(cfg.seed)
    d0 = radix4(gy, S, cfg.backward_phase, cfg.grad_rounding, g)
    d1 = radix4(gy, S, cfg.weight_grad_phase, cfg.grad_rounding, g)
    A_b, X_b, _ = layer._backward_operands(d0, wl)
    if is_rows(X_b):                                   # a fast-mode conv keeps the image
        X_b = X_b.materialize()
    return {
        "forward": (wl.reshape(wl.shape[0], -1).t(), xl,
                    dict(a_bits=cfg.w_bits, a_signed=True, x_bits=cfg.a_bits,
                         x_kind=layer._x_kind(signed), row_group=layer.kernel_area)),
        "backward": (A_b, X_b, dict(a_bits=cfg.w_bits, a_signed=True, x_kind="radix4",
                                    x_scale=S, phase=cfg.backward_phase,
                                    row_group=layer.kernel_area)),
        "weight_grad": (xl, d1.t(), dict(a_bits=cfg.a_bits, a_signed=signed, x_kind="radix4",
                                         x_scale=S, phase=cfg.weight_grad_phase)),
    }


def step_operands(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Operands of every IMC layer's three MVMs for one cross-entropy step on ``(x, y)``.

    Returns one dict per IMC layer (module order): ``{"name", "operands": {mvm: (A, X, kw)}}``.

    >>> from imckit import nn as inn
    >>> net = inn.convert(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    >>> ops = step_operands(net, torch.rand(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    >>> [tuple(ops[1]["operands"][m][0].shape) for m in ("forward", "backward", "weight_grad")]
    [(4, 3), (3, 4), (5, 4)]
    """
    seen: dict = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, IMCModule):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: seen.__setitem__(name, [mod, inp[0].detach()])))
            hooks.append(m.register_full_backward_hook(
                lambda mod, gin, gout, name=name: seen[name].append(gout[0].detach())))
    saved = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        x = x.clone().requires_grad_(True)
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
        for p, g in zip(model.parameters(), saved):
            p.grad = g
        model.train(was_training)
    out = []
    for name, (mod, xin, gout) in seen.items():
        if isinstance(mod, IMCConv2d):
            g2 = gout.flatten(2).transpose(1, 2).reshape(-1, gout.shape[1])
        else:
            xin, g2 = xin.reshape(-1, xin.shape[-1]), gout.reshape(-1, gout.shape[-1])
        out.append({"name": name, "operands": layer_operands(mod, xin, g2)})
    return out


__all__ = ["step_operands", "layer_operands"]
