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
    """Comma-separated finite numbers, at least one."""
    import math

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one scale")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def finite_float(text: str) -> float:
    """A finite number (no nan or inf)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_at_least(low: float, what: str, strict: bool = False):
    """An argparse type: a finite number >= ``low`` (> ``low`` when ``strict``); a non-finite one is 'expected a
    finite number', a smaller one 'expected <what>'."""
    def parse(text: str) -> float:
        value = finite_float(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_float = finite_at_least(0.0, "a number > 0", strict=True)
nonnegative_float = finite_at_least(0.0, "a number >= 0")


def int_in(low: int, high: int | None, what: str):
    """An argparse type: an integer in [``low``, ``high``) (no upper bound when ``high`` is None); anything else
    is 'expected <what>, got ...'."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``; anything else is 'expected <what>, got ...'."""
    return int_in(low, None, what)


seed = int_in(0, 2**32, "a seed, an integer from 0 to 2**32 - 1")  # numpy and torch sampling seeds
torch_seed = int_in(-(2**63), 2**64, "a seed, an integer from -2**63 to 2**64 - 1")  # torch.Generator.manual_seed's
port = int_in(1, 65536, "a port from 1 to 65535")  # TCP


def device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N or mps (whether this machine has it is checked when the command
    runs, before any model loads: ``models.pick_device``; the parser imports no torch)."""
    from noiseclr_lab.training.config import DEVICE_NAME

    name = text.strip().lower()
    if not DEVICE_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps")
    return name


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
    parser.add_argument("--device", type=device, default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
