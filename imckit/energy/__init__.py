"""Energy model (SPEC §4): per-event energies -> MVM -> training step, with every number sourced.

>>> from imckit import energy
>>> net = energy.jia22_cnn()
>>> full = energy.training_step_energy(net, batch=64, adaptability="full")
>>> one = energy.training_step_energy(net, batch=64, adaptability="full", sign_mode="one-cycle")
>>> full.savings < 400 < one.savings       # >400x needs signed gradients in one cycle
True
"""
from __future__ import annotations

from .._validate import check_range
from .counts import (INPUT_MODES, CountRules, LayerShape, as_layers, layer_work,
                     layers_from_model, mvm_work, step_work)
from .model import (DIGITAL_COMPONENTS, IMC_COMPONENTS, EnergyPreset, EnergyReport,
                    digital_energy_j, energy_from_work, imc_energy_j, training_step_energy)
from .measured import MEASURED, MeasuredPoint, measured_table
from .networks import NETWORKS, jia22_cnn, resnet20
from .params import (BASELINES, NODE_CAP, PRECISIONS, SB17_45_TO_16, DigitalBaseline,
                     Horowitz45, IMCEnergy, adc_energy_pj, scale_energy, sources_table)

__all__ = [
    "amdahl_savings", "training_step_energy", "energy_from_work", "EnergyPreset",
    "EnergyReport", "IMCEnergy", "DigitalBaseline", "Horowitz45", "CountRules", "LayerShape",
    "BASELINES", "PRECISIONS", "INPUT_MODES", "IMC_COMPONENTS",
    "DIGITAL_COMPONENTS", "NODE_CAP", "SB17_45_TO_16", "NETWORKS", "adc_energy_pj",
    "scale_energy", "sources_table", "imc_energy_j", "digital_energy_j", "mvm_work",
    "layer_work", "step_work", "as_layers", "layers_from_model", "jia22_cnn", "resnet20",
    "MEASURED", "MeasuredPoint", "measured_table",
]


def amdahl_savings(gain: float, n_mapped: int, n_total: int = 3) -> float:
    """Savings when ``n_mapped`` of ``n_total`` equal-cost MVMs get ``gain`` times cheaper.

    ``n_total / (n_total - n_mapped * (1 - 1/gain))`` (SPEC §2.1): ``gain`` when every MVM is
    mapped, and at most ``n_total / (n_total - n_mapped)`` otherwise, however large the gain
    (Amdahl's law).

    >>> round(amdahl_savings(400, 3), 6)
    400.0
    >>> round(amdahl_savings(400, 2), 3)
    2.985
    """
    check_range("gain", gain, 0, None, lo_open=True)
    check_range("n_total", n_total, 1, None, integer=True)
    check_range("n_mapped", n_mapped, 0, n_total, integer=True)
    return n_total / (n_total - n_mapped * (1.0 - 1.0 / gain))
