"""Editing: the batched direction-composition pipeline, real-image inversion and directions x scales grids."""

from noiseclr_lab.editing.grid import compose_grid, direction_grid, edit_grid, label_font
from noiseclr_lab.editing.images import prepare_image
from noiseclr_lab.editing.inversion import invert
from noiseclr_lab.editing.pipeline import (
    EDIT_WARMUP,
    EditOutput,
    EditPipeline,
    Inversion,
    ddim_scheduler,
    default_edit_start,
    official_window,
    resolve_edits,
)

__all__ = ["EDIT_WARMUP", "EditOutput", "EditPipeline", "Inversion", "compose_grid", "ddim_scheduler",
           "default_edit_start", "direction_grid", "edit_grid", "invert", "label_font", "official_window", "prepare_image",
           "resolve_edits"]
