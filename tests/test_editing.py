"""EditPipeline and inversion on a tiny random Stable Diffusion: batching is exact, windows and scales behave."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from noiseclr_lab.cli import main
from noiseclr_lab.directions import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline, invert, prepare_image
from noiseclr_lab.errors import NoiseCLRLabError

STEPS = 8


def _bank(pipe, k=4):
    return DirectionBank.random(k, 32, std=1.0, seed=2, tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer),
                                labels=["smile", "glasses", "", "hair"][:k])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _run(ep, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    return ep(output_type="pt", generator=kw.pop("generator", _gen()), **kw).images


@pytest.mark.parametrize("negative", [None, "blurry"])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_batched_equals_reference_loop(tiny_pipe, negative, guidance):
    bank = _bank(tiny_pipe)
    fast, ref = EditPipeline(tiny_pipe, bank), EditPipeline(tiny_pipe, bank, mode="reference")
    kw = dict(prompt=["a face", "a shape"], edits={"<d1>": 3.0, "glasses": -2.0, "hair": 1.5},
              windows={"<d1>": (2, 6)}, guidance_scale=guidance, negative_prompt=negative,
              generator=[_gen(0), _gen(1)], guidance_rescale=0.5 if negative else 0.0)
    a = fast(output_type="pt", num_inference_steps=STEPS, **kw)
    kw["generator"] = [_gen(0), _gen(1)]
    b = ref(output_type="pt", num_inference_steps=STEPS, **kw)
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert a.unet_calls == STEPS and b.unet_calls > 3 * STEPS
    rows = 2 * (1 + (guidance > 1) + (negative is not None or guidance == 1.0) + 3)  # images x terms
    assert fast.work == ref.work == {"unet_rows": (STEPS - 4) * rows + 4 * (rows - 2), "decoded": 2}  # <d1>: 4 steps


def test_channels_last_and_compile_change_no_image(tiny_pipe):
    bank = _bank(tiny_pipe)
    plain = _run(EditPipeline(tiny_pipe, bank), edits={"<d1>": 3.0}, guidance_scale=5.0)
    nhwc = EditPipeline(tiny_pipe, bank, channels_last=True)
    assert tiny_pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_run(nhwc, edits={"<d1>": 3.0}, guidance_scale=5.0), plain, atol=1e-5, rtol=1e-4)
    traced = EditPipeline(tiny_pipe, bank, compile="aot-eager")  # the edit loop's UNet call through TorchDynamo
    assert traced._unet is not tiny_pipe.unet
    torch.testing.assert_close(_run(traced, edits={"<d1>": 3.0}, guidance_scale=5.0), plain, atol=1e-5, rtol=1e-4)
    with pytest.raises(NoiseCLRLabError, match="compile must be one of"):
        EditPipeline(tiny_pipe, bank, compile="fastest")


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_unedited_matches_diffusers_and_zero_scale_is_identity(tiny_pipe, rescale):
    """Without edits the image is diffusers' own StableDiffusionPipeline's, guidance_rescale included."""
    from conftest import make_tiny_pipeline
    from diffusers import DDIMScheduler

    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    plain = _run(ep, prompt="a face", guidance_rescale=rescale)
    ref = make_tiny_pipeline()
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config)
    expected = ref("a face", num_inference_steps=STEPS, generator=_gen(), output_type="pt",
                   guidance_rescale=rescale).images
    assert torch.allclose(plain, expected, atol=1e-6)
    assert torch.equal(_run(ep, prompt="a face", edits={"<d1>": 0.0, "glasses": 0.0}, guidance_rescale=rescale), plain)
    edited = _run(ep, prompt="a face", edits={"<d1>": 4.0}, guidance_rescale=rescale)
    assert not torch.allclose(edited, plain, atol=1e-4)
    if rescale:
        assert not torch.allclose(plain, _run(ep, prompt="a face"), atol=1e-4)
        assert not torch.allclose(edited, _run(ep, prompt="a face", edits={"<d1>": 4.0}), atol=1e-4)


def test_split_parts_cover_the_rows_in_order():
    from noiseclr_lab.perf import concurrent_parts, split_parts

    assert split_parts(31, 2) == [(0, 31)]  # two parts of 16 do not fit: one call
    assert split_parts(144, 1) == [(0, 144)]
    assert split_parts(144, 2) == [(0, 36), (36, 72), (72, 108), (108, 144)]  # <= 48 rows, a multiple of 2 parts
    # on 16 threads 144 rows run as 8 parts of 2 threads each (9 parts of 16 rows would leave 7 threads idle)
    assert concurrent_parts(144, 16) == 8 and len(split_parts(144, 16)) == 8
    assert concurrent_parts(150, 10) == 5 and concurrent_parts(144, 7) == 7 and concurrent_parts(40, 16) == 2
    for n, w in [(32, 2), (50, 3), (97, 2), (500, 4), (40, 16), (1000, 16)]:
        parts = split_parts(n, w)
        assert parts[0][0] == 0 and parts[-1][1] == n and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        used = concurrent_parts(n, w)
        assert w % used == 0 and all(16 <= b - a <= 48 for a, b in parts) and len(parts) % used == 0


def test_cpu_split_runs_rows_on_worker_threads_without_autograd():
    import threading

    from noiseclr_lab.perf import split_rows

    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(64, 8)
    seen = []

    def fn(a, b):
        seen.append((threading.current_thread().name, torch.is_grad_enabled(), torch.get_num_threads()))
        return x[a:b] @ w

    out = split_rows(fn, 64, 2)
    torch.testing.assert_close(out, (x @ w).detach())
    assert not out.requires_grad and len(seen) == 2
    assert all(name.startswith("noiseclr-rows") and not grad and threads == 1 for name, grad, threads in seen)
    seen.clear()
    split_rows(fn, 36, 4)  # 4 threads, room for 2 parts of 16+ rows: 2 threads each
    assert [threads for _, _, threads in seen] == [2, 2]
    seen.clear()
    split_rows(fn, 64, 1)  # one worker: the caller's own call
    assert seen == [(threading.current_thread().name, True, torch.get_num_threads())]

    def broken(a, b):
        raise ValueError(f"rows {a}-{b}")

    with pytest.raises(ValueError, match="rows"):
        split_rows(broken, 64, 2)


def test_cpu_split_stays_off_where_workers_would_not_inherit_the_callers_state(monkeypatch):
    import os
    import threading

    from torch.utils.flop_counter import FlopCounterMode

    from noiseclr_lab.perf import CPU_SPLIT_ENV, cpu_split_workers, split_rows

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            assert cpu_split_workers("cpu") == 2
            assert cpu_split_workers("cpu", enabled=False) == 1 and cpu_split_workers("meta") == 1
            with FlopCounterMode(display=False):  # per thread: it would miss the workers' FLOPs
                assert cpu_split_workers("cpu") == 1
            with torch.autocast("cpu", dtype=torch.bfloat16):  # the workers would run in fp32
                assert cpu_split_workers("cpu") == 1
            monkeypatch.setenv(CPU_SPLIT_ENV, "0")
            assert cpu_split_workers("cpu") == 1
            monkeypatch.delenv(CPU_SPLIT_ENV)
        assert cpu_split_workers("cpu") == 1  # autograd on: the parts would lose their graph

        def fresh_thread_threads() -> int:
            seen = []
            th = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
            th.start()
            th.join()
            return seen[0]

        default = fresh_thread_threads()
        x = torch.randn(64, 8)
        with torch.no_grad():
            split_rows(lambda a, b: x[a:b] * 2, 64, 2)
        assert fresh_thread_threads() == default  # the workers' count is not left as the default of new threads
        if hasattr(os, "fork"):  # a child forked after the pool exists makes its own (the parent's threads are gone)
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(1) as pool:
                assert pool.apply_async(_split_in_child).get(timeout=60) == 64
    finally:
        torch.set_num_threads(before)


def _split_in_child() -> int:
    from noiseclr_lab.perf import split_rows

    torch.set_num_threads(2)
    with torch.no_grad():
        return len(split_rows(lambda a, b: torch.ones(b - a, 2), 64, 2))


def test_cpu_split_changes_no_image(tiny_pipe):
    """12 images x 3 terms = 36 UNet rows a step: split in two parts on 2 worker threads (pinned here)."""
    import threading

    bank = _bank(tiny_pipe)
    before = torch.get_num_threads()
    calls = []  # (thread name, rows) of every UNet call
    hook = tiny_pipe.unet.register_forward_pre_hook(
        lambda _m, args: calls.append((threading.current_thread().name, len(args[0]))))
    torch.set_num_threads(2)
    try:
        kw = dict(prompt=["a face"] * 12, edits={"<d1>": [float(v) for v in range(-6, 6)]}, guidance_scale=5.0,
                  generator=[_gen(i) for i in range(12)])
        split = _run(EditPipeline(tiny_pipe, bank), **kw)
        split_calls, calls[:] = list(calls), []
        kw["generator"] = [_gen(i) for i in range(12)]
        whole = _run(EditPipeline(tiny_pipe, bank, cpu_split=False), **kw)
    finally:
        torch.set_num_threads(before)
        hook.remove()
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-4)
    assert {rows for _, rows in split_calls} == {18} and all(n.startswith("noiseclr-rows") for n, _ in split_calls)
    assert len(split_calls) == 2 * len(calls) and {rows for _, rows in calls} == {36}


def test_cpu_split_decodes_large_batches_in_parts(tiny_pipe):
    """40 latents decode as two parts of 20 on worker threads (2 threads pinned here), the same images as one
    call; 12 decode in one call."""
    import threading

    calls = []  # (thread name, images) of every VAE decoder call
    hook = tiny_pipe.vae.decoder.register_forward_pre_hook(
        lambda _m, args: calls.append((threading.current_thread().name, len(args[0]))))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        side = tiny_pipe.unet.config.sample_size
        z = torch.randn(40, tiny_pipe.vae.config.latent_channels, side, side, generator=_gen(0))
        split = EditPipeline(tiny_pipe).decode(z, "pt")
        split_calls, calls[:] = list(calls), []
        whole = EditPipeline(tiny_pipe, cpu_split=False).decode(z, "pt")
        whole_calls, calls[:] = list(calls), []
        EditPipeline(tiny_pipe).decode(z[:12], "pt")
    finally:
        torch.set_num_threads(before)
        hook.remove()
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-4)
    assert sorted(n for _, n in split_calls) == [20, 20] and all(t.startswith("noiseclr-rows") for t, _ in split_calls)
    assert [n for _, n in whole_calls] == [40] and [n for _, n in calls] == [12]
    assert not any(t.startswith("noiseclr-rows") for t, _ in whole_calls + calls)


def test_windows(tiny_pipe):
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    plain = _run(ep, prompt="a face")
    # an empty window, or one that ends where sampling ends, applies nothing
    assert torch.equal(_run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": (STEPS, STEPS)}), plain)
    assert torch.equal(_run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": (3, 3)}), plain)
    early = _run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": (0, 2)})
    full = _run(ep, prompt="a face", edits={"<d2>": 5.0})
    assert not torch.allclose(early, plain, atol=1e-5) and not torch.allclose(early, full, atol=1e-5)


def test_official_windows_are_inclusive(tiny_pipe):
    """The released pipeline edits on start_step <= i <= end_step; official_window makes that our [s, e + 1)."""
    from noiseclr_lab.editing import official_window

    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    assert official_window(2, 4) == (2, 5)
    inclusive = _run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": official_window(2, 4)})
    assert torch.equal(inclusive, _run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": (2, 5)}))
    assert not torch.allclose(inclusive, _run(ep, prompt="a face", edits={"<d2>": 5.0}, windows={"<d2>": (2, 4)}),
                              atol=1e-6)
    with pytest.raises(NoiseCLRLabError, match="start_step <= end_step"):
        official_window(5, 2)


def test_a_stopped_run_continues_to_the_same_image(tiny_pipe):
    """stop_step k + latents/start_step k reproduce one uninterrupted run (the evaluation shares warm-ups)."""
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    edit = dict(edits={"<d2>": 5.0}, windows={"<d2>": (3, STEPS)})
    full = _run(ep, prompt="a face", **edit)
    warm = ep("a face", num_inference_steps=STEPS, generator=_gen(), stop_step=3, output_type="latent").images
    cont = ep("a face", num_inference_steps=STEPS, latents=warm, start_step=3, output_type="pt", **edit).images
    assert torch.allclose(cont, full, atol=1e-5)
    with pytest.raises(NoiseCLRLabError, match="start_step"):
        ep("a face", num_inference_steps=STEPS, start_step=3)  # nothing to continue from
    with pytest.raises(NoiseCLRLabError, match="stop_step"):
        ep("a face", num_inference_steps=STEPS, generator=_gen(), stop_step=STEPS + 1)


def test_composition_is_not_either_edit_alone(tiny_pipe):
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    a, b = _run(ep, edits={"<d1>": 3.0}), _run(ep, edits={"<d2>": 3.0})
    both = _run(ep, edits={"<d1>": 3.0, "<d2>": 3.0})
    assert not torch.allclose(both, a, atol=1e-5) and not torch.allclose(both, b, atol=1e-5)


def test_bad_edit_inputs(tiny_pipe):
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    with pytest.raises(NoiseCLRLabError, match=r"Unknown direction 'wings'; known: <d1> \(smile\)"):
        ep(edits={"wings": 1.0}, num_inference_steps=STEPS)
    with pytest.raises(NoiseCLRLabError, match=r"outside \[0, 8\]"):
        ep(edits={"<d1>": 1.0}, windows={"<d1>": (2, 9)}, num_inference_steps=STEPS)
    with pytest.raises(NoiseCLRLabError, match="not among the edits"):
        ep(edits={"<d1>": 1.0}, windows={"<d2>": (0, 2)}, num_inference_steps=STEPS)
    with pytest.raises(NoiseCLRLabError, match="output_type"):
        ep(num_inference_steps=STEPS, output_type="jpeg")
    with pytest.raises(NoiseCLRLabError, match=r"guidance_rescale is a share in \[0, 1\], got 1.5"):
        ep(num_inference_steps=STEPS, guidance_rescale=1.5)
    other = DirectionBank.random(2, 48, base_model="sd-2.1")
    with pytest.raises(NoiseCLRLabError, match=r"hidden size 48 \(base model sd-2.1\)"):
        EditPipeline(tiny_pipe, other)


def test_image_preparation_handles_modes_and_orientation(tmp_path):
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    img, notes = prepare_image(rgba, 16)
    assert img.size == (16, 16) and img.mode == "RGB" and np.asarray(img).min() > 240  # transparent -> white
    assert any("transparency" in n for n in notes) and any("centre-cropped 40x20" in n for n in notes)
    gray16 = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16))
    img, notes = prepare_image(gray16, 16)
    assert img.mode == "RGB" and any("8-bit" in n for n in notes)
    assert prepare_image(Image.new("L", (16, 16), 7), 16)[0].getpixel((3, 3)) == (7, 7, 7)
    assert prepare_image(Image.new("P", (16, 16)), 16)[0].mode == "RGB"
    # EXIF orientation 6 (rotate 90 cw): a 30x20 file displays as 20x30; its red left half ends up on top
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:, :15] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    img, notes = prepare_image(tmp_path / "rot.jpg", 20)
    assert any("EXIF orientation 6" in n for n in notes)
    top, bottom = np.asarray(img)[2].mean(0), np.asarray(img)[-3].mean(0)
    assert top[0] > 200 and bottom[0] < 60
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(NoiseCLRLabError, match="Cannot read image"):
        prepare_image(tmp_path / "bad.png", 16)
    with pytest.raises(NoiseCLRLabError, match="does not exist"):
        prepare_image(tmp_path / "missing.png", 16)


def test_inversion_round_trip_and_null_text_closer(tiny_pipe):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    ddim = invert(tiny_pipe, img, num_inference_steps=STEPS, progress=False)
    assert ddim.latents.shape[0] == STEPS + 1 and ddim.null_embeddings is None
    nt = invert(tiny_pipe, img, num_inference_steps=STEPS, method="null-text", null_text_iters=10, progress=False)
    # every step's mismatch with the inverted path is no worse after optimising, and better somewhere
    before, after = nt.null_losses.unbind(1)
    assert (after <= before).all() and (after < before).any()
    assert nt.null_embeddings.shape == (STEPS, 1, 77, 32)
    # sampling with the stored per-step embeddings replays the optimised path: its last step lands where the
    # optimisation measured (each step's embedding is its own copy, not moved by the next step's optimiser)
    rec = ep(inversion=nt, output_type="latent").images
    assert abs((rec - nt.latents[0]).pow(2).mean().item() - after[-1].item()) < 1e-4
    # edits on an inverted image move it; zero edits reproduce the plain reconstruction
    plain = ep(inversion=ddim, output_type="pt").images
    assert torch.equal(ep(inversion=ddim, edits={"<d1>": 0.0}, output_type="pt").images, plain)
    assert not torch.allclose(ep(inversion=nt, edits={"<d1>": 3.0}, output_type="pt").images,
                              ep(inversion=nt, output_type="pt").images, atol=1e-5)
    # several images invert and edit as one batch, each as it would alone
    pair = invert(tiny_pipe, [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], num_inference_steps=STEPS, progress=False)
    both = ep(inversion=pair, edits={"<d1>": 2.0}, output_type="pt").images
    alone = ep(inversion=ddim, edits={"<d1>": 2.0}, output_type="pt").images
    assert both.shape[0] == 2 and torch.allclose(both[0], alone[0], atol=1e-4)  # batch-size-dependent CPU kernels


def test_p2p_null_text_inversion_reconstructs_under_cfg(tiny_pipe):
    """Prompt-to-Prompt's variant: sampled with CFG 7.5 and the prompt, its per-step unconditionals keep the path
    on the inversion, where the same DDIM inversion sampled with CFG 7.5 and E("") drifts."""
    import dataclasses

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    p2p = invert(tiny_pipe, img, num_inference_steps=STEPS, method="null-text-p2p", prompt="a face",
                 null_text_iters=10, progress=False)
    assert p2p.guidance_scale == 7.5 and p2p.prompt == "a face" and p2p.null_embeddings.shape == (STEPS, 1, 77, 32)
    target = p2p.latents[0]
    rec = ep(inversion=p2p, output_type="latent").images  # the inversion's prompt and CFG are used
    drift = ep(inversion=dataclasses.replace(p2p, null_embeddings=None), output_type="latent").images
    err, err_plain = (rec - target).pow(2).mean().item(), (drift - target).pow(2).mean().item()
    assert err < 0.6 * err_plain, (err, err_plain)
    assert abs(err - p2p.null_losses[-1, 1].item()) < 1e-4  # the replay is the optimised path
    assert torch.equal(ep(inversion=p2p, prompt="a face", output_type="latent").images, rec)
    assert not torch.allclose(ep(inversion=p2p, edits={"<d1>": 3.0}, output_type="pt").images,
                              ep(inversion=p2p, output_type="pt").images, atol=1e-5)
    with pytest.raises(NoiseCLRLabError, match="guidance_scale must be > 1"):
        invert(tiny_pipe, img, num_inference_steps=STEPS, method="null-text-p2p", guidance_scale=1.0, progress=False)
    with pytest.raises(NoiseCLRLabError, match="null-text-p2p"):
        invert(tiny_pipe, img, num_inference_steps=STEPS, method="p2p", progress=False)
    with pytest.raises(NoiseCLRLabError, match="give the prompt"):
        invert(tiny_pipe, img, num_inference_steps=STEPS, method="null-text-p2p", progress=False)
    with pytest.raises(NoiseCLRLabError, match="takes no negative prompt"):
        ep(inversion=p2p, negative_prompt="blurry", output_type="latent")


def test_v_prediction_zero_terminal_snr_models_invert_and_edit(tiny_pipe):
    """A v-prediction, zero-terminal-SNR scheduler (the rebuilt toy model's): the output converts to the true
    noise exactly, and inversion, null-text replay and edits run through the same code."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from noiseclr_lab.editing.inversion import eps_from_output

    zsnr = dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=0)
    tiny_pipe.scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config, **zsnr)
    ddpm = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    assert float(ddpm.alphas_cumprod[-1]) < 1e-6  # nothing of the image is left at t = 999
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for t in (0, 500, 999):
        tt = torch.tensor([t] * 3)
        zt, v = ddpm.add_noise(z0, noise, tt), ddpm.get_velocity(z0, noise, tt)
        assert torch.allclose(eps_from_output(ddpm, v, zt, ddpm.alphas_cumprod[t]), noise, atol=1e-5)
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    nt = invert(tiny_pipe, img, num_inference_steps=STEPS, method="null-text", progress=False)
    assert int(nt.timesteps[0]) == 999 and torch.isfinite(nt.latents).all()
    before, after = nt.null_losses.unbind(1)
    assert (after <= before).all()
    rec = ep(inversion=nt, output_type="latent").images
    assert abs((rec - nt.latents[0]).pow(2).mean().item() - after[-1].item()) < 1e-4
    assert not torch.allclose(ep(inversion=nt, edits={"<d1>": 3.0}, output_type="pt").images,
                              ep(inversion=nt, output_type="pt").images, atol=1e-5)


