"""What a report shows, gathered from a run folder alone: config.json, metrics.jsonl, the bank, analysis.json,
gt_metrics.json and the cached sweep images. No model is loaded; nothing is computed on a device.

The result is the report's JSON (``REPORT_SCHEMA``, documented in docs/design.md, "Reports") plus the PNG
images it refers to by name (``images/<name>.png`` beside report.json).
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noiseclr_lab._version import __version__
from noiseclr_lab.analysis.clipanalysis import SCHEMA as ANALYSIS_SCHEMA
from noiseclr_lab.analysis.groundtruth import GT_SCHEMA, bank_domain
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import read_json
from noiseclr_lab.models import toy_model_domain
from noiseclr_lab.store import RunDir, inside

REPORT_SCHEMA = "noiseclr_lab.report/1"
STRIP_SEEDS = 4  # rows of a direction's seeds x scales strip and of a composition example
CELL = 96  # px of one image in strips (images are resized to it: a 512 px model stays small)
LOCALITY_GRID = 16  # a locality map is stored in report.json as this many x this many cell means
LOSS_POINTS = 400  # a training-loss curve is thinned to at most this many points

QUALITY_DEFINITION = (
    "quality = reach x selectivity x consistency, each in [0, 1]. reach = min(1, label gain / calibration "
    "target): whether the direction's main effect (its auto-label's attribute, shrunk by its standard error) "
    "reaches the attribute change a calibrated scale aims at; selectivity = target gain / (target gain + "
    "off-target change): how much of what it changes is its own attribute; consistency = max(0, the CLIP "
    "consistency across seeds): whether it edits every seed the same way. Active directions are those whose "
    "main effect reaches the calibration target (they have a calibrated scale); the others are listed collapsed.")


@dataclass
class Collected:
    """The report's data and the PNG images it names."""

    data: dict
    images: dict[str, bytes] = field(default_factory=dict)


