"""Training glue: layers whose three training MVMs run on simulated IMC hardware (SPEC §2).

The whole API::

    from imckit import nn as inn
    model = inn.convert(model, adaptability="full")      # nn.Linear / nn.Conv2d -> IMC layers
    for x, t in batches:
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad(); loss.backward()
        if not inn.nonfinite_grad_seen(model):             # GradScale backs off, step skipped
            inn.before_step(model); opt.step(); inn.after_step(model)
    inn.collect_work(model)                                 # per layer, per MVM: for imckit.energy

Under ``two-level`` and ``one-level`` adaptability the hardware holds one ADC range per MVM kind,
not per layer: :func:`after_step` pools the layers' calibrated ranges (their maximum) and gives
every layer the pooled one from the next step on. Under ``full`` each (layer, MVM) keeps its own.

>>> import torch
>>> from torch import nn
>>> net = convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), placement="digital")
>>> [type(m).__name__ for m in net]
['IMCLinear', 'ReLU', 'IMCLinear']
>>> net(torch.rand(3, 4)).sum().backward(); after_step(net)
>>> collect_work(net)["layers"][1]["mvms"]["forward"]["macs"]
48
"""
from __future__ import annotations

import torch
from torch import nn

from ..work import WORK_SCHEMA
from .config import LayerConfig, make_config
from .engine import MVM_INDEX, TrainingMVMs
from .inspect import layer_operands, step_operands
from .layers import IMCConv2d, IMCLinear, IMCModule

MVMS = tuple(MVM_INDEX)


def imc_layers(model: nn.Module) -> list[tuple[str, IMCModule]]:
    """``(name, layer)`` of every IMC layer in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, IMCModule)]


def convert(model: nn.Module, cfg: LayerConfig | None = None, **overrides) -> nn.Module:
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` by its IMC layer (in place).

    Layers are numbered in module order (the number seeds each layer's arrays). With
    ``keep_ends=True`` the first and last of them get ``ends_placement`` (as SUN20 kept the
    first and last layers at higher precision). Returns the model (or the new layer when
    ``model`` itself is a Linear/Conv2d).
    """
    cfg = make_config(cfg, **overrides)
    found = [(n, m) for n, m in model.named_modules()
             if type(m) in (nn.Linear, nn.Conv2d) or isinstance(m, IMCModule)]
    last = len(found) - 1
    out = model
    for i, (name, mod) in enumerate(found):
        c = cfg
        if cfg.keep_ends and i in (0, last):
            c = cfg.replace(placement=cfg.ends_placement)
        if isinstance(mod, IMCModule):
            src = mod
            kind = IMCLinear if isinstance(mod, IMCLinear) else IMCConv2d
            new = kind.from_float(_as_float(src), c, layer_index=i)
        elif isinstance(mod, nn.Linear):
            new = IMCLinear.from_float(mod, c, layer_index=i)
        else:
            new = IMCConv2d.from_float(mod, c, layer_index=i)
        new.layer_name = name or type(mod).__name__.lower()
        new.train(mod.training)
        if name == "":
            out = new
        else:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
    return out


def _as_float(layer: IMCModule) -> nn.Module:
    if isinstance(layer, IMCLinear):
        ref = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        ref = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                        layer.padding, layer.dilation, bias=layer.bias is not None)
    ref.weight, ref.bias = layer.weight, layer.bias
    return ref


def before_step(model: nn.Module) -> None:
    """Call right before ``optimizer.step()``. Nothing needs doing there in this model (writes
    are counted when the arrays are re-programmed, see :func:`after_step`); the hook exists so
    train loops need not change if a later model does (e.g. counting only changed cells)."""
    del model


def after_step(model: nn.Module) -> None:
    """Call right after ``optimizer.step()``: the re-quantized weights are written into the
    arrays at the next forward (counted), ADC ranges are recalibrated every
    ``recalibrate_every`` steps, and shared ranges are pooled (two-level, one-level)."""
    layers = [m for _, m in imc_layers(model)]
    for layer in layers:
        layer.after_step()
    groups: dict[tuple, list] = {}
    for layer in layers:
        if layer.cfg.adaptability in ("two-level", "one-level"):
            for m in MVMS:
                if layer.mvm_placements[m] == "imc" and m in layer._candidate:
                    groups.setdefault((layer.cfg.adaptability, m), []).append(layer)
    for (_, m), members in groups.items():
        r = max(layer._candidate[m] for layer in members)
        for layer in members:
            layer.adc_range[MVM_INDEX[m]] = r


def nonfinite_grad_seen(model: nn.Module) -> bool:
    """True when the last backward pass met a NaN/inf gradient (skip that optimizer step)."""
    if any(layer._nonfinite for _, layer in imc_layers(model)):
        return True
    return any(p.grad is not None and not bool(torch.isfinite(p.grad).all())
               for p in model.parameters())


def reset_work(model: nn.Module) -> None:
    """Forget the work records of every IMC layer."""
    for _, layer in imc_layers(model):
        layer.reset_work()


def collect_work(model: nn.Module) -> dict:
    """Work of every IMC layer and MVM since the last :func:`reset_work` (JSON-able).

    Returns ``{"schema", "steps", "batch", "layers": [{"name", "kind", "shape": [N, M],
    "positions", "in_positions", "kernel_area", "samples", "input_grad", "signed_input",
    "rows", "columns", "adc_bits", "sign_mode", "mvms": {mvm: {"placement", "macs",
    "conversions", "cycles", "row_drives", "write_bits", "outputs", ...}}}]}``: ``steps``
    optimizer steps, ``batch`` the largest samples per training call, ``samples`` summed over
    calls, ``positions`` / ``in_positions`` output / input positions per sample (1 for a linear
    layer), work summed over every training call. IMC MVMs also carry ``dense_cycles`` and
    ``dense_drives``, what the same calls would cost with every input plane non-empty (the
    denominator of the occupancy :func:`imckit.energy.training_step_energy` accepts), and
    ``adc_range``.
    """
    layers = [m for _, m in imc_layers(model)]
    return {"schema": WORK_SCHEMA,
            "steps": max((m._work_steps for m in layers), default=0),
            "batch": max((m._batch for m in layers), default=0),
            "layers": [m.work_report() for m in layers]}


def placements_of(model: nn.Module) -> dict[str, dict[str, str]]:
    """``{layer name: {mvm: placement}}`` of every IMC layer."""
    return {m.layer_name or n: dict(m.mvm_placements) for n, m in imc_layers(model)}


__all__ = ["LayerConfig", "make_config", "IMCLinear", "IMCConv2d", "IMCModule", "TrainingMVMs",
           "convert", "before_step", "after_step", "collect_work", "reset_work",
           "nonfinite_grad_seen", "imc_layers", "placements_of", "step_operands",
           "layer_operands", "MVMS", "WORK_SCHEMA"]
