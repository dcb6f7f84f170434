"""Benchmark the dashboard's Compose: one recipe (a seed's image, k directions at 15 steps) through
``workflows.apply_recipe`` with a warm pipeline, as the dashboard runs it, against the official way of
applying k directions (``EditPipeline(mode="reference")``: one UNet call per term per step), in the same run.
Target: <= 5 s per composed image on 2 CPU cores with the toy model. Prints seconds and ratios; asserts
nothing.

    python scripts/bench_compose.py --run runs/demo/run [--steps 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/demo/run"))
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline
    from noiseclr_lab.models import load_pipeline
    from noiseclr_lab.recipe import Recipe
    from noiseclr_lab.workflows import apply_recipe

    bank_path = args.run / "directions.safetensors"
    bank = DirectionBank.load(bank_path)
    t0 = time.perf_counter()
    pipe = load_pipeline(bank.base_model, device=args.device)
    load_s = time.perf_counter() - t0
    print(f"pipeline load (once per dashboard process): {load_s:.2f} s")
    out = {"load_s": load_s, "rows": []}
    for k in (1, 2, 4):
        edits = {t: 3.0 for t in bank.tokens[:k]}
        recipe = Recipe(model=bank.base_model, bank=str(bank_path), edits=edits, steps=args.steps, guidance=3.0,
                        prompt="a cartoon face", seed=0)
        apply_recipe(recipe, pipe=pipe, progress=False)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            apply_recipe(recipe, pipe=pipe, progress=False)
        ours = (time.perf_counter() - t0) / args.repeats
        ref = EditPipeline(pipe, bank, mode="reference", cpu_split=False)  # the official loop as released
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            ref("a cartoon face", edits=edits, num_inference_steps=args.steps, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(0))
        official = (time.perf_counter() - t0) / args.repeats
        print(f"{k} direction(s), {args.steps} steps: compose {ours:.2f} s/image, official loop {official:.2f} s/image, "
              f"{official / ours:.2f}x (target <= 5 s)")
        out["rows"].append({"directions": k, "compose_s": ours, "official_s": official})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
