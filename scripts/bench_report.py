"""Benchmark ``noiseclr-lab report``: seconds to build a run's report (collect + HTML + Markdown + PNGs, no
model loaded) and the size of report.html. Target for a K=12 toy run: <= 30 s on 2 CPU cores and < 15 MB.
The official release has no report to compare with; the wall time of the whole command, imports included,
is printed beside the build time. Asserts nothing.

    python scripts/bench_report.py --run runs/demo/run [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/demo/run"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from noiseclr_lab.reports import build_report

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(args.repeats):
            res = build_report(args.run, out=Path(tmp) / f"r{i}")
            times.append(res.seconds)
        size = res.html.stat().st_size
        k = len(res.data["directions"])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "noiseclr_lab.cli", "report", str(args.run), "--out", str(Path(tmp) / "cli")],
                       check=True, capture_output=True)
        wall = time.perf_counter() - t0
    print(f"report of {args.run} (K={k}): build {min(times):.2f}-{max(times):.2f} s over {args.repeats} runs, "
          f"whole command {wall:.1f} s with imports; report.html {size / 1e6:.1f} MB (targets: <= 30 s, < 15 MB)")
    print(json.dumps({"directions": k, "build_s": times, "command_s": wall, "html_bytes": size}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
