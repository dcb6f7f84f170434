"""The dashboard command: start the Streamlit app on a workspace, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from noiseclr_lab.cli.args import port
from noiseclr_lab.errors import NoiseCLRLabError

APP = Path(__file__).resolve().parents[2] / "dashboards" / "streamlit_app.py"  # in a source checkout


def dashboard_command(workspace: Path, port: int = 8501, address: str = "127.0.0.1", headless: bool = False) -> list[str]:
    """The `streamlit run` command line that serves the dashboard."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address, "--server.port", str(port),
            "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", "10", "--client.toolbarMode", "minimal", "--", "--workspace", str(workspace)]


def cmd_dashboard(args) -> int:
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise NoiseCLRLabError("The dashboard needs streamlit: pip install -e \".[dashboard]\".")
    if not APP.is_file():
        raise NoiseCLRLabError(f"The dashboard app ships with the source checkout ({APP} is missing); install "
                               "noiseclr_lab from a clone.")
    if not args.workspace.is_dir():
        raise NoiseCLRLabError(f"The workspace {args.workspace} is not a folder (make a run first: noiseclr-lab demo).")
    import socket

    try:  # an address this machine can bind (streamlit would fail with a traceback)
        socket.getaddrinfo(args.address, args.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise NoiseCLRLabError(f"--address {args.address!r} is not an address or host name this machine knows.") from None
    if args.address not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.address}: anyone who can reach it can read and label this workspace",
              file=sys.stderr)
    cmd = dashboard_command(args.workspace.resolve(), args.port, args.address, args.headless)
    print(f"dashboard on http://{args.address}:{args.port} (workspace {args.workspace.resolve()}); Ctrl+C stops it")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("dashboard", help="browse, label and compose directions in the Streamlit dashboard")
    s.add_argument("--workspace", type=Path, default=Path("runs"), help="folder of runs the app reads and writes in")
    s.add_argument("--port", type=port, default=8501, help="port (default 8501)")
    s.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--headless", action="store_true", help="do not open a browser")
    s.set_defaults(func=cmd_dashboard)
