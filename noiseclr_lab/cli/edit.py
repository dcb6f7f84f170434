"""The edit command: apply directions to a generated image (a seed) or a real one, or draw a grid."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.cli.args import (
    add_device,
    add_guidance_rescale,
    finite_float,
    float_list,
    name_value,
    name_window,
    nonnegative_int,
    positive_int,
    torch_seed,
)
from noiseclr_lab.errors import NoiseCLRLabError

# what a --recipe replay takes from the recipe: any of these given beside it would be silently ignored
RECIPE_HOLDS = ("model", "bank", "apply", "window", "official_window", "calibrated", "edit_start", "image", "inversion",
                "prompt", "negative_prompt", "steps", "guidance", "guidance_rescale", "seed", "grid", "scales",
                "save_recipe")


def _check_outputs(args) -> None:
    """Fail on an output that cannot be written before any work (a wrong extension, a folder in the way)."""
    from noiseclr_lab.fileio import image_format

    image_format(args.out)
    for path in (args.out, args.save_recipe):
        if path is not None and path.is_dir():
            raise NoiseCLRLabError(f"{path} is a folder; give a file name.")


def cmd_edit(args) -> int:
    from noiseclr_lab.editing import official_window
    from noiseclr_lab.recipe import Recipe, file_sha256
    from noiseclr_lab.workflows import apply_recipe

    _check_outputs(args)
    if args.recipe is not None:  # replay a recipe (e.g. downloaded from the dashboard)
        given = [f"--{k.replace('_', '-')}" for k in RECIPE_HOLDS if getattr(args, k) != args.parser_defaults[k]]
        if given:
            raise NoiseCLRLabError(f"--recipe holds the whole edit, so {', '.join(given)} would be ignored; give only "
                                   "--out (and --device / --dtype) with it.")
        recipe = Recipe.load(args.recipe)
    else:
        if args.bank is None:
            raise NoiseCLRLabError("Give --bank BANK (or --recipe FILE).")
        if args.edit_start >= args.steps:
            raise NoiseCLRLabError(f"--edit-start {args.edit_start} leaves no denoising step to edit (--steps {args.steps}).")
        if args.grid:
            if args.save_recipe is not None:
                raise NoiseCLRLabError("--save-recipe records a single edit, not a --grid.")
            return _grid(args)
        edits = _edits(args)
        if not edits:
            raise NoiseCLRLabError("Nothing to apply: give --apply NAME=SCALE (or --grid).")
        from noiseclr_lab.directions import DirectionBank

        bank = DirectionBank.load(args.bank)

        windows = dict(args.window or [])
        for name, (start, end) in args.official_window or []:
            if name in windows:
                raise NoiseCLRLabError(f"{name!r} has both a --window and an --official-window; give one.")
            windows[name] = official_window(start, end)
        if args.image is not None:  # a missing, damaged or oversized image fails before any model loads
            from noiseclr_lab.editing.images import prepare_image

            prepare_image(args.image, 8)
        prompt = _prompt(args, bank)
        model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model  # a local model too
        recipe = Recipe(model=model, bank=str(args.bank.resolve()), edits=edits, windows=windows,  # absolute:
                        calibrated=args.calibrated, edit_start=args.edit_start, prompt=prompt,  # replays from anywhere
                        negative_prompt=args.negative_prompt, steps=args.steps, guidance=args.guidance,
                        guidance_rescale=args.guidance_rescale, seed=args.seed,
                        image=str(args.image.resolve()) if args.image is not None else None, inversion=args.inversion,
                        bank_hash=bank.content_hash(),
                        image_sha256=file_sha256(args.image) if args.image is not None and args.image.is_file() else None)
    res = apply_recipe(recipe, device=args.device, dtype=args.dtype)
    for note in res.notes:
        print(f"image: {note}")
    from noiseclr_lab.fileio import save_image_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(res.image, args.out)
    if args.save_recipe is not None:
        args.save_recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.save(args.save_recipe)
    applied = ", ".join(f"{t}={v['scale']:+g}" for t, v in res.edits.items())
    print(f"wrote {args.out} ({applied})" + (f"; recipe {args.save_recipe}" if args.save_recipe else ""))
    return 0


def _prompt(args, bank) -> str:
    """--prompt, else the bank's default (its toy domain's head) for generation; "" with --image."""
    from noiseclr_lab.workflows import default_prompt

    return args.prompt if args.prompt is not None else default_prompt(bank) if args.image is None else ""


def _edits(args) -> dict[str, float]:
    """{name: scale} of the --apply flags; a name given twice is an error (which would win?)."""
    edits: dict[str, float] = {}
    for name, scale in args.apply or []:
        if name in edits:
            raise NoiseCLRLabError(f"--apply names {name!r} twice; give each direction once.")
        edits[name] = scale
    return edits


def _grid(args) -> int:
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline, edit_grid, invert
    from noiseclr_lab.editing.inversion import p2p_args
    from noiseclr_lab.fileio import save_image_atomic
    from noiseclr_lab.models import load_pipeline
    bank = DirectionBank.load(args.bank)
    edits = _edits(args)
    prompt = _prompt(args, bank)
    for name in edits:
        bank.index(name)  # unknown names fail before any work
    if args.window or args.official_window:
        raise NoiseCLRLabError("--window applies to single edits; a --grid takes --edit-start for all its cells.")
    if args.calibrated:
        raise NoiseCLRLabError("--calibrated applies to single edits (--apply NAME=MULTIPLE).")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    inversion = None
    if args.image is not None:
        inversion = invert(pipe, args.image, num_inference_steps=args.steps, method=args.inversion,
                           **p2p_args(args.inversion, prompt, args.guidance))
        for note in inversion.notes:
            print(f"image: {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    names = list(edits) or bank.tokens
    grid = edit_grid(EditPipeline(pipe, bank), names, args.scales, prompt=prompt, seeds=[args.seed],
                     inversion=inversion, edit_start=args.edit_start, num_inference_steps=args.steps,
                     guidance_scale=args.guidance, negative_prompt=args.negative_prompt,
                     guidance_rescale=args.guidance_rescale)
    save_image_atomic(grid, args.out)
    print(f"wrote a {len(names)} x {len(args.scales)} directions x scales grid to {args.out}")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("edit", help="apply directions to a generated image (a seed) or a real one (--image)")
    s.add_argument("--model", default="toy:faces", help="toy:<domain>, hub id, pipeline folder or .safetensors/.ckpt")
    s.add_argument("--bank", type=Path, default=None, help="directions.safetensors")
    s.add_argument("--recipe", type=Path, default=None,
                   help="replay a recipe JSON (from the dashboard or --save-recipe): the same pixels on the same device")
    s.add_argument("--save-recipe", type=Path, default=None, help="also write the recipe of this edit (JSON)")
    s.add_argument("--apply", type=name_value, action="append", metavar="NAME=SCALE",
                   help="a direction (token or label) and its scale; repeat to compose")
    s.add_argument("--window", type=name_window, action="append", metavar="NAME=START:END",
                   help="steps [START, END) on which a direction is active (default: all, or from --edit-start)")
    s.add_argument("--official-window", type=name_window, action="append", metavar="NAME=START:END",
                   help="a window in the released NoiseCLR pipeline's convention (start_step <= i <= end_step, both "
                        "inclusive), converted to [START, END + 1)")
    s.add_argument("--calibrated", action="store_true",
                   help="scales are multiples of each direction's calibrated scale (from `analyze`): <d3>=1 is the "
                        "edit that reaches the common target")
    s.add_argument("--edit-start", type=nonnegative_int, default=0,
                   help="edits (and --grid cells) start at this denoising step; the first steps set the layout "
                        "(evaluate-gt scores from 20%% of the steps on; default 0: every step)")
    s.add_argument("--image", type=Path, default=None, help="edit this real image (inverted first) instead of a seed")
    s.add_argument("--inversion", choices=("ddim", "null-text", "null-text-p2p"), default="ddim",
                   help="inversion method for --image: DDIM, our null-text (w = 1), or Prompt-to-Prompt's null-text "
                        "under CFG 7.5 with --prompt (as the released NoiseCLR code)")
    s.add_argument("--prompt", default=None,
                   help="prompt for generation (default: the bank's toy domain's head, such as 'a cartoon face', else "
                        "empty); with --image only null-text-p2p uses it (and needs it)")
    s.add_argument("--negative-prompt", default=None, help="negative prompt (generation with CFG)")
    s.add_argument("--steps", type=positive_int, default=50, help="denoising steps (num_inference_steps)")
    s.add_argument("--guidance", type=finite_float, default=7.5,
                   help="classifier-free guidance scale (generation, and null-text-p2p inversion; other inversions edit "
                        "without CFG)")
    add_guidance_rescale(s)
    s.add_argument("--seed", type=torch_seed, default=0, help="noise seed")
    s.add_argument("--out", type=Path, required=True, help="output PNG")
    s.add_argument("--grid", action="store_true", help="write a directions x scales grid instead of one image")
    s.add_argument("--scales", type=float_list, default=[-6.0, -3.0, 0.0, 3.0, 6.0], help="grid scales, e.g. --scales=-4,0,4")
    add_device(s)
    s.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    s.set_defaults(func=cmd_edit, parser_defaults={k: s.get_default(k) for k in RECIPE_HOLDS})
