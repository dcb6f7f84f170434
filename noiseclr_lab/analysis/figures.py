"""PNG figures of an analysis (matplotlib's object API: no pyplot state, no global backend change)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noiseclr_lab.fileio import atomic_target


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_target(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def rescoring_heatmap(analysis: dict, path: Path) -> Path:
    """K x A heat map of the re-scoring matrix (each direction at its strongest scale), diverging around 0,
    with a labelled colour bar; the suggested label of each row is marked."""
    from matplotlib.figure import Figure

    dirs = analysis["directions"]
    attrs = analysis["attributes"]
    m = np.array([[d["rescoring"][a] for a in attrs] for d in dirs])  # (K, A)
    lim = max(float(np.abs(m).max()), 1e-6)
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
