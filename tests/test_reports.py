"""Disentanglement reports: built from a run trained and analysed in the test (tiny pipeline, tiny CLIP) and
from demo-size artefacts of the shipped toy model; schema round trip; every number of the HTML comes from
report.json; bad input leaves no partial report; a real browser renders it offline."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from noiseclr_lab.cli import main
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.reports import REPORT_SCHEMA, build_report, fmt, load_report, validate_report
from noiseclr_lab.store import RunDir


@pytest.fixture
def tiny_run(tiny_analysed_run):
    return tiny_analysed_run


class _Text(HTMLParser):
    """The visible text of a page (script and style contents left out)."""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _allowed_numbers(obj, out: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _allowed_numbers(k, out)
            _allowed_numbers(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _allowed_numbers(v, out)
    elif isinstance(obj, str):
        out.update(m.lstrip("+") for m in NUMBER.findall(obj))
    elif isinstance(obj, bool) or obj is None:
        pass
    else:
        out.add(fmt(obj))
        out.add(fmt(obj).lstrip("-"))
    return out


def _check_numbers_come_from_json(html: str, data: dict) -> int:
    parser = _Text()
    parser.feed(html)
    shown = NUMBER.findall(" ".join(parser.parts))
    allowed = _allowed_numbers(data, set())
    foreign = sorted({n.lstrip("+") for n in shown} - allowed)
    assert not foreign, f"numbers shown in the HTML but absent from report.json: {foreign[:20]}"
    return len(shown)


def test_report_of_a_run_trained_and_analysed_here(tiny_run, tmp_path):
    res = build_report(tiny_run)
    assert res.folder == RunDir(tiny_run).report_dir
    data = load_report(res.json)  # round trip through the schema
    assert data == json.loads(json.dumps(res.data)) and data["schema"] == REPORT_SCHEMA
    assert data["training"]["steps"] == [1, 2, 3, 4] and len(data["training"]["loss"]) == 4
    assert len(data["directions"]) == 3 and sorted(data["order"]) == ["<d1>", "<d2>", "<d3>"]
    d = data["directions"][0]
    assert 0 <= d["quality"] <= 1 and d["quality"] == pytest.approx(d["reach"] * d["selectivity"] * d["consistency"],
                                                                    abs=2e-4)
    assert d["strip"]["scales"] == [-10.0, 0.0, 10.0] and len(d["locality"]["grid"]) == 16
    comp = data["composition"]
    assert comp["available"] and {e["kind"] for e in comp["examples"]} == {"least interfering", "most interfering"}
    for e in comp["examples"]:
        assert (res.folder / "images" / f"{e['image']}.png").is_file()
    for item in data["directions"]:
        assert (res.folder / "images" / f"{item['strip']['image']}.png").is_file()
    gt = data["ground_truth"]
    assert not gt["available"] and "toy models only" in gt["reason"]  # a non-toy model has no known factors
    html = res.html.read_text()
    assert _check_numbers_come_from_json(html, data) > 50
    assert "http://" not in html.split("<script", 1)[0] and "cdn.plot.ly" not in html.replace(
        html[html.index("<script"):html.index("</script>")], "")  # no external URL outside plotly's own bundle
    assert html.count('class="plotly-graph-div"') == 3 + 1 + 1 + 1  # bars per direction, loss, rescoring, interference
    md = res.markdown.read_text()
    for name in re.findall(r"\(images/([\w-]+\.png)\)", md):
        assert (res.folder / "images" / name).is_file()
    assert "## Composition" in md and "least interfering" in md


def test_compare_and_schema_violations(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("report"))
    res = build_report(tiny_run, compare=[other], out=tmp_path / "cmp")
    rows = res.data["compare"]["runs"]
    assert [r["path"] for r in rows] == [str(tiny_run), str(other)] and rows[0]["final_loss"] == rows[1]["final_loss"]
    assert res.html.read_text().count('class="plotly-graph-div"') == 6 + 2  # + overlaid loss and quality
    _check_numbers_come_from_json(res.html.read_text(), res.data)
    bad = json.loads(res.json.read_text())
    bad["directions"][0]["quality"] = 2.0
    with pytest.raises(NoiseCLRLabError, match="directions/0/quality"):
        validate_report(bad)


def test_bad_input_one_line_and_no_partial_report(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "report" / "report.json").read_bytes() if (run / "report").exists() else None
    analysis = run / "analysis" / "analysis.json"
    good = analysis.read_text()
    cases = {
        "not a run": (tmp_path, "is not a run folder"),
        "corrupt": (run, "is damaged"),
        "older": (run, "schema 'noiseclr_lab.analysis/0'"),
        "missing": (run, "noiseclr-lab analyze"),
    }
    for name, (path, message) in cases.items():
        if name == "corrupt":
            analysis.write_text(good[: len(good) // 2])
        elif name == "older":
            analysis.write_text(json.dumps(json.loads(good) | {"schema": "noiseclr_lab.analysis/0"}))
        elif name == "missing":
            analysis.unlink()
        assert main(["report", str(path), "--out", str(tmp_path / f"out-{name}")]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, (name, err)
        assert not (tmp_path / f"out-{name}").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no temporary folder left
    after = (run / "report" / "report.json").read_bytes() if (run / "report").exists() else None
    assert after == before  # an existing report stays as it was
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    analysis.write_text(good)
    (tmp_path / "busy" / "report.json").write_text("{}")  # a report.json beside other files is still not a report
    assert main(["report", str(run), "--out", str(tmp_path / "busy")]) == 1
    assert "holds more than a report" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_demo_writes_a_report_of_the_toy_model(toy_demo):
    """The README's main job ends with the report (demo-size artefacts of the shipped toy model)."""
    data = load_report(toy_demo.report.json)
    assert data["summary"]["base_model"] == "toy:faces" and data["summary"]["directions"] == 12
    # the demo trained 24 directions and kept the 12 strongest distinct ones, by their CLIP effect
    sel = json.loads(toy_demo.run.selection_path.read_text())
    assert len(sel["directions"]) == 24 and len(DirectionBank.load(toy_demo.run.all_directions_path)) == 24
    assert sel["kept"] == DirectionBank.load(toy_demo.run.directions_path).tokens and len(sel["kept"]) == 12
    gt = data["ground_truth"]
    assert gt["available"] and gt["factors"] == ["skin", "hair", "expression", "glasses", "eyes", "background"]
    assert [b["bank"] for b in gt["banks"]] == ["trained", "random", "supervised"]
    assert len(gt["effect"]) == 12 and all(len(r) == 6 for r in gt["effect"])
    assert all(d["strip"] is not None and d["locality"] is not None for d in data["directions"])
    assert data["composition"]["available"] or "make_with" in data["composition"]
    html = toy_demo.report.html.read_text()
    _check_numbers_come_from_json(html, data)
    assert toy_demo.report.html.stat().st_size < 15e6


