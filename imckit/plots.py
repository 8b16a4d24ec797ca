"""Plot helpers shared by the chapters and explorers.

Figures are made with :class:`matplotlib.figure.Figure` directly, not ``pyplot``: explorers
render them from a worker thread in JupyterLab, and pyplot's global state is neither
thread-safe nor wanted there (the inline backend would also show them twice).
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure

#: Colours for the three training MVMs, used by every chapter so a reader learns them once.
MVM_COLORS = {"forward": "#1f77b4", "backward": "#ff7f0e", "weight_grad": "#2ca02c"}

#: Colours for quantizer-adaptability modes.
ADAPTABILITY_COLORS = {"full": "#2ca02c", "two-level": "#1f77b4", "one-level": "#ff7f0e",
                       "none": "#7f7f7f"}


def _register_ipython_display(dpi: float = 100) -> None:
    """Let a pyplot-free Figure at the end of a notebook cell display as a PNG.

    IPython only knows how to show figures once pyplot's inline backend is set up; chapters that
    never import pyplot would otherwise print ``<Figure size ...>``.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of ipywidgets
        return
    ip = get_ipython()
    if ip is None:
        return
    ip.display_formatter.formatters["image/png"].for_type(Figure, lambda f: to_png(f, dpi=dpi))


def markdown_table(rows, cols, fmt=None):
    """A list of dicts as a Markdown table for a notebook cell (``fmt``: {column: format spec}).

    >>> print(markdown_table([{"mode": "full", "x": 478.2}], ["mode", "x"], {"x": ".0f"}).data)
    | mode | x |
    |---|---|
    | full | 478 |
    """
    from IPython.display import Markdown

    fmt = fmt or {}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(format(r[c], fmt.get(c, "")) for c in cols) + " |")
    return Markdown("\n".join(lines))


def figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 3.6),
           squeeze: bool = True, **subplot_kw):
    """A pyplot-free figure with a grid of axes, laid out with constrained layout.

    >>> fig, ax = figure()
    >>> type(fig).__name__, ax.get_subplotspec().get_geometry()[:2]
    ('Figure', (1, 1))
    """
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, subplot_kw=subplot_kw or None)
    return fig, axes


