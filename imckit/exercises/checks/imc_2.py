"""ex-imc-2 (chapter 3): the most rows an 8-bit full-swing ADC resolves count by count."""
from otter.test_files import test_case

import torch

import imckit as ik

OK_FORMAT = False
name = "ex-imc-2"
points = 1


@test_case(name="rows", points=1, failure_message="One ADC step is R / (2**8 - 1) counts; find "
           "the largest R for which a step is at most one count, then try imc.mvm on it.")
def test_rows(max_rows):
    bits = ik.imc.IMCConfig.jia22_16nm().adc_bits
    r = int(max_rows)
    assert r == 2 ** bits - 1, f"{max_rows} rows is not the largest"
    # the simulator agrees: every count of a binary column of r rows comes out exact
    c = ik.imc.IMCConfig(rows=r, cap_mismatch=0.0, thermal_noise=False, round_counts=True)
    a = torch.ones(r, 1, dtype=torch.int64)
    x = (torch.arange(r) < torch.arange(0, r + 1, 17)[:, None]).long()
    y = ik.imc.mvm(a, x, c, a_bits=1, a_signed=False, x_bits=1)
    assert torch.equal(y[:, 0], x.sum(1).double().to(y.dtype))
