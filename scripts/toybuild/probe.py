"""Stage ``probe``: one factor-probe CNN per toy domain (the toy world's ground-truth reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noiseclr_lab.fileio import save_safetensors_atomic, save_torch_atomic, write_json_atomic
from noiseclr_lab.toyworld.domains import get_domain, list_domains
from noiseclr_lab.toyworld.probe import FactorProbe, Probe
from toybuild.common import BuildConfig, dataset, load_ckpt, timeboxed, to_tensor
from toybuild.vae import latents

# --------------------------------------------------------------------------- probe


def train_probe(cfg: BuildConfig, minutes: float) -> dict:
    """Train the three domain probes round-robin on renders and VAE reconstructions (so that they read
    decoded images the way they read clean renders)."""
    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    doms = list_domains()
    models = {n: FactorProbe({f.name: len(f.values) for f in get_domain(n).factors}) for n in doms}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4) for n, m in models.items()}
    ck_path = Path(cfg.work) / "probe.pt"
    ck = load_ckpt(ck_path)
    step = 0
    if ck:
        for n in doms:
            models[n].load_state_dict(ck["model"][n])
            opts[n].load_state_dict(ck["opt"][n])
        step = ck["step"]
    g = torch.Generator().manual_seed(cfg.seed + 7 + step)

    def save(step):
        save_torch_atomic({"model": {n: m.state_dict() for n, m in models.items()},
                     "opt": {n: o.state_dict() for n, o in opts.items()}, "step": step}, ck_path)

    def one_step(step):
        name = doms[step % len(doms)]
        d, rec = data[name], lat[name]["recon"]
        half = cfg.probe_batch // 2
        i_img = torch.randint(len(d["images"]), (half,), generator=g).numpy()
        i_rec = torch.randint(len(rec), (cfg.probe_batch - half,), generator=g).numpy()
        x = torch.cat([to_tensor(d["images"][i_img]), to_tensor(rec[i_rec])])
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        idx = np.concatenate([i_img, i_rec])
        out = models[name](x)
        loss = sum(F.cross_entropy(out[f], torch.from_numpy(d["labels"][f][idx])) for f in out)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()
        return {"loss": f"{loss.item():.3f}", "domain": name}

    step = timeboxed("probe", minutes, step, one_step, save)
    return evaluate_probe(cfg, models) | {"steps": step}


@torch.no_grad()
def evaluate_probe(cfg: BuildConfig, models: dict | None = None) -> dict:
    """Per-factor accuracy on fresh renders and on their VAE reconstructions."""
    if models is None:
        models = {n: p.model for n, p in build_probes(cfg).items()}
    data, lat = dataset(cfg, "eval"), latents(cfg, "eval", n_recon=1000)
    res = {}
    for n, m in models.items():
        probe = Probe(n, m)
        for kind, imgs in (("render", data[n]["images"]), ("recon", lat[n]["recon"])):
            reading = probe.predict(imgs)
            for f, lab in reading.labels.items():
                res[f"acc_{kind}/{n}/{f}"] = float((lab == data[n]["labels"][f][: len(imgs)]).mean())
        m.train()
    res["min_acc_render"] = min(v for k, v in res.items() if k.startswith("acc_render"))
    res["min_acc_recon"] = min(v for k, v in res.items() if k.startswith("acc_recon"))
    return res


def save_probe(model: FactorProbe, domain: str, folder: Path, extra: dict | None = None) -> None:
    """``probe_<domain>.safetensors`` (fp16 weights) + ``probe_<domain>.json`` (factors, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic({k: v.half() for k, v in model.state_dict().items()}, folder / f"probe_{domain}.safetensors")
    info = {"domain": domain, "factors": {f.name: list(f.values) for f in get_domain(domain).factors},
            "width": model.trunk[0].out_channels} | (extra or {})
    write_json_atomic(folder / f"probe_{domain}.json", info)


def build_probes(cfg: BuildConfig) -> dict:
    ck = torch.load(Path(cfg.work) / "probe.pt", weights_only=True)
    out = {}
    for n in list_domains():
        m = FactorProbe({f.name: len(f.values) for f in get_domain(n).factors})
        m.load_state_dict(ck["model"][n])
        out[n] = Probe(n, m)
    return out
