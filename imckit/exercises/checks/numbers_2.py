"""ex-numbers-2 (chapter 2): nearest rounding on radix-4 shrinks log-uniform magnitudes."""
from otter.test_files import test_case

import torch

import imckit as ik

OK_FORMAT = False
name = "ex-numbers-2"
points = 1


@test_case(name="mean shrink", points=1, failure_message="Quantize many log-uniform magnitudes, "
           "e.g. torch.exp2(torch.linspace(-10, 0, 100001, dtype=torch.float64)), and average "
           "q(x)/x - 1 (a negative number).")
def test_shrink(mean_shrink):
    x = torch.exp2(torch.linspace(-10, 0, 100001, dtype=torch.float64))
    expected = (ik.formats.quantize(x, ik.formats.Radix4()) / x - 1).mean().item()
    assert abs(float(mean_shrink) - expected) < 0.003, f"{mean_shrink} is not the mean change"
