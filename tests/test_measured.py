"""Measured digital reference points (imckit.energy.measured): sourced, verbatim, kept apart."""
import re

import pytest

from conftest import ROOT
from imckit import energy as E
from imckit.sources import SOURCES

BIB_KEYS = set(re.findall(r"^@\w+\{(\w+),", (ROOT / "book" / "references.bib").read_text(), re.M))


@pytest.mark.parametrize("name", sorted(E.MEASURED))
def test_every_point_is_sourced_and_quotes_its_number(name):
    p = E.MEASURED[name]
    assert p.source in SOURCES and p.source in BIB_KEYS
    assert p.address.startswith("https://")
    # the stated number appears in the verbatim excerpt, as the source writes it
    assert f"{p.value:g}" in p.excerpt
    # what a point leaves open is said: ops per MAC unconfirmed => a note about it
    if p.ops_per_mac is None:
        assert "MAC" in p.not_confirmed or "FLOP" in p.not_confirmed
    if p.voltage_v is None:
        assert "voltage" in p.not_confirmed


def test_simba_reads_as_the_research_states_it():
    p = E.MEASURED["simba-16nm-int8"]
    assert (p.value, p.unit, p.node_nm, p.precision, p.workload) == (0.11, "pJ/op", 16, "int8",
                                                                   "inference")
    assert p.pj_per_mac(ops_per_mac=2) == pytest.approx(0.22)
    with pytest.raises(ValueError, match="ops_per_mac=None"):
        p.pj_per_mac()


def test_tops_per_watt_converts_to_pj_per_op():
    assert E.MEASURED["ibm-14nm-fp16"].pj_per_op == pytest.approx(1 / 1.4)
    assert E.MEASURED["ibm-7nm-hfp8"].pj_per_op == pytest.approx(1 / 3.58)


def test_measured_points_do_not_touch_the_modelled_baselines():
    assert not set(E.MEASURED) & set(E.BASELINES)
    rows = E.measured_table()
    assert [r["name"] for r in rows] == list(E.MEASURED)
    assert all(r["ops/MAC"].endswith("(assumed)") for r in rows
               if E.MEASURED[r["name"]].ops_per_mac is None)


def test_bad_points_are_refused():
    p = E.MEASURED["simba-16nm-int8"]
    import dataclasses

    with pytest.raises(ValueError, match="unit"):
        dataclasses.replace(p, unit="W")
    with pytest.raises(ValueError, match="value"):
        dataclasses.replace(p, value=0)
