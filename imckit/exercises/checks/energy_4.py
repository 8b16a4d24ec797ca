"""ex-energy-4 (chapter 6): the INT8 engine's operand reuse at which the IMC saves less than 2x."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-energy-4"
points = 2
REUSES = (1, 2, 4, 8, 16, 32, 64)          # the powers of two the exercise steps through


def _first_below_2x(env, **kw):
    E = ik.energy
    for r in REUSES:
        base = E.DigitalBaseline.preset("int8", reuse=float(r))
        if E.training_step_energy(env["net"], 64, baseline=base, **kw).savings < 2:
            return r
    return None


@test_case(name="two-cycle signs", points=1, failure_message="Step the reuse of "
           "E.DigitalBaseline.preset('int8', reuse=r) through 1, 2, 4, ... and give the first r "
           "at which E.training_step_energy(net, 64, baseline=...).savings drops below 2.")
def test_two_cycle(reuse_below_2x, env):
    assert int(reuse_below_2x) == _first_below_2x(env), f"reuse {reuse_below_2x} is not it"


@test_case(name="one-cycle signs", points=1, failure_message="The same with "
           "sign_mode='one-cycle' passed to training_step_energy.")
def test_one_cycle(reuse_below_2x_one_cycle, env):
    expected = _first_below_2x(env, sign_mode="one-cycle")
    assert int(reuse_below_2x_one_cycle) == expected, f"reuse {reuse_below_2x_one_cycle} is not it"
