"""ex-energy-1 (chapter 6): two-level savings with the weight gradient on a digital INT4 unit."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-energy-1"
points = 1


@test_case(name="savings", points=1, failure_message="E.training_step_energy(net, 64, "
           "adaptability='two-level', fallback_placement='digital').savings, net the chapter's "
           "11-layer CNN.")
def test_savings(savings_digital_fallback, env):
    expected = ik.energy.training_step_energy(env["net"], 64, adaptability="two-level",
                                              fallback_placement="digital").savings
    assert abs(float(savings_digital_fallback) / expected - 1) < 0.01, \
        f"{savings_digital_fallback}x is not it"
