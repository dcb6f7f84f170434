"""A workspace: the folder an app (the dashboard) may read and write, holding run folders and labels.sqlite.

Every path an app uses goes through ``Workspace.resolve``: a path that resolves outside the workspace,
through ``..`` or a symbolic link, is refused with one sentence.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.store import RunDir, inside

LABELS_DB = "labels.sqlite"
UPLOADS = ".uploads"  # images uploaded to the dashboard (recipes refer to them)
RECENT_S = 600  # a run whose metrics changed this recently and whose training is unfinished is "in progress"


def _recent(path: Path) -> bool:
    """``path`` exists and changed in the last ``RECENT_S`` seconds."""
    return path.is_file() and time.time() - path.stat().st_mtime < RECENT_S


@dataclass
class RunInfo:
    """One run of a workspace, as a listing shows it."""

    run: RunDir
    name: str  # path relative to the workspace
    status: str  # "in progress", "stopped", "trained", "analysed", "reported"
    steps_done: int
    steps_total: int | None
    base_model: str | None
    last_loss: float | None


class Workspace:
    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise NoiseCLRLabError(f"The workspace {root} is not a folder.")
        self.root = root.resolve()

    def resolve(self, path: str | os.PathLike) -> Path:
        """``path`` (relative to the workspace, or absolute) resolved; refused when it lies outside."""
        full = inside(self.root, path)
        if full is None:
            raise NoiseCLRLabError(f"{path} lies outside the workspace {self.root}; the dashboard reads and writes "
                                   "only inside it.")
        return full

    @property
    def labels_db(self) -> Path:
        return self.root / LABELS_DB

    @property
    def uploads(self) -> Path:
        folder = self.root / UPLOADS
        folder.mkdir(exist_ok=True)
        return folder

    def runs(self, max_depth: int = 3) -> list[RunInfo]:
        """Run folders (holding config.json or directions.safetensors) up to ``max_depth`` levels down, sorted
        by name; links that lead outside the workspace are skipped."""
        found = []

        def walk(folder: Path, depth: int) -> None:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                return
            if (folder / RunDir.CONFIG).is_file() or (folder / RunDir.DIRECTIONS).is_file():
                found.append(folder)
                return
            if depth == max_depth:
                return
            for e in entries:
                if e.is_dir() and not e.name.startswith("."):
                    try:
                        self.resolve(e)
                    except NoiseCLRLabError:
                        continue
                    walk(e, depth + 1)

        walk(self.root, 0)
        return [self.info(f) for f in found]

    def info(self, folder: Path) -> RunInfo:
        run = RunDir(self.resolve(folder))
        name = run.path.relative_to(self.root).as_posix() or "."
        try:
            return self._info(run, name)
        except (OSError, ValueError, TypeError, AttributeError) as e:  # one damaged folder must not hide the others
            return RunInfo(run=run, name=name, status=f"damaged ({type(e).__name__})", steps_done=0, steps_total=None,
                           base_model=None, last_loss=None)

    @staticmethod
    def _info(run: RunDir, name: str) -> RunInfo:
        metrics = [r for r in run.read_metrics() if isinstance(r, dict)]
        steps_done = max((int(r.get("step", 0)) for r in metrics), default=0)
        cfg = {}
        if run.config_path.is_file():
            try:
                cfg = run.read_config().get("config", {})
            except NoiseCLRLabError:  # being written: judged by its metrics
                cfg = {}
        total = cfg.get("steps")
        total = int(total) if total is not None else None
        base = cfg.get("model")
        finished = total is None or steps_done >= total
        trained = run.directions_path.is_file()
        if not trained or not finished:
            # written to lately, or just started (a config, no bank or metrics yet): a process is at work on it
            busy = _recent(run.metrics_path) or (not trained and not run.metrics_path.is_file()
                                                 and _recent(run.config_path))
            status = "in progress" if busy else "stopped"
        elif (run.report_dir / "report.json").is_file():
            status = "reported"
        elif (run.analysis_dir / RunDir.ANALYSIS_JSON).is_file():
            status = "analysed"
        else:
            status = "trained"
        loss = next((float(r["loss"]) for r in reversed(metrics) if "loss" in r), None)
        return RunInfo(run=run, name=name, status=status, steps_done=steps_done, steps_total=total, base_model=base,
                       last_loss=loss)
