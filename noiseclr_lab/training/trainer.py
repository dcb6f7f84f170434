"""The NoiseCLR trainer: K direction embeddings learned contrastively, through accelerate.

One optimisation step (B images per process, one shared timestep t):

    z_t   = add_noise(z, noise, t)                       (B, C, h, w), latents cached once
    u     = eps(z_t, t, E(""))                           no grad
    D[:, k] = eps(z_t, t, E("<dk>")) - u                 batched: all M drawn directions in ONE UNet call
    loss  = noiseclr_loss(D, tau)                        official: 1 anchor + tokens_per_iter negatives,
                                                         one UNet call per direction
Every random draw of step s (images, noise, t, directions) comes from a generator seeded by (seed, s), so
a resumed run repeats an uninterrupted one exactly, and P processes that each take their slice of the
global batch compute the same loss as one process (edits are all-gathered; gradients are exact). With
``loss_scope="per-process"`` each process instead scores only its own B images and DDP averages the
gradients: the released code's objective (its loss is not the one-process loss of the global batch).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab._version import __version__
from noiseclr_lab.directions.bank import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline, default_edit_start, edit_grid
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_image_atomic, save_torch_atomic, write_json_atomic
from noiseclr_lab.models import check_processes_joined, load_pipeline, pick_device, processes_join_on_cpu
from noiseclr_lab.perf import speed_up
from noiseclr_lab.store import RunDir
from noiseclr_lab.training.config import TrainConfig
from noiseclr_lab.training.loss import noiseclr_loss, strength_penalty

# config fields that may differ between a run and its resumption
RESUMABLE_CHANGES = {"steps", "out", "checkpoint_every", "keep_checkpoints", "validate_every", "log_every",
                     "cache_dir", "device", "validation_seeds", "validation_scale", "validation_steps",
                     "select", "select_clip", "select_scale", "select_seeds", "select_steps", "select_max_similarity",  # after
                     "compile", "channels_last", "gradient_checkpointing", "direction_chunk"}  # speed / memory only


class _SubstitutedEmbedding(nn.Module):
    """Token embedding whose direction-token rows come from a separate trainable (K, D) tensor."""

    def __init__(self, base: nn.Embedding, directions: torch.Tensor, index_map: torch.Tensor):
        super().__init__()
        self.base, self.directions, self.index_map = base, directions, index_map

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k = self.index_map[ids]  # (..., ) direction index, -1 for ordinary tokens
        emb = F.embedding(ids.clamp(max=self.base.num_embeddings - 1), self.base.weight)
        return torch.where((k >= 0)[..., None], self.directions[k.clamp(min=0)].to(emb.dtype), emb)


class DirectionEncoder(nn.Module):
    """The trainable part: K direction embeddings; ``forward(ids)`` runs the frozen text encoder with them."""

    def __init__(self, text_encoder, init: torch.Tensor, token_ids: list[int], vocab_size: int):
        super().__init__()
        self.directions = nn.Parameter(init.clone().float())
        # kept outside the module tree: DDP must see (and sync) only the directions
        object.__setattr__(self, "_text_encoder", text_encoder)
        index_map = torch.full((vocab_size,), -1, dtype=torch.long)
        index_map[torch.tensor(token_ids)] = torch.arange(len(token_ids))
        self.register_buffer("index_map", index_map, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (R, L) -> last hidden states (R, L, D)."""
        te = self._text_encoder
        base = te.get_input_embeddings()
        te.set_input_embeddings(_SubstitutedEmbedding(base, self.directions, self.index_map))
        try:
            return te(ids)[0]
        finally:
            te.set_input_embeddings(base)


def _git_sha() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 97 + micro)


