"""Disentanglement reports: report.html (self-contained), report.json (schema ``noiseclr_lab.report/1``,
report.schema.json beside this file) and report.md (PNG figures in images/), from what a run folder stores.

    from noiseclr_lab.reports import build_report, load_report
    res = build_report("runs/demo/run", compare=["runs/other"])   # -> RUN/report/
    data = load_report(res.json)                                    # validated against the schema
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import DIR_MODE, read_json
from noiseclr_lab.reports.collect import REPORT_SCHEMA, collect, comparison, fmt
from noiseclr_lab.store import RunDir

__all__ = ["REPORT_SCHEMA", "ReportResult", "build_report", "fmt", "load_report", "report_schema", "validate_report"]

HTML, JSON, MD, IMAGES = "report.html", "report.json", "report.md", "images"
REPORT_ENTRIES = {HTML, JSON, MD, IMAGES}  # what a report folder holds (nothing else is ever replaced)


@dataclass
class ReportResult:
    """Where a report was written and how long it took."""

    folder: Path
    html: Path
    json: Path
    markdown: Path
    data: dict
    seconds: float


def report_schema() -> dict:
    """The JSON Schema of report.json."""
    return json.loads(resources.files("noiseclr_lab.reports").joinpath("report.schema.json").read_text())


def validate_report(data: dict) -> dict:
    """``data`` if it is a valid report.json (a one-line NoiseCLRLabError otherwise)."""
    import jsonschema

    try:
        jsonschema.validate(data, report_schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise NoiseCLRLabError(f"Not a valid {REPORT_SCHEMA} report: at {where}: {e.message}") from e
    return data


def load_report(path: str | os.PathLike) -> dict:
    """A report.json read back and validated."""
    return validate_report(read_json(path))


def build_report(run: str | os.PathLike | RunDir, compare: Sequence[str | os.PathLike | RunDir] = (),
                 out: str | os.PathLike | None = None) -> ReportResult:
    """Write the report of ``run`` (and, with ``compare``, a comparison with those runs) into ``out``
    (default RUN/report/): report.html, report.json, report.md and images/. Reads only the run folders: no
    model is loaded. Everything is rendered in memory first and the folder replaced at the end, so bad input
    (a folder that is not a run, a missing, damaged or older-format analysis) leaves no partial report and an
    existing report stays as it was."""
    t0 = time.perf_counter()
    run = run if isinstance(run, RunDir) else RunDir(run)
    folder = Path(out) if out is not None else run.report_dir
    if folder.is_symlink() or (folder.exists() and (not folder.is_dir()
                                                     or not {p.name for p in folder.iterdir()} <= REPORT_ENTRIES)):
        raise NoiseCLRLabError(f"{folder} exists and holds more than a report; choose another --out (a report "
                               "replaces its whole folder).")
    main = collect(run)
    data = main.data
    if compare:
        others = [collect(r if isinstance(r, RunDir) else RunDir(r), with_images=False) for r in compare]
        data["compare"] = comparison([main, *others])
    validate_report(data)
    from noiseclr_lab.reports.render import render_html, render_markdown

    page = render_html(data, main.images)
    md, figures = render_markdown(data, main.images)
    _replace_folder(folder, {HTML: page.encode(), JSON: json.dumps(data, indent=1).encode(), MD: md.encode()}
                    | {f"{IMAGES}/{name}.png": png for name, png in (main.images | figures).items()})
    return ReportResult(folder=folder, html=folder / HTML, json=folder / JSON, markdown=folder / MD, data=data,
                        seconds=time.perf_counter() - t0)


def _replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh sibling temporary folder, then swap it in for ``folder``; if the swap fails
    the previous folder is put back (a concurrent build of the same report loses, with one sentence)."""
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        os.chmod(tmp, DIR_MODE)  # mkdtemp's 0700 would hide the report from a web server or a colleague
    except OSError:
        pass
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    moved = False
    try:
        for rel, blob in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        if folder.exists():
            os.replace(folder, old)  # onto the empty placeholder
            moved = True
        try:
            os.replace(tmp, folder)
        except OSError as e:
            if moved and not folder.exists():
                os.replace(old, folder)
                moved = False
            raise NoiseCLRLabError(f"Could not put the new report in place at {folder} ({e}); another build of it "
                                   "may be running.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
