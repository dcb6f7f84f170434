"""Shims over differences between diffusers releases (base layer: imports nothing of noiseclr_lab)."""

from __future__ import annotations


def dtype_kwargs(dtype) -> dict:
    """The dtype keyword of diffusers' loaders: ``dtype`` on releases that renamed it, else ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}
