"""Toy domains: deterministic rendering, full factor coverage, every factor visible, captions name factors."""

from __future__ import annotations

import numpy as np
import pytest

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld import get_domain, list_domains
from noiseclr_lab.toyworld.domains import NUISANCE_KEY


def test_registry_has_the_three_domains():
    assert set(list_domains()) >= {"faces", "shapes", "scenes"}
    with pytest.raises(NoiseCLRLabError, match="known: faces"):
        get_domain("planets")


@pytest.mark.parametrize("name", list_domains())
def test_rendering_is_deterministic(name):
    dom = get_domain(name)
    a = dom.sample(np.random.default_rng(5), 6)
    b = dom.sample(np.random.default_rng(5), 6)
    assert a == b
    ia, ib = dom.render(a), dom.render(b)
    assert all(im.size == (64, 64) and im.mode == "RGB" for im in ia)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(ia, ib))


@pytest.mark.parametrize("name", list_domains())
def test_sampling_covers_every_value(name):
    dom = get_domain(name)
    recs = dom.sample(np.random.default_rng(0), 400)
    labels = dom.labels(recs)
    for f in dom.factors:
        assert set(labels[f.name].tolist()) == set(range(len(f.values))), f.name


@pytest.mark.parametrize("name", list_domains())
def test_every_factor_is_visible_and_nuisance_is_small(name):
    dom = get_domain(name)
    base = dom.sample(np.random.default_rng(1), 1)[0]
    ref = np.asarray(dom.render([base])[0]).astype(float)
    jittered = np.asarray(dom.render([base | {NUISANCE_KEY: base[NUISANCE_KEY] + 1}])[0]).astype(float)
    nuisance = np.abs(ref - jittered).mean()
    for f in dom.factors:
        for v in f.values:
            if v == base[f.name]:
                continue
            changed = np.asarray(dom.render([base | {f.name: v}])[0]).astype(float)
            # same nuisance seed: the only change is the factor, and it must show
            assert np.abs(ref - changed).max() > 60, (f.name, v)
    assert nuisance < 20


@pytest.mark.parametrize("name", list_domains())
def test_captions_name_every_factor_value(name):
    dom = get_domain(name)
    rec = dom.sample(np.random.default_rng(2), 1)[0]
    cap = dom.caption(rec)
    assert cap.startswith(dom.prefix)
    for f in dom.factors:
        assert rec[f.name] in cap
    partial = dom.caption(rec, np.random.default_rng(0), keep=0.0)
    assert partial == dom.prefix


def test_training_caption_mix_matches_the_build_config():
    """Empty, domain head, bare phrases (no head: a lone attribute is a meaningful prompt), partial, full."""
    from toybuild.common import BuildConfig
    from toybuild.unet import training_caption

    cfg = BuildConfig()
    dom = get_domain("faces")
    rng = np.random.default_rng(0)
    recs = dom.sample(rng, 50)
    caps = [training_caption(dom, recs[i % 50], rng, cfg) for i in range(3000)]
    share = lambda pred: sum(map(pred, caps)) / len(caps)  # noqa: E731
    assert abs(share(lambda c: c == "") - cfg.caption_dropout) < 0.03
    assert abs(share(lambda c: c == dom.prefix) - cfg.domain_only) < 0.03
    bare = [c for c in caps if c and not c.startswith(dom.prefix)]
    assert abs(len(bare) / len(caps) - cfg.bare) < 0.03
    phrases = {p for r in recs for p in dom.phrases(r)}
    assert all(set(c.split(", ")) <= phrases and len(c.split(", ")) <= 2 for c in bare)


def test_zsnr_export_drops_the_build_machines_paths(tmp_path):
    """A pipeline loaded from a folder records that folder in its configs (``_name_or_path``); the zero-SNR export
    removes it, so the shipped configs name no path of the machine that built them, and the folder still loads."""
    from diffusers import StableDiffusionPipeline
    from toybuild.zsnr import strip_build_paths

    from noiseclr_lab.toyworld import load_toy_pipeline

    load_toy_pipeline("faces").save_pretrained(tmp_path / "a")
    StableDiffusionPipeline.from_pretrained(tmp_path / "a", local_files_only=True).save_pretrained(tmp_path / "b")
    texts = lambda: "".join(p.read_text() for p in (tmp_path / "b").rglob("*.json"))  # noqa: E731
    assert str(tmp_path / "a") in texts()
    changed = strip_build_paths(tmp_path / "b")
    assert changed and "_name_or_path" not in texts() and str(tmp_path) not in texts()
    assert strip_build_paths(tmp_path / "b") == []
    StableDiffusionPipeline.from_pretrained(tmp_path / "b", local_files_only=True)


