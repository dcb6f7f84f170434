"""The run folder: one class owns its layout, so no other module joins run paths by hand.

    RUN/
      config.json                       {"config", "provenance", "tokens"} of the training run
      directions.safetensors            the latest bank (a DirectionBank file)
      initial_directions.safetensors    the bank before the first step (the "init" baseline)
      metrics.jsonl                     one JSON record per logged training step
      checkpoints/step-N/               directions.safetensors, optimizer.pt, state.json (keep-last-N)
      validation/step-N.png             directions x scales grids written during training
      analysis/                         evaluation artefacts (gt_metrics.json, gt_effects.png, ...)
      analysis/sweeps/<key>/            cached sweep images, one folder per content-addressed key
      report/                           report.html, report.json, report.md, images/ (noiseclr-lab report)

Base layer: imports only ``errors`` and ``fileio``. Every write is atomic (docs/design.md, "Run folder").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import read_json, write_json_atomic, write_text_atomic

SWEEP_KEY_VERSION = 2  # bump when what a sweep's images depend on changes (2: model = spec#fingerprint)


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """``path`` (relative to ``root``, or absolute) resolved, links followed; None when it lies outside ``root``."""
    root = Path(root).resolve()
    full = (root / path).resolve()
    return full if full == root or root in full.parents else None


class RunDir:
    """A run folder's paths and the few operations that must be atomic there."""

    CONFIG = "config.json"
    DIRECTIONS = "directions.safetensors"
    INITIAL_DIRECTIONS = "initial_directions.safetensors"
    ALL_DIRECTIONS = "directions_all.safetensors"  # a run with selection: every trained direction
    SELECTION_JSON = "selection.json"  # a run with selection: which directions were kept and why
    METRICS = "metrics.jsonl"
    CHECKPOINTS = "checkpoints"
    VALIDATION = "validation"
    ANALYSIS = "analysis"
    SWEEPS = "sweeps"  # under analysis/
    REPORT = "report"
    ANALYSIS_JSON = "analysis.json"  # under analysis/: the CLIP analysis (noiseclr-lab analyze)
    GT_JSON = "gt_metrics.json"  # under analysis/: the ground-truth scores (noiseclr-lab evaluate-gt)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def directions_path(self) -> Path:
        return self.path / self.DIRECTIONS

    @property
    def initial_directions_path(self) -> Path:
        return self.path / self.INITIAL_DIRECTIONS

    @property
    def all_directions_path(self) -> Path:
        return self.path / self.ALL_DIRECTIONS

    @property
    def selection_path(self) -> Path:
        return self.path / self.SELECTION_JSON

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def validation_dir(self) -> Path:
        return self.path / self.VALIDATION

    @property
    def analysis_dir(self) -> Path:
        return self.path / self.ANALYSIS

    @property
    def report_dir(self) -> Path:
        """report/: report.html, report.json, report.md and images/ (``noiseclr-lab report``)."""
        return self.path / self.REPORT

    def validation_image(self, step: int) -> Path:
        """validation/step-N.png (its folder is created)."""
        self.validation_dir.mkdir(parents=True, exist_ok=True)
        return self.validation_dir / f"step-{step}.png"

    def analysis_file(self, name: str) -> Path:
        """analysis/<name> (the folder is created); ``name`` is a plain file name."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise NoiseCLRLabError(f"Analysis artefact names are plain file names, got {name!r}.")
        self.analysis_dir.mkdir(parents=True, exist_ok=True)
        return self.analysis_dir / name

    def require_directions(self) -> Path:
        """The run's directions.safetensors; a folder without one is a one-line error."""
        if not self.directions_path.is_file():
            raise NoiseCLRLabError(f"{self.path} is not a run folder (no {self.DIRECTIONS}).")
        return self.directions_path

    # ------------------------------------------------------------------ config and metrics

    def write_config(self, obj: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, obj)

    def read_config(self) -> dict:
        """config.json as written by the trainer; missing or damaged is a one-line error."""
        return read_json(self.config_path)

    def reset_metrics(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.metrics_path, "")

    def append_metrics(self, record: dict) -> None:
        """One JSON line (a crash can cut only the last line, which ``read_metrics`` skips)."""
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every complete record of metrics.jsonl ([] when there is none)."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line being written, or damage: skipped
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                out.append(record)
        return out

    def truncate_metrics(self, step: int) -> None:
        """Keep the records up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
        keep = [r for r in self.read_metrics() if r["step"] <= step]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (temporary ``.step-N.tmp`` folders are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        cks = [p for p in self.checkpoints_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
        return sorted(cks, key=lambda p: int(p.name[5:]))

    def latest_checkpoint(self) -> Path | None:
        cks = self.checkpoints()
        return cks[-1] if cks else None

    def has_checkpoints(self) -> bool:
        """Whether a complete checkpoint exists (a leftover ``.step-N.tmp`` of a killed write does not count)."""
        return bool(self.checkpoints())

    def write_checkpoint(self, step: int, fill: Callable[[Path], None], keep: int = 0) -> Path:
        """checkpoints/step-N: ``fill(folder)`` writes into a temporary folder that is then renamed into place,
        so a checkpoint is either complete or absent. Afterwards only the newest ``keep`` remain (0: all)."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint(step)
        tmp = self.checkpoints_dir / f".step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            fill(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if keep > 0:
            for old in self.checkpoints()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    # ------------------------------------------------------------------ sweep cache

    @staticmethod
    def sweep_key(*, bank_hash: str, model: str, prompt: str, scales, seeds: int, num_inference_steps: int,
                  edit_start: int, guidance_scale: float, negative_prompt: str | None = None,
                  guidance_rescale: float = 0.0) -> str:
        """A content address for the images of one sweep: the same key means the same images (up to the
        nondeterminism of the device), so every reader of a run can share them. ``guidance_rescale`` enters the
        key only when it is not 0, so the caches of sweeps made before it existed keep their keys."""
        spec = {"v": SWEEP_KEY_VERSION, "bank": bank_hash, "model": model, "prompt": prompt,
                "scales": [float(s) for s in scales], "seeds": int(seeds), "steps": int(num_inference_steps),
                "edit_start": int(edit_start), "guidance_scale": float(guidance_scale),
                "negative_prompt": negative_prompt}
        if guidance_rescale:
            spec["guidance_rescale"] = float(guidance_rescale)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]

    def sweep_dir(self, key: str) -> Path:
        """analysis/sweeps/<key>/ (created)."""
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise NoiseCLRLabError(f"Sweep keys are hex digests, got {key!r}.")
        folder = self.analysis_dir / self.SWEEPS / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder
