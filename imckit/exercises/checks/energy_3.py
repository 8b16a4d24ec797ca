"""ex-energy-3 (chapter 6): the fraction of the 1152 rows each ResNet-20 forward MVM uses."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-energy-3"
points = 1


@test_case(name="row fractions", points=1, failure_message="For every layer l of "
           "E.resnet20(), in order, its forward MVM reduces over l.n rows of an array's 1152 "
           "(ik.imc.IMCConfig.jia22_16nm().rows).")
def test_fractions(row_fractions):
    rows = ik.imc.IMCConfig.jia22_16nm().rows
    expected = [layer.n / rows for layer in ik.energy.resnet20()]
    got = [float(f) for f in row_fractions]
    assert len(got) == len(expected), f"{len(got)} fractions for {len(expected)} layers"
    assert all(abs(a - b) < 1e-3 for a, b in zip(got, expected)), "some fractions are off"
