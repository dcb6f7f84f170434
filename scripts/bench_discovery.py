"""Discovery recipes x training seeds on the toy faces model: train, score against the ground truth, tabulate.

Each recipe is NAME=FLAGS (train flags on top of --config toy-faces); every (recipe, seed) trains into
OUT/NAME/sSEED and is scored with `evaluate-gt` (12 seeds, scales -6,-3,3,6 unless --eval-flags says
otherwise, no baselines). Finished cells are skipped, so a stopped sweep resumes. The table gives, per cell,
covered factors shrunk / raw (`metrics` / `metrics_raw`), mean modularity of the active directions shrunk /
raw, active directions, and the train (+ selection) and evaluation seconds; per recipe the minimum and the
spread over seeds.

    python scripts/bench_discovery.py --recipe default= --recipe "k24-select=--num-directions 24 --select 12" \\
        --seeds 0-4 --out runs/discovery
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def seeds_arg(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def run_cell(out: Path, flags: str, seed: int, data: str, eval_flags: str) -> None:
    times = out / "times.json"
    if (out / "analysis" / "gt_metrics.json").is_file():
        return
    t0 = time.time()
    if not (out / "directions.safetensors").is_file() or not (out / "config.json").is_file():
        cmd = ["noiseclr-lab", "train", "--config", "toy-faces", "--data", data, "--seed", str(seed),
               *shlex.split(flags), "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    t1 = time.time()
    cmd = ["noiseclr-lab", "evaluate-gt", str(out), "--domain", "faces", "--baselines", "", *shlex.split(eval_flags)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    times.write_text(json.dumps({"train_s": round(t1 - t0, 1), "eval_s": round(time.time() - t1, 1)}))


def cell_row(out: Path) -> dict | None:
    path = out / "analysis" / "gt_metrics.json"
    if not path.is_file():
        return None
    t = json.loads(path.read_text())["banks"]["trained"]
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").is_file() else {}
    m, r = t["metrics"], t["metrics_raw"]
    return {"cov": m["coverage"], "cov_raw": r["coverage"], "mod": m["modularity_mean"], "mod_raw": r["modularity_mean"],
            "active": m["active_directions"], **times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", required=True, metavar="NAME=FLAGS")
    p.add_argument("--seeds", type=seeds_arg, default=seeds_arg("0-4"))
    p.add_argument("--out", type=Path, default=Path("runs/discovery"))
    p.add_argument("--data", default="runs/demo/data", help="training images (the demo's rendered faces)")
    p.add_argument("--eval-flags", default="--seeds 12 --scales=-6,-3,3,6")
    p.add_argument("--table-only", action="store_true", help="print the table of finished cells, train nothing")
    args = p.parse_args(argv)
    recipes = [r.partition("=")[::2] for r in args.recipe]
    if not args.table_only:
        if not Path(args.data).is_dir():
            subprocess.run(["noiseclr-lab", "toy", "render", "--domain", "faces", "--n", "256", "--out", args.data],
                           check=True)
        for name, flags in recipes:
            for s in args.seeds:
                print(f"[{time.strftime('%H:%M:%S')}] {name} seed {s}", file=sys.stderr, flush=True)
                run_cell(args.out / name / f"s{s}", flags, s, args.data, args.eval_flags)
    print(f"{'recipe':<22} " + " ".join(f"{'s' + str(s):>13}" for s in args.seeds) + "   min  spread  (covered shrunk/raw)")
    for name, _ in recipes:
        rows = [cell_row(args.out / name / f"s{s}") for s in args.seeds]
        cells = [f"{r['cov']:.0f}/{r['cov_raw']:.0f} m{r['mod']:.2f}" if r else "-" for r in rows]
        done = [r["cov"] for r in rows if r]
        tail = f"   {min(done):.0f}    {max(done) - min(done):.0f}" if done else ""
        print(f"{name:<22} " + " ".join(f"{c:>13}" for c in cells) + tail)
        for s, r in zip(args.seeds, rows):
            if r:
                print(f"    s{s}: covered {r['cov']:.0f} (raw {r['cov_raw']:.0f}), modularity {r['mod']:.2f} (raw "
                      f"{r['mod_raw']:.2f}), {r['active']:.0f} active, train {r.get('train_s', '?')} s, "
                      f"eval {r.get('eval_s', '?')} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
