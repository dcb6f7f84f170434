"""Workflows: the jobs people run, as functions that compute, write their artefacts and return results.

The CLI, notebooks and the dashboard call these and only print or show what they return. Each takes a
``log`` callback for its progress lines (``print`` in the CLI; None: silent) and shows progress bars for
long loops.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from noiseclr_lab.analysis.clip import TOY, ClipReader, load_clip_model
from noiseclr_lab.analysis.clipanalysis import SCHEMA, analyze_bank
from noiseclr_lab.analysis.composition import composition_analysis, composition_cache_dir, fill_composition_cache
from noiseclr_lab.analysis.figures import (
    additivity_scatter,
    effect_curves,
    interference_heatmap,
    locality_grid,
    rescoring_heatmap,
)
from noiseclr_lab.analysis.groundtruth import (
    CALIBRATION_THRESHOLD,
    DEFAULT_SCALES,
    GT_SCHEMA,
    NOISE_Z,
    bank_domain,
    check_baselines,
    effect_heatmap,
    make_baseline,
    score_bank,
)
from noiseclr_lab.analysis.metrics.calibration import DEFAULT_TARGET
from noiseclr_lab.analysis.readers import ProbeReader, Reader
from noiseclr_lab.analysis.sweep import SweepSettings, SweepSpeed, fill_sweep_cache, sweep_cache_dir
from noiseclr_lab.analysis.vocab import load_vocabulary
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline, default_edit_start, direction_grid, resolve_edits
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import read_json, save_image_atomic, write_json_atomic
from noiseclr_lab.models import check_processes_joined, load_pipeline, processes_join_on_cpu
from noiseclr_lab.recipe import Recipe
from noiseclr_lab.reports import ReportResult, build_report
from noiseclr_lab.store import RunDir
from noiseclr_lab.toyworld import get_domain, load_probe
from noiseclr_lab.toyworld.render import FACTORS_CSV, render_folder
from noiseclr_lab.training import TrainConfig, load_preset, train, validation_grid

GT_METRICS = RunDir.GT_JSON
GT_HEATMAP = "gt_effects.png"
ANALYSIS = RunDir.ANALYSIS_JSON
RESCORING_PNG = "rescoring.png"
CURVES_PNG = "effect_curves.png"
INTERFERENCE_PNG = "interference.png"
ADDITIVITY_PNG = "additivity.png"
LOCALITY_PNG = "locality.png"
MAX_COMPOSED = 12  # composition is quadratic in the directions: at most this many (the most confident)
ANALYZE_SCALES = (-6.0, -3.0, 3.0, 6.0)
DEMO_BASELINES = ("random", "supervised")
DEMO_COMPOSED = 6  # directions the demo composes (15 pairs; `analyze` composes up to MAX_COMPOSED)


@dataclass
class GTResult:
    """What ``evaluate_gt`` wrote and found."""

    run: RunDir
    data: dict  # the content of analysis/gt_metrics.json: domain, factors, model, settings, banks
    metrics_path: Path  # RUN/analysis/gt_metrics.json
    heatmap_path: Path  # RUN/analysis/gt_effects.png

    @property
    def banks(self) -> dict:
        """{bank name: {"metrics", "metrics_raw", "effect", "directions", ...}} (trained first, then baselines)."""
        return self.data["banks"]

    def summary(self) -> str:
        """A fixed-width table: one row per bank (coverage, modularity, MIG, DCI, active; raw-mean scores)."""
        n_f = len(self.data["factors"])
        lines = [f"{'bank':<11} {'coverage':>8} {'modularity':>10} {'mig':>6} {'dci_D':>6} {'active':>6}   "
                 f"(raw means: coverage, modularity)"]
        for name, res in self.banks.items():
            m, r = res["metrics"], res["metrics_raw"]
            lines.append(f"{name:<11} {m['coverage']:>5.0f}/{n_f} {m['modularity_mean']:>10.2f} {m['mig_style']:>6.2f} "
                         f"{m['dci_disentanglement']:>6.2f} {m['active_directions']:>6.0f}   "
                         f"{r['coverage']:>5.0f}/{n_f} {r['modularity_mean']:>5.2f}")
        return "\n".join(lines)


def train_run(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = None,
              progress: bool = True) -> RunDir:
    """Train directions as ``cfg`` says (``training.train``) and, with ``cfg.select`` > 0, keep the strongest
    distinct ones (``select_run``). In a multi-process launch only the main process selects. When the
    selection sweep holds the last step's validation grid (``_grid_in_selection``), the selection cuts the grid
    from its images instead of the trainer drawing it; a finished run always has it (drawn here if missing,
    e.g. a finished run resumed with ``select`` 0 after a selection that failed)."""
    main = int(os.environ.get("RANK", "0")) == 0
    run = RunDir(train(cfg, resume=resume, final_grid=not _grid_in_selection(cfg)))
    if cfg.select and main:
        select_run(run, cfg, log=log, progress=progress)
    if main:
        _draw_last_grid(run, cfg)
    return run


def _draw_last_grid(run: RunDir, cfg: TrainConfig, bank: DirectionBank | None = None, pipe=None) -> None:
    """Draw the run's last validation grid (``training.validation_grid``) where it is missing; ``bank`` defaults
    to the last checkpoint's directions, ``pipe`` to a pipeline loaded for it."""
    path = run.validation_image(cfg.steps)
    if path.is_file():
        return
    if bank is None:
        ck = run.latest_checkpoint()
        if ck is None:
            return
        bank = DirectionBank.load(ck / RunDir.DIRECTIONS)
    save_image_atomic(validation_grid(pipe or load_pipeline(cfg.model, device=cfg.device or None), bank, cfg), path)


def _grid_in_selection(cfg: TrainConfig) -> bool:
    """Whether ``cfg``'s selection sweep holds every image of its last validation grid (``training.validation_grid``):
    a selection, the same steps (so the same warm-up) and scale, and at least the grid's seeds (the prompt and
    guidance are shared by construction). The demo's preset does."""
    return (bool(cfg.select) and cfg.select_scale == cfg.validation_scale and cfg.select_steps == cfg.validation_steps
            and cfg.validation_seeds <= cfg.select_seeds)


class _GridFromSweep:
    """Training's last validation grid cut from the selection sweep's images as ``select_directions(observe=...)``
    passes them (only when ``_grid_in_selection``): the same seeds give the same images, to float rounding
    between batch sizes. They are the selection pipeline's (``load_pipeline``'s precision, what evaluate-gt
    scores), not the trainer's (which draws the intermediate grids)."""

    def __init__(self, pipe, bank: DirectionBank, cfg: TrainConfig):
        self.pipe, self.bank, self.cfg = pipe, bank, cfg
        self.cells: dict[str, dict[float, list]] = {}
        self.base: list | None = None

    def __call__(self, k: int | None, images) -> None:
        proc, V, S = self.pipe.image_processor, self.cfg.validation_seeds, self.cfg.select_seeds
        pil = proc.numpy_to_pil(proc.pt_to_numpy(images))  # as EditPipeline.decode makes PIL images
        if k is None:
            self.base = pil[:V]
        else:  # scale-major: -scale x S seeds, then +scale x S seeds
            s = self.cfg.validation_scale
            self.cells[self.bank.tokens[k]] = {-s: pil[:V], s: pil[S:S + V]}

    def image(self):
        """The grid (None before the sweep has passed every batch)."""
        if self.base is None or len(self.cells) != len(self.bank):
            return None
        s = self.cfg.validation_scale
        return direction_grid(self.bank, list(self.bank.tokens), [-s, 0.0, s], list(range(self.cfg.validation_seeds)),
                              lambda tok: self.cells[tok] | {0.0: self.base})


def select_run(run: str | os.PathLike | RunDir, cfg: TrainConfig | None = None, log: Callable[[str], None] | None = None,
               progress: bool = True):
    """Keep ``cfg.select`` of a trained run's directions (``analysis.selection``; ``cfg`` defaults to the run's
    own config). The run's last checkpoint holds every trained direction: they go to
    ``directions_all.safetensors``, the kept ones (original tokens, strongest first) to
    ``directions.safetensors``, the scores to ``selection.json``. Returns the ``Selection``."""
    from noiseclr_lab.analysis.selection import select_directions

    run = run if isinstance(run, RunDir) else RunDir(run)
    cfg = cfg or TrainConfig.from_dict(run.read_config()["config"])
    if not cfg.select:
        raise NoiseCLRLabError(f"{run.path}: its config keeps every direction (select = 0); nothing to select.")
    ck = run.latest_checkpoint()
    if ck is None:
        raise NoiseCLRLabError(f"{run.path} has no checkpoint to select directions from; train it first.")
    done = int(ck.name.removeprefix("step-")) if ck.name.startswith("step-") else -1
    if done != cfg.steps:
        raise NoiseCLRLabError(f"{run.path}: its last checkpoint is {ck.name}, not step-{cfg.steps}; finish training "
                               "(train --resume) before selecting.")
    full = DirectionBank.load(ck / RunDir.DIRECTIONS)
    say = log or (lambda _msg: None)
    settings = SweepSettings(scales=(-cfg.select_scale, cfg.select_scale), seeds=cfg.select_seeds,
                             prompt=cfg.validation_prompt, num_inference_steps=cfg.select_steps,
                             guidance_scale=cfg.validation_guidance)
    device = cfg.device or None
    done_before, clip_model = _finished_selection(run, full, cfg, settings), None
    if done_before is not None:  # the same record: is it the same CLIP too (its weights, not only its name)?
        clip_model = load_clip_model(cfg.select_clip, device=device)
        if clip_model.fingerprint() == done_before.clip:  # e.g. a finished demo run again: its kept bank (and
            say(f"selection: kept {cfg.select} of {len(full)} directions already ({run.selection_path.name})")
            _draw_last_grid(run, cfg, full)
            return done_before  # anything written into it, such as labels) stays as it is
    say(f"selecting {cfg.select} of {len(full)} directions by their CLIP effect ({cfg.select_clip} CLIP, "
        f"scales +-{cfg.select_scale:g}, {cfg.select_seeds} seeds)")
    pipe = load_pipeline(cfg.model, device=device)
    clip_model = clip_model or load_clip_model(cfg.select_clip, device=pipe.device)
    grid = _GridFromSweep(pipe, full, cfg) if _grid_in_selection(cfg) else None
    sel = select_directions(pipe, full, clip_model, cfg.select, settings, cfg.select_max_similarity, progress=progress,
                            observe=grid)
    # the grid before the selection's record, so that a finished selection has it: cut from this sweep (this
    # bank's, replacing any older file), else drawn if the trainer did not draw it
    cut = grid.image() if grid is not None else None
    if cut is not None:
        save_image_atomic(cut, run.validation_image(cfg.steps))
    _draw_last_grid(run, cfg, full, pipe)
    full.save(run.all_directions_path)  # each write is atomic; selection.json last, so it never names a bank
    full.subset([full.tokens[k] for k in sel.kept]).save(run.directions_path)  # that is not there
    write_json_atomic(run.selection_path, sel.as_dict() | {"select_clip": cfg.select_clip})
    return sel


def _finished_selection(run: RunDir, full: DirectionBank, cfg: TrainConfig, settings: SweepSettings):
    """The run's selection when ``selection.json`` records this very selection (the same trained bank, sweep,
    CLIP name, threshold and count) and ``directions.safetensors`` holds its kept directions; else None. The
    caller compares the CLIP model's fingerprint (its weights) too."""
    from noiseclr_lab.analysis.selection import Selection

    if not (run.selection_path.is_file() and run.directions_path.is_file()):
        return None
    try:
        old = read_json(run.selection_path)
        sel = Selection.from_dict(old)
        kept = DirectionBank.load(run.directions_path)
    except (NoiseCLRLabError, KeyError, ValueError, TypeError):
        return None  # damaged or of an older layout: select again
    same = (sel.bank == full.content_hash() and old.get("select_clip") == cfg.select_clip
            and sel.settings == settings and sel.max_similarity == cfg.select_max_similarity
            and len(sel.kept) == cfg.select and kept.tokens == [full.tokens[k] for k in sel.kept]
            and all(bool((kept.embeddings[i] == full.embeddings[k]).all()) for i, k in enumerate(sel.kept)))
    return sel if same else None


def evaluate_gt(run: str | os.PathLike | RunDir, domain: str | None = "faces", *, reader: Reader | None = None,
                seeds: int = 12, scales: Sequence[float] = DEFAULT_SCALES, num_inference_steps: int = 15,
                prompt: str | None = None, guidance_scale: float = 3.0, guidance_rescale: float = 0.0,
                baselines: Sequence[str] = ("random", "init", "supervised"), device=None, progress: bool = True,
                noise_z: float = NOISE_Z, edit_start: int | None = None, cache_sweeps: bool = True) -> GTResult:
    """Score a run's directions and its baselines against known factors; writes RUN/analysis/gt_metrics.json
    and the heat map gt_effects.png.

    Args:
        run: a run folder (holds directions.safetensors).
        domain: the toy domain whose probe reads the factors; its prompt head is the default prompt. May be
            None when ``reader`` is given (then the default prompt is "" and the 'supervised' baseline is out).
        reader: what reads the factors (default: ``ProbeReader(toyworld.load_probe(domain))``).
        seeds, scales, num_inference_steps, guidance_scale, guidance_rescale, edit_start: the sweep (see
            ``analysis.sweep``).
        baselines: names of baselines scored the same way (``analysis.groundtruth.list_baselines()``).
        cache_sweeps: keep every bank's sweep images in RUN/analysis/sweeps/<key>/ (8-bit), so a rerun,
            ``analyze`` or another reader with the same settings generates nothing. False keeps float images
            in memory only; scores of the two paths differ by at most a few 1e-4 (8-bit rounding).
    Returns:
        A ``GTResult`` with the JSON content and the written paths.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    bank_path = run.require_directions()
    check_baselines(baselines)
    if domain is None and reader is None:
        raise NoiseCLRLabError("Give a toy domain (its probe reads the factors) or a reader.")
    dom = get_domain(domain) if domain is not None else None
    bank = DirectionBank.load(bank_path)
    model = bank.base_model or (f"toy:{domain}" if domain else "")
    if not model:
        raise NoiseCLRLabError(f"{bank_path} does not say which model it was trained on; give a domain.")
    pipe = load_pipeline(model, device=device)
    if reader is None:
        reader = ProbeReader(load_probe(domain, device=pipe.device))
    prompt = (dom.prefix if dom is not None else "") if prompt is None else prompt
    settings = SweepSettings(scales=tuple(scales), seeds=seeds, prompt=prompt, guidance_scale=guidance_scale,
                             num_inference_steps=num_inference_steps, edit_start=edit_start,
                             guidance_rescale=guidance_rescale)
    kw = settings.as_dict() | {"noise_z": noise_z}  # score_bank's sweep arguments, edit_start resolved
    others = {name: make_baseline(name, bank, run, pipe, domain) for name in baselines}  # fail before any sweep

    def cache(b: DirectionBank):
        return sweep_cache_dir(run, b, pipe, settings) if cache_sweeps else None

    results = {"trained": score_bank(pipe, bank, reader, progress=progress, cache=cache(bank), **kw)}
    for name, other in others.items():
        results[name] = score_bank(pipe, other, reader, progress=progress, cache=cache(other), **kw)
    factors = list(reader.values)
    data = {"schema": GT_SCHEMA, "domain": domain, "reader": type(reader).__name__, "factors": factors, "model": model,
            "settings": kw | {"threshold": CALIBRATION_THRESHOLD, "cache_sweeps": cache_sweeps}, "banks": results}
    metrics_path, heatmap_path = run.analysis_file(GT_METRICS), run.analysis_file(GT_HEATMAP)
    write_json_atomic(metrics_path, data)
    save_image_atomic(effect_heatmap(results, factors), heatmap_path)
    return GTResult(run=run, data=data, metrics_path=metrics_path, heatmap_path=heatmap_path)


def default_prompt(bank: DirectionBank) -> str:
    """The prompt a bank's images are made with unless one is given: its toy domain's head ("a cartoon face"),
    else the empty prompt."""
    domain = bank_domain(bank)
    return get_domain(domain).prefix if domain else ""


@dataclass
class AnalysisResult:
    """What ``analyze`` wrote and found."""

    run: RunDir
    data: dict  # the content of RUN/analysis/analysis.json
    path: Path  # RUN/analysis/analysis.json
    figures: list[Path]  # rescoring.png, effect_curves.png

    @property
    def directions(self) -> list[dict]:
        return self.data["directions"]

    def summary(self) -> str:
        """One row per direction: suggested label and sign, confidence, consistency, target gain, off-target."""
        width = max(len(d["token"]) for d in self.directions)
        lw = max(len(d["suggested_label"]) for d in self.directions) + 4
        lines = [f"{'token':<{width}}  {'suggested label':<{lw}} {'conf':>6} {'consist':>7} {'gain':>6} {'off':>6}  label"]
        for d in self.directions:
            sug = f"{d['suggested_label']} ({'+' if d['sign'] > 0 else '-'})"
            lines.append(f"{d['token']:<{width}}  {sug:<{lw}} {d['confidence']:>6.3f} {d['consistency']:>7.3f} "
                         f"{d['target_gain']:>6.3f} {d['off_target']:>6.3f}  {d['label']}")
        sp = self.data.get("speed") or {}
        if sp.get("images"):
            rate = f"{sp['images_per_s']:.2f} images/s, {sp['tflop_per_s']:.3g} TFLOP/s"
            per = " per device" if sp['processes'] > 1 else ""
            rate += f", MFU{per} {sp['mfu']:.1%}" if sp.get("mfu") is not None else " (MFU: no known peak for this device)"
            lines.append(f"sweep: {sp['images']} images generated in {sp['seconds']:.1f} s on {sp['device']} "
                         f"x{sp['processes']}: {rate}")
        elif sp:
            lines.append("sweep: every image read from the cache (nothing generated)")
        return "\n".join(lines)


def analyze(run: str | os.PathLike | RunDir, *, clip: str = TOY, vocab: str | os.PathLike | None = None,
            prompt: str | None = None, scales: Sequence[float] = ANALYZE_SCALES, seeds: int = 12,
            num_inference_steps: int = 15, guidance_scale: float = 3.0, edit_start: int | None = None,
            guidance_rescale: float = 0.0,
            device=None, progress: bool = True, noise_z: float = NOISE_Z, suggest_labels: bool = True,
            cache: bool = True, composition: bool = True, max_composed: int = MAX_COMPOSED,
            calibration_target: float = DEFAULT_TARGET) -> AnalysisResult | None:
    """CLIP analysis of a run's directions on any model: re-scoring, auto-labels, consistency, effect curves,
    preservation, calibrated scales. Writes RUN/analysis/analysis.json, rescoring.png and effect_curves.png,
    and (unless ``suggest_labels`` is False) the auto-labels (as suggestions, never over a human label) and
    the calibrated scales into the bank.

    Args:
        run: a run folder (holds directions.safetensors; its base model is what the sweep runs on).
        clip: ``toy`` (default), ``NAME:TAG`` (open_clip, local cache), ``NAME:/path/weights`` or ``NAME:random``.
        vocab: ``toy:<domain>``, ``faces``, ``cars``, ``cats``, ``art`` or a .txt/.toml file (default: the
            toy domain's factors on a toy model, else ``faces``; the domain is that of the training data when it
            was rendered, ``toy:scenes``, else the model spec's).
        prompt: the prompt of every image (default: the toy domain's head on a toy model, else "").
        scales, seeds, num_inference_steps, guidance_scale, edit_start, guidance_rescale: the sweep; with the
            defaults it is
            the demo's evaluate-gt sweep, whose cached images are then read instead of generated.
        cache: keep sweep images and CLIP features in RUN/analysis/sweeps/<key>/ (resume, reuse).
        calibration_target: the attribute change a calibrated scale reaches (default 0.25).
        composition: also apply the calibrated directions (those whose effect reaches the calibration target;
            at most ``max_composed``, the most confident) alone and in pairs: interference, additivity,
            locality (``analysis.composition``).

    Under ``accelerate launch`` / ``torchrun`` each process makes its slice of the sweep and of the
    composition batches (batch b on the process b % world) into the cache, and the main process computes and
    writes the analysis from it, the same as one process would; the other processes return None.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    bank_path = run.require_directions()
    bank = DirectionBank.load(bank_path)
    model = bank.base_model
    if not model:
        raise NoiseCLRLabError(f"{bank_path} does not say which model it was trained on (no base_model).")
    domain = bank_domain(bank)
    vocabulary = load_vocabulary(vocab if vocab is not None else (f"toy:{domain}" if domain else "faces"))
    if prompt is None:
        prompt = default_prompt(bank)
    settings = SweepSettings(scales=tuple(scales), seeds=seeds, prompt=prompt, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, edit_start=edit_start, guidance_rescale=guidance_rescale)
    if not 0 < calibration_target <= 1:
        raise NoiseCLRLabError(f"The calibration target is a change of probability in (0, 1], got {calibration_target}.")
    procs = _Processes(device)
    if procs.world > 1 and not cache:
        raise NoiseCLRLabError("A sharded analysis (several processes) shares its work through the sweep cache; "
                               "drop cache=False.")
    device = procs.device if procs.world > 1 and device is None else device
    clip_model = load_clip_model(clip, device=device)
    pipe = load_pipeline(model, device=device)
    bank.check_compatible(pipe.tokenizer, pipe.text_encoder)  # a bank of another text encoder fails before work
    cache_dir = sweep_cache_dir(run, bank, pipe, settings) if cache else None
    speeds = None
    if procs.world > 1:  # each process makes its slice of the sweep; the main process reads it all from the cache
        speeds = procs.on_every(lambda: fill_sweep_cache(EditPipeline(pipe, bank), settings, cache_dir, procs.rank,
                                                         procs.world, progress))
    result = procs.on_main(lambda: analyze_bank(
        pipe, bank, clip_model, vocabulary, settings, cache=cache_dir, text_cache=run.analysis_dir if cache else None,
        noise_z=noise_z, progress=progress, calibration_target=calibration_target))
    if speeds is not None:  # the sweep was made by every process side by side
        result = result | {"speed": SweepSpeed.combine(speeds).summary()}
    data = {"schema": SCHEMA, "model": model, "clip": clip, "bank_hash": bank.content_hash(),
            "vocabulary": vocabulary.as_dict(), "settings": settings.as_dict() | {"noise_z": noise_z},
            # where the sweep's images are (relative to the run; reports read them without loading a model)
            "sweep_cache": cache_dir.relative_to(run.path).as_posix() if cache_dir is not None else None} | result
    if composition:
        data["composition"] = _compose(pipe, bank, clip_model, vocabulary, settings, data, run, max_composed, progress,
                                       cache_dir, procs)
    if not procs.main:
        return None
    path = run.analysis_file(ANALYSIS)
    write_json_atomic(path, data)
    figures = [rescoring_heatmap(data, run.analysis_file(RESCORING_PNG)),
               effect_curves(data, run.analysis_file(CURVES_PNG))]
    comp = data.get("composition", {})
    if "interference" in comp:
        figures += [interference_heatmap(comp, run.analysis_file(INTERFERENCE_PNG)),
                    additivity_scatter(comp, run.analysis_file(ADDITIVITY_PNG)),
                    locality_grid(comp, run.analysis_file(LOCALITY_PNG))]
    if suggest_labels:
        _store_suggestions(bank_path, data)
    return AnalysisResult(run=run, data=data, path=path, figures=figures)


class _Processes:
    """This process alone, or one of those of `accelerate launch` / torchrun (gloo on the CPU). accelerate's
    process state is created only in the second case: it is a singleton that later decides the device of a
    training run in the same Python process."""

    def __init__(self, device):
        self.rank, self.world, self.device = 0, 1, None
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1:
            from accelerate import PartialState

            cpu = str(device).startswith("cpu") or (device is None and processes_join_on_cpu())
            state = PartialState(cpu=cpu)
            check_processes_joined(launched, state.num_processes, state.device)
            self.rank, self.world, self.device = state.process_index, state.num_processes, state.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _share(self, value):
        from accelerate.utils import gather_object

        return gather_object([value])

    def on_every(self, fn) -> list:
        """``fn()`` on every process, then a barrier; returns every process's result (in rank order). A
        failure anywhere is the same one-line error everywhere (no process is left waiting for one that died)."""
        err, out = "", None
        try:
            out = fn()
        except Exception as e:  # reported to every process below, then raised as one NoiseCLRLabError
            if self.world == 1:
                raise
            err = f"process {self.rank}: {e}"
        shared = self._share((out, err))
        failed = [m for _, m in shared if m]
        if failed:
            raise NoiseCLRLabError(f"The sharded analysis failed on {failed[0]}")
        return [o for o, _ in shared]

    def on_main(self, fn):
        """``fn()`` on the main process, its result given to every process (a failure: one error everywhere)."""
        if self.world == 1:
            return fn()
        out, err = None, ""
        if self.main:
            try:
                out = fn()
            except Exception as e:  # shared below
                err = f"process 0: {e}"
        shared = self._share((out, err))[0]
        if shared[1]:
            raise NoiseCLRLabError(f"The sharded analysis failed on {shared[1]}")
        return shared[0]


def _compose(pipe, bank, clip_model, vocabulary, settings, data, run, max_composed, progress, cache_dir, procs):
    """The composition section of analysis.json: over the calibrated directions, or why it was skipped. With
    several processes each makes its slice of the batches into the cache; the main process reads them all."""
    dirs = data["directions"]
    ready = [k for k, d in enumerate(dirs) if d["calibration_reached"]]
    ready = sorted(ready, key=lambda k: -dirs[k]["confidence"])[:max_composed]
    if len(ready) < 2:
        return {"skipped": f"{len(ready)} direction(s) reach the calibration target; composition needs two"}
    ready.sort()
    scales = [dirs[k]["calibrated_scale"] for k in ready]
    comp_cache = composition_cache_dir(cache_dir, bank, ready, scales) if cache_dir is not None else None
    if procs.world > 1:
        procs.on_every(lambda: fill_composition_cache(pipe, bank, settings, ready, scales, comp_cache, procs.rank,
                                                      procs.world, progress))
        if not procs.main:
            return {}
    reader = ClipReader(clip_model, vocabulary, cache_dir=run.analysis_dir)
    attrs = data["attributes"]
    out = composition_analysis(pipe, bank, reader, settings, ready, scales,
                               [attrs.index(dirs[k]["suggested_label"]) for k in ready], progress=progress,
                               cache=comp_cache)
    if comp_cache is not None:  # its batches (base, a000, p000_001 ...), relative to the run, for reports
        out["cache"] = comp_cache.relative_to(run.path).as_posix()
    return out


def _store_suggestions(bank_path: Path, data: dict) -> None:
    """Write the auto-labels and calibrated scales into the bank file as it is now (re-read: labels set while
    the analysis ran are kept); skipped, with a warning, when its directions changed since the analysis."""
    bank = DirectionBank.load(bank_path)
    if bank.content_hash() != data["bank_hash"]:
        warnings.warn(f"{bank_path} changed while it was analysed; its suggested labels and calibrated scales were "
                      "not stored (analysis.json describes the directions as they were).", stacklevel=3)
        return
    bank.suggestions = [f"{d['suggested_label']} ({'+' if d['sign'] > 0 else '-'})" for d in data["directions"]]
    bank.calibrated_scales = [d["calibrated_scale"] if d["calibration_reached"] else None for d in data["directions"]]
    bank.save(bank_path)


def report(run: str | os.PathLike | RunDir, compare: Sequence[str | os.PathLike | RunDir] = (),
           out: str | os.PathLike | None = None) -> ReportResult:
    """The run's disentanglement report (report.html, report.json, report.md; default folder RUN/report/) from
    what its folder stores (``noiseclr_lab.reports.build_report``): no model is loaded."""
    return build_report(run, compare=compare, out=out)


@dataclass
class EditResult:
    """What ``apply_recipe`` made."""

    image: object  # PIL.Image
    recipe: Recipe
    edits: dict  # {token: {"scale", "window"}} as applied (calibrated multiples resolved)
    notes: list[str]  # what was done to a real image before inversion


def check_recipe(recipe: Recipe) -> DirectionBank:
    """Everything a replay checks before any model loads; returns the recipe's bank. The bank must be the one
    the recipe was made with (content hash), its edits must resolve as they did then (the same directions at
    the same absolute scales and windows: ``recipe.resolved``, recorded here on a recipe's first use) and an
    image must be the same file."""
    from noiseclr_lab.recipe import file_sha256, resolved_edits

    bank = DirectionBank.load(recipe.bank)
    if recipe.bank_hash and bank.content_hash() != recipe.bank_hash:
        raise NoiseCLRLabError(f"{recipe.bank} changed since the recipe was made (its directions differ); the edit "
                               "would not be the same.")
    # names, windows and calibrated scales are checked as the pipeline will resolve them, before any model loads
    now = resolved_edits(resolve_edits(bank, recipe.edits, recipe.windows, recipe.steps, recipe.edit_start,
                                       recipe.calibrated))
    if recipe.resolved is None:  # a new recipe (or one saved before the record existed): record what it applies
        recipe.resolved = now
    elif not _same_edits(recipe.resolved, now):
        raise NoiseCLRLabError(f"The recipe's edits resolve differently with {recipe.bank} as it is now "
                               f"({_said(recipe.resolved)} when it was made, {_said(now)} now: a label or a calibrated "
                               "scale changed since); the edit would not be the same, so make it anew.")
    if recipe.image is not None:
        if not Path(recipe.image).is_file():
            raise NoiseCLRLabError(f"The recipe's image {recipe.image} does not exist.")
        if recipe.image_sha256 and file_sha256(recipe.image) != recipe.image_sha256:
            raise NoiseCLRLabError(f"{recipe.image} changed since the recipe was made.")
    return bank


def apply_recipe(recipe: Recipe, pipe=None, device=None, dtype=None, progress: bool = True) -> EditResult:
    """The image a recipe describes: its directions applied to a seed's image or to a real image (inverted
    with DDIM or null-text). ``pipe``: an already loaded pipeline of ``recipe.model`` (the dashboard keeps one);
    the same recipe on the same device and dtype gives the same pixels."""
    import torch

    from noiseclr_lab.editing import invert
    from noiseclr_lab.editing.inversion import p2p_args

    bank = check_recipe(recipe)
    if pipe is None:
        pipe = load_pipeline(recipe.model, device=device, dtype=dtype)
    ep = EditPipeline(pipe, bank)
    inversion = None
    if recipe.image is not None:
        inversion = invert(pipe, recipe.image, num_inference_steps=recipe.steps, method=recipe.inversion,
                           progress=progress, **p2p_args(recipe.inversion, recipe.prompt, recipe.guidance))
    out = ep(recipe.prompt, edits=recipe.edits, windows=recipe.windows, edit_start=recipe.edit_start,
             calibrated=recipe.calibrated, generator=torch.Generator().manual_seed(recipe.seed), inversion=inversion,
             num_inference_steps=recipe.steps, guidance_scale=recipe.guidance, negative_prompt=recipe.negative_prompt,
             guidance_rescale=recipe.guidance_rescale)
    return EditResult(image=out.images[0], recipe=recipe, edits=out.edits,
                      notes=list(inversion.notes) if inversion is not None else [])


def _same_edits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[t]["window"] == b[t]["window"] and math.isclose(a[t]["scale"], b[t]["scale"], rel_tol=1e-9, abs_tol=1e-12)
        for t in a)


def _said(edits: dict) -> str:
    return ", ".join(f"{t}={e['scale']:+.4g} on steps [{e['window'][0]}, {e['window'][1]})" for t, e in edits.items())


def preview_strip_path(run: str | os.PathLike | RunDir, token: str,
                       scales: Sequence[float] = (-6.0, -3.0, 0.0, 3.0, 6.0), seeds: int = 4,
                       num_inference_steps: int = 15, guidance_scale: float = 3.0, bank: DirectionBank | None = None) -> Path:
    """Where ``preview_strip`` keeps the strip of these settings (it exists once the strip was made)."""
    import hashlib

    run = run if isinstance(run, RunDir) else RunDir(run)
    bank = bank or DirectionBank.load(run.require_directions())
    k = bank.index(token)
    key = hashlib.sha256(repr((bank.content_hash(), bank.tokens[k], [float(x) for x in scales], seeds,
                               num_inference_steps, guidance_scale, default_prompt(bank),
                               default_edit_start(num_inference_steps))).encode()).hexdigest()[:12]
    return run.analysis_dir / f"preview-{k:04d}-{key}.png"


def preview_strip(run: str | os.PathLike | RunDir, token: str, scales: Sequence[float] = (-6.0, -3.0, 0.0, 3.0, 6.0),
                  seeds: int = 4, num_inference_steps: int = 15, guidance_scale: float = 3.0, pipe=None, device=None,
                  on_progress: Callable[[float], None] | None = None) -> Path:
    """A seeds x scales strip of one direction (rows: seeds, columns: scales), made when a run has no cached
    sweep to show, and kept as RUN/analysis/preview-<index>-<settings hash>.png (returned as is next time).
    ``on_progress(fraction)`` is called after each scale."""
    import torch

    from noiseclr_lab.editing import compose_grid

    run = run if isinstance(run, RunDir) else RunDir(run)
    bank = DirectionBank.load(run.require_directions())
    k = bank.index(token)
    path = preview_strip_path(run, token, scales, seeds, num_inference_steps, guidance_scale, bank=bank)
    if path.is_file():
        return path
    if pipe is None:
        pipe = load_pipeline(bank.base_model, device=device)
    ep = EditPipeline(pipe, bank)
    prompt = default_prompt(bank)
    start = default_edit_start(num_inference_steps)
    cols = []
    for n, scale in enumerate(scales):
        gens = [torch.Generator().manual_seed(i) for i in range(seeds)]
        edits = {bank.tokens[k]: float(scale)} if scale != 0 else None
        cols.append(ep([prompt] * seeds, edits=edits, edit_start=start, generator=gens, output_type="pil",
                       num_inference_steps=num_inference_steps, guidance_scale=guidance_scale).images)
        if on_progress is not None:
            on_progress((n + 1) / len(scales))
    grid = compose_grid([[cols[c][r] for c in range(len(scales))] for r in range(seeds)],
                        [f"seed {r}" for r in range(seeds)], [f"{x:+g}" for x in scales], cell=96)
    path = run.analysis_file(path.name)  # the folder is made here
    save_image_atomic(grid, path)
    return path


@dataclass
class DemoResult:
    """What ``demo`` produced."""

    run: RunDir  # the trained run (directions, validation grids, analysis/)
    data: Path  # the rendered training images
    gt: GTResult  # the ground-truth scores of the run and its baselines
    analysis: AnalysisResult  # the CLIP analysis of the run (toy CLIP, the faces factors as vocabulary)
    report: ReportResult  # RUN/report/report.html, .json, .md
    minutes: float  # wall time of the whole demo
    stage_minutes: dict[str, float] = field(default_factory=dict)  # wall time of each stage, in order

    def stages(self) -> str:
        """One line: each stage's wall time (where the demo's minutes went)."""
        return "stages: " + ", ".join(f"{name} {m:.1f} min" for name, m in self.stage_minutes.items())


def demo(out: str | os.PathLike = "runs/demo", *, steps: int | None = None, seeds: int = 12,
         scales: Sequence[float] = (-6.0, -3.0, 3.0, 6.0), eval_steps: int = 15, device=None,
         log: Callable[[str], None] | None = None, overrides: dict | None = None) -> DemoResult:
    """The whole loop on the toy faces model: render training faces, train the ``toy-faces`` preset (resuming a
    stopped demo), score the directions and baselines against the toy probe, and analyse them with the toy
    CLIP (reading the same cached sweep images).

    Args:
        out: the demo folder (``data/`` and ``run/`` go inside).
        steps: override the preset's training steps.
        overrides: other ``TrainConfig`` fields to override in the preset (e.g. ``{"select": 0}``).
        seeds, scales, eval_steps: the evaluation sweep.
        log: called with each progress line (None: silent).
    """
    say = log or (lambda _msg: None)
    t0 = time.time()
    stages: dict[str, float] = {}
    last = t0

    def lap(name: str) -> None:
        nonlocal last
        now = time.time()
        stages[name] = (now - last) / 60
        last = now

    out = Path(out)
    values = load_preset("toy-faces") | {"out": str(out / "run"), "device": device or ""}
    values |= dict(overrides or {})
    if steps:
        values["steps"] = steps
    data = out / "data"
    values["data"] = str(data)
    cfg = TrainConfig.from_dict(values)  # bad overrides fail here, before anything is written
    if not (data / FACTORS_CSV).is_file():
        render_folder("faces", cfg.num_images, data, seed=cfg.seed)
    lap("rendering")
    kept = f", keeping the {cfg.select} strongest distinct ones" if cfg.select else ""
    say(f"[1/5] training {cfg.num_directions} directions on {cfg.num_images} rendered toy faces in {data} "
        f"({cfg.steps} steps{kept})")
    run = train_run(cfg, resume=bool(RunDir(cfg.out).checkpoints()), log=say)
    lap("training with selection and validation grid")
    say("[2/5] scoring the directions against the toy probe (and baselines)")
    gt = evaluate_gt(run, "faces", seeds=seeds, scales=scales, num_inference_steps=eval_steps,
                     baselines=DEMO_BASELINES, device=device)
    lap("ground truth")
    say("[3/5] CLIP analysis: re-scoring, auto-labels, consistency (the toy CLIP reads the same sweep), and the "
        f"composition of the {DEMO_COMPOSED} most confident calibrated directions")
    analysis = analyze(run, seeds=seeds, scales=scales, num_inference_steps=eval_steps, device=device,
                       max_composed=DEMO_COMPOSED)
    lap("CLIP analysis and composition")
    say("[4/5] writing the report")
    rep = report(run)
    lap("report")
    return DemoResult(run=run, data=data, gt=gt, analysis=analysis, report=rep, minutes=(time.time() - t0) / 60,
                      stage_minutes=stages)
