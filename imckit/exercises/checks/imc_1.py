"""ex-imc-1 (chapter 3): kT/C noise of a 65 nm column in counts, against one 8-bit ADC step."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-imc-1"
points = 2


@test_case(name="noise in counts", points=1, failure_message="sqrt(2 kT/C) (two sampling events) of the column's "
           "capacitance (2304 x 1.2 fF), as a fraction of 0.85 V, times the 2304 rows; "
           "IMCConfig.jia20_65nm().sigma_thermal is the fraction.")
def test_noise(noise_counts):
    c = ik.imc.IMCConfig.jia20_65nm()
    expected = c.sigma_thermal * c.rows
    assert abs(float(noise_counts) / expected - 1) < 0.03, f"{noise_counts} counts is not it"


@test_case(name="ADC step", points=1, failure_message="An 8-bit ADC over the full swing has "
           "2**8 - 1 steps for counts from 0 to the number of rows.")
def test_step(step_counts):
    c = ik.imc.IMCConfig.jia20_65nm(adc_bits=8)
    expected = c.rows / (2 ** c.adc_bits - 1)
    assert abs(float(step_counts) / expected - 1) < 0.01, f"{step_counts} counts is not it"
