"""The Streamlit dashboard: every page headless (AppTest) on a workspace of real runs (the toy demo at test
size and a tiny analysed run), the label store under concurrent writers, the workspace's path checks, safe
upload decoding, recipe replay, and one real-browser session against a live `noiseclr-lab dashboard`."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from noiseclr_lab.cli import main
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.directions.labels import LabelStore
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.recipe import Recipe
from noiseclr_lab.workspace import Workspace

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
PAGES = Path(__file__).resolve().parents[1] / "dashboards" / "app_pages"


@pytest.fixture
def ws(toy_demo, tiny_analysed_run, tmp_path):
    """A workspace: the toy demo run, the tiny analysed run (with composition) and a run being trained."""
    root = tmp_path / "ws"
    shutil.copytree(toy_demo.run.path, root / "toy" / "run")
    shutil.copytree(tiny_analysed_run, root / "tiny" / "run", ignore=shutil.ignore_patterns("report"))
    busy = root / "busy"
    busy.mkdir()
    (busy / "config.json").write_text(json.dumps({"config": {"steps": 100, "model": "toy:faces"}}))
    (busy / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3))
                                        + '{"step": 4, "lo')  # a line being written
    return root


def page(name: str, root: Path, **state):
    at = streamlit_testing.AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=180)
    at.session_state["workspace"] = str(root)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_runs_page_lists_runs_and_shows_one_in_training_as_in_progress(ws):
    at = page("runs", ws)
    assert not at.exception
    rows = at.dataframe[0].value
    status = dict(zip(rows["run"], rows["status"]))
    assert status == {"busy": "in progress", "tiny/run": "analysed", "toy/run": "reported"}
    assert not at.error
    at.selectbox(key="runs_detail").set_value("busy").run()
    assert any("being trained" in i.value for i in at.info) and not at.exception
    at.selectbox(key="runs_detail").set_value("tiny/run").run()
    next(b for b in at.button if "report" in b.label).click().run()  # build the report
    assert any("wrote" in s.value for s in at.success)
    assert (ws / "tiny" / "run" / "report" / "report.html").is_file()


def test_directions_page_filters_sorts_labels_and_exports(ws):
    at = page("directions", ws, selected_run="toy/run")
    assert not at.exception and not at.error
    assert "12 of 12 directions" in at.caption[0].value
    assert len(at.image) == 12  # every card shows its seeds x scales strip from the cached sweep
    tokens = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors").tokens  # a selection of <d1>..<d24>
    part = tokens[0][:-2]  # e.g. "<d1" of "<d14>"
    at.text_input(key="filter").set_value(part).run()
    assert f"{sum(part in t for t in tokens)} of 12 directions" in at.caption[0].value
    at.text_input(key="filter").set_value("").run()
    at.selectbox(key="sort").set_value("consistency").run()
    assert not at.exception
    at.text_input(key="label_0@toy/run").set_value("smile")
    at.text_area(key="notes_0@toy/run").set_value("clean on every seed")
    at.radio(key="verdict_0@toy/run").set_value("good")
    at.button(key="FormSubmitter:label-0@toy/run-Save").click().run()
    bank = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors")
    with LabelStore(ws / "labels.sqlite") as store:
        assert store.current(bank.content_hash())[bank.tokens[0]] == {"label": "smile", "notes": "clean on every seed",
                                                             "verdict": "good"}
        assert store.journal_mode == "wal"
    export = next(b for b in at.button if b.label.startswith("Export"))
    export.click().run()
    assert DirectionBank.load(ws / "toy" / "run" / "directions.safetensors").labels[0] == "smile"


def test_directions_page_generates_a_missing_strip(ws):
    shutil.rmtree(ws / "toy" / "run" / "analysis")  # no cached sweep, no analysis
    at = page("directions", ws, selected_run="toy/run")
    assert any("has no analysis" in w.value for w in at.warning)
    at.button(key="strip_0@toy/run").click().run()
    assert not at.exception and not at.error and len(at.image) == 1
    assert list((ws / "toy" / "run" / "analysis").glob("preview-0000-*.png"))
    made = {p: p.stat().st_mtime_ns for p in (ws / "toy" / "run" / "analysis").glob("preview-*.png")}
    at.run()  # any later rerun (e.g. saving a label) still shows the strip made, without making it again
    assert not at.exception and len(at.image) == 1
    assert {p: p.stat().st_mtime_ns for p in (ws / "toy" / "run" / "analysis").glob("preview-*.png")} == made


def test_compose_names_directions_by_the_labels_saved_in_the_workspace(ws):
    """A label saved on the Directions page (the label store) names the direction in Compose's picker before it
    is exported into the bank file."""
    bank = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors")
    with LabelStore(ws / "labels.sqlite") as store:
        store.set(bank.content_hash(), bank.tokens[1], "label", "smile", "tester")
    at = page("compose", ws, selected_run="toy/run")
    assert not at.exception
    options = at.multiselect(key="compose_dirs::toy/run").options
    assert options[1] == f"{bank.tokens[1]} · smile" and options[0].startswith(bank.tokens[0])


def test_compose_page_edits_and_its_recipe_replays_to_the_same_pixels(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISECLR_DEVICE", "cpu")
    at = page("compose", ws, selected_run="toy/run")
    assert not at.exception
    at.multiselect(key="compose_dirs::toy/run").set_value([0, 3]).run()
    at.slider(key="scale_0_0@toy/run").set_value(2.0)  # raw scales: this bank has no calibrated ones
    at.slider(key="window_3@toy/run").set_value((3, 15))
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    res, seconds = at.session_state["composed::toy/run"]
    fourth = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors").tokens[3]
    assert res.recipe.windows == {fourth: [3, 15]} and res.recipe.steps == 15
    recipe = tmp_path / "recipe.json"
    res.recipe.save(recipe)
    assert main(["edit", "--recipe", str(recipe), "--out", str(tmp_path / "replay.png"), "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "replay.png")), np.asarray(res.image))
    # a changed bank is refused on replay
    bank = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors")
    bank.embeddings[0] += 1
    bank.save(ws / "toy" / "run" / "directions.safetensors")
    assert main(["edit", "--recipe", str(recipe), "--out", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()


def test_interference_page_shows_a_pair(ws):
    at = page("interference", ws, selected_run="tiny/run")
    assert not at.exception and not at.error
    at.selectbox(key="pair_i@tiny/run").set_value("<d1>")
    at.selectbox(key="pair_j@tiny/run").set_value("<d3>").run()
    assert any("interference of <d1> by <d3>" in m.value for m in at.markdown)
    assert len(at.image) == 1
    at = page("interference", ws, selected_run="toy/run")  # the test-size demo composed nothing: says why
    assert any("No composition" in i.value for i in at.info)


def test_compare_page_tables_two_runs(ws):
    at = page("compare", ws)
    assert not at.exception and not at.error
    at.multiselect(key="compare_runs").set_value(["tiny/run", "toy/run"]).run()
    table = at.dataframe[0].value
    assert list(table["run"]) == ["tiny/run", "toy/run"] and "factors covered" in table.columns


def test_workspace_refuses_paths_outside_it(ws, tmp_path):
    w = Workspace(ws)
    assert w.resolve("toy/run") == (ws / "toy" / "run").resolve()
    outside = tmp_path / "outside"
    shutil.copytree(ws / "tiny" / "run", outside / "run")
    os.symlink(outside, ws / "link")
    for bad in ("../outside", "toy/../../outside", "link/run", str(outside), "/etc/passwd"):
        with pytest.raises(NoiseCLRLabError, match="outside the workspace"):
            w.resolve(bad)
    assert "link/run" not in [r.name for r in w.runs()]  # a link leading outside is not followed
    with pytest.raises(NoiseCLRLabError, match="not a folder"):
        Workspace(tmp_path / "nope")
    bad = ws / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2]")  # not what a trainer writes: listed as damaged, the rest still listed
    (ws / "old").mkdir()
    (ws / "old" / "config.json").write_text(json.dumps({"config": {"steps": 9}}))
    os.utime(ws / "old" / "config.json", (time.time() - 3600, time.time() - 3600))
    status = {r.name: r.status for r in Workspace(ws).runs()}
    assert status["bad"].startswith("damaged") and status["old"] == "stopped" and status["toy/run"] == "reported"


def test_uploads_are_decoded_safely(tmp_path):
    from noiseclr_lab.editing.images import decode_upload

    img = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    path = tmp_path / "a.png"
    img.save(path)
    assert decode_upload(path.read_bytes()).mode == "RGB"
    with pytest.raises(NoiseCLRLabError, match="not a readable image"):
        decode_upload(path.read_bytes()[:60], "cut.png")
    with pytest.raises(NoiseCLRLabError, match="not a readable image"):
        decode_upload(b"hello", "text.png")
    with pytest.raises(NoiseCLRLabError, match="MB"):
        decode_upload(b"0" * 2000, "big.png", max_bytes=1000)
    Image.new("L", (5000, 5000)).save(tmp_path / "huge.png")  # compresses to a few kB: a pixel bomb
    with pytest.raises(NoiseCLRLabError, match="pixels"):
        decode_upload((tmp_path / "huge.png").read_bytes(), "huge.png")


WRITER = """
import sys, time
from pathlib import Path
from noiseclr_lab.directions.labels import LabelStore
db, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
folder = Path(db).parent
with LabelStore(db) as store:
    (folder / f"ready-{who}").touch()
    while not (folder / "go").exists():  # start together
        time.sleep(0.005)
    for i in range(n):
        store.set("bank", f"<d{i % 7}>", "notes", f"{who} {i}", who=who)
        time.sleep(0.003)  # a person's pace is slower still; without a pause one writer keeps the lock