def to_png(fig: Figure, *, dpi: float = 80, palette: int | None = None) -> bytes:
    """Render a figure to PNG bytes (Agg, no display needed).

    With ``palette=n`` the image is reduced to ``n`` colours (an adaptive palette): line plots
    look the same at about a quarter of the bytes, which keeps precomputed explorers light.

    >>> fig, ax = figure(); _ = ax.plot([0, 1]); to_png(fig)[:4]
    b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if palette is None:
        return buf.getvalue()
    from PIL import Image

    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=int(palette), method=Image.Quantize.MEDIANCUT).save(out, format="PNG",
                                                                             optimize=True)
    return out.getvalue()


# --- training runs: curves, energy, accuracy vs energy ------------------------------------------
# A *run* is a dict as stored by experiments/train_grid.py (book/data/train_grid.json):
# ``history`` (per-epoch records with ``epoch``, ``train_loss``, ``test_accuracy``),
# ``final_accuracy``, ``energy`` ({``savings``, ``total_j``, ``by_mvm_j``, ``baseline``:
# {``name``, ``total_j``, ``by_mvm_j``}}), and optionally ``placements`` and the grid values
# ``adaptability``, ``adc_bits``, ``cap_mismatch``.

#: Line styles of the two baselines in every training figure.
BASELINE_STYLES = {"fp32": dict(color="0.6", lw=2), "digital": dict(color="k", ls="--")}
BASELINE_LABELS = {"fp32": "fp32", "digital": "digital radix-4"}
#: Markers per ADC resolution (bits) on the accuracy vs energy plane.
ADC_MARKERS = {4: "s", 6: "o", 8: "v"}
#: Fill of a marker per capacitor mismatch: solid, faded, hollow (by rank of the value).
_FILL_ALPHA = (1.0, 0.45, 0.0)


def training_curves(ax_loss, ax_acc, records, *, label=None, epochs=None, **style) -> None:
    """Draw one run's training loss (log y) and test accuracy per epoch on two axes.

    Records of a seed band (:func:`imckit.train_grid.seed_band`: ``train_loss_lo``/``_hi``,
    ``test_accuracy_lo``/``_hi``) add a shaded band from the lowest to the highest seed.

    >>> fig, (a, b) = figure(1, 2)
    >>> training_curves(a, b, [{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.9}], label="x")
    >>> len(a.lines), len(b.lines)
    (1, 1)
    """
    e = [r["epoch"] for r in records]
    nan = float("nan")
    for ax, k in ((ax_loss, "train_loss"), (ax_acc, "test_accuracy")):
        line, = ax.plot(e, [nan if r[k] is None else r[k] for r in records], label=label,
                        **style)
        if records and f"{k}_lo" in records[0]:
            ax.fill_between(e, [nan if r[f"{k}_lo"] is None else r[f"{k}_lo"] for r in records],
                            [nan if r[f"{k}_hi"] is None else r[f"{k}_hi"] for r in records],
                            color=line.get_color(), alpha=0.2, lw=0)
    if epochs:
        ax_loss.set_xlim(0.5, epochs + 0.5)
        ax_acc.set_xlim(0.5, epochs + 0.5)
    ax_loss.set(xlabel="epoch", ylabel="training loss (nats)", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))


def energy_bars(ax, energy: dict, placements: dict | None = None, *, label: str = "this run",
                color: str = "0.3"):
    """One run's energy per training MVM next to the baseline's, and the savings (log x, uJ).

    ``energy`` is a run's ``energy`` entry; ``placements`` (``{layer: {mvm: placement}}``)
    names where each MVM computed (MVMs computed off IMC in every layer are hatched). Returns
    the axes.

    >>> e = {"savings": 4.0, "total_j": 1e-6, "by_mvm_j": {"forward": 5e-7, "backward": 1e-7,
    ...      "weight_grad": 4e-7}, "baseline": {"name": "fp32", "total_j": 4e-6, "by_mvm_j":
    ...      {"forward": 2e-6, "backward": 4e-7, "weight_grad": 1.6e-6}}}
    >>> fig, ax = figure(); _ = energy_bars(ax, e); len(ax.patches)
    8
    """
    import numpy as np

    mvms = list(MVM_COLORS)
    base = energy["baseline"]
    mine = [energy["by_mvm_j"][m] * 1e6 for m in mvms] + [energy["total_j"] * 1e6]
    ref = [base["by_mvm_j"][m] * 1e6 for m in mvms] + [base["total_j"] * 1e6]
    names, off_imc = [], []
    for m in mvms:
        where = sorted({p[m] for p in (placements or {}).values() if m in p})
        names.append(m.replace("_", " ") + (f"\n({', '.join(where)})" if where else ""))
        off_imc.append(bool(where) and "imc" not in where)
    names.append("total")
    y = np.arange(len(names))
    ax.barh(y - 0.2, ref, height=0.38, color="0.75", label=f"{base['name']} baseline")
    bars = ax.barh(y + 0.2, mine, height=0.38, color=[color] * len(mvms) + ["0.2"], label=label)
    for bar, off in zip(bars, off_imc):
        if off:
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    for yi, (a, b) in enumerate(zip(mine, ref)):
        if a > 0:
            ax.text(a * 1.15, yi + 0.2, f"{b / a:.3g}x less" if yi == len(mine) - 1
                    else f"{b / a:.3g}x", va="center", fontsize=8)
    ax.set(xscale="log", yticks=y, yticklabels=names, xlabel="energy of the run (uJ)")
    ax.set_xlim(min(v for v in mine + ref if v > 0) / 3, max(mine + ref) * 40)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="upper right", fontsize=7)
    return ax


def _run_xy(run):
    return run["energy"]["savings"], run["final_accuracy"]


def accuracy_energy_plane(runs, *, baselines: dict | None = None, highlight: dict | None = None,
                          ax=None, legend: bool = True, figsize=(7.2, 4.2)):
    """Every run as a point: final test accuracy vs energy savings (log x). Returns the Figure.

    Colour: adaptability (:data:`ADAPTABILITY_COLORS`); marker: ADC bits
    (:data:`ADC_MARKERS`); fill: capacitor mismatch (solid, faded, hollow from the smallest to
    the largest value among ``runs``). ``baselines`` (``{name: run}``) are drawn as labelled
    stars; ``highlight`` (a run, stored or computed live) gets a ring and its numbers as title.

    >>> runs = [{"final_accuracy": 0.9, "adaptability": "full", "adc_bits": 8,
    ...          "cap_mismatch": 0.002, "energy": {"savings": 20.0}}]
    >>> fig = accuracy_energy_plane(runs, baselines={"fp32": {"final_accuracy": 0.95,
    ...                             "energy": {"savings": 1.0}}})
    >>> sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    2
    """
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    if ax is None:
        fig, ax = figure(figsize=figsize)
    runs = list(runs)
    caps = sorted({r.get("cap_mismatch") for r in runs} - {None})
    groups: dict[tuple, list] = {}
    for r in runs:
        fill = _FILL_ALPHA[min(caps.index(r["cap_mismatch"]), 2)] if r.get("cap_mismatch") \
            in caps else 1.0
        key = (r.get("adaptability", "none"), r.get("adc_bits"), fill)
        groups.setdefault(key, []).append(_run_xy(r))
    for (mode, bits, fill), xy in groups.items():
        colour = ADAPTABILITY_COLORS.get(mode, "0.4")
        ax.scatter(*zip(*xy), marker=ADC_MARKERS.get(bits, "o"), s=36, linewidths=1.2,
                   facecolors=[to_rgba(colour, fill)], edgecolors=[colour], zorder=3)
    for r in runs:                               # seed bands: lowest to highest seed
        if "final_accuracy_lo" in r:
            x, _ = _run_xy(r)
            ax.plot([x, x], [r["final_accuracy_lo"], r["final_accuracy_hi"]], lw=0.8,
                    color=ADAPTABILITY_COLORS.get(r.get("adaptability"), "0.4"), alpha=0.6,
                    zorder=2)
    for name, b in (baselines or {}).items():
        x, y = _run_xy(b)
        style = BASELINE_STYLES.get(name, {})
        ax.scatter([x], [y], marker="*", s=140, color=style.get("color", "k"), zorder=4)
        ax.annotate(BASELINE_LABELS.get(name, name), (x, y), xytext=(0, -14),
                    textcoords="offset points", ha="center", fontsize=8)
    if highlight is not None:
        x, y = _run_xy(highlight)
        ax.scatter([x], [y], s=260, facecolors="none", edgecolors="k", linewidths=1.6, zorder=5)
        ax.set_title(f"ringed: this run, {x:.3g}x less energy, accuracy {y:.1%}", fontsize=9)
    xs = [_run_xy(r)[0] for r in [*runs, *(baselines or {}).values()]
          + ([highlight] if highlight else [])]
    if xs:
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    base = next((r["energy"]["baseline"]["name"] for r in [*runs, *(baselines or {}).values()]
                 if "baseline" in r["energy"]), "the baseline")
    ax.set(xscale="log", xlabel=f"energy savings vs {base} (x, log)",
           ylabel="final test accuracy")
    ax.grid(True, which="both", alpha=0.25)
    if legend:
        modes = [m for m in ADAPTABILITY_COLORS if any(k[0] == m for k in groups)]
        bits = sorted({k[1] for k in groups} - {None})
        handles = [Line2D([], [], ls="", marker="o", color=ADAPTABILITY_COLORS[m], label=m)
                   for m in modes]
        handles += [Line2D([], [], ls="", marker=ADC_MARKERS.get(b, "o"), color="0.3",
                           label=f"{b}-bit ADC") for b in bits]
        handles += [Line2D([], [], ls="", marker="o", markeredgecolor="0.3",
                           markerfacecolor=to_rgba("0.3", _FILL_ALPHA[min(i, 2)]),
                           label=f"mismatch {c:g}") for i, c in enumerate(caps)]
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax.figure


def run_figure(run: dict, *, baselines: dict, grid=(), epochs: int | None = None,
               title: str | None = None, note: str = ""):
    """One run in one view: loss and accuracy curves beside the baselines (top), its energy
    per MVM vs the baseline, and its place among ``grid`` runs on the accuracy vs energy
    plane (bottom). ``run`` needs ``adaptability`` for its colour. Returns the Figure.

    >>> h = [{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.9}]
    >>> e = {"savings": 2.0, "total_j": 1e-6, "by_mvm_j": dict.fromkeys(MVM_COLORS, 1e-6 / 3),
    ...      "baseline": {"name": "fp32", "total_j": 2e-6, "by_mvm_j": dict.fromkeys(
    ...      MVM_COLORS, 2e-6 / 3)}}
    >>> run = {"history": h, "final_accuracy": 0.9, "energy": e, "adaptability": "full"}
    >>> len(run_figure(run, baselines={"fp32": run}).axes)
    4
    """
    fig, ((ax1, ax2), (ax3, ax4)) = figure(2, 2, figsize=(9.6, 6.2))
    for name, b in baselines.items():
        training_curves(ax1, ax2, b["history"], label=BASELINE_LABELS.get(name, name),
                        **BASELINE_STYLES.get(name, {}))
    mode = run.get("adaptability", "none")
    colour = ADAPTABILITY_COLORS.get(mode, "0.4")
    training_curves(ax1, ax2, run["history"], label=f"IMC, {mode}", epochs=epochs, color=colour,
                    marker="o")
    ax2.legend(loc="lower right", fontsize=8)
    energy_bars(ax3, run["energy"], run.get("placements"), label=f"IMC, {mode}", color=colour)
    accuracy_energy_plane(grid, baselines=baselines, highlight=run, ax=ax4, legend=False)
    numbers = (f"test accuracy {run['final_accuracy']:.1%}, energy "
               f"{run['energy']['savings']:.3g}x less than {run['energy']['baseline']['name']}")
    fig.suptitle((f"{title}: " if title else "") + numbers + note, fontsize=10)
    return fig


def accuracy_by_setting(runs, *, baselines: dict | None = None, figsize=(9.6, 3.2)):
    """Final test accuracy of grid runs: one panel per adaptability, x = capacitor mismatch,
    one line per ADC resolution; baselines as dotted lines. Returns the Figure.

    >>> runs = [{"final_accuracy": a, "adaptability": m, "adc_bits": 8, "cap_mismatch": c}
    ...         for m in ("full", "one-level") for c, a in ((0.002, 0.97), (0.3, 0.9))]
    >>> fig = accuracy_by_setting(runs)
    >>> len(fig.axes), [len(ax.lines) for ax in fig.axes]
    (2, [1, 1])
    """
    runs = list(runs)
    modes = list(dict.fromkeys(r["adaptability"] for r in runs))
    caps = sorted({r["cap_mismatch"] for r in runs})
    fig, axes = figure(1, len(modes), figsize=figsize, squeeze=False)
    for ax, mode in zip(axes[0], modes):
        mine = [r for r in runs if r["adaptability"] == mode]
        for bits in sorted({r["adc_bits"] for r in mine}):
            at = {r["cap_mismatch"]: r for r in mine if r["adc_bits"] == bits}
            xs = [caps.index(c) for c in sorted(at)]
            line, = ax.plot(xs, [at[c]["final_accuracy"] for c in sorted(at)],
                            ADC_MARKERS.get(bits, "o") + "-", label=f"{bits}-bit ADC")
            if all("final_accuracy_lo" in at[c] for c in at):   # seed bands
                ax.fill_between(xs, [at[c]["final_accuracy_lo"] for c in sorted(at)],
                                [at[c]["final_accuracy_hi"] for c in sorted(at)],
                                color=line.get_color(), alpha=0.15, lw=0)
        for name, b in (baselines or {}).items():
            ax.axhline(b["final_accuracy"], ls=":", color=BASELINE_STYLES.get(name, {}).get(
                "color", "k"), label=BASELINE_LABELS.get(name, name))
        ax.set(title=mode, xticks=range(len(caps)), xticklabels=[f"{c:g}" for c in caps],
               xlabel="cap mismatch (relative sigma)")
    low = min(r["final_accuracy"] for r in [*runs, *(baselines or {}).values()])
    for ax in axes[0]:
        ax.set_ylim(max(0.0, low - 0.05), 1.0)            # one scale for every panel
    axes[0][0].set(ylabel="final test accuracy")
    axes[0][0].legend(fontsize=8, loc="lower left")
    return fig



# --- chapter figures that are drawings, not data ------------------------------------------------

def column_schematic():
    """One charge-domain column, drawn: four rows of input bit, stored bit, AND, capacitor, and
    the column's ADC (chapter 3). Orange marks the rows whose capacitor is charged. Returns the
    Figure.

    >>> fig = column_schematic(); len(fig.axes), fig.axes[0].axison
    (1, False)
    """
    from matplotlib import patches

    fig, ax = figure(figsize=(7.2, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(-1.6, 6.2)
    ax.axis("off")
    col_x = 7.2
    ax.plot([col_x, col_x], [-0.4, 5.6], color="k", lw=2)                      # column line
    ax.text(col_x + 0.15, 5.65, "column $j$ (shared node)", fontsize=9, va="bottom")
    for y, x, a in [(5.0, "1", "1"), (3.9, "1", "0"), (2.8, "0", "1"), (1.2, "1", "1")]:
        ax.annotate("", xy=(1.4, y), xytext=(0.3, y),
                    arrowprops=dict(arrowstyle="-|>", color="tab:blue", lw=1.5))
        ax.text(0.25, y + 0.18, f"$x_i$={x}", fontsize=8, color="tab:blue")
        ax.plot([1.4, 2.3], [y, y], color="tab:blue", lw=1)
        ax.add_patch(patches.FancyBboxPatch((2.3, y - 0.35), 1.6, 0.7,
                                            boxstyle="round,pad=0.02", fc="#eeeeee", ec="k"))
        ax.text(3.1, y, f"SRAM $a_{{ij}}$={a}", ha="center", va="center", fontsize=8)
        ax.plot([3.9, 4.6], [y, y], color="k", lw=1)
        on = x == "1" and a == "1"
        ax.add_patch(patches.Circle((4.85, y), 0.25, fc="tab:orange" if on else "white", ec="k"))
        ax.text(4.85, y, "AND", ha="center", va="center", fontsize=5.5)
        ax.plot([5.1, 5.8], [y, y], color="k", lw=1)
        for dx in (5.8, 6.0):                                                   # the plates
            ax.plot([dx, dx], [y - 0.3, y + 0.3], color="k", lw=2.2)
        ax.text(5.9, y + 0.38, "$C_{ij}$", ha="center", fontsize=8)
        ax.plot([6.0, col_x], [y, y], color="k", lw=1)
        ax.text(6.6, y - 0.28, "$V_{DD}$" if on else "0", fontsize=7, ha="center",
                color="tab:orange" if on else "gray")
    ax.text(3.1, 2.0, "$\\vdots$  $R$ rows", ha="center", fontsize=10)
    ax.add_patch(patches.FancyBboxPatch((col_x - 0.7, -1.4), 1.4, 0.8,
                                        boxstyle="round,pad=0.02", fc="#dbe9f6", ec="k"))
    ax.text(col_x, -1.0, "ADC\n$B$ bits", ha="center", va="center", fontsize=8)
    ax.annotate("", xy=(9.7, -1.0), xytext=(col_x + 0.7, -1.0),
                arrowprops=dict(arrowstyle="-|>", lw=1.2))
    ax.text(8.3, -0.75, "code $\\approx c_j$", fontsize=8)
    ax.text(col_x + 0.2, 0.2, "$v_j = V_{DD}\\,\\sum C_{ij} x_i a_{ij} / \\sum C_{ij}$",
            fontsize=9)
    return fig


#: Colours of the energy components of a training step (chapter 6), in stacking order.
COMPONENT_COLORS = {"array": "#4c72b0", "adc": "#dd8452", "shift_add": "#55a868",
                    "input": "#c44e52", "write": "#8172b3", "output": "#937860", "mac": "#7f7f7f",
                    "fetch": "#bcbd22"}


def step_energy(rep, title: str | None = None):
    """A priced training step (:func:`imckit.energy.training_step_energy`) in two panels.

    Left: energy per MVM, mapped vs all-digital baseline (log, uJ), each MVM labelled with where
    it computes ("a/b" when layers differ, e.g. kept ends). Right: the share of each MVM's energy
    per component (:data:`COMPONENT_COLORS`). ``rep`` needs ``by_mvm(baseline=)``,
    ``placements``, ``to_rows()`` and ``savings``. Returns the Figure.

    >>> from imckit import energy
    >>> rep = energy.training_step_energy(energy.jia22_cnn()[:2], batch=8)
    >>> fig = step_energy(rep); len(fig.axes), len(fig.axes[0].patches)
    (2, 6)
    """
    import numpy as np

    mvms = list(MVM_COLORS)
    fig, (a1, a2) = figure(1, 2, figsize=(8.0, 3.3))
    mine, base = rep.by_mvm(), rep.by_mvm(baseline=True)
    place = {m: "/".join(sorted({p[m] for p in rep.placements.values() if m in p}))
             for m in mvms}
    x = np.arange(len(mvms))
    a1.bar(x - 0.2, [base[m] * 1e6 for m in mvms], 0.4, color="#bbbbbb",
           label="digital baseline")
    a1.bar(x + 0.2, [mine[m] * 1e6 for m in mvms], 0.4, color=[MVM_COLORS[m] for m in mvms],
           label="mapped")
    a1.set_yscale("log")
    a1.set_xticks(x, [f"{m}\n({place[m]})" for m in mvms])
    a1.set_ylabel("µJ per training step")
    a1.legend(fontsize=8)
    a1.set_title(title or f"savings {rep.savings:.3g}×", fontsize=10)
    shares = {m: {} for m in mvms}
    for r in rep.to_rows():
        shares[r["mvm"]][r["component"]] = shares[r["mvm"]].get(r["component"], 0) + r["energy_j"]
    bottom = np.zeros(len(mvms))
    for comp, col in COMPONENT_COLORS.items():
        h = np.array([shares[m].get(comp, 0) / mine[m] if mine[m] else 0.0 for m in mvms])
        if h.any():
            a2.bar(x, h, 0.6, bottom=bottom, color=col, label=comp)
            bottom += h
    a2.set_xticks(x, mvms)
    a2.set_ylabel("share of the MVM's energy")
    a2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


_register_ipython_display()
