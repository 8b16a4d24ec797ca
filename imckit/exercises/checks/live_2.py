"""ex-live-2 (chapter 5): what keep_ends=True leaves on IMC in the two-layer digits MLP."""
import warnings

from otter.test_files import test_case

import imckit as ik

OK_FORMAT = False
name = "ex-live-2"
points = 1


@test_case(name="MVMs on IMC", points=1, failure_message="Convert ik.models.mlp(64, (64,)) with "
           "adaptability='full', keep_ends=True and count the 'imc' entries of "
           "inn.placements_of(model).")
def test_left(n_on_imc):
    with warnings.catch_warnings(record=True):   # convert warns when nothing is left on IMC
        model = ik.nn.convert(ik.models.mlp(64, (64,)), adaptability="full", keep_ends=True)
    expected = sum(p == "imc" for mvms in ik.nn.placements_of(model).values()
                   for p in mvms.values())
    assert int(n_on_imc) == expected, f"{n_on_imc} MVMs is not what is left on IMC"