"""


def test_label_store_loses_nothing_under_concurrent_writers(tmp_path):
    """Three processes (fresh interpreters, as three dashboard sessions would be) write at the same time."""
    db = tmp_path / "labels.sqlite"
    LabelStore(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"w{w}", "60"]) for w in range(3)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for p in procs:
        assert p.wait(120) == 0
    with LabelStore(db) as store:
        events = store.history("bank")
        assert len(events) == 180 and store.journal_mode == "wal"
        order = [e["who"] for e in events]
        switches = sum(a != b for a, b in zip(order, order[1:]))
        assert switches > 3, "the writers did not overlap: this run tested nothing concurrent"
        for w in range(3):  # every writer's every change is there, in its order
            mine = [e["new"] for e in events if e["who"] == f"w{w}"]
            assert mine == [f"w{w} {i}" for i in range(60)]
        # each event's old value is the value before it (one history, no lost update)
        last: dict[str, str | None] = {}
        for e in events:
            assert e["old"] == last.get(e["token"])
            last[e["token"]] = e["new"]
        assert not store.set("bank", "<d0>", "notes", store.current("bank")["<d0>"]["notes"])  # unchanged: no row
        with pytest.raises(NoiseCLRLabError, match="verdict"):
            store.set("bank", "<d0>", "verdict", "maybe")
        # a label the bank file already holds: saving it unchanged records nothing, clearing it is a change
        assert not store.set("other", "<d1>", "label", "smile", baseline="smile")
        assert store.set("other", "<d1>", "label", "", baseline="smile")
        assert store.current("other")["<d1>"]["label"] == ""
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM label_events").fetchone()[0] == 181  # + the cleared label


def test_recipe_files_are_checked():
    with pytest.raises(NoiseCLRLabError, match="schema"):
        Recipe.from_dict({"model": "toy:faces"})
    good = Recipe(model="toy:faces", bank="b.safetensors", edits={"<d1>": 2}).as_dict()
    with pytest.raises(NoiseCLRLabError, match="unknown fields: evil"):
        Recipe.from_dict(good | {"evil": 1})
    with pytest.raises(NoiseCLRLabError, match="edit_start"):
        Recipe.from_dict(good | {"edit_start": 60})
    assert Recipe.from_dict(good).edits == {"<d1>": 2.0}
    old = {k: v for k, v in good.items() if k != "guidance_rescale"}  # a recipe saved before the field
    assert Recipe.from_dict(old).guidance_rescale == 0.0
    with pytest.raises(NoiseCLRLabError, match="guidance_rescale is a share"):
        Recipe.from_dict(good | {"guidance_rescale": -0.1})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_dashboard(ws, monkeypatch):
    port = _free_port()
    from noiseclr_lab.cli.dashboard import dashboard_command

    env = os.environ | {"NOISECLR_DEVICE": "cpu"}
    proc = subprocess.Popen(dashboard_command(ws, port, headless=True), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("the dashboard did not start: " + proc.stdout.read().decode()[-2000:])
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


def test_dashboard_in_a_real_browser(live_dashboard, ws, page, tmp_path):
    """Open the app, compose an edit, label a direction (checked in SQLite), pick a pair by clicking its
    interference cell, keep a screenshot."""
    page.set_default_timeout(60_000)
    page.goto(live_dashboard)
    page.get_by_role("heading", name="Runs").wait_for()
    page.locator('[data-testid="stDataFrame"] canvas').first.wait_for()  # the runs table drawn (a canvas grid)
    page.get_by_text("reported").first.wait_for(state="attached")  # ... with its cells, not only the container
    page.get_by_role("link", name="Compose").click()
    page.get_by_role("heading", name="Compose").wait_for()
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="toy/run").click()
    page.wait_for_timeout(2000)  # the page reruns for the other run (its widgets are replaced)
    page.locator('[data-testid="stMultiSelect"]').first.click()
    first = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors").tokens[0]
    page.get_by_role("option", name=re.compile("^" + re.escape(first) + "( |$)")).click()  # not "Select all"
    page.keyboard.press("Escape")
    compose = page.get_by_role("button", name="Compose")
    expect(compose).to_be_enabled()
    compose.click()
    page.get_by_role("button", name="Download the recipe").wait_for()
    assert page.locator('[data-testid="stImage"] img').count() >= 1
    page.screenshot(path=str(tmp_path / "compose.png"), full_page=True)
    page.get_by_role("link", name="Directions").click()
    page.get_by_role("heading", name="Directions").wait_for()
    box = page.get_by_label("Label", exact=True).first
    box.fill("browser label")
    page.get_by_role("button", name="Save").first.click()
    page.get_by_text("saved").first.wait_for()
    bank = DirectionBank.load(ws / "toy" / "run" / "directions.safetensors")
    with LabelStore(ws / "labels.sqlite") as store:
        values = [v.get("label") for v in store.current(bank.content_hash()).values()]
    assert "browser label" in values
    # Interference: a click on cell (row 1, column 0) of the heat map picks that pair in the two selectors
    tokens = json.loads((ws / "tiny" / "run" / "analysis" / "analysis.json").read_text())["composition"]["tokens"]
    page.get_by_role("link", name="Interference").click()
    page.get_by_role("heading", name="Interference").wait_for()
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="tiny/run").click()
    picked = lambda: [page.get_by_role("combobox", name=n).input_value() for n in ("i (row)", "j (column)")]  # noqa: E731
    expect(page.get_by_role("combobox", name="i (row)")).to_have_value(tokens[0])
    assert picked() == [tokens[0], tokens[1]]
    area = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    n = len(tokens)
    page.mouse.click(area["x"] + area["width"] * 0.5 / n, area["y"] + area["height"] * 1.5 / n)
    expect(page.get_by_role("combobox", name="i (row)")).to_have_value(tokens[1])
    assert picked() == [tokens[1], tokens[0]]
    page.get_by_role("combobox", name="i (row)").click()  # the selectors still work after a click (the chart
    page.get_by_role("option", name=tokens[0], exact=True).click()  # keeps its selection across reruns)
    page.wait_for_timeout(2000)  # the rerun that would copy the clicked cell back
    expect(page.get_by_role("combobox", name="i (row)")).to_have_value(tokens[0])
    assert (tmp_path / "compose.png").stat().st_size > 10_000
    assert sys.executable  # the server ran under this interpreter
