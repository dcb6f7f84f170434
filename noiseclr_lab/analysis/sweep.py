"""The sweep engine: every direction of a bank x every scale x S seeds, through ``EditPipeline``.

For direction k the n_scales x S edited images go through the pipeline as one batch (one scale per image),
ordered scale-major (image i = scale i // S, seed i % S). Edits start at denoising step ``edit_start``; the
unedited warm-up steps before it are the same for every direction and scale, so they run once per seed and
every batch continues from their latents. The sweep returns images; a ``Reader`` turns them into
probabilities (``read_sweep``), so the toy probe and a CLIP reader judge the same images. With a cache
folder (``sweep_cache_dir``: RUN/analysis/sweeps/<content key>/) the images are kept on disk as 8-bit
images, one file per batch, so an interrupted sweep resumes and a later reader of the same settings
generates nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from noiseclr_lab.analysis.readers import Reader, check_reading
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline, default_edit_start
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_safetensors_atomic, write_json_atomic
from noiseclr_lab.models import pipeline_fingerprint, pipeline_spec
from noiseclr_lab.perf import peak_tflops
from noiseclr_lab.store import RunDir


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep's images depend on (besides the bank and the model)."""

    scales: tuple[float, ...]  # edit scales, applied to every direction
    seeds: int = 12  # S: noise seeds 0..S-1, the same for every direction and scale
    prompt: str = ""  # the prompt every image is generated from
    num_inference_steps: int = 15  # DDIM steps
    guidance_scale: float = 3.0  # classifier-free guidance of the generated images
    edit_start: int | None = None  # first edited step (None: editing.default_edit_start(num_inference_steps))
    guidance_rescale: float = 0.0  # EditPipeline's guidance_rescale (zero-terminal-SNR models; 0: none)

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales:
            raise NoiseCLRLabError("A sweep needs at least one scale.")
        if self.seeds < 1:
            raise NoiseCLRLabError(f"A sweep needs at least one seed, got {self.seeds}.")
        if self.edit_start is None:
            object.__setattr__(self, "edit_start", default_edit_start(self.num_inference_steps))
        if not 0 <= self.edit_start < self.num_inference_steps:
            raise NoiseCLRLabError(f"edit_start must be a denoising step in [0, {self.num_inference_steps}), "
                                   f"got {self.edit_start}.")
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise NoiseCLRLabError(f"guidance_rescale is a share in [0, 1], got {self.guidance_rescale}.")

    def as_dict(self) -> dict:
        return {"scales": list(self.scales), "seeds": self.seeds, "prompt": self.prompt,
                "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "edit_start": self.edit_start, "guidance_rescale": self.guidance_rescale}

    @classmethod
    def from_dict(cls, d: dict) -> SweepSettings:
        """The settings ``as_dict`` wrote (e.g. ``analysis.json["settings"]``; other keys such as noise_z are
        ignored; settings written before guidance_rescale existed had none)."""
        return cls(scales=tuple(d["scales"]), seeds=d["seeds"], prompt=d["prompt"],
                   num_inference_steps=d["num_inference_steps"], guidance_scale=d["guidance_scale"],
                   edit_start=d["edit_start"], guidance_rescale=d.get("guidance_rescale", 0.0))


@dataclass
class SweepReading:
    """One reader's probabilities over a whole sweep."""

    values: dict[str, tuple[str, ...]]  # {group: value names}
    base: dict[str, np.ndarray]  # {group: (S, V)} the unedited images
    edited: dict[str, np.ndarray]  # {group: (n_scales, K, S, V)}
    tokens: list[str]  # the K directions, in bank order
    settings: SweepSettings


@dataclass
class SweepSpeed:
    """How fast a sweep made its images: only batches generated here count (cached ones are read, not made).
    ``flops`` is the model work (UNet rows x FLOPs of one row + decoded images x FLOPs of one decode, each
    counted once on the pipeline), so ``tflop_per_s`` / the chip's peak is the sweep's MFU."""

    images: int = 0  # images generated (base and edited)
    seconds: float = 0.0  # wall time of generating them (warm-up latents included)
    flops: float = 0.0
    device: str = ""
    peak_tflops: float | None = None  # of one device (looked up where the work ran)
    processes: int = 1
    by_process: list = field(default_factory=list)

    def add(self, edit_pipe: EditPipeline, make):
        """``make()``, timed and its FLOPs booked (the device is synchronised before the clock is read)."""
        before = dict(edit_pipe.work)
        t0 = time.perf_counter()
        out = make()
        if edit_pipe.device.type == "cuda":
            torch.cuda.synchronize(edit_pipe.device)
        self.seconds += time.perf_counter() - t0
        row, dec = edit_pipe.row_flops()
        self.flops += (edit_pipe.work["unet_rows"] - before["unet_rows"]) * row
        self.flops += (edit_pipe.work["decoded"] - before["decoded"]) * dec
        self.images += len(out)
        if not self.device:
            self.device, self.peak_tflops = str(edit_pipe.device), peak_tflops(edit_pipe.device)
        return out

    @classmethod
    def combine(cls, parts: list[SweepSpeed]) -> SweepSpeed:
        """Several processes' shares of one sweep, run side by side: images and FLOPs add, the wall time is the
        slowest process's; MFU is then per device (the FLOP rate over the processes' summed peaks)."""
        made = [p for p in parts if p.device]
        return cls(images=sum(p.images for p in parts), seconds=max((p.seconds for p in parts), default=0.0),
                   flops=sum(p.flops for p in parts), device=made[0].device if made else "",
                   peak_tflops=made[0].peak_tflops if made else None, processes=len(parts),
                   by_process=[p.summary() for p in parts])

    def summary(self) -> dict:
        """JSON-ready: images, seconds, images/s, TFLOP/s and, on a GPU of known peak, MFU (per device when
        several processes shared the sweep; else None)."""
        sec = self.seconds
        rate = self.flops / sec if sec > 0 else 0.0
        out = {"images": self.images, "seconds": round(sec, 3),
               "images_per_s": round(self.images / sec, 4) if sec > 0 else None,
               "tflop_per_s": round(rate / 1e12, 5) if sec > 0 else None,
               "mfu": (round(rate / (self.peak_tflops * 1e12 * self.processes), 4)
                       if rate > 0 and self.peak_tflops else None),
               "device": self.device, "processes": self.processes}
        if self.by_process:
            out["by_process"] = self.by_process
        return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 (what a PNG holds; how sweeps are cached)."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def sweep_cache_dir(run: RunDir, bank: DirectionBank, pipe, settings: SweepSettings,
                    negative_prompt: str | None = None) -> Path:
    """RUN/analysis/sweeps/<key>/ for this bank, pipeline (its spec, dtype and weights: ``pipeline_fingerprint``)
    and settings (``RunDir.sweep_key``)."""
    s = settings
    model = f"{pipeline_spec(pipe)}#{pipeline_fingerprint(pipe)}"
    key = RunDir.sweep_key(bank_hash=bank.content_hash(), model=model, prompt=s.prompt, scales=s.scales,
                           seeds=s.seeds, num_inference_steps=s.num_inference_steps, edit_start=s.edit_start,
                           guidance_scale=s.guidance_scale, negative_prompt=negative_prompt,
                           guidance_rescale=s.guidance_rescale)
    return run.sweep_dir(key)


