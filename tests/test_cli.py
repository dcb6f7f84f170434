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


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["evaluate-gt", "RUN", "--domain", "faces", "--noise-z", "nan"], "expected a finite number"),
        (["evaluate-gt", "RUN", "--domain", "faces", "--scales=-6,nan"], "expected finite numbers"),
        (["analyze", "RUN", "--scales=inf"], "expected finite numbers"),
        (["analyze", "RUN", "--calibration-target", "0"], "expected a number > 0"),
        (["edit", "--bank", "B", "--apply", "<d1>=1", "--seed", "99999999999999999999", "--out", "x.png"],
         "expected a seed"),
        (["edit", "--bank", "B", "--apply", "<d1>=1", "--device", "tpu", "--out", "x.png"], "unknown device 'tpu'"),
        (["demo", "--seeds", "1"], "expected an integer >= 2"),
        (["toy", "render", "--domain", "faces", "--seed", "-1", "--out", "x"], "expected a seed"),
        (["dashboard", "--port", "99999"], "expected a port from 1 to 65535"),
    ],
)
def test_bad_values_are_refused_before_any_work(argv, needle, capsys):
    """Values the parser can judge (non-finite numbers, seeds numpy and torch reject, ports, devices, seed counts
    the scoring refuses) fail at once, not after a sweep or a training run."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_bad_files_and_paths_are_one_sentence(tmp_path, capsys):
    """A folder where a file is wanted, our own bank given to the official importer, a bank with nan rows or
    none, a non-empty render folder, a recipe with flags it would ignore, a name applied twice: exit 1, one line,
    nothing written."""
    from safetensors.torch import save_file

    bank = DirectionBank(torch.randn(2, 64), ["<d1>", "<d2>"], base_model="toy:faces")
    path = bank.save(tmp_path / "bank.safetensors")
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "render").mkdir()
    (tmp_path / "render" / "old.png").write_bytes(b"x")
    nan = DirectionBank(torch.randn(2, 64), ["<d1>", "<d2>"]).save(tmp_path / "nan.safetensors")
    from safetensors import safe_open

    with safe_open(str(nan), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    tensors = {k: v.clone().fill_(float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(nan), metadata=meta)
    recipe = tmp_path / "r.json"
    recipe.write_text("{}")
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a header that claims 20000 x 20000 pixels (PIL's decompression-bomb guard)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    cases = [
        (["import-official", str(path), "--out", str(tmp_path / "again.safetensors")], "already"),
        (["export-ti", str(path), "--out", str(path)], "cannot use"),
        (["inspect", str(nan)], "must be finite"),
        (["toy", "render", "--domain", "faces", "--n", "2", "--out", str(tmp_path / "render")], "not an empty folder"),
        (["edit", "--recipe", str(recipe), "--steps", "3", "--out", str(tmp_path / "x.png")], "--steps would be ignored"),
        (["edit", "--bank", str(path), "--apply", "<d1>=3", "--apply", "<d1>=-3", "--out", str(tmp_path / "x.png")],
         "twice"),
        (["edit", "--bank", str(path), "--apply", "<d1>=3", "--out", str(tmp_path / "x.txt")], "unknown image extension"),
        (["edit", "--bank", str(path), "--apply", "<d1>=3", "--out", str(tmp_path / "taken.png")], "is a folder"),
        (["edit", "--bank", str(path), "--apply", "<d1>=3", "--image", str(bomb), "--steps", "2", "--device", "cpu",
          "--out", str(tmp_path / "x.png")], "decompression bomb"),
    ]
    for argv, needle in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "again.safetensors").exists() and not (tmp_path / "x.png").exists()
    assert sorted(p.name for p in (tmp_path / "render").iterdir()) == ["old.png"]


def test_train_help_describes_every_flag(capsys):
    """Each TrainConfig field's flag carries the field's comment (field_docs) and, for the few-valued ones, choices."""
    import dataclasses

    from noiseclr_lab.training.config import TrainConfig, field_docs

    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)} and all(len(d) > 10 for d in docs.values())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--schedule {batched,official}" in out and "--mixed-precision {no,fp16,bf16}" in out
    assert "the official code uses the whole range" in out  # a continued comment (t_max's)
