"""ex-claims-1 (chapter 7): the forward MVM's mismatch SQNR at 1 % and 0.1 %, predicted from the
value at 0.2 %."""
import math

from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-claims-1"
points = 2
TOL_DB = 1.5      # a prediction from the scaling law, not a measurement


def _predicted(sigma):
    import json

    rows = json.loads(ik.data.book_file("claims_noise_mvms.json").read_text())["rows"]
    base = next(r["sqnr_db_mismatch_mean"] for r in rows if r["preset"] == "jia22_16nm"
                and r["mvm"] == "forward" and r["rows_filled"] == 1152
                and r["cap_unit_ff"] == 1.0 and r["cap_mismatch"] == 0.002
                and r["adc_noise_uv"] == 100)
    return base - 20 * math.log10(sigma / 0.002)


@test_case(name="1 %", points=1, failure_message="The mismatch error's power grows with "
           "sigma squared: 5 times the sigma costs 20 log10(5) dB.")
def test_one(sqnr_1pct):
    assert abs(float(sqnr_1pct) - _predicted(0.01)) < TOL_DB, f"{sqnr_1pct} dB is off"


@test_case(name="0.1 %", points=1, failure_message="Half the sigma gains 20 log10(2) dB.")
def test_01(sqnr_01pct):
    assert abs(float(sqnr_01pct) - _predicted(0.001)) < TOL_DB, f"{sqnr_01pct} dB is off"
