"""imckit.plots: the figures of training runs (accuracy, energy, both in one view).

Runs are made up in the shape imckit.train_grid stores (book/data/train_grid.json);
tests/test_train_grid.py draws the stored file itself.
"""
import itertools

import pytest
from matplotlib.figure import Figure

from imckit import plots

MODES, BITS, CAPS = ("full", "two-level", "one-level"), (4, 6, 8), (0.002, 0.05, 0.3)
SAVINGS = {"full": 24.0, "two-level": 2.1, "one-level": 1.8}


def energy(savings):
    base = {"forward": 1.0e-3, "backward": 0.15e-3, "weight_grad": 1.0e-3}
    total = sum(base.values())
    mine = {m: v / savings for m, v in base.items()}
    return {"preset": "paper-16nm", "savings": savings, "total_j": total / savings,
            "by_mvm_j": mine, "steps": 230,
            "baseline": {"name": "fp32", "total_j": total, "by_mvm_j": base}}


def run(mode="full", bits=8, cap=0.002, acc=0.97, epochs=3):
    hist = [{"epoch": e, "train_loss": 1.0 / e, "test_accuracy": acc - 0.1 / e,
             "skipped_steps": 0} for e in range(1, epochs + 1)]
    hist[-1]["test_accuracy"] = acc
    wgrad = "imc" if mode == "full" else "fp32"
    return {"model": "mlp", "seed": 0, "placement": "imc", "adaptability": mode,
            "adc_bits": bits, "cap_mismatch": cap, "history": hist, "final_accuracy": acc,
            "energy": energy(SAVINGS[mode] * (1 + cap)),
            "placements": {"1": {"forward": "imc", "weight_grad": wgrad},
                           "3": {"forward": "imc", "backward": "imc", "weight_grad": wgrad}}}


GRID = [run(m, b, c, acc=0.98 - c / 2 - (8 - b) / 100) for m, b, c in
        itertools.product(MODES, BITS, CAPS)]
BASE = {"fp32": {**run(acc=0.983), "energy": energy(1.0)},
        "digital": {**run(acc=0.98), "energy": energy(8.0)}}


def n_points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_plane_places_every_run_and_baseline_once_at_its_savings_and_accuracy():
    fig = plots.accuracy_energy_plane(GRID, baselines=BASE)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert n_points(ax) == len(GRID) + len(BASE)
    shown = {tuple(xy) for c in ax.collections for xy in c.get_offsets()}
    for r in GRID + list(BASE.values()):
        assert any(abs(x - r["energy"]["savings"]) < 1e-9 and abs(y - r["final_accuracy"]) < 1e-9
                   for x, y in shown)
    assert ax.get_xscale() == "log" and "vs fp32" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo < 1.0 and hi > max(SAVINGS.values()) * 1.3   # every run is inside the axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == list(MODES) and "4-bit ADC" in labels and "mismatch 0.3" in labels


def test_plane_highlight_rings_the_run_and_titles_its_numbers():
    fig = plots.accuracy_energy_plane(GRID, highlight=GRID[0], legend=False)
    ax = fig.axes[0]
    assert n_points(ax) == len(GRID) + 1
    assert ax.get_legend() is None
    assert f"{GRID[0]['energy']['savings']:.3g}x" in ax.get_title()


def test_energy_bars_show_each_mvm_and_total_against_the_baseline_and_hatch_the_fallback():
    fig, ax = plots.figure()
    r = run("two-level")
    plots.energy_bars(ax, r["energy"], r["placements"], color="C0")
    assert len(ax.patches) == 2 * 4                      # (baseline, this run) x (3 MVMs + total)
    widths = [p.get_width() for p in ax.patches]
    assert widths[3] == pytest.approx(r["energy"]["baseline"]["total_j"] * 1e6)
    assert widths[7] == pytest.approx(r["energy"]["total_j"] * 1e6)
    hatched = [bool(p.get_hatch()) for p in ax.patches[4:]]
    assert hatched == [False, False, True, False]       # weight_grad at the fp32 fallback
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[2] == "weight grad\n(fp32)" and ticks[-1] == "total"
    assert any(t.get_text().endswith("x less") for t in ax.texts)


def test_run_figure_has_curves_energy_and_plane_with_the_run_ringed():
    fig = plots.run_figure(GRID[0], baselines=BASE, grid=GRID, epochs=3, title="full")
    loss, acc, bars, plane = fig.axes
    assert len(loss.lines) == len(acc.lines) == 1 + len(BASE)
    assert [l.get_label() for l in acc.lines][-1] == "IMC, full"
    assert len(bars.patches) == 8
    assert n_points(plane) == len(GRID) + len(BASE) + 1
    assert fig._suptitle.get_text().startswith("full: test accuracy")


def test_run_figure_draws_a_partial_live_run():
    partial = run(epochs=2)
    fig = plots.run_figure(partial, baselines=BASE, grid=GRID, epochs=10, note=" (epoch 2/10)")
    assert len(fig.axes[0].lines[-1].get_xdata()) == 2
    assert fig._suptitle.get_text().endswith("(epoch 2/10)")


def test_accuracy_by_setting_has_one_panel_per_mode_and_one_line_per_adc():
    fig = plots.accuracy_by_setting(GRID, baselines=BASE)
    assert [ax.get_title() for ax in fig.axes] == list(MODES)
    for ax in fig.axes:
        assert len(ax.lines) == len(BITS) + len(BASE)
        assert all(len(l.get_xdata()) == len(CAPS) for l in ax.lines[:len(BITS)])
    assert len({ax.get_ylim() for ax in fig.axes}) == 1     # one scale for every panel


# --- the chapters' drawings --------------------------------------------------------------------

def test_column_schematic_marks_the_rows_whose_capacitor_charges():
    from matplotlib.patches import Circle

    ax = plots.column_schematic().axes[0]
    gates = [p for p in ax.patches if isinstance(p, Circle)]
    assert len(gates) == 4                                  # four rows drawn
    charged = [p for p in gates if p.get_facecolor()[:3] != (1.0, 1.0, 1.0)]
    assert len(charged) == 2                                # x_i = a_ij = 1 in rows 1 and 4
    assert any("ADC" in t.get_text() for t in ax.texts) and not ax.axison


def test_step_energy_draws_each_mvm_against_the_baseline_and_its_shares_sum_to_one():
    from imckit import energy

    rep = energy.training_step_energy(energy.jia22_cnn()[:3], batch=8, adaptability="two-level")
    fig = plots.step_energy(rep)
    bars, shares = fig.axes
    heights = [p.get_height() for p in bars.patches]
    mine, base = rep.by_mvm(), rep.by_mvm(baseline=True)
    assert heights[:3] == pytest.approx([base[m] * 1e6 for m in plots.MVM_COLORS])
    assert heights[3:] == pytest.approx([mine[m] * 1e6 for m in plots.MVM_COLORS])
    assert [t.get_text() for t in bars.get_xticklabels()][2] == "weight_grad\n(fp32)"
    tops = {}
    for p in shares.patches:                                # stacked: the top of each column
        x = round(p.get_x() + p.get_width() / 2)
        tops[x] = max(tops.get(x, 0), p.get_y() + p.get_height())
    assert list(tops.values()) == pytest.approx([1.0, 1.0, 1.0])
    assert f"{rep.savings:.3g}" in bars.get_title()
