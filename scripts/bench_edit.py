"""Benchmark: composed-direction editing, batched (one UNet call per step) vs the official loop
(one UNet call per term per step), same machine, same run, same seeds. Prints images/s, the ratio, the
achieved TFLOP/s of both (the same model FLOPs, counted once) and, on a known GPU, their MFU.

    python scripts/bench_edit.py                          # toy model on this machine's CPU
    python scripts/bench_edit.py --model sd15-random --device cuda --dtype fp16   # full-size SD 1.5 UNet, random weights
    python scripts/bench_edit.py --images 12 --directions 1 --steps 15 --no-cpu-split   # the CPU lever's share

On the CPU the batched side splits each UNet call's rows over worker threads that share torch's intra-op threads
(``cpu_split``, 32 rows and more); the official loop runs as released (torch's intra-op threads); ``--no-cpu-split`` turns the split
off, so the two runs' batched columns give the lever's effect.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from noiseclr_lab.directions import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.models import load_pipeline, pick_device, pick_dtype
from noiseclr_lab.perf import COMPILE_MODES, count_flops, mfu


def sd15_random(device, dtype):
    """Stable Diffusion 1.5's architecture (UNet, VAE, text encoder configs) with random weights: speed only."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from noiseclr_lab.tokenizer import build_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                      num_hidden_layers=12, projection_dim=768, bos_token_id=49406, eos_token_id=49407))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=build_clip_tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device, dtype)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy:faces", help="model spec, or sd15-random")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--directions", default="1,4,8", help="numbers of composed directions to time")
    p.add_argument("--steps", type=int, default=25, help="denoising steps per image")
    p.add_argument("--images", type=int, default=4, help="images (seeds) per timed call")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2, help="timed repeats (best is reported)")
    p.add_argument("--compile", default="no", choices=COMPILE_MODES,
                   help="torch.compile mode of the batched pipeline's UNet (the official loop runs as released)")
    p.add_argument("--channels-last", action="store_true", help="the batched pipeline's UNet in NHWC")
    p.add_argument("--cpu-split", action=argparse.BooleanOptionalAction, default=True,
                   help="on the CPU, split the batched side's UNet rows over worker threads (EditPipeline cpu_split)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    dev = pick_device(args.device)
    dt = pick_dtype(dev, args.dtype)
    pipe = sd15_random(dev, dt) if args.model == "sd15-random" else load_pipeline(args.model, dev, dt)
    pipe.set_progress_bar_config(disable=True)
    counts = [int(c) for c in args.directions.split(",")]
    d = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    bank = DirectionBank.random(max(counts), d, std=0.4, tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer))
    ref = EditPipeline(pipe, bank, mode="reference", cpu_split=False)  # the UNet is shared: with --channels-last the official loop
    # runs NHWC weights too (if anything that helps it); only the batched side is compiled
    fast = EditPipeline(pipe, bank, compile=args.compile, channels_last=args.channels_last, cpu_split=args.cpu_split)

    def call(ep, m):
        gens = [torch.Generator().manual_seed(s) for s in range(args.images)]
        return ep(["a cartoon face"] * args.images, edits={t: 2.0 for t in bank.tokens[:m]},
                  num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gens, output_type="pt")

    def timed(ep, m):
        best = float("inf")
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = call(ep, m)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return args.images / best, out.images

    for m in counts:  # warm-up (and, with --compile, one compilation per batch shape)
        timed(fast, m)
    rows = []
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({gpu}, {dt}), model {args.model}, {args.steps} steps, {args.images} images per call, "
          f"CFG {args.guidance}, compile {args.compile}, channels_last {args.channels_last}, "
          f"cpu_split {args.cpu_split and dev.type == 'cpu'} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'directions':>10} {'batched img/s':>14} {'official img/s':>15} {'speed-up':>9} {'max |diff|':>11} "
          f"{'TFLOP/s b / o':>14} {'MFU b / o':>12}")
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    for m in counts:
        ips_fast, a = timed(fast, m)
        ips_ref, b = timed(ref, m)
        diff = (a.float() - b.float()).abs().max().item()
        flops = count_flops(lambda m=m: call(ref, m)) / args.images  # per image, the same work both ways (counted
        # uncompiled: compiling changes no FLOP of the work)
        mf, mr = mfu(flops * ips_fast, 1.0, dev), mfu(flops * ips_ref, 1.0, dev)
        rows.append({"directions": m, "batched_img_s": ips_fast, "official_img_s": ips_ref,
                     "speedup": ips_fast / ips_ref, "max_abs_diff": diff, "gflop_per_image": flops / 1e9,
                     "batched_mfu": mf, "official_mfu": mr})
        print(f"{m:>10} {ips_fast:>14.3f} {ips_ref:>15.3f} {ips_fast / ips_ref:>8.2f}x {diff:>11.2e} "
              f"{flops * ips_fast / 1e12:>6.3f} / {flops * ips_ref / 1e12:<6.3f} {pct(mf):>5} / {pct(mr):<5}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(dev), "dtype": str(dt), "model": args.model,
                       "cpu_split": args.cpu_split and dev.type == "cpu", "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
