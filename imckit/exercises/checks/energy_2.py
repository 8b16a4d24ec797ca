"""ex-energy-2 (chapter 6): full-adaptability savings with one-cycle gradient signs."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-energy-2"
points = 1


@test_case(name="savings", points=1, failure_message="E.training_step_energy(net, 64, "
           "sign_mode='one-cycle').savings for the chapter's 11-layer CNN.")
def test_savings(savings_one_cycle, env):
    expected = ik.energy.training_step_energy(env["net"], 64, sign_mode="one-cycle").savings
    assert abs(float(savings_one_cycle) / expected - 1) < 0.01, f"{savings_one_cycle}x is not it"