class WarmStart:
    """Where the S-seed batches of one sweep's settings begin: seeds 0..S-1, and, when edits start after a
    warm-up, the latents of the unedited warm-up steps, computed once (on first need) and shared by every
    batch (the sweep's directions, a composition's singles and pairs)."""

    def __init__(self, edit_pipe: EditPipeline, settings: SweepSettings):
        self.edit_pipe, self.settings = edit_pipe, settings
        self.common = dict(num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                           guidance_rescale=settings.guidance_rescale)
        self._warm: list[torch.Tensor] = []

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in range(self.settings.seeds)]

    def __call__(self, reps: int = 1) -> dict:
        """Keyword arguments of ``EditPipeline`` for a batch of ``reps`` x S images (seed-minor)."""
        s = self.settings
        if s.edit_start == 0:
            return {"generator": [g for _ in range(reps) for g in self.generators()]}
        if not self._warm:
            self._warm.append(self.edit_pipe([s.prompt] * s.seeds, generator=self.generators(), stop_step=s.edit_start,
                                             output_type="latent", **self.common).images)
        return {"latents": self._warm[0].repeat(reps, 1, 1, 1), "start_step": s.edit_start}


def cached_batch(path: Path | None, make, maker: str = "0/1") -> dict[str, torch.Tensor]:
    """``make()`` -> {"images": (N, 3, H, W) float in [0, 1], other tensors}; with a ``path`` the batch is read
    from there when present, else made and stored with its images as 8-bit (``made_by``: ``maker``), and its
    images are the 8-bit ones either way (as float), so cached and fresh passes agree exactly."""
    if path is None:
        return make()
    if path.is_file():
        try:
            out = load_file(str(path))
            return out | {"images": out["images"].float() / 255}
        except (SafetensorError, OSError, KeyError) as e:
            raise NoiseCLRLabError(f"The cached sweep file {path} is damaged ({e}); delete it to recompute.") from e
    out = make()
    stored = {k: v.float().cpu() for k, v in out.items()} | {"images": to_uint8(out["images"]).cpu()}
    save_safetensors_atomic(stored, path, metadata={"made_by": maker})
    return stored | {"images": stored["images"].float() / 255}