def fmt(v) -> str:
    """How every number appears in the HTML and Markdown (and how tests find it in report.json)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    v = float(v)
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.3g}" if v != 0 else "0"


def _read_json(path: Path, what: str, schema: str, remedy: str) -> dict:
    data = read_json(path, remedy)
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise NoiseCLRLabError(f"{path} is not a {what} this version reads (schema {found!r}, expected {schema!r}); "
                               f"{remedy}.")
    return data


def _inside(run: RunDir, rel: str | None) -> Path | None:
    """A folder named in a run's JSON, relative to the run; None when absent or when it resolves outside."""
    path = inside(run.path, rel) if rel else None
    return path if path is not None and path.is_dir() else None


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _load_batch(path: Path) -> np.ndarray | None:
    """uint8 images (N, H, W, 3) of one cached batch, or None when missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file() or path.is_symlink():  # a link could lead outside the run
        return None
    try:
        x = load_file(str(path))["images"]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    if x.dtype != np.uint8:  # float batches in [0, 1]
        x = (np.clip(x.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def _grid(rows: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str]) -> bytes:
    from PIL import Image

    from noiseclr_lab.editing.grid import compose_grid

    cells = [[Image.fromarray(x) for x in row] for row in rows]
    return _png(compose_grid(cells, row_labels, col_labels, cell=CELL))


def _block_mean(m: np.ndarray, n: int) -> np.ndarray:
    """An (H, W) map as n x n cell means (H, W multiples of n; else the nearest rows/columns are used)."""
    H, W = m.shape
    ys = (np.arange(n + 1) * H / n).astype(int)
    xs = (np.arange(n + 1) * W / n).astype(int)
    return np.array([[m[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)].mean() for j in range(n)]
                     for i in range(n)])


def quality(d: dict, target: float) -> dict:
    """The documented quality score of one analysed direction (``QUALITY_DEFINITION``) and its parts."""
    reach = float(np.clip(d["label_gain"] / target, 0.0, 1.0)) if target > 0 else 0.0
    tg, off = max(float(d["target_gain"]), 0.0), max(float(d["off_target"]), 0.0)
    selectivity = tg / (tg + off) if tg + off > 0 else 0.0
    consistency = max(float(d["consistency"]), 0.0)
    return {"quality": round(reach * selectivity * consistency, 4), "reach": round(reach, 4),
            "selectivity": round(selectivity, 4), "consistency": round(consistency, 4)}


def _training(run: RunDir) -> dict:
    records = [r for r in run.read_metrics() if "loss" in r and "step" in r]
    steps = [int(r["step"]) for r in records]
    loss = [float(r["loss"]) for r in records]
    if len(steps) > LOSS_POINTS:
        keep = np.unique(np.linspace(0, len(steps) - 1, LOSS_POINTS).round().astype(int))
        steps, loss = [steps[i] for i in keep], [loss[i] for i in keep]
    smooth, ema = [], None
    for v in loss:  # exponential moving average (the raw values are kept beside it)
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        smooth.append(round(ema, 5))
    tail = loss[-max(1, len(loss) // 10):] if loss else []
    return {"steps": steps, "loss": [round(v, 5) for v in loss], "loss_smoothed": smooth,
            "final_loss": round(float(np.mean(tail)), 5) if tail else None,
            "final_loss_note": "mean of the last 10% of the logged losses (raw)"}


def _summary(run: RunDir, bank: DirectionBank, analysis: dict, config: dict | None) -> dict:
    cfg = (config or {}).get("config", {})
    prov = (config or {}).get("provenance", {})
    return {
        "name": run.path.resolve().name if run.path.name in ("", ".") else run.path.as_posix(),
        "path": str(run.path),
        "base_model": bank.base_model,
        "data": prov.get("data") or cfg.get("data"),
        "directions": len(bank),
        "config": {k: v for k, v in sorted(cfg.items()) if isinstance(v, str | int | float | bool) or v is None},
        "provenance": {k: v for k, v in sorted(prov.items()) if isinstance(v, str | int | float | bool) or v is None},
        "trained_here": config is not None,
        "clip": analysis["clip"],
        "vocabulary": analysis["vocabulary"]["name"],
        "sweep": analysis["settings"],
        "calibration_target": analysis["calibration_target"],
        "analysis_current": analysis["bank_hash"] == bank.content_hash(),
    }


def _directions(run: RunDir, bank: DirectionBank, analysis: dict, images: dict[str, bytes] | None) -> list[dict]:
    target = float(analysis["calibration_target"])
    scales = [float(s) for s in analysis["scales"]]
    S = int(analysis["settings"]["seeds"])
    cache = _inside(run, analysis.get("sweep_cache"))
    base = _load_batch(cache / "base.safetensors") if cache is not None else None
    out = []
    maps = {}
    for k, d in enumerate(analysis["directions"]):
        q = quality(d, target)
        human = bank.labels[k] if k < len(bank.labels) and bank.tokens[k] == d["token"] else d["label"]
        item = {
            "index": k, "token": d["token"], "label": human, "suggested_label": d["suggested_label"],
            "sign": d["sign"], "confidence": round(float(d["confidence"]), 4),
            "active": bool(d["calibration_reached"]),  # only a reached target gives a calibrated scale (else the
            "calibrated_scale": d["calibrated_scale"] if d["calibration_reached"] else None,  # largest tried)
            "label_gain": round(float(d["label_gain"]), 4), "label_scale": d["label_scale"],
            "target": d["target"], "target_gain": round(float(d["target_gain"]), 4),
            "off_target": round(float(d["off_target"]), 4),
            "consistency": round(float(d["consistency"]), 4),
            "consistency_by_scale": [round(float(v), 4) for v in d["consistency_by_scale"]],
            "rescoring_scale": d["scale"],
            "rescoring": [{"attribute": a, "change": round(float(v), 4), "se": round(float(d["rescoring_se"][a]), 4)}
                          for a, v in d["rescoring"].items()],
            "strip": None, "locality": None,
        } | q
        edited = _load_batch(cache / f"d{k:04d}.safetensors") if cache is not None else None
        if base is not None and edited is not None and len(edited) == len(scales) * S:
            ed = edited.reshape(len(scales), S, *edited.shape[1:])
            cols = sorted([*scales, 0.0])
            rows = [[base[s] if c == 0.0 and 0.0 not in scales else ed[scales.index(c), s] for c in cols]
                    for s in range(min(S, STRIP_SEEDS))]
            name = f"strip-{k:03d}"
            if images is not None:  # (without images: the numbers only, e.g. for the dashboard's tables)
                images[name] = _grid(rows, [f"seed {s}" for s in range(len(rows))], [f"{c:+g}" for c in cols])
            item["strip"] = {"image": name, "seeds": list(range(len(rows))), "scales": cols}
            at = scales.index(float(d["label_scale"])) if float(d["label_scale"]) in scales else int(np.argmax(np.abs(scales)))
            m = np.abs(ed[at].astype(np.float32) - base.astype(np.float32)).mean(axis=(0, 3)) / 255.0  # (H, W)
            maps[k] = m
            item["locality"] = {"scale": scales[at], "image": f"locality-{k:03d}",
                                "mean_change": round(float(m.mean()), 5), "peak_change": round(float(m.max()), 5),
                                "grid": _block_mean(m, LOCALITY_GRID).round(5).tolist()}
        out.append(item)
    if maps:  # one colour scale for every map, so that they compare
        from noiseclr_lab.reports.figures import locality_png

        vmax = max(float(m.max()) for m in maps.values()) or 1.0
        for k, m in maps.items():
            if images is not None:
                images[f"locality-{k:03d}"] = locality_png(m, vmax,
                                                           f"{out[k]['token']} at {out[k]['locality']['scale']:+g}")
        for item in out:
            if item["locality"] is not None:
                item["locality"]["colour_max"] = round(vmax, 5)
    return out


def _composition(run: RunDir, analysis: dict, images: dict[str, bytes] | None) -> dict:
    comp = analysis.get("composition")
    if not comp:
        return {"available": False, "reason": "the analysis ran without composition", "make_with":
                f"noiseclr-lab analyze {run.path}"}
    if "skipped" in comp:  # too few directions reached the calibration target: a lower one lets weaker ones in
        lower = float(analysis.get("calibration_target") or 0.25) / 2
        return {"available": False, "reason": comp["skipped"],
                "make_with": f"noiseclr-lab analyze {run.path} --calibration-target {lower:g}"}
    tokens = comp["tokens"]
    K = len(tokens)
    inter = np.array([[np.nan if v is None else v for v in row] for row in comp["interference"]], dtype=float)
    sym = (inter + inter.T) / 2
    pairs = sorted((float(sym[i, j]), i, j) for i in range(K) for j in range(i + 1, K) if np.isfinite(sym[i, j]))
    picked = []
    if pairs:
        picked.append(("least interfering", pairs[0]))
        if len(pairs) > 1:
            picked.append(("most interfering", pairs[-1]))
    cache = _inside(run, comp.get("cache"))
    examples = []
    for kind, (v, i, j) in picked:
        ex = {"kind": kind, "i": tokens[i], "j": tokens[j], "scale_i": comp["scales"][i], "scale_j": comp["scales"][j],
              "interference_i_by_j": comp["interference"][i][j], "interference_j_by_i": comp["interference"][j][i],
              "interference_mean": round(v, 5), "image": None}
        png = _pair_png(cache, tokens, i, j) if images is not None else None
        if png is not None:
            ex["image"] = f"pair-{i:03d}-{j:03d}"
            images[ex["image"]] = png
        examples.append(ex)
    return {"available": True, "tokens": tokens, "scales": comp["scales"], "interference": comp["interference"],
            "additivity": comp["additivity"], "overlap_pixels": comp["overlap_pixels"],
            "overlap_predicts_interference": comp["overlap_predicts_interference"], "examples": examples}


def composition_pair(run: str | Path | RunDir, i: str, j: str) -> bytes | None:
    """A PNG of the unedited image, ``i`` alone, ``j`` alone and both composed, on the composition analysis's
    seeds (rows), read from the run's cached composition batches; None when they are not cached."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    path = run.analysis_dir / RunDir.ANALYSIS_JSON
    if not path.is_file():
        return None
    analysis = _read_json(path, "CLIP analysis", ANALYSIS_SCHEMA, f"re-run `noiseclr-lab analyze {run.path}`")
    comp = analysis.get("composition") or {}
    tokens = comp.get("tokens") or []
    if i not in tokens or j not in tokens or i == j:
        return None
    a, b = sorted((tokens.index(i), tokens.index(j)))
    return _pair_png(_inside(run, comp.get("cache")), tokens, a, b)


