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
