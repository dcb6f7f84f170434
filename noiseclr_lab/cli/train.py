"""The train command: every TrainConfig field is a flag; presets set several at once."""

from __future__ import annotations

import argparse
import dataclasses
import os

from noiseclr_lab.cli.args import positive_int

POSITIVE_FIELDS = ("steps", "batch_size", "num_directions")
ALIASES = {"num_directions": ["--directions"]}


def train_config(args):
    """defaults < --config preset < explicit flags."""
    from noiseclr_lab.training.config import TrainConfig, load_preset

    values = load_preset(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k.startswith("cfg_")})
    values = {k.removeprefix("cfg_"): v for k, v in values.items()}
    return TrainConfig.from_dict(values)


def cmd_train(args) -> int:
    from noiseclr_lab.workflows import train_run

    cfg = train_config(args)
    main = int(os.environ.get("RANK", "0")) == 0
    run = train_run(cfg, resume=args.resume, log=print if main else None)
    if main:
        kept = f"{cfg.select} kept of {cfg.num_directions}: " if cfg.select else ""
        extra = ", directions_all.safetensors, selection.json" if cfg.select else ""
        print(f"run written to {run.path} ({kept}directions.safetensors{extra}, metrics.jsonl, validation/)")
    return 0


def add_config_flags(parser) -> None:
    """One flag per TrainConfig field (--num-directions ...), defaulting to 'not given'."""
    from noiseclr_lab.training.config import CHOICES, TrainConfig, field_docs

    docs = field_docs()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] + ALIASES.get(f.name, [])
        kind = type(f.default)
        about = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            parser.add_argument(*names, dest=f"cfg_{f.name}", action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"{about} (default {f.default}; a --config preset may set it)")
        else:
            conv = positive_int if kind is int and f.name in POSITIVE_FIELDS else kind
            choice = {"choices": CHOICES[f.name]} if f.name in CHOICES else {"metavar": f.name.upper()}
            parser.add_argument(*names, dest=f"cfg_{f.name}", type=conv, default=argparse.SUPPRESS, **choice,
                                help=f"{about} (default {f.default!r}; a --config preset may set it)")


def add_parsers(sub) -> None:
    s = sub.add_parser("train", help="learn K directions from unlabeled images (NoiseCLR)",
                       description="Train NoiseCLR directions. Every TrainConfig field has a flag; a --config "
                                   "preset (name or TOML file) sets several at once, explicit flags win.")
    s.add_argument("--config", default=None, help="preset name (see noiseclr_lab/training/presets) or TOML file")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_config_flags(s)
    s.set_defaults(func=cmd_train)
