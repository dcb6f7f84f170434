"""Benchmark: NoiseCLR training, batched schedule vs the official one, same machine, same run.

Two measurements:

  throughput   step time at equal work: every contender computes M directions' edits per step
               (batched: M directions in one UNet call; official: 1 anchor + M-1 negatives, one call each;
               release: the official schedule done the way the released training script does it, see
               ReleaseStep). Prints s/step, edits/s, the ratios; on CUDA also peak memory, MFU and HFU
               (HFU counts the forward passes gradient checkpointing repeats in the backward pass too).
  to-score     wall time to reach the same ground-truth score on the toy faces model: each schedule trains
               for --minutes per training seed (--train-seeds), checkpointing every --every steps (batched:
               the toy-faces preset as the demo runs it; official: 1 anchor + min(20, K-1) others per step,
               one UNet call each, as the released code); every checkpoint is scored with the toy probe
               (--eval-seeds seeds; score = covered factors + mean modularity of all K directions, inactive
               ones counting 0), smoothed over the last --smooth checkpoints and averaged over training
               seeds; the report gives the time each schedule needs to reach the official's best
               (within --tolerance; --clock cpu times by this process's CPU time instead of the wall
               clock: use it with one thread on a machine that other jobs share; --report FILE
               summarises a saved --json result again without training).

    python scripts/bench_train.py throughput                      # toy model, CPU
    python scripts/bench_train.py throughput --model sd15-random --device cuda --mixed-precision bf16
    python scripts/bench_train.py to-score --minutes 8
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from noiseclr_lab.perf import COMPILE_MODES, count_flops, count_step_flops, peak_tflops
from noiseclr_lab.perf import mfu as perf_mfu
from noiseclr_lab.training import TrainConfig, Trainer, load_preset

SCHEDULES = ("batched", "official", "release")


def _trainer(args, schedule: str, m: int, out: str) -> Trainer:
    cfg = TrainConfig(model=args.model, data=args.data, out=out, num_directions=max(m, args.directions),
                      directions_per_step=m, tokens_per_iter=m - 1, schedule=schedule, batch_size=args.batch_size,
                      steps=10**6, num_images=max(64, args.batch_size), mixed_precision=args.mixed_precision,
                      gradient_checkpointing=args.gradient_checkpointing, device=args.device or "",
                      checkpoint_every=0, cache_dir=args.cache_dir, compile=args.compile,
                      channels_last=args.channels_last, direction_chunk=args.direction_chunk)
    return Trainer(cfg)


def _step(trainer: Trainer, step: int) -> torch.Tensor:
    """One optimiser step as ``Trainer.run`` takes it (no host sync: the loss stays on the device)."""
    loss = trainer.backward_micro(trainer.draw(step, 0), 1.0)
    trainer.opt.step()
    trainer.opt.zero_grad(set_to_none=True)
    trainer.constrain()
    return loss


def _flops_per_step(step, trainer: Trainer | None = None) -> tuple[float, float]:
    """(model FLOPs, FLOPs gradient checkpointing recomputes) of one step, counted on the uncompiled UNet
    (compiling changes no FLOP of the work): MFU divides the first, HFU the sum."""
    pipe = trainer.pipe if trainer is not None else step.pipe
    models = [pipe.unet, pipe.text_encoder]
    if trainer is None:
        return count_step_flops(lambda: step(10**5), models)
    fn, trainer.unet_fn = trainer.unet_fn, trainer.pipe.unet
    try:
        model, recomputed = count_step_flops(lambda: step(10**5), models)
        if trainer.cfg.direction_chunk:  # gradient caching's pass without autograd: recomputation too
            draw = trainer.draw(10**5, 0)
            zt, t, _ = trainer._noised(draw)
            dirs = draw["dirs"].to(trainer.acc.device)
            extra = count_flops(lambda: trainer.estimates_without_grad(zt, t, dirs))
            model, recomputed = model - extra, recomputed + extra
        return model, recomputed
    finally:
        trainer.unet_fn = fn


class ReleaseStep:
    """One step of the official schedule done the way the released training script does it (gemlab-vt/NoiseCLR,
    core/trainer.py), rebuilt here from its description to time it on the same model and batch:

    - the image batch is VAE-encoded on every step (a latent is sampled from the posterior; nothing is cached);
    - the trainable parameter is the text encoder's whole token-embedding table, so the empty prompt's text
      encoding and UNet call run with autograd on and are part of the backward pass;
    - the anchor and each of the M-1 negatives take one text-encoder call and one UNet call each;
    - AdamW steps the whole table, after which every row except the direction tokens' is restored;
    - mixed precision as there: UNet and VAE in the low dtype, the text encoder in fp32 under autocast;
      gradient checkpointing (--gradient-checkpointing) of the UNet and the text encoder.

    The loss is the official schedule's (noiseclr_loss with one anchor), so only the cost differs. Left out, so
    the released way is if anything faster here than there: reading and resizing image files on every step
    (here the rendered PIL images are only preprocessed per step) and zeroing the frozen rows' gradients. With
    its default gradient accumulation of 4 the released script steps AdamW once per 4 such steps; here every
    step does (small next to the UNet calls: the table has vocabulary x width entries).
    """

    def __init__(self, args, m: int):
        from noiseclr_lab.models import load_pipeline
        from noiseclr_lab.training.data import load_training_images

        dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.mixed_precision]
        dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.pipe = pipe = load_pipeline(args.model, device=dev, dtype=dtype)
        self.m, self.b, self.dev, self.dtype, self.temperature = m, args.batch_size, dev, dtype, args.temperature
        te, tok = pipe.text_encoder.float(), pipe.tokenizer
        for mod in (pipe.unet, pipe.vae, te):
            mod.requires_grad_(False)
        tokens = [f"<release{i}>" for i in range(max(m, args.directions))]
        tok.add_tokens(tokens)
        te.resize_token_embeddings(len(tok), mean_resizing=False)
        self.table = te.get_input_embeddings().weight
        self.table.requires_grad_(True)
        ids = tok.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            self.table[ids] = torch.randn(len(ids), self.table.shape[1], device=dev) * 0.02
        self.frozen = torch.ones(len(tok), dtype=torch.bool, device=dev)
        self.frozen[ids] = False
        self.original = self.table.detach().clone()
        self.tokens = tokens
        self.opt = torch.optim.AdamW([self.table], lr=args.lr)
        if args.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            pipe.unet.train()
            (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()  # 5 / 4
            te.train()  # transformers checkpoints only in train mode; CLIP's dropout is 0
        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        images, _ = load_training_images(args.data, side, max(64, args.batch_size), 0)
        self.images = images  # PIL, preprocessed per step as the released data loader does
        from diffusers import DDPMScheduler

        self.noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok(texts, padding="max_length", truncation=True, max_length=tok.model_max_length,
                  return_tensors="pt").input_ids.to(self.dev)
        with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.pipe.text_encoder(ids)[0].to(self.dtype)

    def __call__(self, step: int) -> float:
        from noiseclr_lab.training.loss import noiseclr_loss

        pipe, B = self.pipe, self.b
        g = torch.Generator().manual_seed(step)
        pick = torch.randperm(len(self.images), generator=g)[:B].tolist()
        x = pipe.image_processor.preprocess([self.images[i] for i in pick]).to(self.dev, self.dtype)
        with torch.no_grad():
            z0 = pipe.vae.encode(x).latent_dist.sample() * pipe.vae.config.scaling_factor
        noise = torch.randn(z0.shape, generator=g).to(self.dev, self.dtype)
        t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (1,), generator=g).to(self.dev)
        zt = self.noise_sched.add_noise(z0, noise, t)
        u = pipe.unet(zt, t, self._encode([""]).expand(B, -1, -1)).sample
        drawn = [self.tokens[i] for i in torch.randperm(len(self.tokens), generator=g)[: self.m].tolist()]
        edits = [pipe.unet(zt, t, self._encode([d]).expand(B, -1, -1)).sample - u for d in drawn]
        loss = noiseclr_loss(torch.stack(edits, 1).float(), self.temperature, anchors=[0])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.table[self.frozen] = self.original[self.frozen]
        return loss.detach()


def throughput(args) -> list[dict]:
    if args.model == "sd15-random":
        args.model = _save_sd15_random(args)
    rows = []
    schedules = [x for x in args.schedules.split(",") if x]
    unknown = sorted(set(schedules) - set(SCHEDULES))
    if unknown or not schedules:
        raise SystemExit(f"--schedules takes some of {', '.join(SCHEDULES)}, not {args.schedules!r}")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops("cuda") if cuda else None
    print(f"device {name}, model {args.model}, B={args.batch_size}, mixed precision {args.mixed_precision}, "
          f"gradient checkpointing {args.gradient_checkpointing}, direction chunk {args.direction_chunk} (ours), "
          f"compile {args.compile} (ours), channels_last "
          f"{args.channels_last} (ours), torch {torch.__version__}")
    print(f"{'M':>3} {'schedule':>9} {'s/step':>8} {'edits/s':>9} {'peak GiB':>9} {'TFLOP/s':>8} {'MFU':>6} {'HFU':>6}"
          "   (TFLOP/s and MFU: the step's own FLOPs; HFU: with the forward passes gradient checkpointing or "
          "direction chunks repeat)")
    for m in [int(x) for x in args.m.split(",")]:
        res = {}
        for who in schedules:
            with tempfile.TemporaryDirectory() as tmp:
                tr = None if who == "release" else _trainer(args, who, m, tmp)
                step = ReleaseStep(args, m) if who == "release" else partial(_step, tr)
                for s in range(args.warmup):
                    step(s)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                for s in range(args.steps):
                    step(args.warmup + s)
                if cuda:
                    torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / args.steps
                mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                model_flops, recomputed = _flops_per_step(step, tr)
                mfu = hfu = float("nan")
                if cuda and peak:
                    mfu = perf_mfu(model_flops, dt, "cuda")
                    hfu = perf_mfu(model_flops + recomputed, dt, "cuda")
                edits = m * args.batch_size / dt
                res[who] = {"s_per_step": dt, "edits_per_s": edits, "peak_gib": mem, "tflop_per_s": model_flops / dt / 1e12,
                            "recomputed_share": recomputed / model_flops, "mfu": mfu, "hfu": hfu}
                print(f"{m:>3} {who:>9} {dt:>8.3f} {edits:>9.1f} {mem:>9.2f} {model_flops / dt / 1e12:>8.3g} "
                      f"{mfu:>6.1%} {hfu:>6.1%}", flush=True)
                del step, tr
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
        row = {"M": m, **{f"{k}_{s}": v for s, d in res.items() for k, v in d.items()}}
        said = []
        for other, key, name in (("official", "speedup", "the official schedule"),
                                 ("release", "speedup_vs_release", "the released script's way")):
            if "batched" in res and other in res:
                row[key] = res[other]["s_per_step"] / res["batched"]["s_per_step"]
                said.append(f"{row[key]:.2f}x faster per step than {name}")
        if said:
            print(f"    batched is {', '.join(said)}, at M={m}")
        rows.append(row)
    return rows


def _save_sd15_random(args) -> str:
    """Stable Diffusion 1.5's architecture with random weights, saved once (speed measurements only)."""
    from bench_edit import sd15_random

    folder = Path(tempfile.gettempdir()) / "noiseclr_sd15_random"
    if not (folder / "model_index.json").is_file():
        sd15_random("cpu", torch.float32).save_pretrained(folder)
    return str(folder)


def _train_curve(args, schedule: str, seed: int, out: Path) -> list[tuple[int, float]]:
    """Train one schedule for ``--minutes``, checkpointing every ``--every`` steps; (step, seconds) pairs."""
    # the toy-faces recipe (batched: its M directions per step); official: 1 anchor + tokens_per_iter others
    cfg = TrainConfig.from_dict(load_preset("toy-faces") | dict(
        out=str(out), num_directions=args.directions, tokens_per_iter=min(20, args.directions - 1), schedule=schedule,
        batch_size=args.batch_size, steps=10**6, lr=args.lr, temperature=args.temperature, seed=seed,
        checkpoint_every=args.every, keep_checkpoints=10**6, validate_every=0, device="cpu", cache_dir=args.cache_dir)
        | ({"directions_per_step": args.batched_m} if args.batched_m else {}))
    tr = Trainer(cfg)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    t0, step, points = clock(), 0, []
    while clock() - t0 < args.minutes * 60:
        _step(tr, step)
        step += 1
        if step % args.every == 0:
            points.append((step, clock() - t0))  # checkpoint writing is not timed
            tr.save_checkpoint(step)
    return points


def smoothed(scores: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` checkpoints (fewer at the start)."""
    tails = [scores[max(0, i - window + 1): i + 1] for i in range(len(scores))]
    return [sum(t) / len(t) for t in tails]


def to_score(args) -> dict:
    from noiseclr_lab.workflows import evaluate_gt

    if args.report:  # re-summarise a saved run (other --smooth / --tolerance) without training again
        return summarize(json.loads(Path(args.report).read_text())["runs"], args)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    seeds = [int(x) for x in args.train_seeds.split(",")]
    scales = [float(x) for x in args.eval_scales.split(",")]
    runs = {}
    for schedule in ("batched", "official"):
        for seed in seeds:
            out = work / f"{schedule}-{seed}"
            points = _train_curve(args, schedule, seed, out)
            curve = []
            for s, t in points:
                shutil.copy(out / "checkpoints" / f"step-{s}" / "directions.safetensors", out / "directions.safetensors")
                res = evaluate_gt(out, "faces", seeds=args.eval_seeds, num_inference_steps=args.eval_steps,
                                  baselines=[], scales=scales, progress=False, cache_sweeps=False)
                m = res.banks["trained"]["metrics"]
                curve.append({"step": s, "seconds": t, "coverage": m["coverage"], "modularity": m["modularity_all"],
                              "score": m["coverage"] + m["modularity_all"]})
                print(f"{schedule:>9} seed {seed} step {s:>5} {t:>7.1f}s coverage {m['coverage']:.0f} "
                      f"modularity(all) {m['modularity_all']:.2f}", flush=True)
            runs[f"{schedule}-{seed}"] = curve

    return summarize(runs, args)


def summarize(runs: dict, args) -> dict:
    """Mean smoothed score curves of both schedules and the time each needs to reach the official's best
    (within ``--tolerance``: both schedules may learn identically per step, and then a score that differs in the
    fourth digit must not decide which one got there)."""
    seeds = sorted({int(k.rsplit("-", 1)[1]) for k in runs})

    def mean_curve(schedule):
        # checkpoint i of every training seed: mean time and mean smoothed score
        curves = [runs[f"{schedule}-{s}"] for s in seeds]
        n = min(len(c) for c in curves)
        sm = [smoothed([p["score"] for p in c], args.smooth) for c in curves]
        return [{"step": curves[0][i]["step"], "seconds": sum(c[i]["seconds"] for c in curves) / len(curves),
                 "score": sum(s[i] for s in sm) / len(sm)} for i in range(n)]

    mean = {sch: mean_curve(sch) for sch in ("batched", "official")}
    target = max(p["score"] for p in mean["official"])

    def time_to(curve):
        hit = [p["seconds"] for p in curve if p["score"] >= target - args.tolerance]
        return hit[0] if hit else float("inf")

    tb, to = time_to(mean["batched"]), time_to(mean["official"])
    for sch in ("batched", "official"):
        print(f"{sch:>9} smoothed score (mean of {len(seeds)} training seeds, trailing {args.smooth}): "
              + " ".join(f"{p['score']:.2f}@{p['seconds']:.0f}s" for p in mean[sch]))
    best_b = max(p["score"] for p in mean["batched"])
    print(f"target score (best smoothed official: coverage + modularity of all) {target:.2f} (-{args.tolerance:g}): "
          f"batched {tb:.0f}s, official {to:.0f}s, ratio {to / tb:.2f}x (batched best {best_b:.2f})")
    return {"runs": runs, "mean": mean, "target": target, "batched_s": tb, "official_s": to, "ratio": to / tb,
            "settings": vars(args)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("throughput", "to-score"))
    p.add_argument("--model", default="toy:faces", help="model spec, or sd15-random (SD 1.5 architecture, random weights)")
    p.add_argument("--data", default="toy:faces")
    p.add_argument("--device", default=None)
    p.add_argument("--mixed-precision", default="no")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--direction-chunk", type=int, default=0,
                   help="our trainer's gradient caching over directions (TrainConfig.direction_chunk; 0: off)")
    p.add_argument("--compile", default="no", choices=COMPILE_MODES,
                   help="torch.compile mode of our trainer's UNet (the released way runs as released)")
    p.add_argument("--channels-last", action="store_true", help="our trainer's UNet and latents in NHWC")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--directions", type=int, default=12, help="K")
    p.add_argument("--m", default="4,8,12", help="throughput: directions per step to compare")
    p.add_argument("--schedules", default=",".join(SCHEDULES),
                   help="throughput: the contenders to time, comma-separated (the ratios need batched and another)")
    p.add_argument("--steps", type=int, default=5, help="throughput: timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--minutes", type=float, default=8.0, help="to-score: training minutes per schedule")
    p.add_argument("--every", type=int, default=50, help="to-score: steps between scored checkpoints")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--temperature", type=float, default=0.1, help="to-score: tau of both schedules")
    p.add_argument("--eval-seeds", type=int, default=12)
    p.add_argument("--train-seeds", default="0,1", help="to-score: training seeds per schedule (curves are averaged)")
    p.add_argument("--smooth", type=int, default=3, help="to-score: trailing checkpoints averaged into one score")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="to-score: time training by wall clock, or by this process's CPU time (fair on a shared machine)")
    p.add_argument("--batched-m", type=int, default=0, help="to-score: batched directions per step (0: the preset's)")
    p.add_argument("--eval-scales", default="-6,-3,3,6")
    p.add_argument("--eval-steps", type=int, default=15)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "noiseclr_bench_train"))
    p.add_argument("--cache-dir", default="")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="to-score: a smoothed score this close to the target counts as reaching it")
    p.add_argument("--report", default=None, help="to-score: summarise this saved --json result instead of training")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = throughput(args) if args.mode == "throughput" else to_score(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
