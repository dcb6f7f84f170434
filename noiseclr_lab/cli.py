"""The ``noiseclr-lab`` command: one entry point, one subcommand per job.

User errors (bad files, unknown names, bad arguments) print one line and exit non-zero, never a traceback:
exit 2 for bad command-line arguments, exit 1 for everything else.
"""

from __future__ import annotations

import argparse
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


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
