"""PNG figures of an analysis (matplotlib's object API: no pyplot state, no global backend change)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noiseclr_lab.fileio import atomic_target


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib Figure (object API, no pyplot) rendered as PNG."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def colour_limit(values) -> float:
    """The colour scale's end for values centred on 0: the largest finite |value|, or 1 when there is none
    or every value is 0 (a scale of +-1e-6 would label an all-zero map with meaningless ticks)."""
    a = np.abs(np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))],
                          dtype=float))
    a = a[np.isfinite(a)]
    lim = float(a.max()) if a.size else 0.0
    return lim if lim > 0 else 1.0


def _save(fig, path: Path) -> Path:
    with atomic_target(Path(path)) as tmp:
        tmp.write_bytes(png_bytes(fig))
    return Path(path)


def rescoring_heatmap(analysis: dict, path: Path) -> Path:
    """K x A heat map of the re-scoring matrix (each direction at its strongest scale), diverging around 0,
    with a labelled colour bar; the suggested label of each row is marked."""
    from matplotlib.figure import Figure

    dirs = analysis["directions"]
    attrs = analysis["attributes"]
    m = np.array([[d["rescoring"][a] for a in attrs] for d in dirs])  # (K, A)
    lim = colour_limit(m)
    fig = Figure(figsize=(max(5.0, 0.42 * len(attrs) + 3), max(3.0, 0.36 * len(dirs) + 2)))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(attrs)), attrs, rotation=60, ha="right", fontsize=8)
    rows = [f"{d['token']} @{d['scale']:+g}" + (f" ({d['label']})" if d["label"] else "") for d in dirs]
    ax.set_yticks(range(len(dirs)), rows, fontsize=8)
    for k, d in enumerate(dirs):
        ax.add_patch(_box(attrs.index(d["suggested_label"]), k))
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("change of zero-shot probability (edited - unedited)")
    ax.set_title("CLIP re-scoring per direction (box: suggested label)")
    return _save(fig, path)


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


def effect_curves(analysis: dict, path: Path) -> Path:
    """Effect against scale per direction: the largest attribute change and the CLIP distance to the
    unedited image."""
    from matplotlib.figure import Figure

    scales = analysis["scales"]
    order = np.argsort(scales)
    xs = np.asarray(scales)[order]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for d in analysis["directions"]:
        curve = d["effect_curve"]
        for ax, key in zip(axes, ("attribute_change", "clip_distance")):
            ax.plot(xs, np.asarray(curve[key])[order], marker="o", label=d["token"])
    axes[0].set_ylabel("largest change of an attribute's probability")
    axes[1].set_ylabel("CLIP distance to the unedited image (1 - cos)")
    for ax in axes:
        ax.set_xlabel("edit scale")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle("Effect against scale")
    return _save(fig, path)


def interference_heatmap(comp: dict, path: Path) -> Path:
    """K x K interference (row i: how much adding column j changes i's effect on its own attribute)."""
    from matplotlib.figure import Figure

    m = np.array([[np.nan if v is None else v for v in row] for row in comp["interference"]], dtype=float)
    toks = comp["tokens"]
    fig = Figure(figsize=(0.5 * len(toks) + 3.5, 0.45 * len(toks) + 2.5))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="magma_r", vmin=0, vmax=max(1.0, float(np.nanmax(m)) if np.isfinite(m).any() else 1.0))
    ax.set_xticks(range(len(toks)), toks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(toks)), toks, fontsize=8)
    ax.set_xlabel("added direction j")
    ax.set_ylabel("direction i")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("interference |own effect of i with j - alone| / |alone|")
    ax.set_title("Interference at calibrated scales")
    return _save(fig, path)


def additivity_scatter(comp: dict, path: Path) -> Path:
    """Each direction's own attribute change composed with another direction against the sum of the two
    single changes; points on the diagonal compose additively."""
    from matplotlib.figure import Figure

    pts = comp["additivity_points"]
    x = np.array([p["sum_of_singles"] for p in pts])
    y = np.array([p["composed"] for p in pts])
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=14, alpha=0.7)
    lo, hi = float(min(x.min(), y.min(), 0)), float(max(x.max(), y.max(), 0))
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1, label="additive")
    ax.set_xlabel("sum of the single changes of i's attribute")
    ax.set_ylabel("change of i's attribute with i and j composed")
    ax.legend(fontsize=8)
    ax.set_title("Additivity of pairs")
    return _save(fig, path)


def locality_grid(comp: dict, path: Path) -> Path:
    """Where each direction changes the image: mean absolute pixel change over seeds, one panel per direction,
    one shared colour scale."""
    from matplotlib.figure import Figure

    maps = [np.asarray(m) for m in comp["locality_pixels"]]
    n = len(maps)
    cols = min(n, 6)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.1 * cols + 1, 2.1 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    vmax = max(float(m.max()) for m in maps) or 1.0
    im = None
    for ax, m, tok in zip(axes, maps, comp["tokens"]):
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(tok, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    cb = fig.colorbar(im, ax=axes.tolist(), shrink=0.8)
    cb.set_label("mean |pixel change| (0-1)")
    fig.suptitle("Locality of each direction")
    return _save(fig, path)
