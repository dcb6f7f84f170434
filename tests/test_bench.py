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
    assert bench_train.main(_args(tiny_pipe_dir, tmp_path, "--json", str(out), "--gradient-checkpointing")) == 0
    (row,) = json.loads(out.read_text())
    assert row["M"] == 2
    for who in ("batched", "official", "release"):
        assert row[f"s_per_step_{who}"] > 0 and row[f"edits_per_s_{who}"] > 0
        assert row[f"tflop_per_s_{who}"] > 0 and row[f"recomputed_share_{who}"] > 0  # checkpointing repeats work
    assert row["speedup"] == row["s_per_step_official"] / row["s_per_step_batched"]
    assert row["speedup_vs_release"] == row["s_per_step_release"] / row["s_per_step_batched"]
    # gradient caching over directions does the same model work; its extra forward pass counts as recomputed
    assert bench_train.main(_args(tiny_pipe_dir, tmp_path, "--json", str(out), "--gradient-checkpointing",
                                  "--schedules", "batched", "--direction-chunk", "1")) == 0
    (chunked,) = json.loads(out.read_text())
    assert set(chunked) >= {"s_per_step_batched"} and "speedup" not in chunked  # one contender: no ratio
    work = [r["tflop_per_s_batched"] * r["s_per_step_batched"] for r in (row, chunked)]
    assert math.isclose(*work, rel_tol=1e-9) and chunked["recomputed_share_batched"] > row["recomputed_share_batched"]


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


def test_step_flops_leave_out_what_gradient_checkpointing_recomputes(tiny_pipe):
    """MFU's numerator is the step's own work: with gradient checkpointing (diffusers' UNet, transformers' text
    encoder) the forward passes run again in the backward pass are counted apart (HFU adds them), so the model
    FLOPs equal the count without checkpointing; the checkpoint functions are put back afterwards."""
    from noiseclr_lab.perf import count_flops, count_step_flops

    unet, te = tiny_pipe.unet, tiny_pipe.text_encoder
    ids = tiny_pipe.tokenizer(["a face", "a cat"], padding="max_length", return_tensors="pt").input_ids
    z, t = torch.randn(2, unet.config.in_channels, 8, 8), torch.tensor([500])
    for m in (unet, te):
        m.requires_grad_(False)
    te.get_input_embeddings().weight.requires_grad_(True)

    def step():
        unet(z, t, encoder_hidden_states=te(ids)[0]).sample.square().mean().backward()

    plain = count_flops(step)
    assert count_step_flops(step, [unet, te]) == (plain, 0.0)
    unet.enable_gradient_checkpointing()
    (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()  # transformers 5 / 4
    unet.train(), te.train()
    funcs = {id(m): m.__dict__.get("_gradient_checkpointing_func") for mod in (unet, te) for m in mod.modules()}
    everything = count_flops(step)
    model, recomputed = count_step_flops(step, [unet, te])
    assert model == plain and recomputed > 0 and everything == model + recomputed
    assert {id(m): m.__dict__.get("_gradient_checkpointing_func") for mod in (unet, te) for m in mod.modules()} == funcs


def test_cpu_attention_counts_as_on_a_gpu():
    """torch's flop counter knows only the CUDA attention kernels; ``count_flops`` teaches it the CPU's, with the
    same formula: 4 * B * H * Lq * Lk * E forward, 2.5 times that backward."""
    import torch.nn.functional as F

    from noiseclr_lab.perf import count_flops

    q = torch.randn(2, 4, 64, 32, requires_grad=True, device="cpu")
    k, v = torch.randn(2, 4, 48, 32), torch.randn(2, 4, 48, 32)
    fwd = 4 * 2 * 4 * 64 * 48 * 32
    with torch.no_grad():
        assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == fwd
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == fwd * 3.5


def test_count_train_work_on_the_meta_device():
    """SD 1.5's step counted in shapes only: checkpointing recomputes about a third more and
    keeps far fewer activations; the real attention function is put back."""
    import count_train_work
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention
    (one,) = count_train_work.count([1], 1, torch.bfloat16)
    assert sdpa is F.scaled_dot_product_attention
    # the unedited call (a forward pass of 0.80 TFLOP: SD 1.5 at 512 px), the edited one (a forward pass and its
    # backward pass to the inputs, which attention's backward makes a little more than a forward): 3.1 passes
    assert 3.0 * 0.80 < one["model_tflop"] < 3.3 * 0.80
    assert one["recomputed_tflop_no_ckpt"] == 0.0 and 0.2 < one["recomputed_tflop_ckpt"] / one["model_tflop"] < 0.5
    assert one["saved_gib_ckpt"] < one["saved_gib_no_ckpt"] / 4
