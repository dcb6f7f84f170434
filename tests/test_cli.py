"""The noiseclr-lab command: subcommands work end to end; bad input is one line and a non-zero exit."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from noiseclr_lab.cli import main
from noiseclr_lab.directions import DirectionBank


def test_import_inspect_export_roundtrip(tmp_path, capsys):
    torch.save({"<t1>": torch.ones(32), "<t2>": torch.zeros(32)}, tmp_path / "learned_embeds.bin")
    assert main(["import-official", str(tmp_path / "learned_embeds.bin"), "--out", str(tmp_path / "bank.safetensors"),
                 "--base-model", "toy:faces"]) == 0
    assert main(["inspect", str(tmp_path / "bank.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "2 x 32 (K x D)" in out and "toy:faces" in out and "<t2>" in out and "5.6569" in out  # norm of ones(32)
    assert main(["export-ti", str(tmp_path / "bank.safetensors"), "--out", str(tmp_path / "ti")]) == 0
    assert sorted(p.name for p in (tmp_path / "ti").iterdir()) == ["t1.safetensors", "t2.safetensors"]
    assert DirectionBank.load(tmp_path / "bank.safetensors").tokens == ["<t1>", "<t2>"]


def test_toy_render_writes_images_and_factors(tmp_path):
    assert main(["toy", "render", "--domain", "shapes", "--n", "5", "--out", str(tmp_path), "--seed", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "factors.csv")))
    assert len(rows) == 5 and set(rows[0]) >= {"file", "shape", "colour", "size", "position", "caption"}
    assert all((tmp_path / r["file"]).is_file() for r in rows)


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["inspect", "/no/such/bank.safetensors"], 1, "does not exist"),
        (["toy", "render", "--domain", "planets", "--out", "x"], 1, "Unknown toy domain 'planets'"),
        (["toy", "render", "--domain", "faces", "--n", "-3", "--out", "x"], 2, "positive integer"),
        (["import-official"], 2, "required"),
        (["fly"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line(argv, code, needle):
    proc = subprocess.run([sys.executable, "-m", "noiseclr_lab.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == code
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_subcommand_has_help():
    for argv in (["--help"], ["inspect", "--help"], ["import-official", "--help"], ["export-ti", "--help"],
                 ["toy", "render", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