def test_cli_edit_and_grid(tiny_pipe_dir, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipe_dir)
    bank_path = _bank(pipe).save(tmp_path / "bank.safetensors")
    common = ["--model", str(tiny_pipe_dir), "--bank", str(bank_path), "--steps", "4", "--device", "cpu"]
    assert main(["edit", *common, "--apply", "<d1>=3", "--apply", "glasses=-2", "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size == (16, 16)
    assert main(["edit", *common, "--grid", "--scales=-2,0,2", "--apply", "<d1>=1", "--apply", "hair=1",
                 "--out", str(tmp_path / "grid.png")]) == 0
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (150 + 3 * 128, 24 + 2 * 128)
    buf = io.BytesIO()
    Image.new("RGBA", (30, 50), (0, 0, 255, 128)).save(buf, "PNG")
    (tmp_path / "photo.png").write_bytes(buf.getvalue())
    assert main(["edit", *common, "--image", str(tmp_path / "photo.png"), "--apply", "<d2>=2",
                 "--out", str(tmp_path / "real.png")]) == 0
    out = capsys.readouterr().out
    assert "centre-cropped 30x50" in out and "composited transparency" in out
    assert main(["edit", *common, "--apply", "nope=1", "--out", str(tmp_path / "x.png")]) == 1
    assert "Unknown direction 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main(["edit", *common, "--apply", "<d1>=3", "--edit-start", "2", "--out", str(tmp_path / "late.png")]) == 0
    assert main(["edit", *common, "--apply", "<d1>=3", "--window", "<d1>=2:4", "--out", str(tmp_path / "win.png")]) == 0
    assert main(["edit", *common, "--apply", "<d1>=3", "--out", str(tmp_path / "all.png")]) == 0
    assert main(["edit", *common, "--apply", "<d1>=0", "--out", str(tmp_path / "plain.png")]) == 0
    late, win, every, plain = (Image.open(tmp_path / f"{n}.png").tobytes() for n in ("late", "win", "all", "plain"))
    assert late == win and late != every and late != plain
    assert main(["edit", *common, "--apply", "<d1>=3", "--edit-start", "4", "--out", str(tmp_path / "y.png")]) == 1
    assert "--edit-start 4 leaves no denoising step to edit (--steps 4)" in capsys.readouterr().err
    assert main(["edit", *common, "--grid", "--window", "<d1>=1:2", "--out", str(tmp_path / "y.png")]) == 1
    assert "--window applies to single edits" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()
    recipe = tmp_path / "r.json"
    assert main(["edit", *common, "--apply", "<d1>=3", "--guidance-rescale", "0.7", "--out", str(tmp_path / "gr.png"),
                 "--save-recipe", str(recipe)]) == 0
    assert Image.open(tmp_path / "gr.png").tobytes() != every and json.loads(recipe.read_text())["guidance_rescale"] == 0.7
    assert main(["edit", "--recipe", str(recipe), "--device", "cpu", "--out", str(tmp_path / "again.png")]) == 0
    assert Image.open(tmp_path / "again.png").tobytes() == Image.open(tmp_path / "gr.png").tobytes()
    with pytest.raises(SystemExit) as e:
        main(["edit", *common, "--apply", "<d1>=3", "--guidance-rescale", "2", "--out", str(tmp_path / "y.png")])
    assert e.value.code == 2 and "expected a number in [0, 1], got '2'" in capsys.readouterr().err


def test_grid_edit_start_delays_every_edited_cell(tiny_pipe):
    from noiseclr_lab.editing.grid import edit_grid

    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    kw = dict(prompt="a face", seeds=[1], num_inference_steps=4, cell=16)

    def cells(edit_start):  # (unedited, edited) 16 x 16 cells of a 1 x 2 grid
        g = np.asarray(edit_grid(ep, ["<d1>"], [0.0, 3.0], edit_start=edit_start, **kw))
        return g[24:40, 150:166], g[24:40, 166:182]

    base, never = cells(4)  # edits from the last step on are never applied
    assert np.array_equal(base, never)
    _, always = cells(0)
    _, late = cells(2)
    assert not np.array_equal(always, late) and not np.array_equal(late, base)
    direct = ep("a face", edits={"<d1>": 3.0}, windows={"<d1>": (2, 4)}, num_inference_steps=4,
                generator=torch.Generator().manual_seed(1)).images[0]
    assert np.array_equal(np.asarray(direct), late)
    with pytest.raises(NoiseCLRLabError, match=r"edit_start 5 is outside \[0, 4\]"):
        ep("a face", edits={"<d1>": 3.0}, edit_start=5, num_inference_steps=4)


def test_per_image_scales_equal_separate_calls(tiny_pipe):
    ep = EditPipeline(tiny_pipe, _bank(tiny_pipe))
    sweep = _run(ep, prompt=["a face"] * 3, edits={"<d3>": [-2.0, 0.0, 3.0]}, generator=[_gen(5) for _ in range(3)])
    for i, s in enumerate([-2.0, 0.0, 3.0]):
        single = _run(ep, prompt="a face", edits={"<d3>": s}, generator=_gen(5))
        assert torch.allclose(sweep[i], single[0], atol=1e-5)
    with pytest.raises(NoiseCLRLabError, match="2 per-image scales for <d3> but the batch is 1"):
        _run(ep, edits={"<d3>": [1.0, 2.0]})


def test_calibrated_scales_multiply_the_stored_scale(tiny_pipe, tmp_path, capsys):
    bank = DirectionBank.random(2, 32, std=1.0, tokenizer_fingerprint=tokenizer_fingerprint(tiny_pipe.tokenizer),
                                calibrated_scales=[2.5, None])
    ep = EditPipeline(tiny_pipe, bank)
    kw = dict(num_inference_steps=3, guidance_scale=1.0, output_type="pt")
    a = ep("", edits={"<d1>": 2.0}, calibrated=True, generator=torch.Generator().manual_seed(0), **kw)
    b = ep("", edits={"<d1>": 5.0}, generator=torch.Generator().manual_seed(0), **kw)
    assert a.edits["<d1>"]["scale"] == 5.0 and torch.equal(a.images, b.images)
    with pytest.raises(NoiseCLRLabError, match="<d2> has no calibrated scale; run `noiseclr-lab analyze`"):
        ep("", edits={"<d2>": 1.0}, calibrated=True, **kw)
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    assert main(["edit", "--model", "toy:faces", "--bank", str(path), "--apply", "<d2>=1", "--calibrated",
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "has no calibrated scale" in capsys.readouterr().err
