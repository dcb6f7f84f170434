"""Stage ``export``: write the finished assets into the package (fp16 weights) and toy_assets.json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from noiseclr_lab.fileio import write_json_atomic
from noiseclr_lab.toyworld import ASSET_DIR
from toybuild.clip import export_clip
from toybuild.common import BuildConfig
from toybuild.probe import build_probes, save_probe
from toybuild.unet import assemble_pipeline


def export_assets(cfg: BuildConfig, out: Path = ASSET_DIR) -> dict:
    """Write the finished assets into ``out`` (the package's assets by default; fp16 weights) + toy_assets.json."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    work = Path(cfg.work)
    if (work / "unet.pt").exists():
        pipe = assemble_pipeline(cfg)
        tmp = out / "pipeline.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.to(torch.float16).save_pretrained(tmp)
        shutil.rmtree(out / "pipeline", ignore_errors=True)
        os.replace(tmp, out / "pipeline")
        written["pipeline"] = True
    if (work / "probe.pt").exists():
        for n, probe in build_probes(cfg).items():
            save_probe(probe.model, n, out)
        written["probe"] = True
    if (work / "clip.pt").exists():
        export_clip(cfg, out)
        written["clip"] = True
    log = json.loads((work / "build_log.json").read_text()) if (work / "build_log.json").exists() else {}
    log.pop("unet_zsnr_ordered", None)  # its export goes to a staging folder, never into the package
    write_json_atomic(out / "toy_assets.json", log)
    return written
