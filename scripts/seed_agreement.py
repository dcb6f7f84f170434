"""How many evaluation seeds until raw and shrunk ground-truth figures agree?

Reads the cached sweep of a run's ``evaluate-gt`` (RUN/analysis/sweeps/<key>/, S seeds) with the toy probe
and rescores the trained bank on random subsets of s <= S seeds: coverage and modularity with each mean
change shrunk by one standard error (the default) and raw (noise_z = 0), each direction at its calibrated
scale. Prints one line per s: the mean and range over subsets of both and of their gap.

    python scripts/seed_agreement.py runs/demo/run --subsets 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from noiseclr_lab.analysis.groundtruth import calibrated_effects, effect_from_reading
from noiseclr_lab.analysis.metrics import compute_all
from noiseclr_lab.analysis.readers import ProbeReader
from noiseclr_lab.analysis.sweep import SweepReading, SweepSettings, read_sweep
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.models import load_pipeline
from noiseclr_lab.store import RunDir
from noiseclr_lab.toyworld import load_probe


def subset(reading: SweepReading, idx) -> SweepReading:
    return SweepReading(values=reading.values, base={g: v[idx] for g, v in reading.base.items()},
                        edited={g: v[:, :, idx] for g, v in reading.edited.items()}, tokens=reading.tokens,
                        settings=reading.settings)


def score(reading: SweepReading, scales) -> dict:
    eff, eff_raw, _ = calibrated_effects(*effect_from_reading(reading, 1.0), scales)
    m, r = compute_all(eff), compute_all(eff_raw)
    return {"cov": m["coverage"], "cov_raw": r["coverage"], "mod": m["modularity_mean"], "mod_raw": r["modularity_mean"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--domain", default="faces")
    p.add_argument("--subsets", type=int, default=20, help="random seed subsets per size")
    p.add_argument("--sizes", default="", help="comma-separated subset sizes (default: 3, 6, ... up to S)")
    args = p.parse_args(argv)
    run = RunDir(args.run)
    gt = json.loads((run.analysis_dir / RunDir.GT_JSON).read_text())
    settings = SweepSettings.from_dict(gt["settings"])
    bank = DirectionBank.load(run.directions_path)
    pipe = load_pipeline(gt["model"], device="cpu")
    from noiseclr_lab.analysis.sweep import sweep_cache_dir

    cache = sweep_cache_dir(run, bank, pipe, settings)
    if not (cache / "base.safetensors").is_file():
        raise SystemExit(f"no cached sweep at {cache}: run evaluate-gt with --cache-sweeps first")
    reading = read_sweep(EditPipeline(pipe, bank), ProbeReader(load_probe(args.domain)), settings, True, cache)
    S = settings.seeds
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else sorted({*range(3, S + 1, 3), S})
    rng = np.random.default_rng(0)
    print(f"{run.path}: {len(bank)} directions, {S} seeds cached; per subset size: mean [min, max] over subsets")
    print(f"{'seeds':>5}  {'covered (shrunk)':>18}  {'covered (raw)':>16}  {'gap':>12}  {'modularity shrunk / raw':>24}")
    for s in sizes:
        rows = [score(subset(reading, np.sort(rng.choice(S, s, replace=False)) if s < S else np.arange(S)),
                      settings.scales) for _ in range(args.subsets if s < S else 1)]
        a = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        gap = a["cov"] - a["cov_raw"]
        f = lambda v: f"{v.mean():.2f} [{v.min():.0f}, {v.max():.0f}]"  # noqa: E731
        print(f"{s:>5}  {f(a['cov']):>18}  {f(a['cov_raw']):>16}  {f(gap):>12}  "
              f"{a['mod'].mean():>11.2f} / {a['mod_raw'].mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
