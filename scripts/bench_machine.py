"""The machine yardstick: one toy UNet forward + backward pass at batch 64, the figure the project's CPU timings
(the demo's minutes, the discovery table's seconds) are quoted against.

A demo time means little without the machine's speed: the same `noiseclr-lab demo` took 15-16 min on 2 cores
of a machine where a weight-gradient pass took about 1.0 s and 8.0 min on one where this script reads 0.44-0.52 s
(input gradients) and 0.6-1.0 s (weight gradients, which vary from pass to pass there: quote the input-gradient
figure). Two variants are timed, both on the shipped toy UNet (``toy:faces``) in fp32, with random latents,
timesteps and text states:

- ``weights``: gradients for every UNet weight and the text states (the usual "training step" of a model);
- ``inputs``: gradients for the text states only (what NoiseCLR training does: the UNet is frozen and only the
  direction embeddings learn).

The median of ``--repeats`` timed passes (after one untimed warm-up) is printed with the thread count, torch
version and CPU, and written to ``--json``.

    python scripts/bench_machine.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from noiseclr_lab.models import load_pipeline, pick_device


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_pass(unet, batch: int, weights: bool, repeats: int, device: torch.device) -> list[float]:
    """Seconds of each of ``repeats`` forward + backward passes (after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    size = cfg.sample_size
    x = torch.randn(batch, cfg.in_channels, size, size, generator=g).to(device)
    c = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g).to(device).requires_grad_(True)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    was = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(weights)
    out = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        unet(x, t, encoder_hidden_states=c).sample.square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            out.append(time.perf_counter() - t0)
        unet.zero_grad(set_to_none=False)  # gradient buffers kept: no allocation noise in the timing
        c.grad = None
    unet.zero_grad(set_to_none=True)
    for p, flag in zip(unet.parameters(), was):  # the module as it came
        p.requires_grad_(flag)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy:faces", help="pipeline whose UNet is timed (default: the toy model)")
    p.add_argument("--batch", type=int, default=64, help="latents per pass (default 64, the quoted figure)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per variant (the median is reported)")
    p.add_argument("--device", default="cpu", help="cpu (default: the yardstick is a CPU figure), cuda, ...")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def measure(argv=None) -> dict:
    """Parse ``argv``, time both variants, print one line and return the figures (also written to --json)."""
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        raise SystemExit("bench_machine: --batch and --repeats must be at least 1.")
    device = pick_device(args.device)
    unet = load_pipeline(args.model, device=device, dtype=torch.float32).unet  # fp32 on every device
    res = {"model": args.model, "batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "cpu": cpu_name()}
    for name, weights in (("weights", True), ("inputs", False)):
        times = time_pass(unet, args.batch, weights, args.repeats, device)
        res[f"{name}_s"] = round(statistics.median(times), 4)
        res[f"{name}_all_s"] = [round(s, 4) for s in times]
    print(f"{args.model} UNet forward + backward at batch {args.batch} on {device} ({res['threads']} threads, "
          f"{res['cpu']}, torch {res['torch']}): {res['weights_s']:.3f} s with weight gradients, "
          f"{res['inputs_s']:.3f} s with input gradients only (median of {args.repeats}: "
          f"{', '.join(f'{s:.3f}' for s in res['weights_all_s'])} / {', '.join(f'{s:.3f}' for s in res['inputs_all_s'])})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


def main(argv=None) -> int:
    measure(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
