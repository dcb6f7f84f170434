"""Toy-world commands: toy render."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.cli.args import Parser, positive_int, seed


def cmd_toy_render(args) -> int:
    from noiseclr_lab.errors import NoiseCLRLabError
    from noiseclr_lab.toyworld.render import render_folder

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise NoiseCLRLabError(f"{args.out} is not an empty folder; render into a new one (images of an earlier "
                               "render would mix with these, and factors.csv would list only the new ones).")
    path = render_folder(args.domain, args.n, args.out, seed=args.seed)
    print(f"rendered {args.n} {args.domain} images to {args.out} (factors in {path.name})")
    return 0


def add_parsers(sub) -> None:
    toy = sub.add_parser("toy", help="the procedural toy world").add_subparsers(dest="toy_command", metavar="TOY_COMMAND",
                                                                               parser_class=Parser)
    toy.required = True
    s = toy.add_parser("render", help="render a domain's images (a training set) and their factors CSV")
    s.add_argument("--domain", required=True, help="faces, shapes or scenes")
    s.add_argument("--n", type=positive_int, default=500, help="number of images")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=seed, default=0, help="sampling seed")
    s.set_defaults(func=cmd_toy_render)
