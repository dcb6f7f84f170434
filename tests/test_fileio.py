"""Atomic writers: the target is either the old file or the whole new one, never a fragment."""

from __future__ import annotations

import json

import pytest

from noiseclr_lab.fileio import write_json_atomic, write_text_atomic


def test_atomic_writers_replace_whole_files_and_leave_no_temporaries(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"step": 1})
    write_json_atomic(path, {"step": 2, "note": "x" * 10000})
    assert json.loads(path.read_text())["step"] == 2
    write_text_atomic(tmp_path / "log.txt", "a\nb\n")
    assert (tmp_path / "log.txt").read_text() == "a\nb\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"step": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"step": object()})  # not serialisable: fails before anything is written
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "missing" / "x.json", "{}")  # no such folder
    assert json.loads(path.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_save_image_atomic_keeps_the_old_file_when_a_save_fails(tmp_path):
    from PIL import Image

    from noiseclr_lab.errors import NoiseCLRLabError
    from noiseclr_lab.fileio import save_image_atomic

    path = tmp_path / "grid.jpg"
    save_image_atomic(Image.new("RGB", (8, 8), (200, 10, 10)), path)
    old = path.read_bytes()
    assert Image.open(path).format == "JPEG"
    with pytest.raises(NoiseCLRLabError, match="Cannot write"):
        save_image_atomic(Image.new("RGBA", (8, 8)), path)  # JPEG has no alpha: the encoder refuses
    assert path.read_bytes() == old
    with pytest.raises(NoiseCLRLabError, match="unknown image extension"):
        save_image_atomic(Image.new("RGB", (8, 8)), tmp_path / "grid.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.jpg"]


def test_written_files_get_the_usual_permissions(tmp_path):
    """safetensors creates its files 0600 and mkdtemp its folders 0700: others on the machine (a colleague, a web
    server serving reports) could not read banks or reports. Written files get what open() would give: checked
    in a fresh process under umask 022, where the old code gave 0600."""
    import subprocess
    import sys

    script = """
import os, stat, sys, torch
os.umask(0o022)
from noiseclr_lab.fileio import FILE_MODE, save_safetensors_atomic, write_text_atomic
from noiseclr_lab.reports import _replace_folder
from pathlib import Path
d = Path(sys.argv[1])
save_safetensors_atomic({"x": torch.zeros(2)}, d / "a.safetensors")
write_text_atomic(d / "b.txt", "b")
_replace_folder(d / "report", {"report.html": b"<html></html>"})
print(oct(FILE_MODE), *(oct(stat.S_IMODE((d / n).stat().st_mode)) for n in ("a.safetensors", "b.txt", "report")))
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0o644", "0o644", "0o644", "0o755"], out.stdout + out.stderr
