"""The sweep engine and readers on the tiny random pipeline: image order, one sweep for several readers,
the shared warm-up, and readers that answer wrongly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noiseclr_lab.analysis.groundtruth import effect_from_reading
from noiseclr_lab.analysis.readers import Reader
from noiseclr_lab.analysis.sweep import SweepSettings, iter_sweep, read_sweep
from noiseclr_lab.directions import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.errors import NoiseCLRLabError


class MeanColour:
    """Share of each channel in the image's mean colour (a reader with one group)."""

    values = {"colour": ("red", "green", "blue")}

    def read(self, images):
        m = images.float().mean((2, 3))
        return {"colour": (m / m.sum(1, keepdim=True)).numpy()}


class Brightness:
    values = {"light": ("dark", "bright")}

    def read(self, images):
        p = torch.sigmoid((images.float().mean((1, 2, 3)) - 0.5) * 50).numpy()
        return {"light": np.stack([1 - p, p], 1)}


@pytest.fixture
def edit_pipe(tiny_pipe):
    bank = DirectionBank.random(2, 32, std=1.0, tokenizer_fingerprint=tokenizer_fingerprint(tiny_pipe.tokenizer))
    return EditPipeline(tiny_pipe, bank)


def test_readers_satisfy_the_protocol():
    assert isinstance(MeanColour(), Reader) and isinstance(Brightness(), Reader)


@pytest.mark.parametrize("guidance,rescale", [(1.0, 0.0), (3.0, 0.7)])
def test_sweep_images_are_the_pipelines_in_scale_major_order(edit_pipe, guidance, rescale):
    s = SweepSettings(scales=(-2.0, 5.0), seeds=2, num_inference_steps=4, guidance_scale=guidance, edit_start=1,
                      guidance_rescale=rescale)
    assert SweepSettings.from_dict(s.as_dict()) == s
    got = dict(iter_sweep(edit_pipe, s, progress=False))
    assert list(got) == [None, 0, 1] and got[None].shape[0] == 2 and got[1].shape[0] == 4
    for i, (scale, seed) in enumerate([(-2.0, 0), (-2.0, 1), (5.0, 0), (5.0, 1)]):
        direct = edit_pipe("", edits={"<d2>": scale}, windows={"<d2>": (1, 4)}, num_inference_steps=4,
                           guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="pt",
                           guidance_rescale=rescale).images
        torch.testing.assert_close(got[1][i : i + 1], direct, atol=1e-5, rtol=1e-4)
    if rescale:  # the setting reaches the images
        plain = dict(iter_sweep(edit_pipe, SweepSettings(**s.as_dict() | {"guidance_rescale": 0.0}), progress=False))
        assert not torch.allclose(plain[1], got[1], atol=1e-4)


def test_one_sweep_serves_several_readers(edit_pipe):
    s = SweepSettings(scales=(3.0,), seeds=2, num_inference_steps=3, guidance_scale=1.0)
    both = read_sweep(edit_pipe, {"colour": MeanColour(), "light": Brightness()}, s, progress=False)
    alone = read_sweep(edit_pipe, MeanColour(), s, progress=False)
    np.testing.assert_allclose(both["colour"].edited["colour"], alone.edited["colour"])
    assert both["light"].edited["light"].shape == (1, 2, 2, 2)  # (n_scales, K, S, V)
    shrunk, raw = effect_from_reading(alone, noise_z=0.0)
    assert shrunk.shape == (1, 2, 1) and np.allclose(shrunk, raw)


def test_bad_readers_and_settings_are_one_error(edit_pipe):
    class WrongShape(MeanColour):
        def read(self, images):
            return {"colour": np.zeros((len(images), 2))}

    class Missing(MeanColour):
        def read(self, images):
            return {}

    s = SweepSettings(scales=(1.0,), seeds=1, num_inference_steps=2, guidance_scale=1.0)
    with pytest.raises(NoiseCLRLabError, match="expected"):
        read_sweep(edit_pipe, WrongShape(), s, progress=False)
    with pytest.raises(NoiseCLRLabError, match="no reading for group 'colour'"):
        read_sweep(edit_pipe, Missing(), s, progress=False)
    old = {k: v for k, v in s.as_dict().items() if k != "guidance_rescale"}  # analysis.json before the field
    assert SweepSettings.from_dict(old) == s
    with pytest.raises(NoiseCLRLabError, match="guidance_rescale is a share"):
        SweepSettings(scales=(1.0,), guidance_rescale=1.5)
    with pytest.raises(NoiseCLRLabError, match="edit_start"):
        SweepSettings(scales=(1.0,), num_inference_steps=4, edit_start=4)
    with pytest.raises(NoiseCLRLabError, match="at least one scale"):
        SweepSettings(scales=())
    assert SweepSettings(scales=(1,), num_inference_steps=15).edit_start == 3  # the editing layer's default warm-up


