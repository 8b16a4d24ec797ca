"""ex-claims-2 (chapter 7): the one-level bound of the MNIST MLP with two effective MVMs."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-claims-2"
points = 1


@test_case(name="bound", points=1, failure_message="Map one of two equal MVMs with the gain of "
           "the full-adaptability run: ik.energy.amdahl_savings(rec('mlp', 'full'), "
           "n_mapped=1, n_total=2).")
def test_bound(one_level_bound, env):
    expected = ik.energy.amdahl_savings(env["rec"]("mlp", "full"), n_mapped=1, n_total=2)
    assert abs(float(one_level_bound) / expected - 1) < 0.01, f"{one_level_bound}x is not it"
