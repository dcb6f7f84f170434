"""Directions x scales grids: each row one direction, each column one edit scale, the same seed throughout."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from noiseclr_lab.editing.pipeline import EditPipeline, Inversion


def label_font(size: int):
    """PIL's default font at ``size`` px (a fixed-size one on Pillow < 10.1), for labels on grids and heat maps."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def compose_grid(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str], cell: int = 128) -> Image.Image:
    """Lay out ``cells[r][c]`` with row labels on the left and column labels on top."""
    label_w, label_h = 150, 24
    rows, cols = len(cells), len(cells[0]) if cells else 0
    out = Image.new("RGB", (label_w + cols * cell, label_h + rows * cell), "white")
    draw = ImageDraw.Draw(out)
    font = label_font(14)
    for c, text in enumerate(col_labels):
        draw.text((label_w + c * cell + cell // 2, label_h // 2), text, fill="black", anchor="mm", font=font)
    for r, row in enumerate(cells):
        draw.text((6, label_h + r * cell + cell // 2), row_labels[r], fill="black", anchor="lm", font=font)
        for c, img in enumerate(row):
            out.paste(img.resize((cell, cell), Image.Resampling.NEAREST if img.width < cell else Image.Resampling.LANCZOS),
                      (label_w + c * cell, label_h + r * cell))
    return out


def edit_grid(edit_pipe: EditPipeline, directions: list[str], scales: list[float], *, prompt: str = "",
              seeds: list[int] = (0,), inversion: Inversion | None = None, cell: int = 128, edit_start: int = 0,
              **call_kwargs) -> Image.Image:
    """Rows: each direction alone; columns: each scale x each seed (or the one inverted image).

    Edits are active from denoising step ``edit_start`` on (0: every step). For generated images, every scale and
    seed of one direction go through the pipeline as one batch (per-image scales), the unedited first
    ``edit_start`` steps are computed once and continued by every cell, and the unedited column is computed
    once and shared by every row. An inverted image runs one call per (direction, scale).
    """
    import torch

    bank = edit_pipe.bank
    seeds = [0] if inversion is not None else list(seeds)
    edited = [s for s in scales if s != 0]
    S = len(seeds)

    def start(reps: int) -> dict:  # where a batch of reps x S images (seed-minor) begins
        if warm is not None:
            return {"latents": warm.repeat(reps, 1, 1, 1), "start_step": edit_start}
        return {"generator": [torch.Generator().manual_seed(s) for _ in range(reps) for s in seeds]}

    warm = None
    if inversion is None and edit_start > 0:
        warm = edit_pipe([prompt] * S, generator=start(1)["generator"], stop_step=edit_start, output_type="latent",
                         **call_kwargs).images

    def run(edits, reps: int = 1) -> list:
        if inversion is not None:
            return edit_pipe(prompt, edits=edits, edit_start=edit_start, inversion=inversion, output_type="pil",
                             **call_kwargs).images
        return edit_pipe([prompt] * (reps * S), edits=edits, edit_start=edit_start, output_type="pil", **start(reps),
                         **call_kwargs).images

    base = run(None) if 0 in scales else None

    def cells(tok: str) -> dict[float, list]:
        if inversion is not None:
            return {s: run({tok: s}) for s in edited} | {0.0: base}
        images = run({tok: [s for s in edited for _ in seeds]}, reps=len(edited)) if edited else []
        return {s: images[i * S:(i + 1) * S] for i, s in enumerate(edited)} | {0.0: base}

    return direction_grid(bank, directions, scales, seeds, cells, cell=cell)


def direction_grid(bank, directions: list[str], scales: list[float], seeds: list[int], cells, cell: int = 128) -> Image.Image:
    """``edit_grid``'s layout from images made elsewhere: ``cells(token)`` -> {scale: one PIL image per seed}
    (scale 0: the unedited images), e.g. a sweep that already holds them (training's final validation grid is
    cut from the selection sweep's images)."""
    rows, labels = [], []
    for name in directions:
        k = bank.index(name)
        tok = bank.tokens[k]
        by_scale = cells(tok)
        rows.append([img for s in scales for img in by_scale[float(s)]])
        labels.append(tok + (f" {bank.labels[k]}" if bank.labels[k] else ""))
    cols = [f"{s:+g}" if len(seeds) == 1 else f"{s:+g} #{seed}" for s in scales for seed in seeds]
    return compose_grid(rows, labels, cols, cell=cell)