def test_cached_sweep_resumes_and_is_reused_without_generating(edit_pipe, tmp_path):
    from noiseclr_lab.analysis.sweep import sweep_cache_dir
    from noiseclr_lab.store import RunDir

    s = SweepSettings(scales=(-2.0, 4.0), seeds=2, num_inference_steps=3, guidance_scale=1.0, edit_start=1)
    folder = sweep_cache_dir(RunDir(tmp_path), edit_pipe.bank, edit_pipe.pipe, s)
    assert folder.parent == tmp_path / "analysis" / "sweeps"
    first = read_sweep(edit_pipe, MeanColour(), s, progress=False, cache=folder)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["base.safetensors", "d0000.safetensors",
                                                                     "d0001.safetensors"]
    (folder / "d0001.safetensors").unlink()  # an interrupted sweep: the last batch is missing
    calls = []
    hook = edit_pipe.pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        again = read_sweep(edit_pipe, MeanColour(), s, progress=False, cache=folder)
        n_resumed = len(calls)
        calls.clear()
        read_sweep(edit_pipe, MeanColour(), s, progress=False, cache=folder)
    finally:
        hook.remove()
    assert n_resumed == 1 + 2 and calls == []  # warm-up step + the two edited steps of d0001; then nothing
    np.testing.assert_allclose(again.edited["colour"], first.edited["colour"], atol=1e-6)
    np.testing.assert_allclose(again.base["colour"], first.base["colour"], atol=1e-6)
    # another bank, model or setting is another folder
    other = SweepSettings(scales=(-2.0, 4.0), seeds=3, num_inference_steps=3, guidance_scale=1.0, edit_start=1)
    assert sweep_cache_dir(RunDir(tmp_path), edit_pipe.bank, edit_pipe.pipe, other) != folder
    with torch.no_grad():  # retrained / rebuilt weights are another model
        edit_pipe.pipe.unet.conv_in.weight.add_(1e-3)
    assert sweep_cache_dir(RunDir(tmp_path), edit_pipe.bank, edit_pipe.pipe, s) != folder
    with torch.no_grad():
        edit_pipe.pipe.unet.conv_in.weight.sub_(1e-3)
    (folder / "base.safetensors").write_bytes(b"garbage")
    with pytest.raises(NoiseCLRLabError, match="damaged"):
        read_sweep(edit_pipe, MeanColour(), s, progress=False, cache=folder)


def test_sweep_speed_books_the_work_it_generates(edit_pipe, tmp_path):
    """images/s and FLOPs of a sweep: every UNet row and decode of the generated batches (warm-up included),
    nothing for batches read from the cache; no MFU where the chip's peak is unknown (the CPU)."""
    from noiseclr_lab.analysis.sweep import SweepSpeed
    from noiseclr_lab.perf import count_flops

    s = SweepSettings(scales=(-2.0, 4.0), seeds=2, num_inference_steps=3, guidance_scale=1.0, edit_start=1)
    speed = SweepSpeed()
    list(iter_sweep(edit_pipe, s, progress=False, cache=tmp_path / "c", speed=speed))
    row, dec = edit_pipe.row_flops()
    unet = edit_pipe.pipe.unet
    z = torch.zeros(3, 4, unet.config.sample_size, unet.config.sample_size)
    three = count_flops(lambda: unet(z, torch.tensor([10]), encoder_hidden_states=edit_pipe.encode([""] * 3)))
    assert three == pytest.approx(3 * row) and dec > 0  # FLOPs are linear in the batch
    # rows: warm-up 2 seeds x 1 step; base 2 x 2 steps; each direction 4 images x 2 steps x (base, direction)
    assert speed.images == 2 + 2 * 4 and speed.flops == pytest.approx((2 + 4 + 2 * 16) * row + 10 * dec)
    out = speed.summary()
    assert out["images"] == 10 and out["images_per_s"] > 0 and out["tflop_per_s"] > 0 and out["mfu"] is None
    again = SweepSpeed()
    list(iter_sweep(edit_pipe, s, progress=False, cache=tmp_path / "c", speed=again))
    assert again.summary()["images"] == 0 and again.summary()["images_per_s"] is None
    both = SweepSpeed.combine([again, speed]).summary()  # rank 0 made nothing: the device comes from rank 1
    assert both["images"] == 10 and both["processes"] == 2 and len(both["by_process"]) == 2
    assert both["device"] == "cpu"
    # MFU on a device of known peak (1 TFLOP/s here): per device when processes share the sweep
    gpu = SweepSpeed(images=4, seconds=2.0, flops=1e12, device="cuda:0", peak_tflops=1.0)
    assert gpu.summary()["mfu"] == 0.5 and SweepSpeed.combine([gpu, gpu]).summary()["mfu"] == 0.5