@torch.no_grad()
def iter_sweep(edit_pipe: EditPipeline, settings: SweepSettings, progress: bool = True, cache: Path | None = None,
               select=None, maker: str = "", speed: SweepSpeed | None = None) -> Iterator[tuple[int | None, torch.Tensor]]:
    """Yield ``(None, base)`` then ``(k, edited)`` for each direction k of ``edit_pipe.bank``.

    base (S, 3, H, W) and edited (n_scales * S, 3, H, W) are float images in [0, 1] on the pipeline's device.
    With ``cache`` (a folder, e.g. ``sweep_cache_dir(...)``) each batch is stored there as 8-bit images the
    first time and read back afterwards, so an interrupted sweep resumes and other readers reuse it; the
    images are then the 8-bit ones on the first pass too, so cached and fresh passes agree exactly.
    ``select(b)`` (b = 0 for the base batch, k + 1 for direction k) limits the batches made and yielded;
    ``maker`` ("rank/world") is recorded in each cached file's metadata (``made_by``). ``speed`` books the time
    and work of every batch generated here (``SweepSpeed``; the shared warm-up goes to the first batch that
    needs it).
    """
    bank = edit_pipe.bank
    if bank is None or len(bank) == 0:
        raise NoiseCLRLabError("A sweep needs an EditPipeline with a non-empty direction bank.")
    s = settings
    n, S = len(s.scales), s.seeds
    start = WarmStart(edit_pipe, s)
    common = start.common

    def cached(name: str, make) -> torch.Tensor:
        path = Path(cache) / f"{name}.safetensors" if cache is not None else None
        timed = make if speed is None else (lambda: speed.add(edit_pipe, make))
        return cached_batch(path, lambda: {"images": timed()}, maker or "0/1")["images"].to(edit_pipe.device)

    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(cache) / "settings.json", s.as_dict() | {"tokens": list(bank.tokens)})
    if select is None or select(0):
        yield None, cached("base", lambda: edit_pipe([s.prompt] * S, output_type="pt", **start(1),
                                                     **common).images)
    lam = [scale for scale in s.scales for _ in range(S)]
    for k, tok in enumerate(tqdm(bank.tokens, desc="sweep", disable=not progress, leave=False)):
        if select is None or select(k + 1):
            yield k, cached(f"d{k:04d}", lambda tok=tok: edit_pipe(
                [s.prompt] * len(lam), edits={tok: lam}, edit_start=s.edit_start, output_type="pt", **start(n),
                **common).images)


def fill_sweep_cache(edit_pipe: EditPipeline, settings: SweepSettings, cache: Path, rank: int, world: int,
                     progress: bool = True) -> SweepSpeed:
    """This process's share of a cached sweep: batch b (0 the unedited base, k + 1 direction k) is made by the
    process with rank b % world, unless it is on disk already. After every process has filled its share
    (a barrier), any process reads the whole sweep from ``cache``: the batches are the ones one process
    would have made (each is the same seeds through the same pipeline). Returns this process's speed."""
    speed = SweepSpeed()
    for _ in iter_sweep(edit_pipe, settings, progress, cache, select=lambda b: b % world == rank,
                        maker=f"{rank}/{world}", speed=speed):
        pass
    return speed


def read_sweep(edit_pipe: EditPipeline, readers: Reader | Mapping[str, Reader], settings: SweepSettings,
               progress: bool = True, cache: Path | None = None) -> SweepReading | dict[str, SweepReading]:
    """Run the sweep once and let every reader read every image as it comes (images are not kept in memory;
    with ``cache`` they are kept on disk, see ``iter_sweep``).

    One reader gives one ``SweepReading``; a mapping ``{name: reader}`` gives ``{name: SweepReading}``.
    """
    single = not isinstance(readers, Mapping)
    named = {"": readers} if single else dict(readers)
    K, n, S = len(edit_pipe.bank), len(settings.scales), settings.seeds
    out = {name: SweepReading(values={g: tuple(v) for g, v in r.values.items()}, base={},
                              edited={g: np.zeros((n, K, S, len(v))) for g, v in r.values.items()},
                              tokens=list(edit_pipe.bank.tokens), settings=settings)
           for name, r in named.items()}
    for k, images in iter_sweep(edit_pipe, settings, progress, cache):
        for name, r in named.items():
            p = check_reading(r, r.read(images), len(images))
            for g, v in p.items():
                if k is None:
                    out[name].base[g] = v
                else:
                    out[name].edited[g][:, k] = v.reshape(n, S, -1)
    return out[""] if single else out
