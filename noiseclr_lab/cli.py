"""The ``noiseclr-lab`` command: one entry point, one subcommand per job.

User errors (bad files, unknown names, bad arguments) print one line and exit non-zero, never a traceback:
exit 2 for bad command-line arguments, exit 1 for everything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (argparse prints the usage block too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- subcommands


def _cmd_inspect(args) -> int:
    from noiseclr_lab.directions import DirectionBank

    bank = DirectionBank.load(args.bank)
    print(f"bank:        {args.bank}")
    print(f"directions:  {len(bank)} x {bank.hidden_size} (K x D)")
    print(f"base model:  {bank.base_model or '(unknown)'}")
    print(f"tokenizer:   {bank.tokenizer_fingerprint or '(unknown)'}")
    print(f"created by:  {bank.created_with}")
    norms = bank.embeddings.norm(dim=1)
    width = max(len(t) for t in bank.tokens)
    print(f"{'token':<{width}}  {'norm':>7}  label")
    for tok, lab, n in zip(bank.tokens, bank.labels, norms.tolist()):
        print(f"{tok:<{width}}  {n:7.4f}  {lab}")
    if bank.training_config:
        keys = ", ".join(sorted(bank.training_config))
        print(f"training config keys: {keys}")
    return 0


def _cmd_import_official(args) -> int:
    from noiseclr_lab.directions import import_official

    bank = import_official(args.source, num_tokens=args.num_tokens, base_model=args.base_model or "")
    out = bank.save(args.out)
    print(f"imported {len(bank)} directions ({bank.hidden_size}-d) from {args.source} -> {out}")
    return 0


def _cmd_export_ti(args) -> int:
    from noiseclr_lab.directions import DirectionBank

    bank = DirectionBank.load(args.bank)
    paths = bank.export_textual_inversion(args.out)
    print(f"wrote {len(paths)} textual-inversion files to {args.out} "
          "(load each with StableDiffusionPipeline.load_textual_inversion)")
    return 0


def _cmd_toy_render(args) -> int:
    from noiseclr_lab.toyworld.render import render_folder

    path = render_folder(args.domain, args.n, args.out, seed=args.seed)
    print(f"rendered {args.n} {args.domain} images to {args.out} (factors in {path.name})")
    return 0


def _cmd_edit(args) -> int:
    import torch

    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline, invert
    from noiseclr_lab.editing.grid import edit_grid
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
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe.noiseclr_spec = args.model
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
    out = ep(args.prompt, edits=edits, windows=windows, edit_start=args.edit_start,
             generator=torch.Generator().manual_seed(args.seed), inversion=inversion, **kwargs)
    save_image_atomic(out.images[0], args.out)
    applied = ", ".join(f"{t}={v['scale']:+g}" for t, v in out.edits.items())
    print(f"wrote {args.out} ({applied})")
    return 0


def _train_config(args):
    """defaults < --config preset < explicit flags."""
    from noiseclr_lab.training.config import TrainConfig, load_preset

    values = load_preset(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k.startswith("cfg_")})
    values = {k.removeprefix("cfg_"): v for k, v in values.items()}
    return TrainConfig.from_dict(values)


def _cmd_train(args) -> int:
    from noiseclr_lab.training import train

    cfg = _train_config(args)
    run = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run written to {run} (directions.safetensors, metrics.jsonl, validation/)")
    return 0


def _cmd_evaluate_gt(args) -> int:
    from noiseclr_lab.analysis.groundtruth import evaluate_gt

    out = evaluate_gt(args.run, args.domain, seeds=args.seeds, scales=args.scales, steps=args.steps,
                      guidance=args.guidance, baselines=[b for b in args.baselines.split(",") if b], device=args.device,
                      noise_z=args.noise_z, edit_start=args.edit_start)
    _print_gt_summary(out)
    print(f"wrote {Path(args.run) / 'analysis' / 'gt_metrics.json'} and gt_effects.png")
    return 0


def _print_gt_summary(out: dict) -> None:
    n_f = len(out["factors"])
    print(f"{'bank':<11} {'coverage':>8} {'modularity':>10} {'mig':>6} {'dci_D':>6} {'active':>6}   "
          f"(raw means: coverage, modularity)")
    for name, res in out["banks"].items():
        m, r = res["metrics"], res["metrics_raw"]
        print(f"{name:<11} {m['coverage']:>5.0f}/{n_f} {m['modularity_mean']:>10.2f} {m['mig_style']:>6.2f} "
              f"{m['dci_disentanglement']:>6.2f} {m['active_directions']:>6.0f}   "
              f"{r['coverage']:>5.0f}/{n_f} {r['modularity_mean']:>5.2f}")


def _cmd_demo(args) -> int:
    import time

    from noiseclr_lab.analysis.groundtruth import evaluate_gt
    from noiseclr_lab.toyworld.render import FACTORS_CSV, render_folder
    from noiseclr_lab.training import TrainConfig, load_preset, train

    t0 = time.time()
    out = Path(args.out)
    values = load_preset("toy-faces") | {"out": str(out / "run"), "device": args.device or ""}
    if args.steps:
        values["steps"] = args.steps
    data = out / "data"
    if not (data / FACTORS_CSV).is_file():
        render_folder("faces", values["num_images"], data, seed=values.get("seed", 0))
    values["data"] = str(data)
    cfg = TrainConfig.from_dict(values)
    print(f"[1/3] training {cfg.num_directions} directions on {cfg.num_images} rendered toy faces in {data} "
          f"({cfg.steps} steps)")
    resume = any((out / "run" / "checkpoints").glob("step-*"))
    run = train(cfg, resume=resume)
    print("[2/3] scoring the directions against the toy probe (and baselines)")
    res = evaluate_gt(run, "faces", seeds=args.seeds, scales=args.scales, steps=args.eval_steps,
                      baselines=["random", "supervised"], device=args.device)
    _print_gt_summary(res)
    print(f"[3/3] done in {(time.time() - t0) / 60:.1f} min: {run}/directions.safetensors, {run}/validation/, "
          f"{run}/analysis/gt_metrics.json, {run}/analysis/gt_effects.png")
    return 0


def _add_config_flags(parser) -> None:
    """One flag per TrainConfig field (--num-directions ...), defaulting to 'not given'."""
    import dataclasses

    from noiseclr_lab.training.config import TrainConfig

    aliases = {"num_directions": ["--directions"]}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] + aliases.get(f.name, [])
        kind = type(f.default)
        if kind is bool:
            parser.add_argument(*names, dest=f"cfg_{f.name}", action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"(default {f.default})")
        else:
            conv = _positive_int if kind is int and f.name in ("steps", "batch_size", "num_directions") else kind
            parser.add_argument(*names, dest=f"cfg_{f.name}", type=conv, default=argparse.SUPPRESS,
                                metavar=f.name.upper(), help=f"(default {f.default!r})")


# --------------------------------------------------------------------------- parser


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SCALE such as '<d3>=4', got {text!r}") from None


def _name_window(text: str) -> tuple[str, tuple[int, int]]:
    name, sep, value = text.rpartition("=")
    try:
        start, end = value.split(":")
        if not sep or not name:
            raise ValueError
        return name, (int(start), int(end))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=START:END such as '<d3>=0:25', got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one scale")
    return values


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``; anything else is 'expected <what>, got ...'."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    from noiseclr_lab import __version__

    p = _Parser(prog="noiseclr-lab", description="Discover, apply and judge NoiseCLR directions in Stable Diffusion.")
    p.add_argument("--version", action="version", version=f"noiseclr-lab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("inspect", help="print a direction bank's tokens, labels, base model and shapes")
    s.add_argument("bank", type=Path, help="a directions.safetensors file")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("import-official", help="convert official NoiseCLR outputs into a direction bank")
    s.add_argument("source", type=Path, help="a saved pipeline folder, learned_embeds.bin, or an accelerate pytorch_model.bin")
    s.add_argument("--out", type=Path, required=True, help="where to write directions.safetensors")
    s.add_argument("--num-tokens", type=_positive_int, default=None,
                   help="number of directions in a pytorch_model.bin (default: rows beyond CLIP's 49408)")
    s.add_argument("--base-model", default=None, help="the model spec the directions were trained on (provenance)")
    s.set_defaults(func=_cmd_import_official)

    s = sub.add_parser("export-ti", help="export a bank as diffusers textual-inversion files, one per token")
    s.add_argument("bank", type=Path, help="a directions.safetensors file")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.set_defaults(func=_cmd_export_ti)

    s = sub.add_parser("edit", help="apply directions to a generated image (a seed) or a real one (--image)")
    s.add_argument("--model", default="toy:faces", help="toy:<domain>, hub id, pipeline folder or .safetensors/.ckpt")
    s.add_argument("--bank", type=Path, required=True, help="directions.safetensors")
    s.add_argument("--apply", type=_name_value, action="append", metavar="NAME=SCALE",
                   help="a direction (token or label) and its scale; repeat to compose")
    s.add_argument("--window", type=_name_window, action="append", metavar="NAME=START:END",
                   help="steps [START, END) on which a direction is active (default: all, or from --edit-start)")
    s.add_argument("--edit-start", type=_nonnegative_int, default=0,
                   help="edits (and --grid cells) start at this denoising step; the first steps set the layout "
                        "(evaluate-gt scores from 20%% of the steps on; default 0: every step)")
    s.add_argument("--image", type=Path, default=None, help="edit this real image (inverted first) instead of a seed")
    s.add_argument("--inversion", choices=("ddim", "null-text"), default="ddim", help="inversion method for --image")
    s.add_argument("--prompt", default="", help="prompt for generation (ignored with --image)")
    s.add_argument("--negative-prompt", default=None, help="negative prompt (generation with CFG)")
    s.add_argument("--steps", type=_positive_int, default=50, help="denoising steps")
    s.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (generation only)")
    s.add_argument("--seed", type=int, default=0, help="noise seed")
    s.add_argument("--out", type=Path, required=True, help="output PNG")
    s.add_argument("--grid", action="store_true", help="write a directions x scales grid instead of one image")
    s.add_argument("--scales", type=_float_list, default=[-6.0, -3.0, 0.0, 3.0, 6.0], help="grid scales, e.g. --scales=-4,0,4")
    s.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    s.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    s.set_defaults(func=_cmd_edit)

    s = sub.add_parser("train", help="learn K directions from unlabeled images (NoiseCLR)",
                       description="Train NoiseCLR directions. Every TrainConfig field has a flag; a --config "
                                   "preset (name or TOML file) sets several at once, explicit flags win.")
    s.add_argument("--config", default=None, help="preset name (see noiseclr_lab/training/presets) or TOML file")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_config_flags(s)
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate-gt", help="score a run's directions against the toy world's ground truth")
    s.add_argument("run", type=Path, help="run folder (holds directions.safetensors)")
    s.add_argument("--domain", required=True, help="toy domain whose probe reads the factors (faces, shapes, scenes)")
    s.add_argument("--seeds", type=_positive_int, default=12, help="seeds per direction and scale (at least 2)")
    s.add_argument("--noise-z", type=float, default=1.0,
                   help="standard errors subtracted from every mean probe change (0: raw means)")
    s.add_argument("--edit-start", type=int, default=None,
                   help="denoising step from which edits are applied (default: after the first 20%% of --steps)")
    s.add_argument("--scales", type=_float_list, default=[-6.0, -3.0, -1.5, 1.5, 3.0, 6.0],
                   help="scale sweep, e.g. --scales=-6,-3,3,6 (each direction is scored at its gentlest visible scale)")
    s.add_argument("--steps", type=_positive_int, default=15, help="denoising steps")
    s.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the evaluated images")
    s.add_argument("--baselines", default="random,init,supervised", help="comma-separated baselines to score too")
    s.add_argument("--device", default=None, help="cuda, mps or cpu")
    s.set_defaults(func=_cmd_evaluate_gt)

    s = sub.add_parser("demo", help="the whole loop on the toy faces model: train, evaluate, write grids (~10 min CPU)")
    s.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    s.add_argument("--steps", type=_positive_int, default=None, help="override the preset's training steps")
    s.add_argument("--seeds", type=_positive_int, default=12, help="evaluation seeds per direction and scale")
    s.add_argument("--scales", type=_float_list, default=[-6.0, -3.0, 3.0, 6.0], help="evaluation scale sweep")
    s.add_argument("--eval-steps", type=_positive_int, default=15, help="denoising steps of evaluation images")
    s.add_argument("--device", default=None, help="cuda, mps or cpu")
    s.set_defaults(func=_cmd_demo)

    toy = sub.add_parser("toy", help="the procedural toy world").add_subparsers(dest="toy_command", metavar="TOY_COMMAND",
                                                                               parser_class=_Parser)
    toy.required = True
    s = toy.add_parser("render", help="render a domain's images (a training set) and their factors CSV")
    s.add_argument("--domain", required=True, help="faces, shapes or scenes")
    s.add_argument("--n", type=_positive_int, default=500, help="number of images")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.set_defaults(func=_cmd_toy_render)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NoiseCLRLabError as e:
        print(f"noiseclr-lab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("noiseclr-lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
