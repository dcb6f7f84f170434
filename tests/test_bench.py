"""The benchmark scripts run end to end at tiny size (their numbers are printed, never asserted)."""

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_train  # noqa: E402


def _args(tiny_pipe_dir, tmp_path, *extra):
    return ["throughput", "--model", str(tiny_pipe_dir), "--data", "toy:faces", "--directions", "3", "--m", "2",
            "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), *extra]


def test_release_step_does_the_released_scripts_work_and_trains_only_the_direction_rows(tiny_pipe_dir, tmp_path):
    step = bench_train.ReleaseStep(bench_train.build_parser().parse_args(_args(tiny_pipe_dir, tmp_path)), 2)
    calls = {"vae": 0, "unet": 0, "unet_in_graph": 0}

    def on_unet(module, inputs, output):
        calls["unet"] += 1
        calls["unet_in_graph"] += output.sample.requires_grad

    step.pipe.vae.encoder.register_forward_hook(lambda *a: calls.__setitem__("vae", calls["vae"] + 1))
    step.pipe.unet.register_forward_hook(on_unet)
    before = step.table.detach().clone()
    assert math.isfinite(step(0)) and math.isfinite(step(1))
    # per step: one VAE encode (no latent cache), the empty prompt + M = 2 directions as separate UNet calls,
    # every one of them inside the autograd graph (the whole embedding table is the trainable parameter)
    assert calls == {"vae": 2, "unet": 6, "unet_in_graph": 6}
    changed = (step.table.detach() != before).any(1).nonzero().flatten().tolist()
    ids = step.pipe.tokenizer.convert_tokens_to_ids(step.tokens)
    assert changed and set(changed) <= set(ids)
    assert step.table.grad is None  # zeroed after the step, like the released script


def test_bench_train_throughput_times_every_contender(tiny_pipe_dir, tmp_path):
    out = tmp_path / "throughput.json"
    torch.manual_seed(0)
    assert bench_train.main(_args(tiny_pipe_dir, tmp_path, "--json", str(out))) == 0
    (row,) = json.loads(out.read_text())
    assert row["M"] == 2
    for who in ("batched", "official", "release"):
        assert row[f"s_per_step_{who}"] > 0 and row[f"edits_per_s_{who}"] > 0
    assert row["speedup"] == row["s_per_step_official"] / row["s_per_step_batched"]
    assert row["speedup_vs_release"] == row["s_per_step_release"] / row["s_per_step_batched"]


def test_to_score_summary_times_equal_learning_by_the_clock_not_by_score_noise():
    # identical learning per step (as batched with one anchor and the official schedule), the official slower;
    # the batched score at the official's best checkpoint is lower in the fourth digit
    scores = [1.0, 2.0, 3.0, 2.5]
    runs = {"batched-0": [{"step": 10 * (i + 1), "seconds": 1.0 * (i + 1), "score": v - (i == 2) * 1e-4}
                          for i, v in enumerate(scores)],
            "official-0": [{"step": 10 * (i + 1), "seconds": 1.5 * (i + 1), "score": v} for i, v in enumerate(scores)]}
    args = bench_train.build_parser().parse_args(["to-score", "--smooth", "1"])
    res = bench_train.summarize(runs, args)
    assert (res["target"], res["batched_s"], res["official_s"]) == (3.0, 3.0, 4.5) and res["ratio"] == 1.5
    args.tolerance = 0.0  # without a tolerance the batched run only "gets there" never
    assert bench_train.summarize(runs, args)["batched_s"] == float("inf")


def test_bench_compose_times_both_ways(tiny_analysed_run, capsys):
    import bench_compose

    assert bench_compose.main(["--run", str(tiny_analysed_run), "--steps", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("official loop") == 3 and '"compose_s"' in out


def test_bench_report_times_a_report(tiny_analysed_run, capsys):
    import bench_report

    assert bench_report.main(["--run", str(tiny_analysed_run), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "report of" in out and '"html_bytes"' in out


def test_bench_machine_times_the_yardstick_both_ways(tiny_pipe_dir, tmp_path, capsys):
    import bench_machine
    import pytest

    from noiseclr_lab.models import load_pipeline

    out = tmp_path / "machine.json"
    assert bench_machine.main(["--model", str(tiny_pipe_dir), "--batch", "2", "--repeats", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["batch"] == 2 and res["device"] == "cpu"
    for name in ("weights", "inputs"):
        assert len(res[f"{name}_all_s"]) == 2 and res[f"{name}_s"] > 0
    assert "with weight gradients" in capsys.readouterr().out
    unet = load_pipeline(str(tiny_pipe_dir), device="cpu").unet
    unet.conv_in.requires_grad_(False)  # a mixed state, as the module came, is given back
    before = [p.requires_grad for p in unet.parameters()]
    assert len(bench_machine.time_pass(unet, 2, True, 1, torch.device("cpu"))) == 1
    assert [p.requires_grad for p in unet.parameters()] == before and all(p.grad is None for p in unet.parameters())
    with pytest.raises(SystemExit, match="at least 1"):
        bench_machine.main(["--model", str(tiny_pipe_dir), "--repeats", "0"])
