"""Evaluation commands: evaluate-gt, analyze and demo (they call ``noiseclr_lab.workflows`` and print its results)."""

from __future__ import annotations

import argparse
from pathlib import Path

from noiseclr_lab.cli.args import (
    add_device,
    add_guidance_rescale,
    field_value,
    finite_float,
    float_list,
    int_at_least,
    nonnegative_float,
    positive_float,
    positive_int,
)

at_least_two = int_at_least(2, "an integer >= 2")


def cmd_evaluate_gt(args) -> int:
    from noiseclr_lab.workflows import evaluate_gt

    res = evaluate_gt(args.run, args.domain, seeds=args.seeds, scales=args.scales, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, baselines=[b for b in args.baselines.split(",") if b],
                      device=args.device, noise_z=args.noise_z, edit_start=args.edit_start,
                      cache_sweeps=args.cache_sweeps, guidance_rescale=args.guidance_rescale)
    print(res.summary())
    print(f"wrote {res.metrics_path} and {res.heatmap_path.name}")
    return 0


def cmd_analyze(args) -> int:
    from noiseclr_lab.workflows import analyze

    res = analyze(args.run, clip=args.clip, vocab=args.vocab, prompt=args.prompt, scales=args.scales, seeds=args.seeds,
                  num_inference_steps=args.steps, guidance_scale=args.guidance, edit_start=args.edit_start,
                  guidance_rescale=args.guidance_rescale, device=args.device, suggest_labels=not args.no_suggestions,
                  calibration_target=args.calibration_target, composition=not args.no_composition)
    if res is None:  # a helper process of a sharded analysis: the main process prints
        return 0
    print(res.summary())
    lp = res.data["lpips"]
    if lp["status"] != "ok":
        print(f"LPIPS skipped: {lp['reason']}")
    print(f"wrote {res.path}, " + ", ".join(p.name for p in res.figures)
          + ("" if args.no_suggestions else "; suggested labels stored in the bank"))
    return 0


def cmd_demo(args) -> int:
    from noiseclr_lab.workflows import demo

    res = demo(args.out, steps=args.steps, seeds=args.seeds, scales=args.scales, eval_steps=args.eval_steps,
               device=args.device, log=print, overrides=dict(args.set))
    run = res.run.path
    print(res.gt.summary())
    print(res.analysis.summary())
    print(res.stages())
    print(f"[5/5] done in {res.minutes:.1f} min: {run}/directions.safetensors, {run}/validation/, "
          f"{res.gt.metrics_path}, {res.gt.heatmap_path}, {res.analysis.path}, "
          + ", ".join(str(p) for p in res.analysis.figures))
    print(f"report: {res.report.html}")
    print(f"dashboard: noiseclr-lab dashboard --workspace {Path(args.out)}")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("evaluate-gt", help="score a run's directions against the toy world's ground truth")
    s.add_argument("run", type=Path, help="run folder (holds directions.safetensors)")
    s.add_argument("--domain", required=True, help="toy domain whose probe reads the factors (faces, shapes, scenes)")
    s.add_argument("--seeds", type=at_least_two, default=12, help="seeds per direction and scale (at least 2)")
    s.add_argument("--noise-z", type=nonnegative_float, default=1.0,
                   help="standard errors subtracted from every mean probe change (0: raw means)")
    s.add_argument("--edit-start", type=int, default=None,
                   help="denoising step from which edits are applied (default: after the first 20%% of --steps)")
    s.add_argument("--scales", type=float_list, default=[-6.0, -3.0, -1.5, 1.5, 3.0, 6.0],
                   help="scale sweep, e.g. --scales=-6,-3,3,6 (each direction is scored at its gentlest visible scale)")
    s.add_argument("--steps", type=positive_int, default=15, help="denoising steps (num_inference_steps)")
    s.add_argument("--guidance", type=finite_float, default=3.0, help="CFG scale of the evaluated images (guidance_scale)")
    add_guidance_rescale(s)
    s.add_argument("--baselines", default="random,init,supervised",
                   help="comma-separated baselines to score too, of random, init, supervised (default: all three; "
                        "\"\" for none)")
    s.add_argument("--cache-sweeps", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the sweep images (8-bit) in RUN/analysis/sweeps/ so a rerun or `analyze` reuses them "
                        "(default; --no-cache-sweeps keeps float images in memory only)")
    add_device(s)
    s.set_defaults(func=cmd_evaluate_gt)

    s = sub.add_parser("analyze", help="CLIP analysis of a run on any model: re-scoring, auto-labels, consistency")
    s.add_argument("run", type=Path, help="run folder (holds directions.safetensors)")
    s.add_argument("--clip", default="toy",
                   help="toy (default), NAME:TAG (open_clip, from the local cache), NAME:/path/weights or NAME:random")
    s.add_argument("--vocab", default=None,
                   help="toy:<domain>, faces, cars, cats, art, or a .txt/.toml file (default: the toy domain, else faces)")
    s.add_argument("--prompt", default=None, help="prompt of every image (default: the toy domain's head, else empty)")
    s.add_argument("--scales", type=float_list, default=[-6.0, -3.0, 3.0, 6.0], help="scale sweep, e.g. --scales=-6,-3,3,6")
    s.add_argument("--seeds", type=at_least_two, default=12, help="seeds per direction and scale (at least 2)")
    s.add_argument("--steps", type=positive_int, default=15, help="denoising steps (num_inference_steps)")
    s.add_argument("--guidance", type=finite_float, default=3.0, help="CFG scale of the images (guidance_scale)")
    add_guidance_rescale(s)
    s.add_argument("--edit-start", type=int, default=None,
                   help="denoising step from which edits are applied (default: after the first 20%% of --steps)")
    s.add_argument("--no-suggestions", action="store_true",
                   help="do not store the auto-labels and calibrated scales in the bank")
    s.add_argument("--calibration-target", type=positive_float, default=0.25,
                   help="attribute-probability change a calibrated scale reaches (default 0.25)")
    s.add_argument("--no-composition", action="store_true", help="skip interference, additivity and locality")
    add_device(s)
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("demo", help="the whole loop on the toy faces model: train, evaluate, analyse, report "
                                    "(8-16 min on 2 CPU cores, ~1 min on a GPU)")
    s.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    s.add_argument("--steps", type=positive_int, default=None, help="override the preset's training steps")
    s.add_argument("--seeds", type=at_least_two, default=12, help="evaluation seeds per direction and scale (at least 2)")
    s.add_argument("--scales", type=float_list, default=[-6.0, -3.0, 3.0, 6.0], help="evaluation scale sweep")
    s.add_argument("--eval-steps", type=positive_int, default=15, help="denoising steps of evaluation images")
    s.add_argument("--set", type=field_value, action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the toy-faces preset (repeatable), e.g. --set select_seeds=2")
    add_device(s)
    s.set_defaults(func=cmd_demo)
