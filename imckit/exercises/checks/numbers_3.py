"""ex-numbers-3 (chapter 2): the error of 200 averaged stochastic roundings vs nearest rounding."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-numbers-3"
points = 1
N_SEEDS = 200                     # the exercise's number of draws


@test_case(name="error ratio", points=1, failure_message="Average F.quantize(G, fmt, scale=S, "
           "rounding='stochastic', generator=k) over k = 0..199 (S = F.GradScale()."
           "scale_for(G)) and divide its mean squared error by that of nearest rounding.")
def test_ratio(error_ratio, env):
    F = ik.formats
    G, fmt = env["G"], F.Radix4()
    S = F.GradScale().scale_for(G)
    avg = sum(F.quantize(G, fmt, scale=S, rounding="stochastic", generator=k)
              for k in range(N_SEEDS)) / N_SEEDS
    expected = ((avg - G).square().mean() / (F.quantize(G, fmt, scale=S) - G).square().mean()).item()
    assert abs(float(error_ratio) / expected - 1) < 0.02, f"{error_ratio} is not the ratio"
