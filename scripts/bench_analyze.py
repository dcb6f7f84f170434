"""Benchmark and validate ``noiseclr-lab analyze`` (the CLIP analysis layer) on a toy run.

Speed: times ``workflows.analyze`` with a fresh sweep (no cache), then again reading the cached sweep, what
the composition analysis (interference, additivity, locality) adds to it, and
the way the official release would do the same work: one image per (direction, scale, seed), each edit
generated alone with one UNet call per term per step (EditPipeline mode="reference"), CLIP-encoded one
image at a time. The official loop is timed on ``--official-directions`` directions and extrapolated to
the whole bank (printed as such). Ratios are printed; nothing is asserted.

Validation against the ground truth (a run scored by ``noiseclr-lab evaluate-gt`` or ``demo``):
- Spearman correlation of the CLIP re-scoring effect per factor (K x F, each direction at its strongest
  scale) with the probe's effect matrix (target >= 0.8);
- share of the active directions whose auto-label names the probe's main factor (target >= 0.8);
- AUC of consistency ranking active above inactive directions (target >= 0.9).

    python scripts/bench_analyze.py --run runs/demo/run            # after `noiseclr-lab demo`
    python scripts/bench_analyze.py --run runs/demo/run --report    # validation only, from the written files
    python scripts/bench_analyze.py --run runs/demo/run --report --calibration   # + calibrated scales vs probe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def validate(gt: dict, analysis: dict) -> dict:
    """The three ground-truth checks of the CLIP measures (see the module docstring)."""
    from scipy.stats import spearmanr

    from noiseclr_lab.analysis.metrics.consistency import ranking_auc

    factors = gt["factors"]
    trained = gt["banks"]["trained"]
    probe = np.asarray(trained["effect"])  # (K, F)
    dirs = analysis["directions"]
    factor_of = analysis["vocabulary"].get("factor_of") or {g: g for g in analysis["groups"]}
    by_factor = {factor_of[g]: g for g in analysis["groups"]}
    missing = [f for f in factors if f not in by_factor]
    if missing:
        raise SystemExit(f"the analysis vocabulary has no group for factors {missing}; analyze with --vocab toy:<domain>")
    clip = np.array([[d["group_effect"][by_factor[f]] for f in factors] for d in dirs])
    active = np.array([d["active"] for d in trained["directions"]])
    main = [d["main_factor"] for d in trained["directions"]]
    named = [factor_of[d["suggested_label"].split("=")[0]] for d in dirs]
    hits = [m == n for m, n, a in zip(main, named, active) if a]
    return {
        "spearman": float(spearmanr(clip.ravel(), probe.ravel()).statistic),
        "label_accuracy": float(np.mean(hits)) if hits else float("nan"),
        "labelled_active": f"{sum(hits)}/{len(hits)}",
        "consistency_auc": ranking_auc([d["consistency"] for d in dirs], active),
        "active": int(active.sum()),
    }


def calibration_check(run: Path, gt: dict, fixed: tuple[float, ...] = (3.0, 6.0), device: str = "cpu") -> dict:
    """Coefficient of variation, across the probe's active directions, of the probe's main-factor effect when
    each direction is applied at its calibrated scale (from ``analyze``) and at one fixed |scale| (with the
    sign of the direction's label). Calibration should at least halve it."""
    import torch

    from noiseclr_lab.analysis.groundtruth import probe_effect
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline
    from noiseclr_lab.models import load_pipeline
    from noiseclr_lab.toyworld import load_probe

    bank = DirectionBank.load(run / "directions.safetensors")
    if all(v is None for v in bank.calibrated_scales):
        raise SystemExit(f"{run} has no calibrated scales: run `noiseclr-lab analyze {run}` first")
    s = gt["settings"]
    pipe = load_pipeline(bank.base_model, device=device)
    probe = load_probe(gt["domain"], device=pipe.device)
    ep = EditPipeline(pipe, bank)
    S = s["seeds"]
    common = dict(num_inference_steps=s["num_inference_steps"], guidance_scale=s["guidance_scale"], output_type="pt")

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(S)]

    base = probe.predict(ep([s["prompt"]] * S, generator=gens(), **common).images).probs
    active = [(k, d["main_factor"]) for k, d in enumerate(gt["banks"]["trained"]["directions"]) if d["active"]]
    signs = {k: (1.0 if (bank.calibrated_scales[k] or 1.0) > 0 else -1.0) for k, _ in active}

    def effects(scale_of) -> tuple[list[float], list[float]]:  # (shrunk, raw) main-factor effect per direction
        shrunk, raw = [], []
        for k, factor in active:
            imgs = ep([s["prompt"]] * S, edits={bank.tokens[k]: scale_of(k)}, edit_start=s["edit_start"],
                      generator=gens(), **common).images
            e_shrunk, e_raw = probe_effect(probe.predict(imgs).probs[factor][None], base[factor])
            shrunk.append(float(e_shrunk[0]))
            raw.append(float(e_raw[0]))
        return shrunk, raw

    def cv(values) -> float:
        v = np.asarray(values)
        return float(v.std() / v.mean()) if v.mean() > 0 else float("inf")

    both = {"calibrated": effects(lambda k: bank.calibrated_scales[k])}
    for f in fixed:
        both[f"fixed_{f:g}"] = effects(lambda k, f=f: signs[k] * f)
    res = {name: v[0] for name, v in both.items()}
    raw = {name: v[1] for name, v in both.items()}
    return {"cv": {name: cv(v) for name, v in res.items()}, "cv_raw": {name: cv(v) for name, v in raw.items()},
            "effects": res, "effects_raw": raw, "scales": {bank.tokens[k]: bank.calibrated_scales[k] for k, _ in active}}


FACE_FACTORS = ("skin", "hair", "expression", "glasses", "eyes")  # the face's own factors in toy scenes
SHAPE_FACTORS = ("shape", "colour", "size", "position")  # the shape's; "background" belongs to the scene


def cross_domain_check(run: Path, gt: dict, analysis: dict, device: str = "cpu", limit: float = 0.05) -> dict:
    """On a toy scenes bank: the composed directions of ``analysis`` (calibrated scales) applied alone and in
    pairs, read by the scenes probe. For a direction whose main factor (ground truth) is a face factor, the
    largest change it makes to a shape factor (and the reverse): alone, composed with a same-domain
    direction (the pair against the unedited image), and composed with an other-domain one (the pair against
    that other direction alone). Also the rank correlation of the CLIP interference matrix with the probe's."""
    from noiseclr_lab.analysis.composition import composition_analysis
    from noiseclr_lab.analysis.metrics.composition import rank_correlation
    from noiseclr_lab.analysis.readers import ProbeReader
    from noiseclr_lab.analysis.sweep import SweepSettings
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.models import load_pipeline
    from noiseclr_lab.toyworld import load_probe

    comp = analysis.get("composition", {})
    if "tokens" not in comp:
        raise SystemExit(f"the analysis has no composition ({comp.get('skipped', 'not run')})")
    bank = DirectionBank.load(run / "directions.safetensors")
    members = [bank.tokens.index(t) for t in comp["tokens"]]
    pipe = load_pipeline(bank.base_model, device=device)
    reader = ProbeReader(load_probe(gt["domain"], device=pipe.device))
    settings = SweepSettings.from_dict(analysis["settings"])
    res = composition_analysis(pipe, bank, reader, settings, members, comp["scales"], progress=False, return_arrays=True)
    arr = res["arrays"]
    cols = {f: [] for f in reader.values}
    i0 = 0
    for f, vals in reader.values.items():
        cols[f] = list(range(i0, i0 + len(vals)))
        i0 += len(vals)

    def change(a, b, factors) -> float:  # largest |mean change| of a value of one of ``factors``
        d = (np.asarray(a) - np.asarray(b)).mean(0)
        return float(max(np.abs(d[cols[f]]).max() for f in factors))

    main = [gt["banks"]["trained"]["directions"][m]["main_factor"] for m in members]
    side = ["face" if f in FACE_FACTORS else "shape" if f in SHAPE_FACTORS else "scene" for f in main]
    other = {"face": SHAPE_FACTORS, "shape": FACE_FACTORS}
    rows = []
    K = len(members)
    for i in range(K):
        if side[i] == "scene":
            continue
        rows.append({"kind": "alone", "i": comp["tokens"][i], "change": change(arr["p_alone"][i], arr["p_base"], other[side[i]])})
        for j in range(K):
            if j == i or side[j] == "scene":
                continue
            pair = arr["p_pair"][i, j]
            if side[j] == side[i]:
                rows.append({"kind": "pair, same domain", "i": comp["tokens"][i], "j": comp["tokens"][j],
                             "change": change(pair, arr["p_base"], other[side[i]])})
            else:  # what i adds to the other domain's factors on top of j
                rows.append({"kind": "pair, other domain", "i": comp["tokens"][i], "j": comp["tokens"][j],
                             "change": change(pair, arr["p_alone"][j], other[side[i]])})
    clip_i = np.array([[np.nan if v is None else v for v in r] for r in comp["interference"]], dtype=float)
    probe_i = np.array([[np.nan if v is None else v for v in r] for r in res["interference"]], dtype=float)
    off = ~np.eye(K, dtype=bool)
    return {"directions": dict(zip(comp["tokens"], zip(main, side))), "checks": rows,
            "within_limit": sum(r["change"] <= limit for r in rows), "checked": len(rows),
            "max_change": max((r["change"] for r in rows), default=float("nan")),
            "interference_spearman_clip_vs_probe": rank_correlation(clip_i[off], probe_i[off])}


