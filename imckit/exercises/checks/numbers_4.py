"""ex-numbers-4 (chapter 2): the fraction of the layer-1 gradient G that saturated on the first
design's phase-1 grid, S/2 * 4^-k (phase 0's grid at scale S/2)."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-numbers-4"
points = 1


@test_case(name="saturated", points=1, failure_message="The old phase-1 grid is phase 0's grid at "
           "scale S/2: F.error_stats(G, fmt, scale=F.GradScale().scale_for(G) / 2).saturated.")
def test_saturated(saturated, env):
    F = ik.formats
    G = env["G"]                               # the chapter's layer-1 gradient
    expected = F.error_stats(G, F.Radix4(), scale=F.GradScale().scale_for(G) / 2).saturated
    assert abs(float(saturated) - expected) <= max(1e-6, 0.01 * expected), \
        f"{saturated} is not the saturated fraction"
