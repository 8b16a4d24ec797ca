"""Analytic work counts of the three training MVMs of a layer, from its shape (SPEC §3).

The counts come from the one mapping of :mod:`imckit.mapping.arrays` (which operand is stored,
row and column tiles, cycles per input kind and sign mode, writes per step, MVMs not needed),
the table the simulator executes: with a recorded occupancy (the fraction of input planes that
were non-empty, from :func:`imckit.nn.collect_work`) they equal the simulator's counts, and
without one every plane is assumed non-empty (an upper bound).
"""
from __future__ import annotations

import dataclasses

from .._validate import check_range
from ..mapping import MVMS
from ..mapping.arrays import INPUT_MODES, CountRules, LayerShape, layer_maps
from ..work import Work

__all__ = ["INPUT_MODES", "CountRules", "LayerShape", "mvm_work", "layer_work", "as_layers",
           "layers_from_model", "step_work"]


def mvm_work(k: int, o: int, v: int, stored_bits: int, cycles: int, rows: int,
             write: bool = True, columns: int = 256) -> Work:
    """Counts of one MVM by hand: ``v`` input vectors of length ``k`` against a stored
    ``k x o`` matrix, ``cycles`` input cycles per vector and row tile, every row driven.

    >>> mvm_work(1152, 256, 1, 4, 4, 1152, write=False).conversions   # the worked example
    4096
    """
    for name, val in (("k", k), ("o", o), ("v", v), ("stored_bits", stored_bits),
                      ("cycles", cycles), ("rows", rows), ("columns", columns)):
        check_range(name, val, 1, None, integer=True)
    tiles = -(-k // rows)
    ct = -(-o * stored_bits // columns)
    return Work(macs=v * k * o, conversions=v * cycles * tiles * o * stored_bits,
                cycles=v * cycles * tiles * ct, row_drives=v * cycles * k,
                write_bits=k * o * stored_bits if write else 0, outputs=v * o)


def layer_work(layer: LayerShape, batch: int, rules: CountRules, rows: int,
               columns: int = 256) -> dict[str, Work]:
    """``{mvm: Work}`` of one layer for one training step, every MVM as if on IMC with every
    input plane non-empty (MVMs that are not needed count zero)."""
    return {m: mp.work(rules, rows, columns)
            for m, mp in layer_maps(layer, batch, rules).items()}


def as_layers(layers, input_shape=None) -> list[LayerShape]:
    """Normalize ``layers``: (N, M) / (N, M, positions) / (N, M, positions, k*k) tuples,
    :class:`LayerShape` objects, or a torch model with ``input_shape`` (one sample, no batch).
    In a list of tuples the first layer is the network's first: its input gradient is not
    needed (give :class:`LayerShape` objects to say otherwise).

    >>> [(l.name, l.n, l.m, l.input_grad) for l in as_layers([(1152, 256), (256, 10)])]
    [('L0', 1152, 256, False), ('L1', 256, 10, True)]
    """
    if layers is None:
        raise ValueError("layers=None is not allowed: give (N, M) tuples, LayerShape objects "
                         "or a torch model")
    if hasattr(layers, "named_modules"):
        if input_shape is None:
            raise ValueError("input_shape=None is not allowed with a torch model: give the "
                             "shape of one sample, e.g. (3, 32, 32)")
        return layers_from_model(layers, input_shape)
    if input_shape is not None:
        raise ValueError("input_shape is only allowed with a torch model")
    out = []
    try:
        specs = list(layers)
    except TypeError:
        raise ValueError(f"layers={layers!r} is not allowed: give (N, M) tuples, LayerShape "
                         "objects or a torch model") from None
    for i, spec in enumerate(specs):
        if isinstance(spec, LayerShape):
            out.append(spec if spec.name else dataclasses.replace(spec, name=f"L{i}"))
            continue
        try:
            spec = tuple(spec)
        except TypeError:
            spec = (spec,)
        if not 2 <= len(spec) <= 4:
            raise ValueError(f"layers[{i}]={spec!r} is not allowed: use (N, M), "
                             "(N, M, positions) or (N, M, positions, kernel_area)")
        out.append(LayerShape(*spec, name=f"L{i}", input_grad=i > 0))
    if not out:
        raise ValueError("layers=[] is not allowed: give at least one layer")
    return out


def _mvm_modules(model):
    import torch

    from ..nn.layers import IMCConv2d, IMCLinear

    kinds = (torch.nn.Conv2d, torch.nn.Linear, IMCConv2d, IMCLinear)
    return {m: (n or type(m).__name__) for n, m in model.named_modules() if isinstance(m, kinds)}


def layers_from_model(model, input_shape) -> list[LayerShape]:
    """Conv2d and Linear layers (plain or IMC) of a torch model, found with forward hooks on a
    zero input: shapes, input and output positions, and whether the layer's input gradient is
    needed (its input requires grad: False for the first layer). A module called twice (tied
    weights) appears twice: it runs its MVMs twice."""
    return [shape for shape, _ in _hooked(model, input_shape)]


def _hooked(model, input_shape) -> list[tuple[LayerShape, object]]:
    """``(shape, module)`` of every Conv2d / Linear call of one forward pass, in call order."""
    import torch

    found: list[LayerShape] = []
    calls: list = []
    names = _mvm_modules(model)

    def hook(mod, inp, out):
        calls.append(mod)
        x = inp[0]
        need = bool(x.requires_grad)
        signed = bool(getattr(mod, "signed_seen", False))
        if hasattr(mod, "kernel_size"):
            kk = mod.kernel_size[0] * mod.kernel_size[1]
            found.append(LayerShape(mod.in_channels * kk, mod.out_channels,
                                    out.shape[-2] * out.shape[-1], kk, names[mod],
                                    x.shape[-2] * x.shape[-1], need, signed))
        else:
            pos = max(1, out[0].numel() // mod.out_features)
            found.append(LayerShape(mod.in_features, mod.out_features, pos, 1, names[mod],
                                    pos, need, signed))

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    fast = {m: m.all_fp32 for m in names if hasattr(m, "all_fp32")}
    try:
        for m in fast:                           # shapes only: skip the simulated arrays
            m.all_fp32 = True
        p = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), dtype=p.dtype if p is not None else torch.float32,
                        device=p.device if p is not None else "cpu")
        model.eval()                             # no statistics, no work records change
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, v in fast.items():
            m.all_fp32 = v
        model.train(was_training)
    if not found:
        raise ValueError("model has no Conv2d or Linear layer to count")
    return list(zip(found, calls))


def step_work(layers, batch: int, rules: CountRules | None = None, rows: int = 1152,
              input_shape=None, columns: int = 256) -> list[tuple[LayerShape, dict]]:
    """Per-layer ``{mvm: Work}`` for one training step (see :func:`layer_work`)."""
    rules = rules or CountRules()
    return [(l, layer_work(l, batch, rules, rows, columns))
            for l in as_layers(layers, input_shape)]


assert tuple(layer_work(LayerShape(1, 1), 1, CountRules(), 1)) == MVMS
