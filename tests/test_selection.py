"""Unsupervised selection of an over-complete bank: the measure on constructed features, and a training run that
keeps a selection on a tiny random pipeline and a tiny random CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noiseclr_lab.analysis.metrics.selection import edit_signature, greedy_select
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.training import TrainConfig


def _features(rng, S=8, E=16):
    """Base features and four directions at scales (-1, +1): a strong consistent edit (0), the same edit
    reversed and weaker (1), a re-roll longer than either (norm 1.2) that points somewhere else on every seed (2), a weak consistent
    edit along another axis (3)."""
    base = rng.normal(size=(S, E))
    ax = np.eye(E)
    per = [ax[0] * 1.0, -ax[0] * 0.7, None, ax[1] * 0.3]
    edited = np.zeros((2, 4, S, E))
    for k, v in enumerate(per):
        for i, sign in enumerate((-1, 1)):
            change = rng.normal(size=(S, E)) * 0.3 if v is None else sign * v + rng.normal(size=(S, E)) * 0.02
            edited[i, k] = base + change
    return edited, base


def test_signature_ranks_consistent_edits_and_drops_repeats():
    edited, base = _features(np.random.default_rng(0))
    strength, axis = edit_signature(edited, base, [-1.0, 1.0])
    assert strength[0] > strength[1] > strength[3] > strength[2]  # the re-roll's mean change is short
    assert abs(axis[0] @ axis[1]) > 0.99 and np.allclose(np.linalg.norm(axis, axis=1), 1.0)
    kept, dup = greedy_select(strength, axis, keep=2)
    assert kept == [0, 3] and dup[1] == 0 and dup[3] is None  # the reversed copy repeats 0; 3 is distinct
    kept, _ = greedy_select(strength, axis, keep=4)  # too few distinct edits: the rest fill up by strength
    assert kept == [0, 3, 2, 1] or sorted(kept) == [0, 1, 2, 3]
    assert greedy_select(strength, axis, keep=2, max_similarity=1.0)[0] == [0, 1]  # nothing counts as a repeat
    with pytest.raises(ValueError, match="keep"):
        greedy_select(strength, axis, keep=5)


def test_training_with_selection_keeps_the_strongest_distinct(tiny_pipe_dir, tiny_clip_name, tmp_path):
    from noiseclr_lab.workflows import select_run, train_run

    cfg = TrainConfig(model=str(tiny_pipe_dir), data="toy:faces", out=str(tmp_path / "run"), num_directions=5,
                      directions_per_step=5, steps=3, batch_size=3, num_images=6, lr=1e-2, checkpoint_every=0,
                      validation_steps=2, validation_seeds=1, cache_dir=str(tmp_path / "cache"), device="cpu",
                      select=3, select_clip=f"{tiny_clip_name}:random", select_scale=10.0, select_seeds=2, select_steps=3,
                      validation_prompt="a face")
    run = train_run(cfg, progress=False)
    full = DirectionBank.load(run.all_directions_path)
    kept = DirectionBank.load(run.directions_path)
    sel = json.loads(run.selection_path.read_text())
    assert run.validation_image(3).is_file()  # the sweep does not hold the grid (another scale): drawn after it
    assert len(full) == 5 and len(kept) == 3 and sel["kept"] == kept.tokens
    assert set(kept.tokens) < set(full.tokens)
    for tok in kept.tokens:  # the kept rows are the trained ones, unchanged
        assert (kept.embeddings[kept.index(tok)] == full.embeddings[full.index(tok)]).all()
    strength = {d["token"]: d["strength"] for d in sel["directions"]}
    assert [strength[t] for t in kept.tokens] == sorted((strength[t] for t in kept.tokens), reverse=True)
    assert sel["settings"]["scales"] == [-10.0, 10.0] and sel["settings"]["seeds"] == 2
    assert sel["max_similarity"] == cfg.select_max_similarity == 0.7  # the config's threshold was used
    # the same selection again (a finished run trained again, e.g. a rerun demo) keeps what is there: no sweep,
    # the kept bank file untouched (a label written into it stays)
    labelled = DirectionBank.load(run.directions_path)
    labelled.labels[0] = "smile"
    labelled.save(run.directions_path)
    stamps = {p: p.stat().st_mtime_ns for p in (run.directions_path, run.selection_path, run.all_directions_path)}
    same = select_run(run, cfg, progress=False)
    assert [full.tokens[k] for k in same.kept] == sel["kept"] and same.bank == full.content_hash()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert DirectionBank.load(run.directions_path).labels[0] == "smile"
    # selecting again (e.g. another select) reads every direction from the last checkpoint, not the kept file
    again = select_run(run, TrainConfig.from_dict(cfg.to_dict() | {"select": 2}), progress=False)
    assert DirectionBank.load(run.directions_path).tokens == [full.tokens[k] for k in again.kept]
    assert len(again.kept) == 2 and len(DirectionBank.load(run.all_directions_path)) == 5
    # the init baseline of evaluate-gt takes the kept directions' initial rows
    from noiseclr_lab.analysis.groundtruth import make_baseline

    init = make_baseline("init", kept, run, None, None)
    assert len(init) == 3
    with pytest.raises(NoiseCLRLabError, match="finish training"):  # a stopped run is not selected from
        select_run(run, TrainConfig.from_dict(cfg.to_dict() | {"steps": 5}))
    with pytest.raises(NoiseCLRLabError, match="nothing to select"):
        select_run(run, TrainConfig.from_dict(cfg.to_dict() | {"select": 0}))
    with pytest.raises(NoiseCLRLabError, match="select must be"):
        TrainConfig.from_dict(cfg.to_dict() | {"select": 6})


def test_the_last_validation_grid_is_cut_from_the_selection_sweep(tiny_pipe_dir, tiny_clip_name, tmp_path,
                                                                   monkeypatch):
    """With the selection's steps and scale, the last step's grid is cut from the selection sweep's images:
    neither the trainer nor the selection generates it, and it shows what drawing it would (up to float
    rounding between batch sizes: one level of 255)."""
    from PIL import Image

    import noiseclr_lab.training.trainer as trainer
    import noiseclr_lab.workflows as workflows
    from noiseclr_lab.models import load_pipeline
    from noiseclr_lab.store import RunDir

    cfg = TrainConfig(model=str(tiny_pipe_dir), data="toy:faces", out=str(tmp_path / "run"), num_directions=4,
                      directions_per_step=4, steps=2, batch_size=2, num_images=4, checkpoint_every=0, validate_every=1,
                      validation_steps=3, validation_seeds=2, validation_scale=6.0, validation_prompt="a face",
                      cache_dir=str(tmp_path / "cache"), device="cpu", select=2, select_clip=f"{tiny_clip_name}:random",
                      select_scale=6.0, select_seeds=3, select_steps=3)
    stale = tmp_path / "run" / "validation" / "step-2.png"  # left by an earlier training in this folder
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(stale)
    drawn = []
    real = trainer.validation_grid
    monkeypatch.setattr(trainer, "validation_grid", lambda *a: drawn.append("trainer") or real(*a))
    monkeypatch.setattr(workflows, "validation_grid", lambda *a: drawn.append("selection") or real(*a))
    run = workflows.train_run(cfg, progress=False)
    assert drawn == ["trainer"]  # step 1's grid only (validate_every = 1); the stale one replaced:
    assert run.validation_image(1).is_file() and run.validation_image(2).is_file()
    cut = np.asarray(Image.open(run.validation_image(2)).convert("RGB")).astype(int)
    full = DirectionBank.load(run.all_directions_path)
    new = np.asarray(real(load_pipeline(cfg.model, device="cpu"), full, cfg))
    assert cut.shape == new.shape and np.abs(cut - new).max() <= 1
    # a finished selection whose grid went missing draws it again; one that has it leaves it alone
    run.validation_image(2).unlink()
    workflows.select_run(RunDir(run.path), cfg, progress=False)
    assert drawn == ["trainer", "selection"] and run.validation_image(2).is_file()
    workflows.select_run(RunDir(run.path), cfg, progress=False)
    assert drawn == ["trainer", "selection"]


def test_a_finished_run_has_its_last_grid_even_when_its_selection_failed(tiny_pipe_dir, tmp_path):
    """The trainer leaves the last grid to the selection; a selection that fails (an unknown CLIP here) leaves
    none, and the run resumed without a selection draws it."""
    from noiseclr_lab.workflows import train_run

    cfg = TrainConfig(model=str(tiny_pipe_dir), data="toy:faces", out=str(tmp_path / "run"), num_directions=3,
                      directions_per_step=3, steps=2, batch_size=2, num_images=4, checkpoint_every=0,
                      validation_steps=3, validation_seeds=1, cache_dir=str(tmp_path / "cache"), device="cpu",
                      select=2, select_clip="no-such-clip-arch:random", select_scale=6.0, select_seeds=2,
                      select_steps=3)
    with pytest.raises(NoiseCLRLabError):
        train_run(cfg, progress=False)
    grid = tmp_path / "run" / "validation" / "step-2.png"
    assert not grid.exists()
    train_run(TrainConfig.from_dict(cfg.to_dict() | {"select": 0}), resume=True, progress=False)
    assert grid.is_file()
