"""ex-mapping-3 (chapter 4): the MVM that falls back to digital under two-level adaptability."""
from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-mapping-3"
points = 1


@test_case(name="fallback", points=1, failure_message="ik.mapping.placements('two-level') "
           "names where each MVM runs; give the name of the one not on 'imc'.")
def test_fallback(fallback_mvm):
    off = [m for m, p in ik.mapping.placements("two-level").items() if p != "imc"]
    assert fallback_mvm in off, f"{fallback_mvm!r} is not the MVM kept off IMC"
