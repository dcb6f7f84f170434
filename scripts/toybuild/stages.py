"""The stage table and ``run_stage``: what ``scripts/build_toy_assets.py --stage`` runs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from noiseclr_lab.fileio import write_json_atomic
from noiseclr_lab.toyworld import ASSET_DIR
from toybuild.clip import train_clip
from toybuild.common import BuildConfig
from toybuild.export import export_assets
from toybuild.probe import build_probes, train_probe
from toybuild.unet import assemble_pipeline, text_fidelity, train_unet
from toybuild.vae import train_vae
from toybuild.zsnr import export_zsnr, measure_zsnr, train_unet_zsnr

# --------------------------------------------------------------------------- stages

STAGES = ("vae", "probe", "unet", "clip", "export", "unet-zsnr", "export-zsnr", "unet-zsnr-ordered",
          "export-zsnr-ordered")


def _record(cfg: BuildConfig, stage: str, result: dict) -> None:
    """Merge a stage's measured result into the work folder's build log (exported as toy_assets.json)."""
    path = Path(cfg.work) / "build_log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    entry = log.setdefault(stage, {"minutes": 0.0})
    entry["minutes"] = entry["minutes"] + result.pop("minutes", 0.0)
    entry.update(result)
    entry["config"] = {k: v for k, v in asdict(cfg).items() if k != "work"}
    write_json_atomic(path, log)


def run_stage(cfg: BuildConfig, stage: str, minutes: float, out: Path = ASSET_DIR) -> dict:
    """Train ``stage`` for ``minutes`` (or export), log its measured quality and return it."""
    if stage == "vae":
        result = train_vae(cfg, minutes)
    elif stage == "probe":
        result = train_probe(cfg, minutes)
    elif stage == "unet":
        result = train_unet(cfg, minutes)
        result |= text_fidelity(assemble_pipeline(cfg), build_probes(cfg))
    elif stage == "clip":
        result = train_clip(cfg, minutes)
    elif stage == "export":
        return export_assets(cfg, out)
    elif stage in ("unet-zsnr", "unet-zsnr-ordered"):
        ordered = stage.endswith("ordered")
        result = train_unet_zsnr(cfg, minutes, ordered)
        if minutes >= 5:  # short calls only train; the fidelity check costs about a minute
            result |= measure_zsnr(cfg, ordered)
        stage = stage.replace("-", "_")
    elif stage in ("export-zsnr", "export-zsnr-ordered"):
        result = export_zsnr(cfg, out, stage.endswith("ordered"))
        _record(cfg, "unet_" + stage.removeprefix("export-").replace("-", "_"), dict(result))
        return result
    else:
        raise ValueError(stage)
    result["minutes"] = minutes
    _record(cfg, stage, dict(result))
    return result