def _pair_png(cache: Path | None, tokens: list[str], a: int, b: int) -> bytes | None:
    """Rows: seeds; columns: unedited, member a alone, member b alone, both (a < b), from a composition cache
    (``composition.composition_runs`` names its batches); None when a batch is not there."""
    if cache is None:
        return None
    batches = [_load_batch(cache / f"{n}.safetensors") for n in ("base", f"a{a:03d}", f"a{b:03d}", f"p{a:03d}_{b:03d}")]
    if any(x is None for x in batches):
        return None
    n = min(len(batches[0]), STRIP_SEEDS)
    return _grid([[x[s] for x in batches] for s in range(n)], [f"seed {s}" for s in range(n)],
                 ["unedited", tokens[a], tokens[b], f"{tokens[a]}+{tokens[b]}"])


GT_METRICS = (("coverage", "coverage"), ("modularity", "modularity_mean"), ("MIG", "mig_style"),
              ("DCI disentanglement", "dci_disentanglement"), ("DCI completeness", "dci_completeness"),
              ("active directions", "active_directions"))


def _ground_truth(run: RunDir, bank: DirectionBank) -> dict:
    path = run.analysis_dir / RunDir.GT_JSON
    toy = toy_model_domain(bank.base_model) is not None  # the probes read what toy models draw, not others'
    domain = bank_domain(bank) if toy else None  # a toy model's domain is its training data's (toy:scenes) first
    make_with = f"noiseclr-lab evaluate-gt {shlex.quote(str(run.path))} --domain {domain or 'DOMAIN'}"
    if not path.is_file():
        return {"available": False, "reason": "no ground-truth scores" + ("" if toy else " (the model has no "
                                                                                     "known factors: toy models only)"),
                "make_with": make_with if toy else None}
    gt = _read_json(path, "ground-truth score file", GT_SCHEMA, f"re-run `{make_with}`")
    trained = gt["banks"]["trained"]
    banks = []
    for name, b in gt["banks"].items():
        banks.append({"bank": name, **{label: b["metrics"].get(key) for label, key in GT_METRICS},
                      "raw": {label: b["metrics_raw"].get(key) for label, key in GT_METRICS}})
    return {"available": True, "domain": gt["domain"], "factors": gt["factors"],
            "tokens": [d["token"] for d in trained["directions"]],
            "effect": [[round(float(v), 4) for v in row] for row in trained["effect"]],
            "directions": [{"token": d["token"], "main_factor": d["main_factor"], "active": bool(d["active"]),
                            "effect": round(float(d["effect"]), 4), "modularity": round(float(d["modularity"]), 4)}
                           for d in trained["directions"]],
            "threshold": gt["settings"].get("threshold"), "banks": banks,
            "metrics_note": "shrunk: effects less one standard error (the headline); raw: plain means"}


