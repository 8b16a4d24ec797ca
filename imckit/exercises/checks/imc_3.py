"""ex-imc-3 (chapter 3): cycles of the 4-bit activations X4 as binary planes and as base-4 digits."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-imc-3"
points = 2


def _cycles(env):
    imc = ik.imc
    ml = imc.IMCConfig.jia22_16nm(input_levels=4)
    _, w_bin = imc.mvm(env["W4"], env["X4"], env["cfg16"], report=True)
    _, w_ml = imc.mvm(env["W4"], env["X4"], ml, x_kind="multilevel", report=True)
    return w_bin.cycles, w_ml.cycles


@test_case(name="binary planes", points=1, failure_message="Run imc.mvm(W4, X4, cfg16, "
           "report=True) and read the report's cycles.")
def test_binary(cycles_binary, env):
    assert int(cycles_binary) == _cycles(env)[0], f"{cycles_binary} is not the cycle count"


@test_case(name="base-4 digits", points=1, failure_message="Use IMCConfig.jia22_16nm("
           "input_levels=4) and x_kind='multilevel' with report=True.")
def test_multilevel(cycles_multilevel, env):
    assert int(cycles_multilevel) == _cycles(env)[1], f"{cycles_multilevel} is not it"
