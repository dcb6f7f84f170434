"""report.html (one self-contained file: images as data URIs, plotly's JavaScript inlined from the installed
package, no external URL) and report.md (PNG figures beside it), both rendered from report.json's data
alone: every number they show is one of its numbers, printed by ``collect.fmt``."""

from __future__ import annotations

import base64
import html

from noiseclr_lab.reports import figures as F
from noiseclr_lab.reports.collect import fmt

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c5cad3;font-size:13px}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid #dde1e7;position:sticky;top:0;z-index:5}
nav a{margin-right:16px;color:#2457a7;text-decoration:none;font-size:14px}
main{padding:8px 28px 40px;max-width:1280px}section{margin-top:26px;scroll-margin-top:48px}h2{border-bottom:2px solid #dde1e7}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde1e7;padding:3px 8px;
text-align:left}th{background:#eef1f5}.cards{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;width:100%;box-sizing:border-box}
.card h3{margin:4px 0 8px;font-size:16px}.card.inactive{opacity:.85}.imgs{display:flex;gap:10px;
align-items:flex-start;flex-wrap:wrap}img{max-width:100%}.note{color:#5a6372;font-size:13px}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#e3ecfa;color:#1d4f99}
.warn{background:#fff4dc;border:1px solid #f0c36d;padding:6px 10px;border-radius:4px}
details>summary{cursor:pointer;font-weight:600;margin:10px 0}
"""


def _e(text) -> str:
    return html.escape(str(text))


class _Html:
    def __init__(self, images: dict[str, bytes]):
        self.images, self.parts, self.n = images, [], 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def img(self, name: str | None, alt: str) -> str:
        if not name or name not in self.images:
            return '<p class="note">(no cached images)</p>'
        b64 = base64.b64encode(self.images[name]).decode()
        return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'

    def plot(self, fig) -> str:
        import plotly.io as pio

        self.n += 1
        return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{self.n}",
                           config=F.PLOTLY_CONFIG | {"responsive": True})


def _table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _overview(data: dict) -> dict:
    """The Run table of both renderings."""
    s = data["summary"]
    return {"base model": s["base_model"], "data": s["data"] or "n/a", "directions": s["directions"],
            "active directions": s["active_directions"], "mean quality": s["mean_quality"], "CLIP": s["clip"],
            "vocabulary": s["vocabulary"], "calibration target": s["calibration_target"],
            "final loss": data["training"]["final_loss"]}


def _kv(d: dict) -> list[list]:
    def one(v) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, list | tuple):
            return ", ".join(one(x) for x in v)
        return fmt(v)

    return [[k, one(v)] for k, v in d.items()]


GT_COLUMNS = ("coverage", "modularity", "MIG", "DCI disentanglement", "active directions")  # of collect.GT_METRICS


def _gt_rows(g: dict) -> list[list[str]]:
    """One row per scored bank: each ground-truth measure shrunk, with its raw value beside it."""
    return [[b["bank"]] + [f"{fmt(b[lab])} (raw {fmt(b['raw'][lab])})" for lab in GT_COLUMNS] for b in g["banks"]]


def _card_rows(d: dict) -> list[list]:
    return [["quality", fmt(d["quality"])], ["reach / selectivity / consistency",
                                             f"{fmt(d['reach'])} / {fmt(d['selectivity'])} / {fmt(d['consistency'])}"],
            ["auto-label (confidence)", f"{d['suggested_label']} ({fmt(d['confidence'])})"],
            ["sign", fmt(d["sign"])], ["human label", d["label"] or "none"],
            ["calibrated scale", fmt(d["calibrated_scale"])],
            ["label gain at scale", f"{fmt(d['label_gain'])} at {fmt(d['label_scale'])}"],
            ["target gain / off-target", f"{fmt(d['target_gain'])} / {fmt(d['off_target'])}"],
            ["consistency by scale", ", ".join(fmt(v) for v in d["consistency_by_scale"])]]


def _loss_runs(data: dict) -> list:
    t = data["training"]
    return [("loss", t["steps"], t["loss"], t["loss_smoothed"])]  # one run: its legend says raw / smoothed


def render_html(data: dict, images: dict[str, bytes]) -> str:
    from plotly.offline import get_plotlyjs

    h = _Html(images)
    s = data["summary"]
    h.add(f"<header><h1>Disentanglement report: {_e(s['name'])}</h1><p>{_e(s['base_model'])} &middot; "
          f"{_e(data['generated_by'])} &middot; {_e(data['schema'])}</p></header>")
    sections = [("summary", "Run"), ("directions", "Directions"), ("rescoring", "Re-scoring"),
                ("composition", "Composition"), ("ground-truth", "Ground truth")]
    if data.get("compare"):
        sections.append(("compare", "Comparison"))
    h.add("<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in sections) + "</nav><main>")

    h.add('<section id="summary"><h2>Run</h2>')
    if not s["analysis_current"]:
        h.add('<p class="warn">The bank changed since it was analysed: the numbers describe the directions as they '
              'were. Re-run analyze.</p>')
    h.add(_table(_kv(_overview(data)), ["", ""]))
    if data["training"]["steps"]:
        h.add(h.plot(F.loss_figure(_loss_runs(data))))
        h.add(f'<p class="note">final loss: {_e(data["training"]["final_loss_note"])}</p>')
    else:
        h.add('<p class="note">No training metrics (metrics.jsonl) in this run.</p>')
    h.add("<details><summary>Configuration and provenance</summary><div class=\"imgs\">"
          + _table(_kv(s["config"]), ["config", "value"]) + _table(_kv(s["provenance"]), ["provenance", "value"])
          + _table(_kv(s["sweep"]), ["analysis sweep", "value"]) + "</div></details></section>")

    by_token = {d["token"]: d for d in data["directions"]}
    ordered = [by_token[t] for t in data["order"]]
    h.add(f'<section id="directions"><h2>Directions</h2><p class="note">{_e(data["quality_definition"])}</p>')

    def card(d: dict) -> str:
        title = _e(d["token"]) + (f" &middot; {_e(d['label'])}" if d["label"] else "")
        badge = f'<span class="badge">{_e(d["suggested_label"])}</span>'
        loc = d["locality"]
        return (f'<div class="card{"" if d["active"] else " inactive"}" id="dir-{d["index"]}"><h3>{title} '
                f"{badge}</h3>" + '<div class="imgs">' + _table(_card_rows(d), ["", ""])
                + h.img(d["strip"] and d["strip"]["image"], f"{d['token']} seeds x scales")
                + ("<div>" + h.img(loc["image"], f"{d['token']} locality")
                   + f'<p class="note">locality at {fmt(loc["scale"])}:<br>mean change {fmt(loc["mean_change"])}, '
                   f'peak {fmt(loc["peak_change"])}</p></div>' if loc else "") + "</div>"
                + h.plot(F.bars_figure(d["rescoring"], f"Re-scoring of {d['token']} at {fmt(d['rescoring_scale'])}"))
                + "</div>")

    active = [d for d in ordered if d["active"]]
    inactive = [d for d in ordered if not d["active"]]
    h.add('<div class="cards">' + "".join(card(d) for d in active) + "</div>")
    if inactive:
        h.add(f"<details><summary>{len(inactive)} inactive directions (their effect stays under the calibration "
              f"target)</summary><div class=\"cards\">" + "".join(card(d) for d in inactive) + "</div></details>")
    h.add("</section>")

    r = data["rescoring"]
    h.add('<section id="rescoring"><h2>Re-scoring</h2>')
    h.add(h.plot(F.heatmap_figure(r["matrix"], r["tokens"], r["attributes"], "CLIP re-scoring (each direction at its "
                                  "strongest scale)", "Δ P(attribute)")))
    h.add("</section>")

    c = data["composition"]
    h.add('<section id="composition"><h2>Composition</h2>')
    if c["available"]:
        h.add(h.plot(F.heatmap_figure(c["interference"], c["tokens"], c["tokens"], "Interference: change of row i's "
                                      "own effect when column j is added", "interference",
                                      hover="i=%{y}, j=%{x}: %{z:.3f}")))
        corr = c["overlap_predicts_interference"]
        h.add(f'<p class="note">Does low overlap of the change maps predict low interference? Spearman '
              f'{fmt(corr["spearman_pixels"])} (pixels), {fmt(corr["spearman_latents"])} (latents).</p>')
        for ex in c["examples"]:
            h.add(f"<h3>{_e(ex['kind'])}: {_e(ex['i'])} at {fmt(ex['scale_i'])} + {_e(ex['j'])} at "
                  f"{fmt(ex['scale_j'])} (interference {fmt(ex['interference_mean'])})</h3>"
                  + h.img(ex["image"], f"{ex['i']} + {ex['j']}"))
    else:
        h.add(f'<p class="note">No composition: {_e(c["reason"])}. Make it with <code>{_e(c["make_with"])}</code>.</p>')
    h.add("</section>")

    g = data["ground_truth"]
    h.add('<section id="ground-truth"><h2>Ground truth</h2>')
    if g["available"]:
        h.add(h.plot(F.heatmap_figure(g["effect"], g["tokens"], g["factors"], f"Effect of each direction on each "
                                      f"{g['domain']} factor (toy probe)", "effect (probability change)",
                                      diverging=False)))
        h.add(_table(_gt_rows(g), ["bank", *GT_COLUMNS]))
        h.add(f'<p class="note">{_e(g["metrics_note"])}; active threshold {fmt(g["threshold"])}.</p>')
    else:
        h.add(f'<p class="note">{_e(g["reason"])}' + (f'. Make it with <code>{_e(g["make_with"])}</code>.'
                                                        if g.get("make_with") else ".") + "</p>")
    h.add("</section>")

    cmp = data.get("compare")
    if cmp:
        rows = cmp["runs"]
        h.add('<section id="compare"><h2>Comparison</h2>')
        h.add(_table([[x["name"], x["base_model"], fmt(x["steps"]), fmt(x["directions"]), fmt(x["active_directions"]),
                       fmt(x["mean_quality"]), fmt(x["mean_consistency_active"]), fmt(x["final_loss"]),
                       f"{fmt(x['coverage'])} (raw {fmt(x['coverage_raw'])})",
                       f"{fmt(x['modularity'])} (raw {fmt(x['modularity_raw'])})"] for x in rows],
                     ["run", "model", "steps", "directions", "active", "mean quality", "consistency (active)",
                      "final loss", "coverage", "modularity"]))
        h.add(h.plot(F.loss_figure([(x["name"], x["loss_steps"], x["loss"], None) for x in rows])))
        h.add(f'<p class="note">{_e(cmp["loss_note"])}</p>')
        h.add(h.plot(F.quality_figure([(x["name"], x["quality_sorted"]) for x in rows])))
        h.add("</section>")
    h.add("</main>")
    head = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Report: {_e(s['name'])}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>")
    return head + "".join(h.parts) + "</body></html>"


def _m(text) -> str:
    """Text for Markdown: HTML-escaped (a token such as <d1> is not a tag), on one line."""
    return html.escape(str(text), quote=False).replace("\n", " ").replace("\r", " ")


def _md_table(rows: list[list], head: list[str]) -> str:
    def cell(v) -> str:
        return _m(v).replace("|", "\\|")

    return "\n".join(["| " + " | ".join(cell(c) for c in head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]) + "\n"


def render_markdown(data: dict, images: dict[str, bytes]) -> tuple[str, dict[str, bytes]]:
    """report.md and the extra PNG figures it shows (images/<name>.png; the cached-image PNGs are shared)."""
    figs: dict[str, bytes] = {}
    s = data["summary"]
    out = [f"# Disentanglement report: {_m(s['name'])}\n", f"{_m(s['base_model'])} · {data['generated_by']} · "
           f"`{data['schema']}`\n"]
    if not s["analysis_current"]:
        out.append("> The bank changed since it was analysed: the numbers describe the directions as they were.\n")
    out.append("## Run\n")
    out.append(_md_table(_kv(_overview(data)), ["item", "value"]))
    if data["training"]["steps"]:
        figs["loss"] = F.loss_png(_loss_runs(data))
        out.append("\n![training loss](images/loss.png)\n")
    out.append("\n## Directions\n\n" + data["quality_definition"] + "\n")
    by_token = {d["token"]: d for d in data["directions"]}
    for d in (by_token[t] for t in data["order"]):
        out.append(f"\n### {_m(d['token'])}{' · ' + _m(d['label']) if d['label'] else ''}: {_m(d['suggested_label'])}"
                   f"{'' if d['active'] else ' (inactive)'}\n\n")
        out.append(_md_table(_card_rows(d), ["measure", "value"]))
        if d["strip"]:
            out.append(f"\n![{_m(d['token'])} seeds x scales](images/{d['strip']['image']}.png)")
        if d["locality"]:
            out.append(f" ![{_m(d['token'])} locality](images/{d['locality']['image']}.png)")
        out.append("\n")
    r = data["rescoring"]
    figs["rescoring"] = F.matrix_png(r["matrix"], r["tokens"], r["attributes"], "CLIP re-scoring",
                                     "change of probability", values=False)
    out.append("\n## Re-scoring\n\n![re-scoring](images/rescoring.png)\n")
    c = data["composition"]
    out.append("\n## Composition\n\n")
    if c["available"]:
        figs["interference"] = F.matrix_png(c["interference"], c["tokens"], c["tokens"], "Interference (row i, "
                                            "column j added)", "interference")
        out.append("![interference](images/interference.png)\n")
        for ex in c["examples"]:
            out.append(f"\n**{ex['kind']}**: {_m(ex['i'])} at {fmt(ex['scale_i'])} + {_m(ex['j'])} at {fmt(ex['scale_j'])} "
                       f"(interference {fmt(ex['interference_mean'])})\n")
            if ex["image"]:
                out.append(f"\n![{ex['kind']}](images/{ex['image']}.png)\n")
    else:
        out.append(f"No composition: {_m(c['reason'])}. Make it with `{c['make_with']}`.\n")
    g = data["ground_truth"]
    out.append("\n## Ground truth\n\n")
    if g["available"]:
        figs["gt_effect"] = F.matrix_png(g["effect"], g["tokens"], g["factors"], "Effect per factor (toy probe)",
                                         "effect", diverging=False)
        out.append("![ground-truth effects](images/gt_effect.png)\n\n")
        out.append(_md_table(_gt_rows(g), ["bank", *GT_COLUMNS]))
    else:
        out.append(_m(g["reason"]) + (f". Make it with `{g['make_with']}`." if g.get("make_with") else ".") + "\n")
    cmp = data.get("compare")
    if cmp:
        rows = cmp["runs"]
        out.append("\n## Comparison\n\n")
        out.append(_md_table([[x["name"], fmt(x["steps"]), fmt(x["active_directions"]), fmt(x["mean_quality"]),
                               fmt(x["final_loss"]), f"{fmt(x['coverage'])} (raw {fmt(x['coverage_raw'])})"]
                              for x in rows], ["run", "steps", "active", "mean quality", "final loss", "coverage"]))
        figs["compare_loss"] = F.loss_png([(x["name"], x["loss_steps"], x["loss"], None) for x in rows])
        figs["compare_quality"] = F.quality_png([(x["name"], x["quality_sorted"]) for x in rows])
        out.append("\n![loss](images/compare_loss.png) ![quality](images/compare_quality.png)\n")
    return "".join(out), figs
