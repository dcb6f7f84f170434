"""The edit command: apply directions to a generated image (a seed) or a real one, or draw a grid."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.cli.args import add_device, float_list, name_value, name_window, nonnegative_int, positive_int
from noiseclr_lab.errors import NoiseCLRLabError


def cmd_edit(args) -> int:
    import torch

    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline, edit_grid, invert
    from noiseclr_lab.fileio import save_image_atomic
    from noiseclr_lab.models import load_pipeline

    bank = DirectionBank.load(args.bank)
    edits = dict(args.apply or [])
    windows = {name: win for name, win in (args.window or [])}
    if not args.grid and not edits:
        raise NoiseCLRLabError("Nothing to apply: give --apply NAME=SCALE (or --grid).")
    for name in list(edits) + list(windows):
        bank.index(name)  # unknown names fail before any work
    if args.edit_start >= args.steps:
        raise NoiseCLRLabError(f"--edit-start {args.edit_start} leaves no denoising step to edit (--steps {args.steps}).")
    if args.grid and windows:
        raise NoiseCLRLabError("--window applies to single edits; a --grid takes --edit-start for all its cells.")
    if args.grid and args.calibrated:
        raise NoiseCLRLabError("--calibrated applies to single edits (--apply NAME=MULTIPLE).")
    if args.calibrated:
        for name in edits:
            k = bank.index(name)
            if bank.calibrated_scales[k] is None:
                raise NoiseCLRLabError(f"Direction {bank.tokens[k]} has no calibrated scale; run `noiseclr-lab analyze` "
                                       "on its run first.")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    ep = EditPipeline(pipe, bank)
    inversion = None
    if args.image is not None:
        inversion = invert(pipe, args.image, num_inference_steps=args.steps, method=args.inversion)
        for note in inversion.notes:
            print(f"image: {note}")
    kwargs = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "negative_prompt": args.negative_prompt}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.grid:
        names = list(edits) or bank.tokens
        grid = edit_grid(ep, names, args.scales, prompt=args.prompt, seeds=[args.seed], inversion=inversion,
                         edit_start=args.edit_start, **kwargs)
        save_image_atomic(grid, args.out)
        print(f"wrote a {len(names)} x {len(args.scales)} directions x scales grid to {args.out}")
        return 0
    out = ep(args.prompt, edits=edits, windows=windows, edit_start=args.edit_start, calibrated=args.calibrated,
             generator=torch.Generator().manual_seed(args.seed), inversion=inversion, **kwargs)
    save_image_atomic(out.images[0], args.out)
    applied = ", ".join(f"{t}={v['scale']:+g}" for t, v in out.edits.items())
    print(f"wrote {args.out} ({applied})")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("edit", help="apply directions to a generated image (a seed) or a real one (--image)")
    s.add_argument("--model", default="toy:faces", help="toy:<domain>, hub id, pipeline folder or .safetensors/.ckpt")
    s.add_argument("--bank", type=Path, required=True, help="directions.safetensors")
    s.add_argument("--apply", type=name_value, action="append", metavar="NAME=SCALE",
                   help="a direction (token or label) and its scale; repeat to compose")
    s.add_argument("--window", type=name_window, action="append", metavar="NAME=START:END",
                   help="steps [START, END) on which a direction is active (default: all, or from --edit-start)")
    s.add_argument("--calibrated", action="store_true",
                   help="scales are multiples of each direction's calibrated scale (from `analyze`): <d3>=1 is the "
                        "edit that reaches the common target")
    s.add_argument("--edit-start", type=nonnegative_int, default=0,
                   help="edits (and --grid cells) start at this denoising step; the first steps set the layout "
                        "(evaluate-gt scores from 20%% of the steps on; default 0: every step)")
    s.add_argument("--image", type=Path, default=None, help="edit this real image (inverted first) instead of a seed")
    s.add_argument("--inversion", choices=("ddim", "null-text"), default="ddim", help="inversion method for --image")
    s.add_argument("--prompt", default="", help="prompt for generation (ignored with --image)")
    s.add_argument("--negative-prompt", default=None, help="negative prompt (generation with CFG)")
    s.add_argument("--steps", type=positive_int, default=50, help="denoising steps (num_inference_steps)")
    s.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (generation only)")
    s.add_argument("--seed", type=int, default=0, help="noise seed")
    s.add_argument("--out", type=Path, required=True, help="output PNG")
    s.add_argument("--grid", action="store_true", help="write a directions x scales grid instead of one image")
    s.add_argument("--scales", type=float_list, default=[-6.0, -3.0, 0.0, 3.0, 6.0], help="grid scales, e.g. --scales=-4,0,4")
    add_device(s)
    s.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    s.set_defaults(func=cmd_edit)