class Trainer:
    """Set up once, then ``run()``; see the module docstring for the step."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, final_grid: bool = True):
        from accelerate import Accelerator

        from noiseclr_lab.training.data import data_digest, encode_dataset, load_training_images

        self.cfg = cfg
        self.final_grid = final_grid  # False: the selection cuts it from its sweep (``workflows.train_run``)
        self.rundir = RunDir(cfg.out)
        if cfg.device:  # a device this machine lacks is one sentence here, not a CPU run that fails at selection
            pick_device(cfg.device)
            if cfg.device.startswith("cuda:") and cfg.device != "cuda:0":
                raise NoiseCLRLabError(f"Training runs on accelerate's device: for {cfg.device} set "
                                       f"CUDA_VISIBLE_DEVICES={cfg.device.split(':')[1]} and give --device cuda.")
        log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else None
        # accelerate joins the processes of a CPU launch (gloo) only when told the run is on the CPU: without
        # cpu=True each process of `torchrun` on a machine with no accelerator trained alone, into one run folder
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        cpu = cfg.device == "cpu" or (not cfg.device and launched > 1 and processes_join_on_cpu())
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu, log_with=log_with,
                               project_dir=str(self.run_dir))
        acc = self.acc
        check_processes_joined(launched, acc.num_processes, acc.device)
        if cfg.direction_chunk and acc.num_processes > 1:
            raise NoiseCLRLabError("direction_chunk runs on one process only for now; train with one process or "
                                   "without it (gradient checkpointing also saves memory).")
        self.start_step = 0
        self._trained_on = None  # on --resume of a run trained on a folder: the fingerprint of that data
        ck = None
        if resume:
            ck = self.rundir.latest_checkpoint()
            if ck is None:
                raise NoiseCLRLabError(f"--resume: no checkpoint in {self.rundir.checkpoints_dir}.")
            self._check_resumable()
        elif acc.is_main_process and self.rundir.has_checkpoints():
            raise NoiseCLRLabError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out.")

        dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        self.pipe = pipe = load_pipeline(cfg.model, device=acc.device, dtype=dtype)
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.requires_grad_(False)
        if cfg.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            pipe.unet.train()  # diffusers checkpoints only in train mode; SD's UNet has no dropout
        # the training step's UNet call (compiled when asked; validation and selection call pipe.unet as it is)
        self.unet_fn = speed_up(pipe.unet, cfg.compile, cfg.channels_last)
        self.fingerprint = tokenizer_fingerprint(pipe.tokenizer)
        self.tokens = [f"<d{i + 1}>" for i in range(cfg.num_directions)]
        clash = [t for t in self.tokens if t in pipe.tokenizer.get_vocab() and t not in pipe.tokenizer.get_added_vocab()]
        if clash:
            raise NoiseCLRLabError(f"Direction tokens {clash} already exist in the model's vocabulary.")
        pipe.tokenizer.add_tokens(self.tokens)
        token_ids = pipe.tokenizer.convert_tokens_to_ids(self.tokens)
        self.D = int(pipe.text_encoder.get_input_embeddings().weight.shape[1])

        side = int(pipe.unet.config.sample_size)
        if side % cfg.patch_grid:
            raise NoiseCLRLabError(f"patch_grid {cfg.patch_grid} does not divide the latent side {side}.")
        res = side * int(pipe.vae_scale_factor)
        with acc.main_process_first():
            images, data_fp = load_training_images(cfg.data, res, cfg.num_images, cfg.seed, cfg.max_images)
            latents = encode_dataset(pipe, images, data_fp, cfg.model, cfg.cache_dir)  # (N, C, h, w) cpu
        self.latents = latents.to(acc.device)  # kept on the device: a step gathers its batch there, no copy
        self.data_fingerprint = data_fp
        if self._trained_on is not None and data_digest(self._trained_on) != data_digest(data_fp):
            raise NoiseCLRLabError(
                f"--resume: the training data in {cfg.data} is not what the run was trained on ({self._trained_on}): "
                "its files, sizes or modification times differ.")
        global_b = cfg.batch_size * acc.num_processes
        if len(self.latents) < global_b or len(self.latents) < 2:
            raise NoiseCLRLabError(
                f"{len(self.latents)} training image(s) but the global batch is {global_b}; add images or lower batch_size.")

        init = self._initial_directions()
        self.encoder = DirectionEncoder(pipe.text_encoder, init, token_ids, len(pipe.tokenizer)).to(acc.device)
        self.opt = torch.optim.AdamW(self.encoder.parameters(), lr=self.lr_at(0), weight_decay=cfg.weight_decay)
        if ck is not None:
            self._load_checkpoint(ck)
        self.encoder, self.opt = acc.prepare(self.encoder, self.opt)
        from diffusers import DDPMScheduler

        self.noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
        with torch.no_grad():
            ids = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(acc.device)
            self.empty = pipe.text_encoder(ids)[0]  # (1, L, D)
            self.direction_ids = pipe.tokenizer(self.tokens, padding="max_length", truncation=True,
                                                max_length=pipe.tokenizer.model_max_length,
                                                return_tensors="pt").input_ids.to(acc.device)  # (K, L)

    # ------------------------------------------------------------------ setup helpers

    @property
    def run_dir(self) -> Path:
        """The run folder's path (``self.rundir`` owns its layout)."""
        return self.rundir.path

    @property
    def base_lr(self) -> float:
        c = self.cfg
        return c.lr * (c.grad_accum * self.acc.num_processes if c.scale_lr else 1)

    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then constant or a cosine decay to ``lr_min_ratio`` x lr."""
        c = self.cfg
        w = c.warmup_steps
        factor = min(1.0, (step + 1) / w) if w else 1.0
        if c.lr_schedule == "cosine" and step >= w:
            done = (step - w) / max(1, c.steps - w - 1)
            factor = c.lr_min_ratio + (1 - c.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        return self.base_lr * factor

    def _initial_directions(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + 1)
        noise = torch.randn(self.cfg.num_directions, self.D, generator=g) * self.cfg.init_std
        if self.cfg.init == "mean-word":
            w = self.pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu()
            return w[: len(self.pipe.tokenizer) - len(self.tokens)].mean(0, keepdim=True) + noise
        return noise

    def _check_resumable(self) -> None:
        if not self.rundir.config_path.is_file():
            raise NoiseCLRLabError(f"--resume: {self.rundir.config_path} is missing.")
        written = self.rundir.read_config()
        old, new = written["config"], self.cfg.to_dict()
        diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
        trained_on = written.get("provenance", {}).get("data", "")
        if trained_on.startswith("folder:") and not new["data"].startswith("toy:"):
            if "data" in diff:
                diff.remove("data")  # a moved or renamed folder is the same data: its fingerprint decides
            self._trained_on = trained_on  # checked once the folder is read (moved or not)
        if new.get("lr_schedule") == "cosine" and old.get("steps") != new["steps"]:
            diff.append("steps (the cosine schedule decays over them)")
        if diff:
            raise NoiseCLRLabError(f"--resume: the config differs from the run's in {diff}; those must stay the same.")

    def _load_checkpoint(self, ck: Path) -> None:
        bank = DirectionBank.load(ck / RunDir.DIRECTIONS)
        if bank.tokens != self.tokens:
            raise NoiseCLRLabError(f"Checkpoint {ck} holds tokens {bank.tokens[:3]}..., not this run's.")
        with torch.no_grad():
            self.encoder.directions.copy_(bank.embeddings)
        try:
            self.opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True))
            self.start_step = int(json.loads((ck / "state.json").read_text())["step"])
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:  # truncated, damaged or foreign files
            raise NoiseCLRLabError(f"Checkpoint {ck} is damaged ({type(e).__name__}: {str(e)[:120]}); delete that "
                                   "folder to resume from the one before it.") from e
        if self.start_step > self.cfg.steps:
            raise NoiseCLRLabError(f"--resume: the run is at step {self.start_step}, past --steps {self.cfg.steps}; give "
                                   f"--steps {self.start_step} or more (its checkpoints stay as they are).")

    # ------------------------------------------------------------------ artefacts

    def provenance(self) -> dict:
        import diffusers

        return {"noiseclr_lab": __version__, "git_sha": _git_sha(), "base_model": self.cfg.model,
                "data": self.data_fingerprint, "seed": self.cfg.seed, "num_processes": self.acc.num_processes,
                "torch": torch.__version__, "diffusers": diffusers.__version__, "device": str(self.acc.device),
                "attention": "sdpa" if hasattr(F, "scaled_dot_product_attention") else "eager",
                "num_images": len(self.latents)}

    def bank(self) -> DirectionBank:
        emb = self.acc.unwrap_model(self.encoder).directions.detach().float().cpu()
        return DirectionBank(emb, self.tokens, base_model=self.cfg.model, tokenizer_fingerprint=self.fingerprint,
                             training_config=self.cfg.to_dict())

    def save_checkpoint(self, step: int) -> Path:
        """checkpoints/step-N/ (directions, optimizer, state), complete or absent (``RunDir.write_checkpoint``);
        then the run's directions.safetensors. Main process only."""
        bank = self.bank()

        def fill(folder: Path) -> None:
            bank.save(folder / RunDir.DIRECTIONS)
            save_torch_atomic(self.opt.state_dict(), folder / "optimizer.pt")
            write_json_atomic(folder / "state.json", {"step": step, "time": time.time()})

        final = self.rundir.write_checkpoint(step, fill, keep=self.cfg.keep_checkpoints)
        bank.save(self.rundir.directions_path)
        return final

    def validation_grid(self, step: int) -> Path:
        path = self.rundir.validation_image(step)
        save_image_atomic(validation_grid(self.pipe, self.bank(), self.cfg), path)
        return path

    # ------------------------------------------------------------------ the step

    def draw(self, step: int, micro: int) -> dict:
        """Every random choice of one micro-step, for the global batch (identical on every process)."""
        c, K = self.cfg, self.cfg.num_directions
        g = _step_generator(c.seed, step, micro)
        gb = c.batch_size * self.acc.num_processes
        idx = torch.randperm(len(self.latents), generator=g)[:gb]
        t = torch.randint(c.t_min, c.t_max, (1,), generator=g)
        noise = torch.randn((gb, *self.latents.shape[1:]), generator=g)
        perm = torch.randperm(K, generator=g)
        if c.schedule == "batched":
            dirs = perm[: min(c.directions_per_step, K)]
        else:  # anchor first, then tokens_per_iter others
            dirs = perm[: 1 + min(c.tokens_per_iter, K - 1)]
        return {"idx": idx, "t": t, "noise": noise, "dirs": dirs}

    def loss_for(self, draw: dict) -> torch.Tensor:
        """The loss of one micro-step on this process's slice (scaled so that DDP's gradient mean is exact)."""
        zt, t, u = self._noised(draw)
        dirs = draw["dirs"].to(self.acc.device)
        return self._objective(self._eps(zt, t, dirs), u)

    def _noised(self, draw: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's noised latents z_t (B, C, h, w), timesteps and unconditional estimate u (no autograd)."""
        acc, c = self.acc, self.cfg
        r, B = acc.process_index, c.batch_size
        sl = slice(r * B, (r + 1) * B)
        dev = acc.device
        dtype = self.pipe.unet.dtype
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        z0 = self.latents[draw["idx"][sl].to(dev)].to(dtype)
        noise = draw["noise"][sl]
        noise = (noise.pin_memory() if dev.type == "cuda" else noise).to(dev, dtype, non_blocking=True)
        t = draw["t"].to(dev, non_blocking=True)
        zt = self.noise_sched.add_noise(z0, noise, t).contiguous(memory_format=fmt)
        unet = self.unet_fn
        with torch.no_grad(), acc.autocast():
            u = unet(zt, t, encoder_hidden_states=self.empty.expand(B, -1, -1)).sample  # (B, C, h, w)
        if unet is not self.pipe.unet:  # compiled: under CUDA graphs the next call may reuse u's memory
            u = u.clone()
        return zt, t, u

    def _eps(self, zt: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """The UNet's estimate under each drawn direction: (M, B, C, h, w) (one call, or one per direction)."""
        c, unet = self.cfg, self.unet_fn
        B, M = zt.shape[0], len(dirs)
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        # without autograd a compiled call under CUDA graphs may overwrite the previous call's output: copied
        copy = unet is not self.pipe.unet and not torch.is_grad_enabled()
        with self.acc.autocast():
            emb = self.encoder(self.direction_ids[dirs])  # (M, L, D)
            if c.schedule == "batched":
                eps = unet(zt.repeat(M, 1, 1, 1).contiguous(memory_format=fmt), t,
                           encoder_hidden_states=emb.repeat_interleave(B, 0)).sample
                return (eps.clone() if copy else eps).unflatten(0, (M, B))
            outs = []
            for j in range(M):
                o = unet(zt, t, encoder_hidden_states=emb[j : j + 1].expand(B, -1, -1)).sample
                outs.append(o.clone() if copy else o)
            return torch.stack(outs)

    def _objective(self, eps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The loss of the edits eps - u (eps (M, B, ...)) over this process's slice, or the gathered batch."""
        acc, c = self.acc, self.cfg
        r, B, M = acc.process_index, c.batch_size, eps.shape[0]
        edits = (eps.float() - u.float()[None]).transpose(0, 1)  # (B, M, C, h, w)
        if self.gathers:  # all-gather the edits; only this process's slice carries gradient
            gathered = acc.gather(edits.detach().contiguous())
            edits = torch.cat([gathered[: r * B], edits, gathered[(r + 1) * B :]])
        loss = noiseclr_loss(edits, c.temperature, anchors=self.anchors(M), patch_grid=c.patch_grid)
        if c.strength_weight:  # over the same (gathered) batch as the loss; only the local slice carries gradient
            un = u.flatten(1).float().norm(dim=-1)
            if self.gathers:
                un = acc.gather(un.contiguous())
            loss = loss + c.strength_weight * strength_penalty(edits, un, c.strength_target)
        return loss

    def backward_micro(self, draw: dict, weight: float) -> torch.Tensor:
        """One micro-step: its loss back-propagated with ``weight``, directly or, with ``direction_chunk``, by
        chunks (``backward_chunked``); returns the loss (detached). What ``run`` and the benchmarks call."""
        if self.cfg.direction_chunk:
            return self.backward_chunked(draw, weight)
        loss = self.loss_for(draw)
        self.acc.backward(loss * weight)
        return loss.detach()

    def estimates_without_grad(self, zt: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """``_eps`` for every direction, ``direction_chunk`` of them at a time, without autograd: the first pass
        of gradient caching (M, B, C, h, w)."""
        k = self.cfg.direction_chunk
        with torch.no_grad():
            return torch.cat([self._eps(zt, t, dirs[i : i + k]) for i in range(0, len(dirs), k)])

    def backward_chunked(self, draw: dict, weight: float) -> torch.Tensor:
        """``backward(loss_for(draw) * weight)`` by gradient caching over the directions (``direction_chunk``):
        every estimate once without autograd, the loss's gradient with respect to them, then each chunk of
        directions again with autograd, back-propagated with its share of that gradient. Returns the loss
        (detached). The same gradient as the direct backward, up to rounding."""
        k = self.cfg.direction_chunk
        zt, t, u = self._noised(draw)
        dirs = draw["dirs"].to(self.acc.device)
        eps = self.estimates_without_grad(zt, t, dirs).requires_grad_(True)
        loss = self._objective(eps, u)
        (grad,) = torch.autograd.grad(loss * weight, eps)
        for i in range(0, len(dirs), k):
            torch.autograd.backward(self._eps(zt, t, dirs[i : i + k]), grad[i : i + k])
        return loss.detach()

    @property
    def gathers(self) -> bool:
        """Whether the loss is scored over the all-gathered global batch (several processes, loss_scope global)."""
        return self.acc.num_processes > 1 and self.cfg.loss_scope == "global"

    @property
    def loss_weight(self) -> float:
        """Backward weight of a process's loss so that DDP's gradient mean is the objective's gradient: the
        global loss's gradient is the sum of every process's slice (DDP divides by the process count); the
        per-process objective is the mean of the processes' own losses (DDP's mean as it is)."""
        return float(self.acc.num_processes) if self.gathers else 1.0

    def anchors(self, m: int) -> list[int] | None:
        """Anchor columns of the loss among the m drawn directions (drawn in random order, so the first A are
        a random subset); None means all."""
        c = self.cfg
        if c.schedule == "official":
            return [0]
        a = c.anchors_per_step
        return None if a == 0 or a >= m else list(range(a))

    @torch.no_grad()
    def constrain(self) -> None:
        """After an optimiser step: scale directions longer than ``max_norm`` back to it (no-op when 0)."""
        if self.cfg.max_norm > 0:
            d = self.acc.unwrap_model(self.encoder).directions
            d.mul_((self.cfg.max_norm / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))

    def _check_finite(self, pending: list[tuple[int, torch.Tensor]], last_good: Path | None) -> list[float]:
        """This process's losses of the steps since the last host sync (read in one transfer); stops at the first
        step whose loss is not finite on any process (every process stops there: none is left waiting), before
        anything of the diverged state is written."""
        local = torch.stack([v for _, v in pending])
        every = self.acc.gather(local[None]).view(-1, len(pending)) if self.acc.num_processes > 1 else local[None]
        losses, worst = local.tolist(), every.tolist()
        for i, (step, _) in enumerate(pending):
            bad = [row[i] for row in worst if not math.isfinite(row[i])]
            if bad:
                v = bad[0]
                where = last_good or "none was written yet"
                raise NoiseCLRLabError(
                    f"The loss became {v} at step {step}; training stopped. Last good checkpoint: {where}. "
                    "Lower lr or use mixed_precision 'no'.")
        return losses

    def run(self) -> Path:
        acc, c = self.acc, self.cfg
        if acc.is_main_process:
            self.rundir.write_config({"config": c.to_dict(), "provenance": self.provenance(), "tokens": self.tokens})
            if self.start_step == 0:
                self.rundir.reset_metrics()
                self.bank().save(self.rundir.initial_directions_path)
            else:
                self.rundir.truncate_metrics(self.start_step)
        if acc.trackers == [] and acc.log_with:
            acc.init_trackers("noiseclr", config={k: v for k, v in c.to_dict().items() if isinstance(v, (int, float, str, bool))})
        bar = tqdm(total=c.steps, initial=self.start_step, desc="NoiseCLR", unit="step", disable=not acc.is_main_process)
        images = 0
        t_last = time.perf_counter()
        last_good = self.rundir.latest_checkpoint()
        pending: list[tuple[int, torch.Tensor]] = []  # (step, loss on the device) since the last host sync
        for step in range(self.start_step, c.steps):
            for pg in self.opt.param_groups:
                pg["lr"] = self.lr_at(step)
            total = torch.zeros((), device=acc.device)
            for micro in range(c.grad_accum):
                loss = self.backward_micro(self.draw(step, micro), self.loss_weight / c.grad_accum)
                total += loss.float() / c.grad_accum
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.constrain()
            pending.append((step, total))
            done = step + 1
            images += c.batch_size * acc.num_processes * c.grad_accum
            bar.update(1)
            checkpoint = (c.checkpoint_every and done % c.checkpoint_every == 0) or done == c.steps
            log = done % c.log_every == 0 or done == c.steps
            validate = (c.validate_every and done % c.validate_every == 0) or done == c.steps
            if log or checkpoint or validate:  # the loop's only host sync: the losses since the last one, at once
                losses = self._check_finite(pending, last_good)
                pending = []
            if log:
                now = time.perf_counter()
                ips = images / max(now - t_last, 1e-9)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{ips:.1f}")
                if acc.is_main_process:
                    self.rundir.append_metrics({"step": done, "loss": losses[-1], "lr": self.lr_at(step),
                                                "time": time.time(), "images_per_s": ips})
                    acc.log({"loss": losses[-1], "lr": self.lr_at(step)}, step=done)
                images, t_last = 0, now
            if checkpoint:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    last_good = self.save_checkpoint(done)
            if acc.is_main_process and validate and (done < c.steps or self.final_grid):
                self.validation_grid(done)
        bar.close()
        acc.wait_for_everyone()
        acc.end_training()
        return self.run_dir


def validation_grid(pipe, bank: DirectionBank, cfg: TrainConfig):
    """The validation grid of ``bank`` as ``cfg`` draws it: every direction at -scale, 0 and +scale, one column
    per validation seed, edits after the evaluation's warm-up (as evaluate-gt scores them). A PIL image."""
    c = cfg
    return edit_grid(EditPipeline(pipe, bank), list(bank.tokens), [-c.validation_scale, 0.0, c.validation_scale],
                     seeds=list(range(c.validation_seeds)), prompt=c.validation_prompt,
                     num_inference_steps=c.validation_steps, guidance_scale=c.validation_guidance,
                     edit_start=default_edit_start(c.validation_steps))


def train(cfg: TrainConfig, resume: bool = False, final_grid: bool = True) -> Path:
    """Train directions as ``cfg`` says; returns the run folder (layout: ``noiseclr_lab.store.RunDir``).
    ``final_grid=False`` leaves the validation grid of the last step to the caller (``workflows.train_run``
    cuts it from the selection sweep, which holds its images)."""
    return Trainer(cfg, resume=resume, final_grid=final_grid).run()
