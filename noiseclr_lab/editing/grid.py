"""Directions x scales grids: each row one direction, each column one edit scale, the same seed throughout."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from noiseclr_lab.editing.pipeline import EditPipeline, Inversion


def _font(size: int):
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
    font = _font(14)
    for c, text in enumerate(col_labels):
        draw.text((label_w + c * cell + cell // 2, label_h // 2), text, fill="black", anchor="mm", font=font)
    for r, row in enumerate(cells):
        draw.text((6, label_h + r * cell + cell // 2), row_labels[r], fill="black", anchor="lm", font=font)
        for c, img in enumerate(row):
            out.paste(img.resize((cell, cell), Image.Resampling.NEAREST if img.width < cell else Image.Resampling.LANCZOS),
                      (label_w + c * cell, label_h + r * cell))
    return out


def edit_grid(edit_pipe: EditPipeline, directions: list[str], scales: list[float], *, prompt: str = "",
              seed: int = 0, inversion: Inversion | None = None, cell: int = 128, **call_kwargs) -> Image.Image:
    """Apply each direction alone at each scale to one seed (or one inverted image); returns the labelled grid."""
    import torch

    bank = edit_pipe.bank
    rows, labels = [], []
    base = None
    for name in directions:
        k = bank.index(name)
        row = []
        for s in scales:
            if s == 0 and base is not None:
                row.append(base)
                continue
            gen = torch.Generator().manual_seed(seed)
            out = edit_pipe(prompt, edits={bank.tokens[k]: s} if s else None, generator=gen, inversion=inversion,
                            output_type="pil", **call_kwargs)
            row.append(out.images[0])
            if s == 0:
                base = out.images[0]
        rows.append(row)
        labels.append(bank.tokens[k] + (f" {bank.labels[k]}" if bank.labels[k] else ""))
    return compose_grid(rows, labels, [f"{s:+g}" for s in scales], cell=cell)
