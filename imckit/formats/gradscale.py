"""GradScale: a per-layer, power-of-two scale for gradient tensors (SPEC §1.2).

Each layer owns one :class:`GradScale` and asks it for the scale ``S`` of every gradient it
quantizes (``S`` is the largest magnitude of the phase-0 radix-4 grid, a power of two, so the
scale is a shift in hardware; the phase-1 grid tops at ``2S``).

* ``rule="max"`` ([I] our rule, the SPEC's first default, not SUN20's):
  ``S = 2**ceil(log2(max|g|))`` of the current gradient, so nothing saturates in either TPR
  phase (below ``S_MAX * fmt_max``, beyond any real gradient). Needs the max of the tensor before
  quantizing it.
* ``rule="adaptive"`` (the recipe default, after [SUN20]'s per-layer GradScale as a public
  reading note of SUN20 states it: a per-layer scale, doubled when the gradient underflows the
  top binade and halved when it overflows): use the scale ``S`` set by the previous step;
  after the step, if ``max|g| > S`` (overflow) ``S`` doubles, if ``max|g| <= S/2``
  (underflow: the top binade ``(S/2, S]`` unused) ``S`` halves, else it stays. So ``S``
  tracks ``max|g|`` one binade per step in BOTH directions, and a hardware pipeline knows it
  before the gradient arrives. Unlike ``delayed``, which grows back only after
  ``growth_interval`` (100) clean steps in a row, it never lags a shrinking gradient by more
  than one step per binade; unlike ``max`` it never reads the current tensor's maximum first
  (a step that overflows saturates, and is flagged). The factor 2 per step and the first
  step's ``S`` (the ``max`` rule's) are ours [I].
* ``rule="delayed"``: use the previous step's ``S``, which a hardware pipeline knows before the
  gradient arrives, like mixed-precision loss scaling (Micikevicius et al. 2018). When the
  step's gradient does not fit (``max|g| > S``) or holds inf/NaN, the step is flagged and ``S``
  backs off: it is multiplied by ``backoff`` (in loss-scaling terms the multiplier ``1/S`` is
  divided by it). After ``growth_interval`` clean steps in a row ``S`` is halved again (the
  multiplier grows back), which buys resolution when gradients shrink during training.

After each :meth:`GradScale.scale_for` the flags say what happened in that step:
``overflowed`` (inf/NaN, or finite values above the range under ``delayed``), ``nonfinite``
(inf/NaN: skip the optimizer step) and ``saturated`` (finite values above the range).
"""
from __future__ import annotations

import math

import torch

from .._validate import check_choice, check_range
from ._core import as_tensor, check_scale, pow2_ceil

RULES = ("max", "delayed", "adaptive")

S_MIN, S_MAX = 2.0 ** -960, 2.0 ** 960
"""``S`` stays within these powers of two, so every format accepts it as a scale and
``backoff``/growth never run it to inf or 0 (gradients beyond ``S_MAX * fmt_max`` saturate)."""


