"""The ``noiseclr-lab`` command: one entry point, one module per command group.

Commands parse arguments, call the library (``noiseclr_lab.workflows`` for whole jobs) and print what it
returns. User errors (bad files, unknown names, bad arguments) print one line and exit non-zero, never a
traceback: exit 2 for bad command-line arguments, exit 1 for everything else.
"""

from __future__ import annotations

import sys

from noiseclr_lab._version import __version__
from noiseclr_lab.cli import banks, dashboard, edit, evaluate, report, toy, train
from noiseclr_lab.cli.args import Parser
from noiseclr_lab.errors import NoiseCLRLabError

COMMAND_GROUPS = (banks, edit, train, evaluate, report, dashboard, toy)  # each has add_parsers(subparsers)


def build_parser() -> Parser:
    p = Parser(prog="noiseclr-lab", description="Discover, apply and judge NoiseCLR directions in Stable Diffusion.")
    p.add_argument("--version", action="version", version=f"noiseclr-lab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
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
    except BrokenPipeError:  # the reader went away (`noiseclr-lab inspect BANK | head`): stop quietly
        sys.stdout = None
        return 141
    except OSError as e:  # a path that cannot be read or written (a file where a folder is needed, no space ...)
        if e.filename:
            print(f"noiseclr-lab: error: cannot use {e.filename}: {e.strerror or e}.", file=sys.stderr)
        else:  # e.g. a library's own OSError: its first line
            print(f"noiseclr-lab: error: {(str(e) or type(e).__name__).splitlines()[0]}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
