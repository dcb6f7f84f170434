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
    server serving reports) could not read banks or reports. Written files get what open() would give."""
    import os
    import stat

    import torch

    from noiseclr_lab.fileio import DIR_MODE, FILE_MODE, save_safetensors_atomic, write_text_atomic

    save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "a.safetensors")
    write_text_atomic(tmp_path / "b.txt", "b")
    mask = os.umask(0o022)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask and DIR_MODE == 0o777 & ~mask
    for name in ("a.safetensors", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == FILE_MODE, name
