"""load_pipeline: every spec kind resolves to a StableDiffusionPipeline, or fails with one clear sentence."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.models import list_model_sources, load_pipeline, pick_device, pick_dtype


def test_local_folder_loads_same_weights(tiny_pipe_dir):
    from conftest import make_tiny_pipeline

    pipe = load_pipeline(str(tiny_pipe_dir), device="cpu")
    ref = make_tiny_pipeline()
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    for a, b in zip(pipe.unet.parameters(), ref.unet.parameters()):
        assert torch.equal(a, b)
    assert pipe.tokenizer("a cartoon face").input_ids == ref.tokenizer("a cartoon face").input_ids


def test_dtype_request_is_honoured(tiny_pipe_dir):
    pipe = load_pipeline(str(tiny_pipe_dir), device="cpu", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16


def test_pick_device_and_dtype():
    assert pick_device("cpu").type == "cpu"
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(NoiseCLRLabError, match="Unknown dtype 'int3'"):
        pick_dtype(torch.device("cpu"), "int3")


def test_missing_hub_model_offline_says_what_to_do():
    with pytest.raises(NoiseCLRLabError, match=r"hf download nobody-here/no-such-model"):
        load_pipeline("nobody-here/no-such-model", device="cpu")


def test_bad_paths_and_sources(tmp_path):
    with pytest.raises(NoiseCLRLabError, match="not found"):
        load_pipeline(str(tmp_path / "nothing" / "here.safetensors"))
    with pytest.raises(NoiseCLRLabError, match="no model_index.json"):
        load_pipeline(str(tmp_path))
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(NoiseCLRLabError, match="neither a pipeline folder nor"):
        load_pipeline(str(tmp_path / "weights.txt"))
    with pytest.raises(NoiseCLRLabError, match="Unknown model source 'nope'.*toy"):
        load_pipeline("nope:faces")
    with pytest.raises(NoiseCLRLabError, match="Unknown toy domain 'planets'"):
        load_pipeline("toy:planets")
    assert "toy" in list_model_sources()


def test_single_file_that_is_not_sd_fails_cleanly(tmp_path):
    save_file({"x": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(NoiseCLRLabError, match="model.safetensors"):
        load_pipeline(str(tmp_path / "model.safetensors"), device="cpu")
    (tmp_path / "broken.ckpt").write_bytes(b"garbage")
    with pytest.raises(NoiseCLRLabError, match="broken.ckpt"):
        load_pipeline(str(tmp_path / "broken.ckpt"), device="cpu")


def test_devices_are_checked_against_the_machine(monkeypatch):
    """A device the machine lacks is one sentence before any model loads (it used to be torch's error, or, for
    training, a silent CPU run that failed at selection); an index past the GPUs names the ones there are."""
    import torch

    from noiseclr_lab.errors import NoiseCLRLabError
    from noiseclr_lab.models import check_device, pick_device
    from noiseclr_lab.training import TrainConfig, Trainer

    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        check_device("tpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu") == pick_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_device("cuda")
    with pytest.raises(NoiseCLRLabError, match="no CUDA GPU"):
        pick_device("cuda:1")
    with pytest.raises(NoiseCLRLabError, match="no CUDA GPU"):
        Trainer(TrainConfig(device="cuda"))
    assert pick_device("") == pick_device(None) == torch.device("cpu") or torch.backends.mps.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and pick_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match="cuda:0 to cuda:1"):
        check_device("cuda:2")
    with pytest.raises(NoiseCLRLabError, match="CUDA_VISIBLE_DEVICES=1"):  # accelerate trains on its own device
        Trainer(TrainConfig(device="cuda:1"))
