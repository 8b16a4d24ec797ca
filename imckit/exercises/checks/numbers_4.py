"""ex-numbers-4 (chapter 2): the fraction of the layer-1 gradient G that saturates in phase 1."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-numbers-4"
points = 1


@test_case(name="saturated", points=1, failure_message="Quantize G with the max rule's scale "
           "S = F.GradScale().scale_for(G) in phase 1 and read F.error_stats(...).saturated.")
def test_saturated(saturated, env):
    F = ik.formats
    G = env["G"]                               # the chapter's layer-1 gradient
    expected = F.error_stats(G, F.Radix4(), scale=F.GradScale().scale_for(G), phase=1).saturated
    assert abs(float(saturated) - expected) <= max(1e-6, 0.01 * expected), \
        f"{saturated} is not the saturated fraction"
