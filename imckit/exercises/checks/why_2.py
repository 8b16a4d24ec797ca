"""ex-why-2 (chapter 1): the two-level ceiling when MVM 3 costs twice the others and stays off."""
from otter.test_files import test_case

OK_FORMAT = False
name = "ex-why-2"
points = 1


@test_case(name="ceiling", points=1, failure_message="Add up the digital costs (1, 1, 2); with "
           "MVMs 1 and 2 free, only MVM 3's cost is left. The ceiling is total / what is left.")
def test_ceiling(ceiling):
    costs = {"forward": 1.0, "backward": 1.0, "weight_grad": 2.0}   # the exercise's premise
    expected = sum(costs.values()) / costs["weight_grad"]
    assert abs(float(ceiling) - expected) < 0.01, f"{ceiling} is not the ceiling"
