"""The report command: a run's disentanglement report (HTML, JSON, Markdown) from what its folder stores."""

from __future__ import annotations

from pathlib import Path


def cmd_report(args) -> int:
    from noiseclr_lab.workflows import report

    res = report(args.run, compare=args.compare or (), out=args.out)
    d = res.data["summary"]
    print(f"{d['name']}: {d['active_directions']}/{d['directions']} active directions, mean quality "
          f"{d['mean_quality']}" + (f"; compared with {len(args.compare)} run(s)" if args.compare else ""))
    print(f"wrote {res.html} ({res.html.stat().st_size / 1e6:.1f} MB), {res.json.name}, {res.markdown.name} "
          f"in {res.seconds:.1f} s")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("report", help="a run's disentanglement report: one self-contained HTML, JSON and Markdown")
    s.add_argument("run", type=Path, help="run folder (after `noiseclr-lab analyze`)")
    s.add_argument("--compare", type=Path, nargs="+", metavar="RUN", help="other analysed runs to compare with")
    s.add_argument("--out", type=Path, default=None, help="report folder (default RUN/report; it is replaced)")
    s.set_defaults(func=cmd_report)
