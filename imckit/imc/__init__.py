"""Charge-domain in-memory-computing (IMC) MVM, simulated bit-true (SPEC §3).

An array of ``rows x columns`` SRAM bit cells, each with a capacitor. A column computes a binary
dot product by charge sharing: every row whose input digit and stored bit are both 1 charges its
capacitor, then all capacitors of the column are shorted and the shared voltage is the fraction
of charged capacitors [JIA20]. An ADC per column digitizes that voltage. Multi-bit operands use
bit-parallel / bit-serial (BPBS) operation [JIA20]: bit ``k`` of every stored entry lives in its
own physical column, inputs are applied one binary plane per cycle, and a digital back end
combines the column readings with shifts and adds.

Non-idealities, each switchable:

* capacitor mismatch ``C_ij = C_u (1 + eps_ij)``, ``eps_ij ~ N(0, cap_mismatch^2)`` drawn once per
  simulated chip from ``cfg.seed`` and the array (tile) index, then fixed (each ``eps_ij`` on a
  grid of ``cap_mismatch / 21``, :data:`imckit.imc.array.MISMATCH_GRID`, so the mismatch sums are
  exact integer products; clipped at +-6 sigma and so that no capacitor falls below
  ``0.1 C_u``, :data:`imckit.imc.array.CAP_MIN` [I]);
* kT/C thermal noise, fresh every conversion, ``sigma = sqrt(n kT / C_col) / V_DD`` of full
  swing for the ``n = ktc_samplings`` sampling events of a conversion [SCHMID];
* the ADC: ``adc_bits`` over ``[0, adc_range]`` of the swing, clipping above, its comparator's
  noise in volts (``adc_noise_uv``); calibration never picks an LSB finer than
  ``adc_lsb_min_uv``.

Longer reductions than ``rows`` are split into row tiles whose partial sums add digitally.
Everything is one matmul per row tile over all planes of a batch (no loops over bits, rows,
columns or batch elements). CPU and CUDA: the device follows the inputs.

>>> import torch
>>> from imckit.imc import IMCConfig, mvm
>>> A = torch.tensor([[1, -2], [3, 4], [-5, 6]])          # N=3 stored 4-bit signed ints, M=2
>>> X = torch.tensor([[1, 2, 3], [15, 0, 7]])              # B=2 unsigned 4-bit inputs
>>> mvm(A, X, IMCConfig.ideal()).tolist() == (X @ A).tolist()
True
"""
from __future__ import annotations

from .._malloc import tune as _tune_malloc
from .analysis import (MVM_KINDS, NoiseBudget, budget_point, noise_budget, sqnr_split,
                       SQNRSplit, training_operands)
from .array import calibrate_adc_range, column_counts, mvm
from .config import BOLTZMANN, IMCConfig
from .fast import mvm_fast
from .planes import X_KINDS

__all__ = ["IMCConfig", "mvm", "mvm_fast", "column_counts", "calibrate_adc_range", "sqnr_split", "SQNRSplit",
           "noise_budget", "NoiseBudget", "training_operands", "budget_point", "MVM_KINDS",
           "X_KINDS", "BOLTZMANN"]

_tune_malloc()          # large temporaries reuse freed memory (no page faults): imckit._malloc

