"""Workflows end to end on the tiny random pipeline: evaluate_gt with a real, simple reader of our own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.workflows import evaluate_gt


class RegionColourReader:
    """Which colour channel dominates each quadrant: a softmax over the quadrant's mean R, G, B."""

    def __init__(self, grid: int = 2, temperature: float = 0.005):
        self.grid, self.temperature = grid, temperature
        self.values = {f"region{i}{j}": ("red", "green", "blue") for i in range(grid) for j in range(grid)}

    def read(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        n, c, h, w = images.shape
        g = self.grid
        x = images.float().reshape(n, c, g, h // g, g, w // g).mean((3, 5))  # (N, 3, g, g)
        return {f"region{i}{j}": (x[:, :, i, j] / self.temperature).softmax(1).numpy()
                for i in range(g) for j in range(g)}


def test_evaluate_gt_detects_a_planted_effect_and_not_a_null_direction(planted_run):
    res = evaluate_gt(planted_run, None, reader=RegionColourReader(), seeds=6, scales=(3.0, 10.0),
                      num_inference_steps=4, baselines=("random",), device="cpu", progress=False, edit_start=0)
    trained = res.banks["trained"]
    effect = np.asarray(trained["effect"])  # (K=2, F=4), noise-corrected
    raw = np.asarray(trained["sweep_raw"])  # (n_scales, K, F)
    assert effect[0].max() > 0.05, effect  # the planted direction moves some region's colour on every seed
    assert np.all(raw[:, 1] == 0.0) and np.all(effect[1] == 0.0)  # the null direction moves nothing at any scale
    assert trained["directions"][1]["active"] is False
    # what was written is what was returned, and the summary names every bank
    on_disk = json.loads(res.metrics_path.read_text())
    assert on_disk["banks"]["trained"]["effect"] == trained["effect"]
    assert on_disk["reader"] == "RegionColourReader" and on_disk["factors"] == list(RegionColourReader().values)
    assert on_disk["settings"]["num_inference_steps"] == 4 and on_disk["settings"]["guidance_scale"] == 3.0
    assert res.heatmap_path.is_file() and res.metrics_path.parent == planted_run / "analysis"
    assert [ln.split()[0] for ln in res.summary().splitlines()[1:]] == ["trained", "random"]


def test_evaluate_gt_refuses_bad_input_before_work(planted_run, tmp_path):
    with pytest.raises(NoiseCLRLabError, match="not a run folder"):
        evaluate_gt(tmp_path, "faces")
    with pytest.raises(NoiseCLRLabError, match="Unknown baseline 'nope'; known: init, random, supervised"):
        evaluate_gt(planted_run, None, reader=RegionColourReader(), baselines=("nope",))
    with pytest.raises(NoiseCLRLabError, match="domain .* or a reader"):
        evaluate_gt(planted_run, None)
    with pytest.raises(NoiseCLRLabError, match="supervised.*domain"):
        evaluate_gt(planted_run, None, reader=RegionColourReader(), seeds=2, scales=(1.0,), num_inference_steps=2,
                    baselines=("supervised",), device="cpu", progress=False)


def test_evaluate_gt_cli_caches_sweeps_unless_told_not_to(planted_run, capsys):
    from noiseclr_lab.cli import main

    args = ["evaluate-gt", str(planted_run), "--domain", "faces", "--seeds", "2", "--steps", "2", "--scales=4",
            "--baselines", "", "--device", "cpu"]
    assert main(args + ["--no-cache-sweeps"]) == 0
    assert not (planted_run / "analysis" / "sweeps").exists()
    first = json.loads((planted_run / "analysis" / "gt_metrics.json").read_text())
    assert first["schema"] == "noiseclr_lab.gt/2" and first["settings"]["cache_sweeps"] is False
    assert main(args) == 0
    assert len(list((planted_run / "analysis" / "sweeps").iterdir())) == 1
    assert "wrote" in capsys.readouterr().out


def test_the_domain_of_a_bank_is_its_training_datas():
    import torch

    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.workflows import bank_domain, default_prompt

    def bank(**kw):
        return DirectionBank(torch.zeros(1, 4), ["<d1>"], **kw)

    assert bank_domain(bank(base_model="toy:faces", training_config={"data": "toy:scenes"})) == "scenes"
    assert bank_domain(bank(base_model="toy:faces", training_config={"data": "/data/faces"})) == "faces"
    assert bank_domain(bank(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5")) is None
    # the zero-terminal-SNR rebuild is the toy world too: its banks' images are made with "a cartoon face", and
    # named with the toy vocabulary (it was "" and the real-photo one: the shared model then drew any domain)
    zsnr = bank(base_model="toy-zsnr:faces", training_config={"data": "/data/faces"})
    assert bank_domain(zsnr) == "faces" and default_prompt(zsnr) == "a cartoon face"
    assert bank_domain(bank(base_model="/models/toy-zsnr:faces")) is None  # a path, not a toy spec


def test_a_recipe_is_refused_when_its_names_or_calibrated_scales_resolve_differently(tmp_path):
    """A label moved to another direction, or a calibrated scale changed by a later analyze, leaves the bank's
    directions (its content hash) as they were: the recipe's record of what it applied catches both."""
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.recipe import Recipe
    from noiseclr_lab.workflows import check_recipe

    bank = DirectionBank(torch.randn(3, 8), ["<d1>", "<d2>", "<d3>"], labels=["smile", "", ""],
                         calibrated_scales=[2.0, 2.5, 3.0])
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    recipe = Recipe(model="toy:faces", bank=str(path), edits={"smile": 2.0, "<d3>": -1.0}, calibrated=True, steps=15,
                    edit_start=3, bank_hash=bank.content_hash())
    assert check_recipe(recipe).tokens == bank.tokens  # a new recipe records what it applies
    assert recipe.resolved == {"<d1>": {"scale": 4.0, "window": [3, 15]}, "<d3>": {"scale": -3.0, "window": [3, 15]}}
    saved = Recipe.from_dict(recipe.as_dict())
    check_recipe(saved)  # unchanged bank: the same
    bank.calibrated_scales[2] = 3.5  # analyze again
    bank.save(path)
    with pytest.raises(NoiseCLRLabError, match=r"<d3>=-3 on steps \[3, 15\) when it was made, .*<d3>=-3.5 .* now"):
        check_recipe(Recipe.from_dict(recipe.as_dict()))
    bank.calibrated_scales[2], bank.labels[:2] = 3.0, ["", "smile"]  # the label moved to another direction
    bank.save(path)
    assert bank.content_hash() == recipe.bank_hash
    with pytest.raises(NoiseCLRLabError, match="resolve differently"):
        check_recipe(Recipe.from_dict(recipe.as_dict()))
    with pytest.raises(NoiseCLRLabError, match="resolved edits are malformed"):
        Recipe.from_dict(recipe.as_dict() | {"resolved": {"<d1>": {"scale": 1.0}}})
