"""The CLIP analysis end to end: a tiny random SD pipeline and a tiny random open_clip built from a config
(the non-toy path), the toy path through the CLI, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from noiseclr_lab.analysis.clip import load_clip_model
from noiseclr_lab.cli import main
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.workflows import analyze

SMALL = dict(scales=(-3.0, 10.0), seeds=3, num_inference_steps=4, edit_start=0, device="cpu", progress=False)


@pytest.fixture
def run(planted_run):
    """A private copy of the planted run with a human label on the planted direction."""
    bank = DirectionBank.load(planted_run / "directions.safetensors")
    bank.labels = ["my label", ""]
    bank.save(planted_run / "directions.safetensors")
    return planted_run


def test_analyze_on_a_tiny_random_model_and_clip(run, tiny_clip_name, tmp_path):
    vocab = tmp_path / "v.toml"
    vocab.write_text('[groups]\ncolour = ["red", "green", "blue"]\nlight = ["dark", "bright"]\n')
    torch.manual_seed(0)  # (NAME:random gives the same weights whatever the global generator holds)
    res = analyze(run, clip=f"{tiny_clip_name}:random", vocab=vocab, **SMALL)
    data = json.loads((run / "analysis" / "analysis.json").read_text())
    assert data == json.loads(json.dumps(res.data)) and data["schema"] == "noiseclr_lab.analysis/1"
    assert data["attributes"] == ["colour=red", "colour=green", "colour=blue", "light=dark", "light=bright"]
    planted, null = data["directions"]
    for d in (planted, null):
        assert set(d["rescoring"]) == set(data["attributes"]) and d["sign"] in (-1, 1)
        assert len(d["effect_curve"]["clip_distance"]) == 2 and len(d["preservation"]["pixel_rmse"]) == 2
    # the null direction changes nothing: no re-scoring change, full preservation, no consistency
    assert all(v == 0 for v in null["rescoring"].values()) and null["preservation"]["pixel_rmse"] == [0.0, 0.0]
    assert null["preservation"]["clip_similarity"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert null["consistency"] == 0.0 and null["confidence"] == pytest.approx(0.0, abs=1e-6)
    assert planted["preservation"]["pixel_rmse"][1] > 0 and planted["consistency"] > 0
    assert data["lpips"]["status"] in ("ok", "skipped") and (data["lpips"]["status"] == "ok" or data["lpips"]["reason"])
    assert all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in res.figures)
    # auto-labels are stored as suggestions; the human label stays
    bank = DirectionBank.load(run / "directions.safetensors")
    assert bank.labels == ["my label", ""] and bank.suggestions[0].startswith(planted["suggested_label"])
    # the sweep and the CLIP features are cached: a second analysis reads them and agrees
    cached = list((run / "analysis" / "sweeps").glob("*/features-*/d0001.safetensors"))
    assert len(cached) == 1
    torch.manual_seed(0)
    again = analyze(run, clip=f"{tiny_clip_name}:random", vocab=vocab, **SMALL)
    assert again.data["directions"] == res.data["directions"]
    assert len(list((run / "analysis" / "sweeps").glob("*/features-*"))) == 1  # the same CLIP: its features reused
    torch.manual_seed(1)  # NAME:random is the same CLIP whatever the global generator: its features reused
    analyze(run, clip=f"{tiny_clip_name}:random", vocab=vocab, **SMALL)
    assert len(list((run / "analysis" / "sweeps").glob("*/features-*"))) == 1
    from safetensors.torch import save_file

    from noiseclr_lab.analysis.clip import load_clip_model

    other = {k: v + 0.01 for k, v in load_clip_model(f"{tiny_clip_name}:random", device="cpu").model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "other.safetensors"))
    analyze(run, clip=f"{tiny_clip_name}:{tmp_path / 'other.safetensors'}", vocab=vocab, **SMALL)  # other weights:
    assert len(list((run / "analysis" / "sweeps").glob("*/features-*"))) == 2  # its own features, the same images
    assert len(list((run / "analysis" / "sweeps").iterdir())) == 1


def test_analyze_reads_the_sweep_evaluate_gt_cached(run, tiny_clip_name):
    from test_workflows import RegionColourReader

    from noiseclr_lab.workflows import evaluate_gt

    evaluate_gt(run, None, reader=RegionColourReader(), baselines=(), **SMALL)
    sweeps = list((run / "analysis" / "sweeps").iterdir())
    assert len(sweeps) == 1  # a fresh copy of the run: only this evaluation's sweep
    stamp = {p: p.stat().st_mtime_ns for p in sweeps[0].glob("*.safetensors")}
    analyze(run, clip=f"{tiny_clip_name}:random", vocab="art", prompt="", **SMALL)
    assert list((run / "analysis" / "sweeps").iterdir()) == sweeps  # the same key: evaluate-gt's sweep
    assert {p: p.stat().st_mtime_ns for p in sweeps[0].glob("*.safetensors")} == stamp  # read, not regenerated


def test_bad_input_is_one_error_and_writes_no_analysis(run, tiny_clip_name, tmp_path, capsys):
    out = run / "analysis" / "analysis.json"
    with pytest.raises(NoiseCLRLabError, match="Unknown CLIP model 'ViT-Nope'; available: toy, .*ViT-L-14"):
        analyze(run, clip="ViT-Nope:openai", **SMALL)
    with pytest.raises(NoiseCLRLabError, match="needs a pretrained tag"):
        analyze(run, clip="ViT-B-32", **SMALL)
    with pytest.raises(NoiseCLRLabError, match="neither a weights file nor a pretrained tag of ViT-B-32"):
        analyze(run, clip="ViT-B-32:nope", **SMALL)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(NoiseCLRLabError, match="at least two"):
        analyze(run, clip=f"{tiny_clip_name}:random", vocab=empty, **SMALL)
    with pytest.raises(NoiseCLRLabError, match="not a run folder"):
        analyze(tmp_path, **SMALL)
    other = DirectionBank.load(run / "directions.safetensors")
    DirectionBank(torch.zeros(2, 16), other.tokens, base_model=other.base_model).save(run / "directions.safetensors")
    with pytest.raises(NoiseCLRLabError, match="hidden size 16 .* text encoder has 32"):
        analyze(run, clip=f"{tiny_clip_name}:random", vocab="faces", **SMALL)
    assert not out.exists()
    capsys.readouterr()
    assert main(["analyze", str(run), "--clip", "ViT-Nope:x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("noiseclr-lab: error: Unknown CLIP model")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--seeds", "many"])
    assert exc.value.code == 2


def test_offline_missing_weights_name_the_fetch_command(monkeypatch):
    import open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tag = open_clip.list_pretrained_tags_by_model("RN50")[0]
    try:
        load_clip_model(f"RN50:{tag}")
    except NoiseCLRLabError as e:
        assert "not in the local cache" in str(e) and "create_model_and_transforms('RN50'" in str(e)
    else:
        pytest.skip("RN50 weights are in this machine's cache")


def test_toy_clip_reader_reads_toy_factors():
    """The default CLIP and vocabulary on the toy world: zero-shot reading of rendered faces."""
    import numpy as np

    from noiseclr_lab.analysis.clip import ClipReader
    from noiseclr_lab.analysis.vocab import load_vocabulary
    from noiseclr_lab.toyworld import get_domain

    dom = get_domain("faces")
    recs = dom.sample(np.random.default_rng(3), 24)
    imgs = torch.from_numpy(np.stack([np.asarray(im) for im in dom.render(recs)])).permute(0, 3, 1, 2) / 255
    reader = ClipReader(load_clip_model("toy", device="cpu"), load_vocabulary("toy:faces"))
    probs = reader.read(imgs)
    for f in ("hair", "glasses", "background"):
        pred = probs[f].argmax(1)
        truth = [dom.factor(f).values.index(r[f]) for r in recs]
        assert (pred == np.array(truth)).mean() >= 0.8, f


@pytest.mark.slow
def test_sd15_with_openclip_vit_l14_where_cached(tmp_path):
    """The real path: SD 1.5 and OpenCLIP ViT-L/14 from the local caches (skipped where they are not)."""
    from noiseclr_lab.models import load_pipeline

    try:
        pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
        load_clip_model("ViT-L-14:laion2b_s32b_b82k")
    except NoiseCLRLabError as e:
        pytest.skip(str(e))
    from noiseclr_lab.directions import tokenizer_fingerprint

    bank = DirectionBank.random(2, pipe.text_encoder.config.hidden_size, std=0.4, base_model=
                                "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer))
    bank.save(tmp_path / "run" / "directions.safetensors")
    res = analyze(tmp_path / "run", clip="ViT-L-14:laion2b_s32b_b82k", vocab="faces", prompt="a photo of a person",
                  scales=(-4.0, 4.0), seeds=2, num_inference_steps=10)
    assert len(res.directions) == 2 and res.path.is_file()


def test_composition_of_a_planted_and_a_null_direction(run, tiny_clip_name):
    """Adding the null direction leaves the planted one's effect intact (no interference), it changes no
    pixel (empty locality map, no overlap), and analysis.json records the composition or why it was skipped."""
    from noiseclr_lab.analysis.clip import ClipReader
    from noiseclr_lab.analysis.composition import composition_analysis
    from noiseclr_lab.analysis.sweep import SweepSettings
    from noiseclr_lab.analysis.vocab import load_vocabulary
    from noiseclr_lab.models import load_pipeline

    bank = DirectionBank.load(run / "directions.safetensors")
    pipe = load_pipeline(bank.base_model, device="cpu")
    torch.manual_seed(0)
    reader = ClipReader(load_clip_model(f"{tiny_clip_name}:random", device="cpu"), load_vocabulary("art"))
    s = SweepSettings(scales=(10.0,), seeds=3, num_inference_steps=4, guidance_scale=3.0, edit_start=1)
    comp = composition_analysis(pipe, bank, reader, s, members=[0, 1], scales=[10.0, 10.0], own_attr=[0, 0],
                                progress=False)
    assert comp["tokens"] == ["<planted>", "<null>"] and comp["interference"][0][0] is None
    assert comp["interference"][0][1] == pytest.approx(0.0, abs=1e-3)  # the null direction does not interfere
    assert comp["overlap_pixels"][0][1] == pytest.approx(0.0, abs=1e-6)  # ... nor change any place
    null_map = torch.tensor(comp["locality_pixels"][1])
    assert null_map.abs().max() < 1e-5 and torch.tensor(comp["locality_pixels"][0]).max() > 1e-4
    assert len(comp["additivity_points"]) == 2
    # any reader works (the toy probe checks composition against ground truth); additivity needs CLIP features
    from test_workflows import RegionColourReader

    plain = composition_analysis(pipe, bank, RegionColourReader(), s, members=[0, 1], scales=[10.0, 10.0],
                                 progress=False, return_arrays=True)
    assert plain["additivity"] == [[None, None], [None, None]]
    assert plain["interference"][0][1] == pytest.approx(0.0, abs=1e-3)
    arr = plain["arrays"]
    assert arr["p_base"].shape == (3, 12) and arr["p_alone"].shape == (2, 3, 12) and arr["p_pair"].shape == (2, 2, 3, 12)
    res = analyze(run, clip=f"{tiny_clip_name}:random", vocab="art", calibration_target=0.001, **SMALL)
    reached = [d["calibration_reached"] for d in res.directions]
    assert reached[1] is False  # the null direction never reaches any target
    assert res.data["composition"] == {"skipped": f"{sum(reached)} direction(s) reach the calibration target; "
                                                  "composition needs two"}
    bank = DirectionBank.load(run / "directions.safetensors")
    assert bank.calibrated_scales[1] is None  # an unreached direction stores no calibrated scale
    with pytest.raises(NoiseCLRLabError, match="calibration target"):
        analyze(run, clip=f"{tiny_clip_name}:random", calibration_target=0.0, **SMALL)


def test_two_processes_analyze_the_same_as_one(planted_source, tmp_path):
    """`torchrun --nproc_per_node 2 -m noiseclr_lab.cli analyze` (gloo on the CPU): each process makes its
    slice of the sweep and of the composition batches; the result equals one process's."""
    import os
    import socket
    import subprocess
    import sys

    from noiseclr_lab.directions import tokenizer_fingerprint
    from noiseclr_lab.models import load_pipeline

    pipe = load_pipeline(str(planted_source.parent / "sd"), device="cpu")
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    emb = torch.randn(3, table.shape[1], generator=torch.Generator().manual_seed(1)) * table.norm(dim=1).mean() * 3
    bank = DirectionBank(emb, ["<a>", "<b>", "<c>"], base_model=str(planted_source.parent / "sd"),
                         tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer))
    for name in ("one", "two"):
        bank.save(tmp_path / name / "directions.safetensors")
    args = ["analyze", "--clip", "toy", "--vocab", "art", "--seeds", "2", "--steps", "3", "--scales=-8,8",
            "--calibration-target", "0.001", "--device", "cpu"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    one = subprocess.run([sys.executable, "-m", "noiseclr_lab.cli", args[0], str(tmp_path / "one"), *args[1:]],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          port, "-m", "noiseclr_lab.cli", args[0], str(tmp_path / "two"), *args[1:]],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "analysis" / "analysis.json").read_text())
    b = json.loads((tmp_path / "two" / "analysis" / "analysis.json").read_text())
    assert len(a["composition"]["tokens"]) >= 2  # the composition ran (and was sharded too)
    assert b["directions"] == a["directions"] and b["composition"] == a["composition"]
    assert two.stdout.count("wrote ") == 1  # one report, printed by the main process
    # speed: every image of the sweep was made once, by one process or shared by two (issue 20)
    assert a["speed"]["images"] == b["speed"]["images"] == 2 + 3 * 2 * 2
    assert a["speed"]["processes"] == 1 and b["speed"]["processes"] == 2
    assert sum(p["images"] for p in b["speed"]["by_process"]) == 14 and "images/s" in two.stdout
    from safetensors import safe_open

    def makers(folder):
        out = set()
        for p in folder.rglob("*.safetensors"):
            if p.parent.name.startswith(("features-", "clip-text")) or p.name.startswith("clip-text"):
                continue
            with safe_open(str(p), "pt") as fh:
                out.add((fh.metadata() or {}).get("made_by"))
        return out

    sweeps = tmp_path / "two" / "analysis" / "sweeps"
    assert makers(sweeps) == {"0/2", "1/2"}  # both processes made batches (sweep and composition)
    assert makers(tmp_path / "one" / "analysis" / "sweeps") == {"0/1"}
    # a failure on one process (its cached batch is damaged) is one error on every process, not a hang
    damaged = next(sweeps.glob("*/d0000.safetensors"))  # batch 1: process 1's
    damaged.write_bytes(b"garbage")
    bad = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          port, "-m", "noiseclr_lab.cli", args[0], str(tmp_path / "two"), *args[1:]],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0
    assert "noiseclr-lab: error: The sharded analysis failed on process 1: The cached sweep file" in bad.stderr
