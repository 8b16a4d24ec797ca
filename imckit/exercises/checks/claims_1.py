"""ex-claims-1 (chapter 7): mismatch SQNR at 2 % and 0.05 %, predicted from the value at 0.2 %."""
import math

from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-claims-1"
points = 2
TOL_DB = 1.5      # a prediction from the scaling law, not a measurement


def _predicted(sigma):
    import json

    rows = json.loads(ik.data.book_file("claims_noise.json").read_text())["rows"]
    base = next(r["sqnr_db_mismatch_mean"] for r in rows if r["cap_mismatch"] == 0.002
                and r["rows"] == 1152 and r["adc_bits"] == 8
                and r["sqnr_db_mismatch_mean"] is not None)
    return base - 20 * math.log10(sigma / 0.002)


@test_case(name="2 %", points=1, failure_message="The mismatch error's power grows with "
           "sigma squared: 10 times the sigma costs 20 log10(10) dB.")
def test_two(sqnr_2pct):
    assert abs(float(sqnr_2pct) - _predicted(0.02)) < TOL_DB, f"{sqnr_2pct} dB is off"


@test_case(name="0.05 %", points=1, failure_message="A quarter of the sigma gains 20 log10(4) dB.")
def test_005(sqnr_005pct):
    assert abs(float(sqnr_005pct) - _predicted(0.0005)) < TOL_DB, f"{sqnr_005pct} dB is off"
