"""Training glue: layers whose three training MVMs run on simulated IMC hardware (SPEC §2).

The whole API::

    from imckit import nn as inn
    model = inn.convert(model, adaptability="full")      # nn.Linear / nn.Conv2d -> IMC layers
    # (the sun20 recipe: first and last layers kept; recipe="strict" maps every layer)
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
>>> net = convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), placement="digital",
...               recipe="strict")
>>> [type(m).__name__ for m in net]
['IMCLinear', 'ReLU', 'IMCLinear']
>>> net(torch.rand(3, 4)).sum().backward(); after_step(net)
>>> collect_work(net)["layers"][1]["mvms"]["forward"]["macs"]
48
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from .._scan import all_finite
from .._validate import check_choice
from ..work import WORK_SCHEMA
from .config import RECIPES, LayerConfig, make_config
from .engine import MVM_INDEX, TrainingMVMs
from .inspect import layer_operands, step_operands
from .layers import IMCConv2d, IMCLinear, IMCModule

MVMS = tuple(MVM_INDEX)


def imc_layers(model: nn.Module) -> list[tuple[str, IMCModule]]:
    """``(name, layer)`` of every IMC layer in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, IMCModule)]


UNCONVERTED_MVM = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                   nn.ConvTranspose3d, nn.Bilinear, nn.MultiheadAttention, nn.RNNBase,
                   nn.RNNCellBase)
"""Modules that multiply by their own weights but have no IMC layer: :func:`convert` reports
them (one ValueError, or one warning with ``allow_unconverted=True``). Embedding (a lookup),
normalization, pooling, activations and dropout are no MVMs and are left alone silently."""

_READS_CHILD_WEIGHTS = {
    nn.MultiheadAttention: "reads out_proj.weight itself (F.multi_head_attention_forward)",
    nn.TransformerEncoderLayer: "its inference fast path reads linear1/linear2 weights itself",
}
"""Parents that use their Linear children's weights without calling the children, so
converting a child would not move that MVM onto IMC: the parent is reported instead."""


