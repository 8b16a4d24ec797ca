"""ex-mapping-1 (chapter 4): the three MVMs of a 3x3 convolution (16 -> 32 channels, 8x8, batch 64)."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-mapping-1"
points = 3
C_IN, C_OUT, K, HW, BATCH, ROWS = 16, 32, 3, 8, 64, 1152     # the exercise's layer


def _maps():
    m = ik.mapping
    shape = m.LayerShape(n=C_IN * K * K, m=C_OUT, positions=HW * HW, kernel_area=K * K)
    return m.layer_maps(shape, BATCH, m.CountRules())


@test_case(name="N", points=1, failure_message="After im2col one output reduces over every "
           "input channel and every kernel tap.")
def test_n(N):
    assert int(N) == _maps()["forward"].k, f"N = {N} is not the forward reduction"


@test_case(name="M", points=1, failure_message="M is the outputs per position.")
def test_m(M):
    assert int(M) == _maps()["forward"].o, f"M = {M} is not it"


@test_case(name="weight-gradient tiles", points=1, failure_message="The weight gradient reduces "
           "over every output position of the batch; split that into 1152-row tiles.")
def test_tiles(tiles_weight_grad):
    wg = _maps()["weight_grad"]
    expected = len(ik.mapping.row_tiles(wg.k, ROWS, wg.group))
    assert int(tiles_weight_grad) == expected, f"{tiles_weight_grad} tiles is not it"
