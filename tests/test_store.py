"""RunDir: the run folder's layout, atomic checkpoints, metrics records and sweep keys."""

from __future__ import annotations

import pytest

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.store import RunDir


def _fill(step: int):
    def fill(folder):
        (folder / "state.json").write_text(str(step))
    return fill


def test_checkpoints_are_complete_or_absent_and_pruned(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.latest_checkpoint() is None and not run.has_checkpoints()
    for step in (2, 4, 10):
        run.write_checkpoint(step, _fill(step), keep=2)
    assert [p.name for p in run.checkpoints()] == ["step-4", "step-10"]  # numeric order, the oldest pruned

    def broken(folder):
        (folder / "state.json").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        run.write_checkpoint(12, broken, keep=2)
    assert run.latest_checkpoint().name == "step-10"  # nothing half-written became a checkpoint
    assert [p.name for p in run.checkpoints_dir.iterdir()] and not list(run.checkpoints_dir.glob(".*tmp"))
    run.write_checkpoint(10, _fill(99))  # rewriting a step replaces it whole
    assert (run.checkpoint(10) / "state.json").read_text() == "99"


def test_metrics_records_survive_a_cut_line_and_truncate_on_resume(tmp_path):
    run = RunDir(tmp_path)
    run.reset_metrics()
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 4, "lo')  # a crash in the middle of a write
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    with open(run.metrics_path, "ab") as fh:  # damage: JSON that is no record, bytes that are no text
        fh.write(b'\n5\n["step"]\n{"loss": 1}\n\xff\xfe{\n')
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]


def test_paths_and_refusals(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(NoiseCLRLabError, match="not a run folder"):
        run.require_directions()
    with pytest.raises(NoiseCLRLabError, match="missing"):
        run.read_config()
    run.write_config({"config": {"steps": 3}})
    assert run.read_config()["config"]["steps"] == 3
    assert run.validation_image(7) == tmp_path / "validation" / "step-7.png" and run.validation_dir.is_dir()
    assert run.analysis_file("gt_metrics.json") == tmp_path / "analysis" / "gt_metrics.json"
    for bad in ("../escape.json", "sub/x.json", ".."):
        with pytest.raises(NoiseCLRLabError, match="plain file names"):
            run.analysis_file(bad)
    with pytest.raises(NoiseCLRLabError, match="hex"):
        run.sweep_dir("../../etc")


def test_sweep_key_changes_with_everything_the_images_depend_on():
    base = dict(bank_hash="ab12", model="toy:faces", prompt="a cartoon face", scales=[-3, 3], seeds=12,
                num_inference_steps=15, edit_start=3, guidance_scale=3.0)
    key = RunDir.sweep_key(**base)
    assert key == "14d8208ddb4034f151da"  # caches written before guidance_rescale existed keep their key
    assert key == RunDir.sweep_key(**base | {"scales": (-3.0, 3.0)}) == RunDir.sweep_key(**base, guidance_rescale=0)
    changed = {"bank_hash": "cd34", "model": "toy:shapes", "prompt": "", "scales": [-3, 6], "seeds": 8,
               "num_inference_steps": 20, "edit_start": 0, "guidance_scale": 7.5, "guidance_rescale": 0.7}
    keys = {RunDir.sweep_key(**base | {k: v}) for k, v in changed.items()}
    assert key not in keys and len(keys) == len(changed)
    assert RunDir.sweep_key(**base, negative_prompt="blurry") != key
