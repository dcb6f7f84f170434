"""Argument types and the parser class shared by every command group."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (argparse prints the usage block too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def name_value(text: str) -> tuple[str, float]:
    """NAME=SCALE, e.g. '<d3>=4'."""
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SCALE such as '<d3>=4', got {text!r}") from None


def name_window(text: str) -> tuple[str, tuple[int, int]]:
    """NAME=START:END, e.g. '<d3>=0:25'."""
    name, sep, value = text.rpartition("=")
    try:
        start, end = value.split(":")
        if not sep or not name:
            raise ValueError
        return name, (int(start), int(end))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=START:END such as '<d3>=0:25', got {text!r}") from None


def field_value(text: str) -> tuple[str, object]:
    """FIELD=VALUE of a training config, the value read as a TOML literal (2, 1e-3, true, "a b"; a bare word
    that is not one, such as toy:faces, stays a string), e.g. 'select_seeds=2'."""
    import tomllib

    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE such as 'select_seeds=2', got {text!r}")
    try:
        return name.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return name.strip(), value.strip()


def float_list(text: str) -> list[float]:
    """Comma-separated numbers, at least one."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one scale")
    return values


def int_at_least(low: int, what: str):
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


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")


def share(text: str) -> float:
    """A number in [0, 1] (guidance_rescale)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_guidance_rescale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guidance-rescale", type=share, default=0.0,
                        help="rescale the guided (and edited) estimate towards the prompt estimate's standard "
                             "deviation by this share (Lin et al. 2024; 0.7 for zero-terminal-SNR models such as "
                             "toy-zsnr; default 0: none)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
