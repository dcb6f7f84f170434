"""Stage ``clip``: the toy open_clip CLIP (contrastive on renders and their captions) and its export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from noiseclr_lab.fileio import save_safetensors_atomic, save_torch_atomic, write_json_atomic
from noiseclr_lab.toyworld import ASSET_DIR
from noiseclr_lab.toyworld.domains import get_domain, list_domains, zero_shot_prompts
from toybuild.common import BuildConfig, cosine_floor, dataset, load_ckpt, timeboxed
from toybuild.vae import latents

# --------------------------------------------------------------------------- open_clip CLIP

CLIP_NAME = "toy-clip"


def clip_model_config(cfg: BuildConfig) -> dict:
    """open_clip model config of the toy CLIP (a ViT over 8 px patches of 64 px images; CLIP's BPE text tower)."""
    return {
        "embed_dim": cfg.clip_embed,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": cfg.clip_width, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    }


def make_clip(cfg: BuildConfig):
    import open_clip

    return open_clip.CLIP(**clip_model_config(cfg))


def _clip_pixels(images_uint8: np.ndarray) -> torch.Tensor:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _clip_caption(dom, record: dict, rng: np.random.Generator, focus: bool) -> str:
    """Half partial (each phrase kept with p = 0.5), half full; in the focus phase a third name one attribute."""
    u = rng.random()
    if focus and u < 1 / 3:
        phrases = dom.phrases(record)
        return dom.join([phrases[rng.integers(len(phrases))]])
    return dom.caption(record, rng, keep=0.5) if u < (2 / 3 if focus else 0.5) else dom.caption(record)


def train_clip(cfg: BuildConfig, minutes: float) -> dict:
    """Contrastive training on (render or VAE reconstruction, caption) pairs, one domain per batch
    (in-domain negatives teach the attribute words; half the captions are partial)."""
    import open_clip

    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    doms = list_domains()
    model = make_clip(cfg)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the same BPE ids as every CLIP
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    ck_path = Path(cfg.work) / "clip.pt"
    ck = load_ckpt(ck_path)
    step = 0
    if ck:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
    rng = np.random.default_rng([cfg.seed, 13, step])

    def save(step):
        save_torch_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)

    model.train()

    late = [d for n in doms if n != "scenes" for d in (n, "scenes")]  # faces, scenes, shapes, scenes

    def one_step(step):
        focus = step >= cfg.clip_focus_from
        if step < cfg.clip_decay_from:
            name = doms[step % len(doms)]
            lr = 5e-4 * min(1.0, (step + 1) / 200)
        elif not focus:
            name = late[step % len(late)]
            lr = 5e-4 * cosine_floor(step - cfg.clip_decay_from, cfg.clip_decay_steps)
        else:
            shape_phase = step >= cfg.clip_shape_from
            name = ("scenes" if step % 4 else doms[(step // 4) % len(doms)]) if shape_phase else late[step % len(late)]
            start = cfg.clip_shape_from if shape_phase else cfg.clip_focus_from
            lr = cfg.clip_focus_lr * cosine_floor(step - start, cfg.clip_focus_steps)
        dom, d, rec = get_domain(name), data[name], lat[name]["recon"]
        n_pairs = int(cfg.clip_batch * cfg.clip_counterfactual) // 2
        n_plain = cfg.clip_batch - 2 * n_pairs
        idx = rng.integers(len(rec), size=n_plain)  # the reconstructed subset, shown as render or recon
        use_rec = rng.random(n_plain) < 0.5
        imgs = np.where(use_rec[:, None, None, None], rec[idx], d["images"][idx])
        caps = [_clip_caption(dom, d["records"][i], rng, focus) for i in idx]
        if n_pairs:
            # hard negatives: a record and its twin with one factor changed, both with full captions, so the
            # only thing that tells the two captions apart is the one attribute that differs in the images
            base = [dict(d["records"][i]) for i in rng.integers(len(d["records"]), size=n_pairs)]
            twins = []
            weights = np.array([3.0 if focus and f.name in cfg.clip_twin_focus else 1.0 for f in dom.factors])
            if step >= cfg.clip_shape_from:
                weights *= np.array([3.0 if f.name == "shape" else 1.0 for f in dom.factors])
            for r in base:
                f = dom.factors[rng.choice(len(dom.factors), p=weights / weights.sum())]
                others = [v for v in f.values if v != r[f.name]]
                twins.append(r | {f.name: others[rng.integers(len(others))]})
            pair_imgs = np.stack([np.asarray(im) for im in dom.render(base + twins)])
            imgs = np.concatenate([imgs, pair_imgs])
            caps += [dom.caption(r) for r in base + twins]
        # identical captions in a batch are positives of each other, not negatives
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        for pg in opt.param_groups:
            pg["lr"] = lr
        img_f, txt_f, scale = model(_clip_pixels(imgs), tokenizer(caps))
        logits = scale * img_f @ txt_f.T
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return {"loss": f"{loss.item():.3f}", "domain": name}

    step = timeboxed("clip", minutes, step, one_step, save)
    return evaluate_clip(cfg, model) | {"steps": step}


@torch.no_grad()
def evaluate_clip(cfg: BuildConfig, model=None) -> dict:
    """Zero-shot factor accuracy on fresh renders: prompts name one factor value each."""
    import open_clip

    if model is None:
        model = make_clip(cfg)
        model.load_state_dict(torch.load(Path(cfg.work) / "clip.pt", weights_only=True)["model"])
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    res = {}
    for name, d in dataset(cfg, "eval").items():
        dom = get_domain(name)
        img_f = torch.cat([model.encode_image(_clip_pixels(b), normalize=True) for b in np.array_split(d["images"][:500], 4)])
        for f in dom.factors:
            txt_f = model.encode_text(tokenizer(zero_shot_prompts(dom, f.name)), normalize=True)
            pred = (img_f @ txt_f.T).argmax(1).numpy()
            res[f"zeroshot/{name}/{f.name}"] = float((pred == d["labels"][f.name][:500]).mean())
    res["zeroshot_min"] = min(res.values())
    model.train()
    return res


def export_clip(cfg: BuildConfig, out: Path = ASSET_DIR) -> None:
    folder = out / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    sd = torch.load(Path(cfg.work) / "clip.pt", weights_only=True)["model"]
    save_safetensors_atomic({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, folder / f"{CLIP_NAME}.safetensors")
    write_json_atomic(folder / f"{CLIP_NAME}.json", clip_model_config(cfg))