class GradScale:
    """Stateful power-of-two scale for one layer's gradients.

    Args:
        rule: ``"max"``, ``"delayed"`` or ``"adaptive"`` (see the module docstring).
        fmt_max: largest magnitude of the format at scale 1 (1.0 for radix-4, whose top level
            is ``S``; use ``fmt.max_value`` for other formats).
        backoff: factor (a power of two >= 2) by which ``S`` grows on an overflowing step.
            Default 2, as in mixed-precision loss scaling [I].
        growth_interval: clean steps in a row after which ``S`` is halved. Default 100 [I]
            (loss scalers use 2000 for a full model; one layer's gradients move faster).
        init_scale: ``S`` of the first ``delayed`` step (a power of two within
            ``S_MIN..S_MAX``); None takes the ``max`` rule on it.

    >>> gs = GradScale("delayed", growth_interval=2)
    >>> [gs.scale_for(torch.tensor([0.2])) for _ in range(3)], gs.overflowed
    ([0.25, 0.25, 0.125], True)
    >>> gs.scale_for(torch.tensor([float("inf")])), gs.nonfinite, gs.scale
    (0.25, True, 0.5)
    >>> ad = GradScale("adaptive")
    >>> [ad.scale_for(torch.tensor([m])) for m in (0.2, 0.05, 0.05, 0.05, 0.3)], ad.scale
    ([0.25, 0.25, 0.125, 0.0625, 0.0625], 0.125)
    """

    def __init__(self, rule: str = "max", *, fmt_max: float = 1.0, backoff: float = 2.0,
                 growth_interval: int = 100, init_scale: float | None = None):
        check_choice("rule", rule, RULES)
        check_scale(fmt_max, "fmt_max")
        check_scale(backoff, "backoff", power_of_two=True)
        if backoff < 2:
            raise ValueError(f"backoff={backoff!r} is out of range: allowed powers of two >= 2")
        check_range("growth_interval", growth_interval, 1, None, integer=True)
        if init_scale is not None:
            init_scale = check_scale(init_scale, "init_scale", power_of_two=True)
            check_range("init_scale", init_scale, S_MIN, S_MAX)
        self.rule = rule
        self.fmt_max = float(fmt_max)
        self.backoff = float(backoff)
        self.growth_interval = int(growth_interval)
        self.scale: float | None = init_scale
        """``S`` for the next step (delayed) or of the last step (max); None before the first."""
        self.overflowed = False
        self.nonfinite = False
        self.saturated = False
        self.clean_steps = 0
        self.steps = 0
        self.n_overflows = 0

    def _fit(self, amax: float) -> float:
        """The smallest power of two covering ``amax``, kept within ``S_MIN..S_MAX``."""
        if amax <= 0:
            return self.scale or 1.0
        v = amax / self.fmt_max
        return S_MIN if v <= S_MIN else min(pow2_ceil(v), S_MAX)

    def scale_for(self, g) -> float:
        """The power-of-two scale ``S`` to quantize gradient ``g`` with, this step.

        Updates the flags and (``delayed``) the scale of the next step.
        """
        gt, _ = as_tensor(g, "g")
        with torch.no_grad():
            amax = float(gt.detach().abs().max()) if gt.numel() else 0.0
        finite = math.isfinite(amax)
        self.steps += 1
        self.nonfinite = not finite
        if self.rule == "max":
            self.saturated = False
            self.overflowed = self.nonfinite
            if finite:
                self.scale = self._fit(amax)
                self.saturated = amax > self.scale * self.fmt_max      # only beyond S_MAX
            elif self.scale is None:
                self.scale = 1.0
            self.n_overflows += self.overflowed
            return self.scale
        if self.scale is None:
            self.scale = self._fit(amax) if finite else 1.0
        s = self.scale
        if self.rule == "adaptive":
            self.saturated = finite and amax > s * self.fmt_max
            self.overflowed = self.nonfinite or self.saturated
            if self.overflowed:
                self.n_overflows += 1
                self.scale = min(s * 2.0, S_MAX)
            elif amax <= s * self.fmt_max / 2:
                self.scale = max(s * 0.5, S_MIN)
            return s
        self.saturated = finite and amax > s * self.fmt_max
        self.overflowed = self.nonfinite or self.saturated
        if self.overflowed:
            self.n_overflows += 1
            self.clean_steps = 0
            self.scale = min(s * self.backoff, S_MAX)
        else:
            self.clean_steps += 1
            if self.clean_steps >= self.growth_interval:
                self.clean_steps = 0
                self.scale = max(s * 0.5, S_MIN)
        return s

    def state_dict(self) -> dict:
        """Everything needed to resume (plain python numbers)."""
        return {k: getattr(self, k) for k in ("rule", "fmt_max", "backoff", "growth_interval",
                                              "scale", "clean_steps", "steps", "n_overflows")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return (f"GradScale(rule={self.rule!r}, scale={self.scale!r}, steps={self.steps}, "
                f"overflows={self.n_overflows})")
