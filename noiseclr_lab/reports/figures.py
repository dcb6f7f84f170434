"""The report's figures from its JSON alone: plotly for the HTML (hover shows the numbers, colour scales
are labelled) and PNG (matplotlib's object API) for the Markdown."""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.figures import colour_limit, png_bytes

DIVERGING = "RdBu_r"
# plotly's toolbar everywhere (report and dashboard): no logo, and no "Share chart" button (plotly.js offers to
# upload the chart's data to Plotly Cloud by default; a report of unpublished research stays on this machine)
FEW_STEPS = 30  # loss curves with fewer logged steps get markers
PLOTLY_CONFIG = {"displaylogo": False, "showSendToCloud": False}


def _t(text) -> str:
    """A label for matplotlib: "$" is a dollar sign, not the start of math."""
    return str(text).replace("$", r"\$")


# ---------------------------------------------------------------------------------------------- PNG (matplotlib)

def _png(fig) -> bytes:
    return png_bytes(fig, dpi=100)


def locality_png(m: np.ndarray, vmax: float, title: str) -> bytes:
    """Where a direction changes the image: mean |edited - unedited| over seeds and channels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6, 2.2))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(_t(title), fontsize=8)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("mean |change| (0-1)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return _png(fig)


def loss_png(runs: list[tuple[str, list, list, list | None]]) -> bytes:
    """Training loss per step: (name, steps, raw loss, smoothed or None) per run, overlaid (with markers while
    there are few steps, so that a run that logged one step still shows)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot()
    for name, steps, raw, smooth in runs:
        dots = {"marker": "o", "ms": 3} if len(steps) < FEW_STEPS else {}
        if smooth is None:
            ax.plot(steps, raw, label=_t(name), **dots)
        else:
            ax.plot(steps, raw, alpha=0.3, label=_t(f"{name} (raw)"), **dots)
            ax.plot(steps, smooth, label=_t(f"{name} (smoothed)"), **dots)
    ax.set_xlabel("step"), ax.set_ylabel("contrastive loss")
    ax.legend(fontsize=7)
    return _png(fig)


def matrix_png(m, rows: list[str], cols: list[str], title: str, colour_label: str, diverging: bool = True,
               values: bool = True) -> bytes:
    """A labelled heat map with its colour bar (None cells blank), values written in the cells."""
    from matplotlib.figure import Figure

    a = np.array([[np.nan if v is None else v for v in r] for r in m], dtype=float)
    lim = colour_limit(a)
    fig = Figure(figsize=(max(4.0, 0.5 * len(cols) + 2.5), max(2.5, 0.35 * len(rows) + 1.5)))
    ax = fig.add_subplot()
    im = ax.imshow(a, cmap=DIVERGING if diverging else "viridis", vmin=-lim if diverging else 0, vmax=lim,
                   aspect="auto")
    ax.set_xticks(range(len(cols)), [_t(c) for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_t(r) for r in rows], fontsize=7)
    if values and a.size <= 400:
        for (r, c), v in np.ndenumerate(a):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax).set_label(colour_label)
    ax.set_title(_t(title), fontsize=9)
    return _png(fig)


def quality_png(runs: list[tuple[str, list[float]]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    for name, q in runs:
        ax.plot(range(1, len(q) + 1), q, marker="o", label=_t(name))
    ax.set_xlabel("direction rank"), ax.set_ylabel("quality score")
    ax.legend(fontsize=7)
    return _png(fig)


# ---------------------------------------------------------------------------------------------- plotly (HTML)

def _layout(fig, title: str, height: int = 320):
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, margin={"l": 60, "r": 20, "t": 40,
                                                                                          "b": 40},
                      template="plotly_white")
    return fig


def loss_figure(runs: list[tuple[str, list, list, list | None]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, steps, raw, smooth in runs:
        mode = "lines+markers" if len(steps) < FEW_STEPS else "lines"  # a run that logged one step still shows
        if smooth is None:
            fig.add_scatter(x=steps, y=raw, mode=mode, name=name)
        else:
            fig.add_scatter(x=steps, y=raw, mode=mode, name=f"{name} (raw)", opacity=0.35)
            fig.add_scatter(x=steps, y=smooth, mode=mode, name=f"{name} (smoothed)")
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="contrastive loss")
    return _layout(fig, "Training loss")


def heatmap_figure(m, rows: list[str], cols: list[str], title: str, colour_label: str, diverging: bool = True,
                   hover: str = "%{y} / %{x}: %{z:.3f}", clickable: bool = False):
    """A labelled heat map. ``clickable``: an invisible marker on every cell, so that a click selects the cell
    (Streamlit's ``on_select`` reports points of scatter traces, not of heat maps)."""
    import plotly.graph_objects as go

    a = [[None if v is None else float(v) for v in r] for r in m]
    lim = colour_limit(a)
    values = {"texttemplate": "%{z:.2f}", "textfont": {"size": 10}} if len(rows) * len(cols) <= 200 else {}
    fig = go.Figure(go.Heatmap(z=a, x=cols, y=rows, colorscale=DIVERGING if diverging else "Viridis",
                               zmin=-lim if diverging else 0, zmax=lim, hovertemplate=hover + "<extra></extra>",
                               colorbar={"title": {"text": colour_label, "side": "right"}}, **values))
    if clickable:
        cells = [(r, c, a[i][j]) for i, r in enumerate(rows) for j, c in enumerate(cols)]
        fig.add_scatter(x=[c for _, c, _ in cells], y=[r for r, _, _ in cells], mode="markers", showlegend=False,
                        marker={"size": 24, "opacity": 0, "symbol": "square"}, customdata=[v for *_, v in cells],
                        hovertemplate=hover.replace("%{z", "%{customdata") + "<extra></extra>")
    # automargin: the margins grow to hold the tick labels (the slanted column names were cut at the bottom);
    # the figure grows by as much, so that the cells keep their size
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    fig.update_xaxes(type="category", tickangle=-45, automargin=True)
    slant = int(0.71 * 7 * max((len(str(c)) for c in cols), default=0))  # px below the axis, about
    return _layout(fig, title, height=max(300, 28 * len(rows) + 160 + slant))


def bars_figure(rows: list[dict], title: str):
    """Re-scoring bars of one direction: change of each attribute's probability with its standard error."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[r["attribute"] for r in rows], y=[r["change"] for r in rows],
                           error_y={"type": "data", "array": [r["se"] for r in rows], "visible": True},
                           marker_color=["#b2182b" if r["change"] > 0 else "#2166ac" for r in rows],
                           hovertemplate="%{x}: %{y:.3f} ± %{error_y.array:.3f}<extra></extra>"))
    fig.update_yaxes(title_text="Δ P(attribute)", automargin=True)
    fig.update_xaxes(tickangle=-45, automargin=True)
    return _layout(fig, title, height=300)


def quality_figure(runs: list[tuple[str, list[float]]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, q in runs:
        fig.add_scatter(x=list(range(1, len(q) + 1)), y=q, mode="lines+markers", name=name)
    fig.update_xaxes(title_text="direction rank (best first)")
    fig.update_yaxes(title_text="quality score")
    return _layout(fig, "Quality of each run's directions, sorted")