def collect(run: str | Path | RunDir, with_images: bool = True) -> Collected:
    """Everything one run's report shows. Raises a one-line NoiseCLRLabError for a folder that is not a run,
    a missing analysis (naming the command that makes it) or a damaged or older-format JSON file."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.path.is_dir():
        raise NoiseCLRLabError(f"{run.path} is not a folder.")
    bank = DirectionBank.load(run.require_directions())
    apath = run.analysis_dir / RunDir.ANALYSIS_JSON
    if not apath.is_file():
        raise NoiseCLRLabError(f"{run.path} has no analysis ({apath} is missing); make it with "
                               f"`noiseclr-lab analyze {run.path}`.")
    analysis = _read_json(apath, "CLIP analysis", ANALYSIS_SCHEMA, f"re-run `noiseclr-lab analyze {run.path}`")
    if len(analysis.get("directions", [])) != len(bank):
        raise NoiseCLRLabError(f"{apath} describes {len(analysis.get('directions', []))} directions but the bank has "
                               f"{len(bank)}; re-run `noiseclr-lab analyze {run.path}`.")
    config = run.read_config() if run.config_path.is_file() else None
    images: dict[str, bytes] | None = {} if with_images else None
    try:
        dirs = _directions(run, bank, analysis, images)
        order = sorted(range(len(dirs)), key=lambda k: (not dirs[k]["active"], -dirs[k]["quality"], k))
        data = {
            "schema": REPORT_SCHEMA,
            "generated_by": f"noiseclr_lab {__version__}",
            "summary": _summary(run, bank, analysis, config),
            "training": _training(run),
            "quality_definition": QUALITY_DEFINITION,
            "order": [dirs[k]["token"] for k in order],
            "directions": dirs,
            "rescoring": {"attributes": analysis["attributes"], "tokens": [d["token"] for d in dirs],
                          "scale": [d["rescoring_scale"] for d in dirs],
                          "matrix": [[r["change"] for r in d["rescoring"]] for d in dirs]},
            "composition": _composition(run, analysis, images),
            "ground_truth": _ground_truth(run, bank),
            "compare": None,
        }
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise NoiseCLRLabError(f"{apath} lacks what a report needs ({type(e).__name__}: {e}); re-run "
                               f"`noiseclr-lab analyze {run.path}`.") from e
    active = [d for d in dirs if d["active"]]
    data["summary"]["active_directions"] = len(active)
    data["summary"]["mean_quality"] = round(float(np.mean([d["quality"] for d in dirs])), 4) if dirs else None
    data["summary"]["mean_consistency_active"] = (round(float(np.mean([d["consistency"] for d in active])), 4)
                                                  if active else None)
    return Collected(data=data, images=images or {})


def comparison(runs: list[Collected]) -> dict:
    """The table and the overlaid curves of ``--compare``: one row per run (the first is the report's own)."""
    rows = []
    for c in runs:
        d = c.data
        gt = d["ground_truth"]
        trained = next((b for b in gt.get("banks", []) if b["bank"] == "trained"), None) if gt["available"] else None
        rows.append({
            "name": d["summary"]["name"], "path": d["summary"]["path"], "base_model": d["summary"]["base_model"],
            "directions": d["summary"]["directions"], "active_directions": d["summary"]["active_directions"],
            "mean_quality": d["summary"]["mean_quality"],
            "mean_consistency_active": d["summary"]["mean_consistency_active"],
            "final_loss": d["training"]["final_loss"],
            "steps": d["summary"]["config"].get("steps"),
            "coverage": trained["coverage"] if trained else None,
            "modularity": trained["modularity"] if trained else None,
            "coverage_raw": trained["raw"]["coverage"] if trained else None,
            "modularity_raw": trained["raw"]["modularity"] if trained else None,
            "loss_steps": d["training"]["steps"], "loss": d["training"]["loss_smoothed"],
            "quality_sorted": sorted((x["quality"] for x in d["directions"]), reverse=True),
        })
    return {"runs": rows, "loss_note": "smoothed training loss (exponential moving average, 0.9)"}
