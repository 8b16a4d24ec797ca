"""ex-numbers-1 (chapter 2): binades of radix-4 FP4, one phase and both; radix-8's worst error."""
import math

from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-numbers-1"
points = 3


def _binades(*phases):
    v = [x for p in phases for x in ik.formats.Radix4().values(1.0, phase=p).abs().tolist() if x]
    return math.log2(max(v) / min(v))


@test_case(name="one phase", points=1, failure_message="Count the factors of two between the "
           "largest and the smallest nonzero level: ik.formats.Radix4().values(1.0).")
def test_one_phase(binades_one):
    assert abs(float(binades_one) - _binades(0)) < 0.01, f"{binades_one} binades is not it"


@test_case(name="both phases", points=1, failure_message="Phase 1 is phase 0 shifted by one "
           "binade: join the two level sets (values(1.0, phase=0) and phase=1).")
def test_both_phases(binades_both):
    assert abs(float(binades_both) - _binades(0, 1)) < 0.01, f"{binades_both} binades is not it"


@test_case(name="radix 8", points=1, failure_message="Between lo and 8 lo the midpoint is "
           "4.5 lo; a value just below it rounds down to lo. Give the error as a fraction.")
def test_radix8(radix8_error):
    lo, hi = 1.0, 8.0
    mid = (lo + hi) / 2
    assert abs(float(radix8_error) - (mid - lo) / mid) < 0.01, f"{radix8_error} is not it"
