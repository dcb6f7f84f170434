"""Builders of the shipped toy models (not part of the noiseclr_lab wheel): data, VAE, text encoder + UNet,
open_clip CLIP, factor probes. One module per stage; ``stages.run_stage`` runs one.

Every stage is seeded, resumable (a checkpoint every few minutes, written atomically into the work folder)
and time-boxed, so a long build can be spread over several sessions. ``scripts/build_toy_assets.py`` is the
command-line front end; ``--stage export`` writes finished stages into ``noiseclr_lab/assets/toy``.
"""
