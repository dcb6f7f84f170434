"""Build (or continue building) the shipped toy models; the stages live in scripts/toybuild/ (one module each).

Each stage is time-boxed and resumable: run it again to continue from its last checkpoint.
Examples:
    python scripts/build_toy_assets.py --stage vae --minutes 15
    python scripts/build_toy_assets.py --stage unet --minutes 60
    python scripts/build_toy_assets.py --stage export
    python scripts/build_toy_assets.py --stage unet-zsnr --minutes 60      # zero terminal SNR, v-prediction
    python scripts/build_toy_assets.py --stage export-zsnr                 # -> WORK/zsnr_export/pipeline
    python scripts/build_toy_assets.py --stage unet-zsnr-ordered --minutes 60   # the shipped rebuild, phrases in
    python scripts/build_toy_assets.py --stage export-zsnr-ordered              # order -> WORK/zsnr_ordered_export
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from toybuild.common import BuildConfig
from toybuild.stages import STAGES, run_stage

from noiseclr_lab.toyworld import ASSET_DIR


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=STAGES, help="which asset to train, evaluate or export")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget of this call")
    p.add_argument("--work", default=BuildConfig.work, help="folder for caches and resumable checkpoints")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--n-train", type=int, default=BuildConfig.n_train, help="rendered training images per domain")
    p.add_argument("--out", type=Path, default=None,
                   help="where --stage export writes the assets (default: the package's), and --stage export-zsnr "
                        "its pipeline (default: a staging folder, WORK/zsnr_export or WORK/zsnr_ordered_export)")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BuildConfig(work=args.work, device=args.device, n_train=args.n_train)
    staging = {"export-zsnr": "zsnr_export", "export-zsnr-ordered": "zsnr_ordered_export"}
    out = args.out or (Path(args.work) / staging[args.stage] if args.stage in staging else ASSET_DIR)
    result = run_stage(cfg, args.stage, args.minutes, out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