def convert(model: nn.Module, cfg: LayerConfig | None = None, *, allow_unconverted: bool = False,
            recipe: str | None = None, **overrides) -> nn.Module:
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` by its IMC layer (in place).

    Subclasses are converted too unless they override ``forward`` (for Conv2d also
    ``_conv_forward``) or their parent reads their weights itself (MultiheadAttention's
    ``out_proj``). Modules that multiply by their own weights but cannot be converted
    (:data:`UNCONVERTED_MVM`, uninitialized lazy modules, Conv2d with ``groups != 1``, a
    non-zero padding mode or string padding, the cases above) are reported in ONE ValueError
    listing each name and type, before anything is modified; with ``allow_unconverted=True``
    they stay in fp32 and one warning lists them. A module reachable from several parents
    becomes ONE IMC layer that all of them hold. The new layers keep the original weight and
    bias Parameters (same objects, so tied weights stay tied and an optimizer built before
    stays valid) unless their dtype differs from the IMC layer's (then a copy).

    ``recipe`` (``"sun20"``, the default, or ``"strict"``: :data:`RECIPES`) picks the preset
    that ``cfg`` would otherwise give; keyword overrides apply on top. Layers are numbered in
    module order (the number seeds each layer's arrays). With ``keep_ends=True`` (the sun20
    recipe) the first and last of them get ``ends_placement`` (as [SUN20] kept the first and
    last layers at higher precision); a model whose every layer is an end (two layers or fewer)
    then has nothing mapped, which a warning says. Returns the model (or the new layer when
    ``model`` itself is a Linear/Conv2d).

    >>> net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    >>> convert(net)
    Traceback (most recent call last):
    ...
    ValueError: convert: these modules multiply by their own weights but cannot run on IMC, so they would silently stay fp32: '0' (Conv1d: no IMC layer), '2' (LazyLinear: uninitialized lazy module, run one forward pass first); replace them, or pass allow_unconverted=True to keep them in fp32 with a warning
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is not allowed: pass a torch.nn.Module")
    check_choice("allow_unconverted", allow_unconverted, [True, False])
    cfg = make_config(cfg, recipe=recipe, **overrides)
    holders = _holders(model)
    found, problems = _plan(model, holders)
    if problems:
        msg = ("convert: these modules multiply by their own weights but cannot run on IMC, "
               "so they would silently stay fp32: " + ", ".join(problems))
        if not allow_unconverted:
            raise ValueError(msg + "; replace them, or pass allow_unconverted=True to keep them "
                             "in fp32 with a warning")
        warnings.warn(msg + " (allow_unconverted=True)", UserWarning, stacklevel=2)
    last = len(found) - 1
    if cfg.keep_ends and cfg.placement not in ("fp32", cfg.ends_placement) and 0 < len(found) <= 2:
        warnings.warn(f"convert: keep_ends=True keeps the first and last layers at "
                      f"{cfg.ends_placement} and this model has {len(found)}, so nothing runs "
                      f"on {cfg.placement}; pass keep_ends=False (or recipe='strict') to map "
                      "every layer", UserWarning, stacklevel=2)
    out = model
    for i, (name, mod) in enumerate(found):
        c = cfg
        if cfg.keep_ends and i in (0, last):
            c = cfg.replace(placement=cfg.ends_placement)
        new = _imc_layer(mod, c, i)
        new.layer_name = name or type(mod).__name__.lower()
        new.train(mod.training)
        if mod is model:
            out = new
        for parent, key in holders.get(id(mod), ()):
            setattr(parent, key, new)
    return out


def _plan(model: nn.Module, holders: dict) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """``(layers to convert, problems)``: each layer once (its first name, module order), and
    ``"'name' (Type: why)"`` for each module with an MVM that cannot be converted."""
    found, problems = [], []
    for name, mod in model.named_modules():
        why = _why_not(mod, [p for p, _ in holders.get(id(mod), ())])
        if why == "":
            found.append((name, mod))
        elif why is not None:
            problems.append(f"{name or '<model>'!r} ({type(mod).__name__}: {why})")
    return found, problems


def _why_not(mod: nn.Module, parents: list[nn.Module]) -> str | None:
    """``""``: convert ``mod``; a reason: report it; None: leave it alone (no MVM of its own,
    or its parent, reported itself, reads its weights)."""
    if isinstance(mod, IMCModule):
        return ""
    reads = [why for kind, why in _READS_CHILD_WEIGHTS.items() if isinstance(mod, kind)]
    if isinstance(mod, LazyModuleMixin) and mod.has_uninitialized_params():
        return "uninitialized lazy module, run one forward pass first"
    if not isinstance(mod, (nn.Linear, nn.Conv2d)):
        if isinstance(mod, UNCONVERTED_MVM):
            return "no IMC layer" + (f"; it {reads[0]}" if reads else "")
        return f"no IMC layer; {reads[0]}" if reads else None
    if any(isinstance(p, tuple(_READS_CHILD_WEIGHTS)) for p in parents):
        return None
    base = nn.Linear if isinstance(mod, nn.Linear) else nn.Conv2d
    overridden = [f for f in ("forward", "_conv_forward")
                  if hasattr(base, f) and getattr(type(mod), f) is not getattr(base, f)]
    if overridden:
        return f"subclass overrides {overridden[0]}, an IMC layer would drop it"
    if base is nn.Conv2d:
        if mod.groups != 1:
            return f"groups={mod.groups}, IMC layers need groups=1"
        if mod.padding_mode != "zeros":
            return f"padding_mode={mod.padding_mode!r}, IMC layers pad with zeros"
        if isinstance(mod.padding, str):
            return f"padding={mod.padding!r}, IMC layers need integer padding"
    return ""


def _holders(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """``id(module) -> [(parent, attribute name), ...]``: every place that holds it."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is not None:
                holders.setdefault(id(child), []).append((parent, key))
    return holders


def _imc_layer(mod: nn.Module, cfg: LayerConfig, index: int) -> IMCModule:
    """The IMC layer for ``mod`` (Linear, Conv2d or an IMC layer to re-configure), holding
    ``mod``'s own weight and bias Parameters when their dtype matches (else copies)."""
    src = _as_float(mod) if isinstance(mod, IMCModule) else mod
    kind = IMCLinear if isinstance(src, nn.Linear) else IMCConv2d
    new = kind.from_float(src, cfg, layer_index=index)
    for p in ("weight", "bias"):
        old = getattr(src, p)
        if old is not None and old.dtype == getattr(new, p).dtype:
            setattr(new, p, old)
    return new


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
    return any(p.grad is not None and not all_finite(p.grad)
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


__all__ = ["LayerConfig", "make_config", "RECIPES", "IMCLinear", "IMCConv2d", "IMCModule", "TrainingMVMs",
           "convert", "before_step", "after_step", "collect_work", "reset_work",
           "nonfinite_grad_seen", "imc_layers", "placements_of", "step_operands",
           "layer_operands", "MVMS", "WORK_SCHEMA"]