def test_ordered_zsnr_stage_trains_on_from_the_shipped_rebuild(tmp_path, monkeypatch):
    """``--stage unet-zsnr-ordered`` starts from the shipped zero-SNR rebuild (not the epsilon model the first
    stage starts from) at the step it was exported (toy_assets.json), warms a fresh optimiser up from lr 0, and captions every
    image with its phrases in the fixed order; its checkpoint resumes (from the start it saved) and is not the
    ``unet-zsnr`` one."""
    import torch
    from safetensors.torch import load_file
    from toybuild import zsnr
    from toybuild.common import BuildConfig, load_ckpt
    from toybuild.unet import JointState

    seen, lrs = [], []
    batch, update = JointState.batch, JointState.update

    def batch_spy(self, z_all, data, rng, caption=None):
        seen.append(caption)
        return batch(self, z_all, data, rng, caption)

    def update_spy(self, loss, step):
        lrs.append(self.opt.param_groups[0]["lr"])
        return update(self, loss, step)

    monkeypatch.setattr(JointState, "batch", batch_spy)
    monkeypatch.setattr(JointState, "update", update_spy)
    cfg = BuildConfig(work=str(tmp_path), n_train=12, unet_batch=6)
    zsnr.train_unet_zsnr(cfg, minutes=0.0, ordered=True)  # a time box of 0 still runs one step
    ck, start = load_ckpt(tmp_path / zsnr.CKPT_ORDERED), zsnr.shipped_rebuild_step()
    assert start >= 4160 and ck["step"] == start + 1 and not (tmp_path / zsnr.CKPT).exists()
    assert lrs == [pytest.approx(zsnr.LR / zsnr.ORDERED_WARMUP * zsnr.cosine_floor(start, zsnr.DECAY_STEPS))]
    shipped = load_file(zsnr.ASSET_DIR / "pipeline_zsnr" / "unet" / "diffusion_pytorch_model.safetensors")
    base = load_file(zsnr.ASSET_DIR / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    name = "conv_in.weight"
    ema = dict(zip([k for k in ck["unet"]], ck["ema"]["shadow"][-len(ck["unet"]):]))[name]
    assert torch.allclose(ema, shipped[name].float(), atol=1e-3) and not torch.allclose(ema, base[name].float(), atol=1e-3)
    assert seen == [None]  # JointState.batch's default: training_caption, the phrases in the domain's order
    # a rebuild shipped between two calls does not move a started run's warm-up: its start is in its checkpoint
    assert ck["start"] == start
    monkeypatch.setattr(zsnr, "shipped_rebuild_step", lambda: start + 1000)
    zsnr.train_unet_zsnr(cfg, minutes=0.0, ordered=True)
    ck = load_ckpt(tmp_path / zsnr.CKPT_ORDERED)
    assert ck["step"] == start + 2 and ck["start"] == start
    assert lrs[-1] == pytest.approx(zsnr.LR * 2 / zsnr.ORDERED_WARMUP * zsnr.cosine_floor(start + 1, zsnr.DECAY_STEPS))
    # a checkpoint from before the start was saved keeps its step, and its warm-up never starts past it
    ck.pop("start")
    torch.save(ck, tmp_path / zsnr.CKPT_ORDERED)
    zsnr.train_unet_zsnr(cfg, minutes=0.0, ordered=True)
    ck = load_ckpt(tmp_path / zsnr.CKPT_ORDERED)
    assert ck["step"] == start + 3 and ck["start"] == start + 2 and lrs[-1] > 0


def test_base_export_leaves_the_unshipped_ordered_rebuild_out_of_toy_assets(tmp_path):
    """``--stage export`` copies the work folder's build log into toy_assets.json, but not the entry of the ordered
    zero-SNR stage, whose export goes to a staging folder and never into the package."""
    import json

    from toybuild.common import BuildConfig
    from toybuild.export import export_assets

    work, out = tmp_path / "work", tmp_path / "assets"
    work.mkdir()
    log = {"unet_zsnr": {"steps": 4160}, "unet_zsnr_ordered": {"steps": 5554}, "vae": {"psnr": 30.0}}
    (work / "build_log.json").write_text(json.dumps(log))
    assert export_assets(BuildConfig(work=str(work)), out) == {}  # no weights in this work folder: the log only
    assert json.loads((out / "toy_assets.json").read_text()) == {"unet_zsnr": {"steps": 4160}, "vae": {"psnr": 30.0}}
