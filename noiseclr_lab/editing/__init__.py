"""Editing: the batched direction-composition pipeline and real-image inversion."""

from noiseclr_lab.editing.images import prepare_image
from noiseclr_lab.editing.inversion import invert
from noiseclr_lab.editing.pipeline import EditOutput, EditPipeline, Inversion, ddim_scheduler

__all__ = ["EditOutput", "EditPipeline", "Inversion", "ddim_scheduler", "invert", "prepare_image"]
