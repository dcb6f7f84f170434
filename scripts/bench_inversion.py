"""Inversion round trips: invert, then regenerate with no edit; PSNR against the input, DDIM vs null-text (ours and
Prompt-to-Prompt's, as the released NoiseCLR code).

Runs on rendered toy faces (fresh seeds) and on scikit-image's astronaut photo (512x512 RGB, centre-cropped
and resized to the model's resolution); also reports the VAE-only round trip, the ceiling of both.

    python scripts/bench_inversion.py                     # toy:faces, 50 steps, 4 faces
    python scripts/bench_inversion.py --model PATH --steps 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from noiseclr_lab.editing import EditPipeline, invert
from noiseclr_lab.models import load_pipeline


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = (a.float() - b.float()).pow(2).mean().clamp_min(1e-12)
    return float(-10 * torch.log10(mse))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy:faces")
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--faces", type=int, default=4, help="rendered toy faces to invert")
    p.add_argument("--null-text-iters", type=int, default=10)
    p.add_argument("--prompt", default="a cartoon face", help="prompt of the null-text-p2p inversion (CFG 7.5)")
    p.add_argument("--no-astronaut", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from noiseclr_lab.editing.inversion import METHODS

    pipe = load_pipeline(args.model, device=args.device)
    ep = EditPipeline(pipe)
    images = {}
    if args.faces:
        from noiseclr_lab.toyworld import get_domain

        dom = get_domain("faces")
        for i, im in enumerate(dom.render(dom.sample(np.random.default_rng(777), args.faces))):
            images[f"face{i}"] = im
    if not args.no_astronaut:
        from skimage import data

        images["astronaut"] = data.astronaut()
    rows = []
    print(f"model {args.model}, {args.steps} steps, null-text {args.null_text_iters} iterations per step")
    print(f"{'image':<10} {'VAE only':>9} {'DDIM':>7} {'null-text':>10} {'null-p2p':>9} {'DDIM s':>7} {'null s':>7} "
          f"{'p2p s':>6}")
    for name, img in images.items():
        res = {"image": name}
        for method in METHODS:
            t0 = time.perf_counter()
            inv = invert(pipe, img, num_inference_steps=args.steps, method=method,
                         null_text_iters=args.null_text_iters, progress=False,
                         prompt=args.prompt if method == "null-text-p2p" else "")
            out = ep(inversion=inv, output_type="pt").images
            res[f"{method}_s"] = time.perf_counter() - t0
            target = pipe.image_processor.pil_to_numpy([inv.image])
            target = torch.from_numpy(target).permute(0, 3, 1, 2)
            res[method] = psnr(out.cpu(), target)
            if method == "ddim":
                res["vae"] = psnr(ep.decode(inv.latents[0], "pt").cpu(), target)
                res["notes"] = inv.notes
        rows.append(res)
        print(f"{name:<10} {res['vae']:>9.2f} {res['ddim']:>7.2f} {res['null-text']:>10.2f} {res['null-text-p2p']:>9.2f} "
              f"{res['ddim_s']:>7.1f} {res['null-text_s']:>7.1f} {res['null-text-p2p_s']:>6.1f}")
    faces = [r for r in rows if r["image"].startswith("face")]
    if faces:
        print(f"{'faces mean':<10} {np.mean([r['vae'] for r in faces]):>9.2f} {np.mean([r['ddim'] for r in faces]):>7.2f} "
              f"{np.mean([r['null-text'] for r in faces]):>10.2f} {np.mean([r['null-text-p2p'] for r in faces]):>9.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