def composition_timing(run: Path, analysis: dict, k: int, device: str = "cpu") -> dict:
    """Seconds the composition analysis (interference, additivity, locality; CLIP reader) takes on ``k``
    directions of the run: the ``k`` most confident, each at its calibrated scale, or where it has none the
    sweep's largest |scale| with the sign of its label. No cache: every image is generated."""
    from noiseclr_lab.analysis.clip import ClipReader, load_clip_model
    from noiseclr_lab.analysis.composition import composition_analysis
    from noiseclr_lab.analysis.sweep import SweepSettings
    from noiseclr_lab.analysis.vocab import Vocabulary
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.models import load_pipeline

    dirs = analysis["directions"]
    if k > len(dirs):
        raise SystemExit(f"--compose-k {k}: the bank has {len(dirs)} directions")
    members = sorted(sorted(range(len(dirs)), key=lambda i: -dirs[i]["confidence"])[:k])
    top = max(abs(x) for x in analysis["settings"]["scales"])
    scales = [dirs[i]["calibrated_scale"] if dirs[i]["calibration_reached"] else dirs[i]["sign"] * top
              for i in members]
    bank = DirectionBank.load(run / "directions.safetensors")
    pipe = load_pipeline(bank.base_model, device=device)
    reader = ClipReader(load_clip_model(analysis["clip"], device=device), Vocabulary(**analysis["vocabulary"]))
    settings = SweepSettings.from_dict(analysis["settings"])
    own = [analysis["attributes"].index(dirs[i]["suggested_label"]) for i in members]
    t0 = time.perf_counter()
    res = composition_analysis(pipe, bank, reader, settings, members, scales, own, progress=True)
    seconds = time.perf_counter() - t0
    images = (1 + k + k * (k - 1) // 2) * settings.seeds
    return {"k": k, "seconds": seconds, "images": images, "pairs": k * (k - 1) // 2,
            "overlap_predicts_interference": res.get("overlap_predicts_interference")}


def official_loop(run: Path, analysis: dict, n_dirs: int, device: str) -> tuple[float, int]:
    """Seconds and images for the one-edit-at-a-time loop on the first ``n_dirs`` directions."""
    import torch

    from noiseclr_lab.analysis.clip import load_clip_model
    from noiseclr_lab.directions import DirectionBank
    from noiseclr_lab.editing import EditPipeline
    from noiseclr_lab.models import load_pipeline

    bank = DirectionBank.load(run / "directions.safetensors")
    pipe = load_pipeline(bank.base_model, device=device)
    clip = load_clip_model(analysis["clip"], device=device)
    s = analysis["settings"]
    ep = EditPipeline(pipe, bank, mode="reference", cpu_split=False)  # the official loop as released
    common = dict(num_inference_steps=s["num_inference_steps"], guidance_scale=s["guidance_scale"], output_type="pt")
    t0, images = time.perf_counter(), 0
    for seed in range(s["seeds"]):  # the unedited image of each seed
        clip.encode_images(ep(s["prompt"], generator=torch.Generator().manual_seed(seed), **common).images)
        images += 1
    for tok in bank.tokens[:n_dirs]:
        for scale in s["scales"]:
            for seed in range(s["seeds"]):
                out = ep(s["prompt"], edits={tok: scale}, edit_start=s["edit_start"],
                         generator=torch.Generator().manual_seed(seed), **common)
                clip.encode_images(out.images)
                images += 1
    return time.perf_counter() - t0, images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/demo/run"), help="a toy run scored by evaluate-gt")
    p.add_argument("--report", action="store_true", help="only validate the run's analysis.json against gt_metrics.json")
    p.add_argument("--official-directions", type=int, default=1, help="directions the official loop is timed on")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--cross-domain", action="store_true",
                   help="toy scenes run: face directions must leave shape factors alone and the reverse (probe)")
    p.add_argument("--calibration", action="store_true",
                   help="also check calibrated scales against the probe (needs `analyze` to have stored them)")
    p.add_argument("--compose-k", type=int, default=0,
                   help="also time the composition analysis on this many directions (e.g. 12: every pair of a K=12 bank)")
    args = p.parse_args(argv)

    from noiseclr_lab.workflows import analyze

    gt_path = args.run / "analysis" / "gt_metrics.json"
    if not gt_path.is_file():
        raise SystemExit(f"{gt_path} is missing: run `noiseclr-lab demo` or `noiseclr-lab evaluate-gt` first")
    gt = json.loads(gt_path.read_text())
    result: dict = {}
    if not args.report:
        s = gt["settings"]
        kw = dict(scales=s["scales"], seeds=s["seeds"], num_inference_steps=s["num_inference_steps"],
                  guidance_scale=s["guidance_scale"], prompt=s["prompt"], edit_start=s["edit_start"],
                  device=args.device, suggest_labels=False)
        t0 = time.perf_counter()
        res = analyze(args.run, cache=False, composition=False, **kw)
        fresh = time.perf_counter() - t0
        K = len(res.directions)
        n_img = K * len(kw["scales"]) * kw["seeds"] + kw["seeds"]
        analyze(args.run, cache=True, composition=False, **kw)  # fills the cache unless evaluate-gt already did
        t0 = time.perf_counter()
        analyze(args.run, cache=True, composition=False, **kw)
        cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        comp_res = analyze(args.run, cache=True, composition=True, **kw)
        composed = time.perf_counter() - t0 - cached
        comp = comp_res.data["composition"]
        n_comp = len(comp.get("tokens", []))
        off_s, off_n = official_loop(args.run, res.data, args.official_directions, args.device)
        off_total = off_s / off_n * n_img
        result |= {"directions": K, "images": n_img, "fresh_s": fresh, "cached_s": cached, "composition_s": composed,
                   "composed_directions": n_comp, "overlap_predicts_interference": comp.get("overlap_predicts_interference"),
                   "official_s_extrapolated": off_total, "official_images_timed": off_n}
        print(f"analyze, fresh sweep:   {fresh:7.1f} s  ({n_img} images, {n_img / fresh:.1f} img/s)")
        print(f"analyze, cached sweep:  {cached:7.1f} s")
        print(f"composition adds:       {composed:7.1f} s  ({n_comp} calibrated directions alone and in "
              f"{n_comp * (n_comp - 1) // 2} pairs, {kw['seeds']} seeds each)")
        print(f"official loop:          {off_total:7.1f} s  (extrapolated from {off_n} images in {off_s:.1f} s)")
        print(f"speed-up fresh vs official: {off_total / fresh:.2f}x; cached vs fresh: {fresh / cached:.1f}x")
    analysis = json.loads((args.run / "analysis" / "analysis.json").read_text())
    if args.compose_k:
        ct = composition_timing(args.run, analysis, args.compose_k, device=args.device)
        result["composition_timing"] = ct
        print(f"composition of {ct['k']} directions ({ct['pairs']} pairs, {ct['images']} images, no cache): "
              f"{ct['seconds']:.1f} s (target for K=12: <= 180 s on 2 CPU cores)")
    if args.calibration:
        cal = calibration_check(args.run, gt, device=args.device)
        result["calibration"] = cal
        fixed = {k: v for k, v in cal["cv"].items() if k != "calibrated"}
        print(f"calibration: CV of the probe's main-factor effect over active directions {cal['cv']['calibrated']:.3f} "
              f"at calibrated scales vs " + ", ".join(f"{v:.3f} at |scale| {k[6:]}" for k, v in fixed.items())
              + " (target: at most half of a fixed scale's); raw means: "
              + ", ".join(f"{k}: {v:.3f}" for k, v in cal["cv_raw"].items()))
    if args.cross_domain:
        cd = cross_domain_check(args.run, gt, analysis, device=args.device)
        result["cross_domain"] = cd
        print(f"cross-domain: {cd['within_limit']}/{cd['checked']} checks change the other domain's factors by <= 0.05 "
              f"(largest {cd['max_change']:.3f}); CLIP vs probe interference Spearman "
              f"{cd['interference_spearman_clip_vs_probe']:.3f}; directions {cd['directions']}")
    v = validate(gt, analysis)
    result |= v
    print(f"ground truth: Spearman {v['spearman']:.3f} (target >= 0.8), auto-labels name the probe's main factor "
          f"for {v['labelled_active']} active directions = {v['label_accuracy']:.2f} (target >= 0.8), consistency "
          f"AUC active vs inactive {v['consistency_auc']:.3f} (target >= 0.9)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
