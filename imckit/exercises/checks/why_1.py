"""ex-why-1 (chapter 1): the per-MVM gain for 2.9x with two MVMs mapped; the one-MVM ceiling."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-why-1"
points = 2


@test_case(name="gain", points=1, failure_message="Solve 3 / (3 - 2 (1 - 1/G)) = 2.9 for G; "
           "ik.energy.amdahl_savings(G, 2) tells how close a guess is.")
def test_gain(G):
    got = ik.energy.amdahl_savings(float(G), 2)
    assert abs(got - 2.9) < 0.005, f"amdahl_savings({G}, 2) = {got:.4f}, not 2.9"


@test_case(name="ceiling", points=1, failure_message="Let G grow without bound with one of "
           "three equal MVMs mapped: what is left costs 2 of 3.")
def test_ceiling(max_one):
    expected = ik.energy.amdahl_savings(1e12, 1)
    assert abs(float(max_one) - expected) < 0.01, f"{max_one} is not the one-MVM ceiling"
