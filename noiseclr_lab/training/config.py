"""TrainConfig: every knob of a NoiseCLR run, one CLI flag each; presets are TOML files found by name."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.perf import COMPILE_MODES

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?|mps")  # device names the CLI and TrainConfig take (availability: at run time)


@dataclass
class TrainConfig:
    """A NoiseCLR training run. Defaults suit the toy faces model on a CPU."""

    model: str = "toy:faces"  # model spec for load_pipeline: toy:<domain>, hub id, folder or single file
    data: str = "toy:faces"  # image folder, or toy:<domain> to render num_images toy images
    out: str = "runs/noiseclr"  # run folder (layout: noiseclr_lab.store.RunDir)
    num_directions: int = 12  # K, the number of directions (new tokens <d1>..<dK>)
    steps: int = 300  # optimisation steps
    batch_size: int = 6  # B, images per step per process (the official default)
    schedule: str = "batched"  # "batched" (M anchors, one UNet call) or "official" (1 anchor + tokens_per_iter)
    directions_per_step: int = 12  # M, directions drawn per step in the batched schedule (capped at K)
    anchors_per_step: int = 0  # A, how many of the M drawn directions are anchors of the batched loss (0: all M;
    # 1: the official loss, computed in one UNet call); the others serve as negatives only
    tokens_per_iter: int = 20  # negatives per step in the official schedule (capped at K - 1)
    temperature: float = 0.5  # tau of the contrastive loss
    patch_grid: int = 1  # > 1: the loss is averaged over g x g latent patches, each scored alone (an extension
    # for local attributes; 1 = the whole latent, as the paper); latent side must be divisible by it
    strength_weight: float = 0.0  # > 0: add this x a hinge that lifts every drawn direction's edit to
    # strength_target of the unconditional estimate's length (training.loss.strength_penalty; an extension)
    strength_target: float = 0.03  # r_k = ||edit|| / ||eps("")||, averaged over the batch
    lr: float = 1e-3  # AdamW learning rate (before scale_lr)
    lr_schedule: str = "constant"  # "constant" (the released code) or "cosine" (decay to lr_min_ratio x lr over the
    # steps after warm-up; an extension)
    lr_min_ratio: float = 0.1  # the cosine schedule's final lr as a share of lr
    scale_lr: bool = False  # multiply lr by grad_accum x processes, as the official code does
    weight_decay: float = 0.0  # AdamW weight decay on the direction embeddings
    warmup_steps: int = 0  # linear learning-rate warm-up
    grad_accum: int = 1  # gradient accumulation steps per optimisation step
    t_min: int = 0  # timesteps are drawn uniformly from [t_min, t_max)
    t_max: int = 1000  # (the official code uses the whole range)
    max_norm: float = 0.0  # > 0: after every step, directions longer than this are scaled back to it (0: free, as
    # the official code); the toy text encoder's attribute words have norm ~0.45
    init: str = "random"  # "random" (N(0, init_std^2)) or "mean-word" (mean word embedding + N(0, init_std^2))
    init_std: float = 0.02  # std of the random initialisation. 0.02 is OUR deviation (a word embedding's scale); the
    # released code's new token rows start as N(0, 1), transformers 4.34's default for resized embedding rows
    # (the `official` preset uses 1.0)
    select: int = 0  # > 0: after training keep this many directions, the strongest distinct edits by their
    # CLIP effect (analysis.selection, no labels; run by workflows.train and the CLI); 0 keeps all K
    select_clip: str = "toy"  # CLIP of the selection: toy, NAME:TAG, NAME:/path/weights (as analyze --clip)
    select_scale: float = 6.0  # the selection sweep applies every direction at -scale and +scale
    select_seeds: int = 4  # seeds of the selection sweep
    select_steps: int = 15  # denoising steps of the selection sweep (its CFG and prompt: the validation ones)
    select_max_similarity: float = 0.7  # two edits whose CLIP axes have |cos| above this count as one (kept once)
    num_images: int = 256  # images rendered for toy:<domain> data (ignored for folders)
    max_images: int = 0  # use at most this many folder images (0: all)
    seed: int = 0  # everything random (images, noise, timesteps, directions drawn) derives from it
    loss_scope: str = "global"  # several processes: "global" (one loss over the all-gathered batch, equal to one
    # process with the same global batch) or "per-process" (each process scores its own images, gradients
    # averaged: the released code's objective, for exact reproduction); the same on one process
    mixed_precision: str = "no"  # accelerate mixed precision: no, fp16, bf16
    gradient_checkpointing: bool = False  # UNet activation checkpointing (saves memory, costs time)
    direction_chunk: int = 0  # > 0: gradient caching over directions: every edit is computed once without
    # autograd, the loss's gradient taken on them, then this many directions at a time again with autograd and
    # their backward pass: memory of one chunk's activations whatever M is, for one more forward pass (as
    # gradient checkpointing); the same gradient. 0: all M at once. One process, no fp16 (bf16 is fine)
    compile: str = "no"  # torch.compile of the UNet: no, default, reduce-overhead (+ CUDA graphs), max-autotune,
    # aot-eager (traced, no code generated: checks in seconds that the step compiles) (noiseclr_lab.perf.speed_up;
    # the same results up to rounding, faster on a GPU after a compile warm-up)
    channels_last: bool = False  # UNet weights and latents in NHWC (faster convolutions on tensor cores)
    checkpoint_every: int = 100  # steps between resumable checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # how many checkpoints to keep
    validate_every: int = 0  # steps between validation grids (0: only at the end)
    validation_seeds: int = 2  # seeds per validation grid
    validation_scale: float = 6.0  # edit scale shown in validation grids
    validation_steps: int = 25  # denoising steps of validation images
    validation_prompt: str = ""  # prompt of validation images (toy domains: the domain head, e.g. "a cartoon face")
    validation_guidance: float = 3.0  # CFG scale of validation images
    log_every: int = 10  # steps between metrics.jsonl lines
    cache_dir: str = ""  # latent cache folder ("" -> ~/.cache/noiseclr_lab/latents)
    device: str = ""  # "" lets accelerate choose (cuda if present); "cpu" forces the CPU

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """One clear error per bad field."""
        for f in fields(self):  # presets and --set overrides come as TOML values: check their types first
            v, want = getattr(self, f.name), type(f.default)
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True  # 1 for 1.0
            if not ok:
                raise NoiseCLRLabError(f"Training config field {f.name} must be {want.__name__}, not {v!r}.")
        checks = [
            (self.num_directions >= 2, "num_directions must be at least 2"),
            (self.steps >= 1, "steps must be positive"),
            (self.batch_size >= 1, "batch_size must be positive"),
            (self.schedule in ("batched", "official"), f"schedule must be 'batched' or 'official', not {self.schedule!r}"),
            (self.directions_per_step >= 2, "directions_per_step must be at least 2"),
            (self.anchors_per_step >= 0, "anchors_per_step must be >= 0 (0: every drawn direction)"),
            (self.tokens_per_iter >= 1, "tokens_per_iter must be positive"),
            (self.temperature > 0, "temperature must be positive"),
            (self.patch_grid >= 1, "patch_grid must be positive"),
            (self.direction_chunk >= 0, "direction_chunk must be >= 0 (0: all directions at once)"),
            (not (self.direction_chunk and self.mixed_precision == "fp16"),
             "direction_chunk does not work with fp16 (its loss scaler); use bf16 or no mixed precision"),
            (self.lr > 0, "lr must be positive"),
            (self.strength_weight >= 0, "strength_weight must be >= 0 (0 turns it off)"),
            (self.strength_target > 0, "strength_target must be positive"),
            (self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}"),
            (0 <= self.lr_min_ratio <= 1, "lr_min_ratio must be in [0, 1]"),
            (self.loss_scope in ("global", "per-process"),
             f"loss_scope must be 'global' or 'per-process', not {self.loss_scope!r}"),
            (self.grad_accum >= 1, "grad_accum must be positive"),
            (0 <= self.t_min < self.t_max <= 1000, "need 0 <= t_min < t_max <= 1000"),
            (self.max_norm >= 0, "max_norm must be >= 0 (0 turns it off)"),
            (self.init in ("random", "mean-word"), f"init must be 'random' or 'mean-word', not {self.init!r}"),
            (self.mixed_precision in ("no", "fp16", "bf16"), "mixed_precision must be no, fp16 or bf16"),
            (self.compile in COMPILE_MODES, f"compile must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}"),
            (self.num_images >= 2, "num_images must be at least 2"),
            (0 <= self.select <= self.num_directions, "select must be in [0, num_directions] (0 keeps all)"),
            (self.select_scale > 0, "select_scale must be positive"),
            (self.select_seeds >= 2, "select_seeds must be at least 2"),
            (self.select_steps >= 2, "select_steps must be at least 2"),
            (0 < self.select_max_similarity <= 1, "select_max_similarity must be in (0, 1]"),
            (math.isfinite(self.lr) and math.isfinite(self.temperature) and math.isfinite(self.strength_weight)
             and math.isfinite(self.init_std), "lr, temperature, strength_weight and init_std must be finite"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.init_std >= 0, "init_std must be >= 0"),
            (self.log_every >= 1, "log_every must be positive"),
            (self.checkpoint_every >= 0 and self.validate_every >= 0,
             "checkpoint_every and validate_every must be >= 0 (0: only at the end)"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be positive"),
            (self.validation_seeds >= 1, "validation_seeds must be positive"),
            (self.validation_steps >= 2, "validation_steps must be at least 2"),
            (0 <= self.seed < 2**32, "seed must be in [0, 2**32)"),  # step seeds derive from it by arithmetic
            (self.device == "" or DEVICE_NAME.fullmatch(self.device) is not None,
             f"device must be '', 'cpu', 'cuda', 'cuda:N' or 'mps', not {self.device!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise NoiseCLRLabError(f"Bad training config: {msg}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NoiseCLRLabError(f"Unknown training config fields {unknown}; known: {', '.join(sorted(known))}.")
        return cls(**d)


CHOICES = {"schedule": ("batched", "official"), "lr_schedule": ("constant", "cosine"),
           "loss_scope": ("global", "per-process"), "init": ("random", "mean-word"),
           "mixed_precision": ("no", "fp16", "bf16"), "compile": COMPILE_MODES}  # the str fields that are one of a few


def field_docs() -> dict[str, str]:
    """{field: its comment in TrainConfig's source} (what ``train --help`` says of each flag)."""
    import inspect

    docs: dict[str, str] = {}
    last = None
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # installed without sources (.pyc only, a zipapp): flags without descriptions
        return docs
    for line in source.splitlines():
        m = re.match(r"^    (\w+): [^=]+=.*?  # (.*)$", line)
        if m:
            last = m.group(1)
            docs[last] = m.group(2).strip()
        elif last and (c := re.match(r"^    # (.*)$", line)):
            docs[last] += " " + c.group(1).strip()
        elif not line.strip().startswith("#"):
            last = None
    return docs


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name_or_path: str) -> dict:
    """A preset's fields: a shipped preset name ("toy-faces") or a path to a TOML file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise NoiseCLRLabError(f"Unknown preset {name_or_path!r}: not a file and not one of {', '.join(list_presets())}.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise NoiseCLRLabError(f"Preset {path} is not valid TOML: {e}") from e
