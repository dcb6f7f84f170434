"""Benchmark: the CPU split of editing (``EditPipeline(cpu_split=True)``, ``noiseclr_lab.perf.split_rows``)
against torch's own intra-op threads (``cpu_split=False``, how every UNet call ran before), in one process, the
two ways interleaved call by call so that a machine whose speed drifts slows both alike. The work is one
batch of the analysis sweep: one direction at 4 scales x S seeds, CFG 3, 15 DDIM steps, edits from step 3.
Prints the median and best seconds of each way, the ratio, and the largest difference between their images.

    python scripts/bench_cpu_split.py                  # toy faces model, this machine's threads
    python scripts/bench_cpu_split.py --seeds 4 --repeats 5

Training is not split: the same split of a training step's direction groups over worker threads, forward and
backward (the same gradient bit for bit), measured 0.98x to 1.13x here (2 cores, interleaved medians), so it was not kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from noiseclr_lab.directions import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.models import load_pipeline


def interleaved(fns: dict, repeats: int) -> dict:
    """{name: seconds of each call}, the names' calls alternating, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(label: str, times: dict, diff: float) -> dict:
    on, off = statistics.median(times["split"]), statistics.median(times["whole"])
    print(f"{label:>6}: split {on:.3f} s (best {min(times['split']):.3f}), torch threads {off:.3f} s "
          f"(best {min(times['whole']):.3f}), speed-up {off / on:.2f}x (best {min(times['whole']) / min(times['split']):.2f}x), "
          f"max |diff| {diff:.2e}")
    return {"split_s": times["split"], "whole_s": times["whole"], "speedup_median": off / on, "max_abs_diff": diff}


def bench_sweep(args) -> dict:
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    d = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    bank = DirectionBank.random(1, d, std=0.4, tokenizer_fingerprint=tokenizer_fingerprint(pipe.tokenizer))
    scales = [s for s in (-6.0, -3.0, 3.0, 6.0) for _ in range(args.seeds)]
    eps = {"split": EditPipeline(pipe, bank), "whole": EditPipeline(pipe, bank, cpu_split=False)}
    out = {}

    def batch(name):
        gens = [torch.Generator().manual_seed(i % args.seeds) for i in range(len(scales))]
        out[name] = eps[name](["a cartoon face"] * len(scales), edits={bank.tokens[0]: scales}, num_inference_steps=15,
                              guidance_scale=3.0, edit_start=3, generator=gens, output_type="pt").images

    times = interleaved({name: (lambda name=name: batch(name)) for name in eps}, args.repeats)
    return summary("sweep", times, (out["split"] - out["whole"]).abs().max().item())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy:faces")
    p.add_argument("--seeds", type=int, default=12, help="sweep: seeds per scale (4 scales)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls of each way")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    print(f"cpu, {torch.get_num_threads()} threads, model {args.model}, torch {torch.__version__}")
    res = {"threads": torch.get_num_threads(), "model": args.model}
    res["sweep"] = bench_sweep(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
