"""imckit.train_grid: the stored runs of chapter 5, their schema, seed bands, and one live point."""
import itertools
import json

import pytest

from imckit import plots, train_grid as tg


@pytest.fixture(scope="module")
def grid():
    return tg.load()


def test_the_stored_grid_is_the_package_grid_over_every_model_and_seed(grid):
    assert grid["grid"] == tg.GRID and grid["models"] == tg.MODELS
    keys = list(itertools.product(*grid["grid"].values()))
    assert set(grid["points"]) == {tg.point_key(*k) for k in keys}
    assert set(grid["baselines"]) == {tg.baseline_key(m, s, p) for m in tg.GRID["model"]
                                      for s in tg.GRID["seed"] for p in tg.BASELINES}
    assert len(tg.GRID["seed"]) >= 3, "the page shows a band over at least 3 seeds"


def test_every_stored_run_is_priced_from_its_own_work(grid):
    for r in [*grid["points"].values(), *grid["baselines"].values()]:
        assert r["final_accuracy"] == r["history"][-1]["test_accuracy"]
        assert r["energy"]["savings"] == pytest.approx(
            r["energy"]["baseline"]["total_j"] / r["energy"]["total_j"])
        assert ("work" in r) == (r["seed"] == tg.WORK_SEED)
        if "work" in r:
            assert r["work"]["schema"] == "imckit.work/2"
            assert tg.price(r["work"])["savings"] == pytest.approx(r["energy"]["savings"])
    for m in tg.GRID["model"]:
        fp32 = grid["baselines"][tg.baseline_key(m, 0, "fp32")]
        assert fp32["energy"]["savings"] == pytest.approx(1.0)


def test_seed_bands_of_the_stored_grid_draw(grid):
    bands = [tg.seed_band([grid["points"][tg.point_key("cnn", s, a, b, c)]
                           for s in tg.GRID["seed"]])
             for a, b, c in itertools.product(*(tg.GRID[k] for k in
                                                ("adaptability", "adc_bits", "cap_mismatch")))]
    for b in bands:
        assert b["final_accuracy_lo"] <= b["final_accuracy"] <= b["final_accuracy_hi"]
        assert b["seeds"] == tg.GRID["seed"]
    base = {p: tg.seed_band([grid["baselines"][tg.baseline_key("cnn", s, p)]
                             for s in tg.GRID["seed"]]) for p in tg.BASELINES}
    fig = plots.accuracy_energy_plane(bands, baselines=base)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == len(bands) + 2
    assert len(plots.run_figure(bands[0], baselines=base, grid=bands).axes) == 4


def test_load_refuses_another_schema(tmp_path):
    old = tmp_path / "train_grid.json"
    old.write_text(json.dumps({"points": []}))
    with pytest.raises(ValueError, match="schema None, not 'imckit.train_grid/2'"):
        tg.load(old)


def test_a_diverging_run_is_stored_as_a_result_not_an_error(grid):
    # The stored grid has diverged runs (the CNN with 4-bit ADCs or 30 % mismatch); an absurd
    # learning rate makes one quickly here.
    assert any("diverged" in r for r in grid["points"].values())
    run = tg.run_point(dict(tg.MODELS["mlp"], lr=1e6, epochs=2), "fp32", 0)
    assert "diverged" in run and run["lr_halvings"] >= 1
    assert run["final_accuracy"] == run["history"][-1]["test_accuracy"] < 0.5
    assert run["history"][-1]["train_loss"] is None
    json.dumps(run, allow_nan=False)                 # the file stays strict JSON
    band = tg.seed_band([{**run, "seed": 0}, {**run, "seed": 1}])
    assert band["diverged_seeds"] == [0, 1] and band["final_accuracy"] < 0.5


def test_iter_band_reports_a_growing_fraction_and_every_seed():
    cfg = dict(tg.MODELS["mlp"], epochs=2)
    steps = list(tg.iter_band(cfg, [0, 1], adaptability="one-level", adc_bits=8,
                              cap_mismatch=0.002))
    fractions = [f for _, f in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(steps) == 4
    runs = steps[-1][0]
    assert [r["seed"] for r in runs] == [0, 1] and all(len(r["history"]) == 2 for r in runs)


def test_grid_runs_are_independent_of_n_jobs():
    small = {"model": ["mlp"], "seed": [0], "adaptability": ["one-level"], "adc_bits": [8],
             "cap_mismatch": [0.05]}
    a, b = tg.run_grid(small, n_jobs=1, log=None), tg.run_grid(small, n_jobs=2, log=None)
    strip = lambda runs: {k: {f: v for f, v in r.items() if f != "wall_s"} for k, r in runs.items()}
    assert strip(a["points"]) == strip(b["points"])
    assert strip(a["baselines"]) == strip(b["baselines"])