def test_report_opens_offline_in_a_real_browser(toy_demo, page, tmp_path):
    """Debian's chromium opens report.html: no console error, every plotly chart drawn, no request leaves
    the file; a full-page screenshot is kept."""
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(toy_demo.report.html.resolve().as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg")
    charts = page.locator(".js-plotly-plot")
    n = charts.count()
    assert n == toy_demo.report.html.read_text().count('class="plotly-graph-div"') and n >= 3
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}")
    for i in range(n):
        assert charts.nth(i).locator(".main-svg").count() >= 1
    charts.first.hover()  # the toolbar shows: it saves a PNG, it offers no upload to Plotly Cloud
    page.locator(".modebar").first.wait_for()
    assert page.locator('.modebar-btn[data-title^="Download plot"]').count() >= 1
    assert page.locator('.modebar-btn[data-title*="Cloud"], .modebar-btn[data-title*="Share"]').count() == 0
    assert page.locator("img").count() >= 12 and page.get_by_text("Ground truth").first.is_visible()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:", "about:")) for u in requests), requests


def test_labels_and_names_cannot_inject_markup(tiny_run, tmp_path):
    from noiseclr_lab.directions import DirectionBank

    run = tmp_path / "run $\\foo$ <b>"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report"))
    bank = DirectionBank.load(run / "directions.safetensors")
    bank.labels = ["<script>alert(1)</script> $\\frac$", "", ""]
    bank.save(run / "directions.safetensors")
    res = build_report(run, out=tmp_path / "out")  # matplotlib reads "$...$" as math unless escaped
    page = res.html.read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = res.markdown.read_text()
    assert "<script>" not in md and "<d1>" not in md and "&lt;d1&gt;" in md


def test_colour_scales_of_all_zero_and_long_labelled_maps():
    """An all-zero effect map (a run too short to move anything) gets a -1..1 scale, not +-1e-6 or 0..0; slanted
    column names make room for themselves instead of being cut at the bottom."""
    import io

    import numpy as np
    from PIL import Image

    from noiseclr_lab.reports.figures import heatmap_figure, matrix_png

    zero = [[0.0, 0.0], [None, 0.0]]
    fig = heatmap_figure(zero, ["<d0>", "<d1>"], ["smile", "glasses"], "effects", "change")
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1.0, 1.0)
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    long = heatmap_figure(np.ones((2, 2)), ["a", "b"], ["a much longer column name", "b"], "t", "c")
    assert long.layout.height > fig.layout.height  # the figure grows by the labels' slanted length
    assert (long.data[0].zmin, long.data[0].zmax) == (-1.0, 1.0)
    img = Image.open(io.BytesIO(matrix_png(zero, ["<d0>", "<d1>"], ["smile", "glasses"], "effects", "change")))
    assert img.size[0] > 100 and img.size[1] > 100


def test_a_toy_run_without_ground_truth_is_told_the_command_that_makes_it(tmp_path):
    """The report's hint for a toy run (either toy model) is a command that runs: evaluate-gt needs --domain."""
    import torch

    from noiseclr_lab.reports.collect import _ground_truth

    run = RunDir(tmp_path / "run")
    for model, domain in (("toy:faces", "faces"), ("toy-zsnr:scenes", "scenes")):
        gt = _ground_truth(run, DirectionBank(torch.zeros(1, 4), ["<d1>"], base_model=model))
        assert not gt["available"] and gt["make_with"] == f"noiseclr-lab evaluate-gt {run.path} --domain {domain}"
    for data in ("/data/faces", "toy:faces"):  # toy data on another model: the probe cannot read its images
        other = DirectionBank(torch.zeros(1, 4), ["<d1>"], base_model="org/some-model", training_config={"data": data})
        gt = _ground_truth(run, other)
        assert gt["make_with"] is None and "toy models only" in gt["reason"]
    bank = DirectionBank(torch.zeros(1, 4), ["<d1>"], base_model="toy:faces", training_config={"data": "toy:scenes"})
    assert _ground_truth(run, bank)["make_with"].endswith("--domain scenes")
