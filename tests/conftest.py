"""Shared fixtures: real diffusers / transformers classes at tiny size, nothing downloaded."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def make_tiny_components(hidden_size: int = 32, seed: int = 0) -> dict:
    """A tiny random Stable Diffusion 1.x (diffusers get_dummy_components style) with the real CLIP tokenizer."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from noiseclr_lab.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden_size,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=hidden_size,
            intermediate_size=37,
            layer_norm_eps=1e-5,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
            max_position_embeddings=77,
            projection_dim=hidden_size,
        )
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": build_clip_tokenizer(),
            "scheduler": scheduler, "safety_checker": None, "feature_extractor": None, "image_encoder": None}


def make_tiny_pipeline(hidden_size: int = 32, seed: int = 0):
    """A fresh tiny StableDiffusionPipeline on the CPU."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**make_tiny_components(hidden_size, seed), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_pipe():
    """A fresh tiny pipeline per test (tests install tokens into it)."""
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    """The tiny pipeline saved with save_pretrained (a local pipeline folder)."""
    folder = tmp_path_factory.mktemp("tiny_sd")
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture
def planted_run(planted_source, tmp_path):
    """A private copy of the planted run (workflows write analysis/ into it); the model folder is shared."""
    import shutil

    return Path(shutil.copytree(planted_source, tmp_path / "run"))


@pytest.fixture(scope="session")
def planted_source(tmp_path_factory):
    """A tiny random SD whose cross-attention outputs are amplified (so that text moves the image), and a run
    with two directions: a planted one (a large random embedding) and a null one. The null direction's
    embedding is the end-of-text row: "<null>" then encodes exactly as the empty prompt (padding is that
    token too), so its edit eps(E("<null>")) - eps(E("")) is zero on every step."""
    from noiseclr_lab.directions import DirectionBank, tokenizer_fingerprint

    root = tmp_path_factory.mktemp("planted")
    pipe = make_tiny_pipeline()
    with torch.no_grad():
        for name, module in pipe.unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.mul_(200.0)
    pipe.save_pretrained(root / "sd")
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    planted = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0)) * table.norm(dim=1).mean() * 3
    bank = DirectionBank(torch.stack([planted, table[pipe.tokenizer.eos_token_id]]), ["<planted>", "<null>"],
                         base_model=str(root / "sd"), tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer))
    run = root / "run"
    bank.save(run / "directions.safetensors")
    return run


TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """A tiny random open_clip architecture registered with open_clip (``<name>:random`` loads it)."""
    import json

    import open_clip

    path = tmp_path_factory.mktemp("clip_cfg") / "tiny-test-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return "tiny-test-clip"


DEMO_ARGS = ["--steps", "2", "--seeds", "2", "--eval-steps", "4", "--device", "cpu",
             "--set", "select_seeds=2", "--set", "select_steps=4", "--set", "validation_steps=4"]


@pytest.fixture(scope="session")
def toy_demo(tmp_path_factory):
    """``noiseclr-lab demo`` (through the CLI's ``main``) at test size on the shipped toy faces model (24
    directions trained for 2 steps, the 12 kept by a 2-seed, 4-step selection, 4-step validation grids;
    evaluation with 2 seeds at the demo's own scales -6, -3, 3 and 6, 4 denoising steps): a run with config, metrics, bank (tokens: a
    selection of <d1>..<d24>), selection.json, gt_metrics.json, analysis.json, cached sweeps and report.
    ``.out`` the demo folder, ``.run`` its RunDir, ``.report.html`` / ``.report.json``, ``.stdout`` what the
    command printed, ``.args`` the demo's arguments after ``--out``. Read-only for tests (copy it to change it)."""
    import contextlib
    import io
    from types import SimpleNamespace

    from noiseclr_lab.cli import main
    from noiseclr_lab.store import RunDir

    out = tmp_path_factory.mktemp("toy_demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["demo", "--out", str(out), *DEMO_ARGS])
    assert rc == 0, printed.getvalue()[-2000:]
    run = RunDir(out / "run")
    return SimpleNamespace(out=out, run=run, stdout=printed.getvalue(), args=list(DEMO_ARGS),
                           report=SimpleNamespace(html=run.report_dir / "report.html", json=run.report_dir / "report.json"))


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright launches Debian's chromium (Playwright cannot download its own browsers here); without
    it browser tests skip, except under CI=true where they must run."""
    import os

    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is absent (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-dev-shm-usage"]}


@pytest.fixture(scope="session")
def tiny_analysed_run(planted_source, tiny_clip_name, tmp_path_factory):
    """Three directions trained for a few steps on the amplified tiny SD, analysed with a tiny random CLIP at a
    calibration target low enough that they compose (config, metrics, analysis with composition, cached
    sweeps). Read-only for tests: copy it to change it."""
    from noiseclr_lab.training import TrainConfig, train
    from noiseclr_lab.workflows import analyze

    root = tmp_path_factory.mktemp("report_run")
    cfg = TrainConfig(model=str(planted_source.parent / "sd"), data="toy:faces", out=str(root / "run"),
                      num_directions=3, directions_per_step=3, steps=4, batch_size=2, num_images=8, lr=1e-2,
                      checkpoint_every=0, validation_steps=2, validation_seeds=1, log_every=1, cache_dir=str(root / "cache"), device="cpu")
    run = train(cfg)
    torch.manual_seed(0)
    res = analyze(run, clip=f"{tiny_clip_name}:random", vocab="art", scales=(-10.0, 10.0), seeds=3,
                  num_inference_steps=4, edit_start=1, device="cpu", progress=False, calibration_target=1e-4)
    assert "tokens" in res.data["composition"], res.data["composition"]
    return Path(run)
