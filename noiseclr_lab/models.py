"""Load a Stable Diffusion pipeline from a model spec: ``toy:<domain>``, a hub id, a local folder or one file.

Every source ends in the same ``diffusers.StableDiffusionPipeline``, so the rest of the library has one
code path for the shipped toy model and for real checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from noiseclr_lab.compat import dtype_kwargs
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.registry import Registry

# spec prefix ("toy") -> loader(rest_of_spec, dtype) returning a pipeline on the CPU
_SOURCES: Registry[Callable] = Registry("model source")

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
SPEC_ATTRIBUTE = "noiseclr_spec"  # load_pipeline sets pipe.<this> = the spec it was loaded from


def pipeline_fingerprint(pipe) -> str:
    """A short hash of what a pipeline computes with: its components' configs, its dtype and a few small weight
    tensors (UNet conv_in, VAE decoder conv_out, the text encoder's first embedding rows). Two pipelines with the
    same fingerprint generate the same images; a rebuilt or retrained model gets another (sweep cache keys)."""
    import hashlib
    import json

    h = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        comp = getattr(pipe, name)
        cfg = comp.config.to_dict() if hasattr(comp.config, "to_dict") else dict(comp.config)
        cfg.pop("vocab_size", None)  # grows when a bank's tokens are installed; the model computes the same
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(str(pipe.unet.dtype).encode())
    for t in (pipe.unet.conv_in.weight, pipe.vae.decoder.conv_out.weight,
              pipe.text_encoder.get_input_embeddings().weight[:8]):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pipeline_spec(pipe) -> str:
    """The model spec ``pipe`` was loaded from by :func:`load_pipeline` ("" for a pipeline built otherwise)."""
    return getattr(pipe, SPEC_ATTRIBUTE, "")


def register_model_source(prefix: str, loader: Callable) -> Callable:
    """Make specs ``"<prefix>:<name>"`` load through ``loader(name, dtype) -> StableDiffusionPipeline``."""
    return _SOURCES.register(prefix, loader)


def list_model_sources() -> list[str]:
    """Registered spec prefixes (``toy`` and any added by plugins)."""
    return _SOURCES.names()


def check_device(name: str) -> str:
    """``name`` when this machine has that torch device (cpu, cuda, cuda:N, mps), else ValueError saying why."""
    try:
        d = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    name = str(d)
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {name!r}: this machine has no CUDA GPU (use cpu)")
        if d.index is not None and d.index >= n:
            raise ValueError(f"device {name!r}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    elif d.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r}: MPS is not available here (use cpu)")
    elif d.type != "cpu":
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps")
    return name


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (checked: the machine must have it), else the best available: cuda > mps > cpu."""
    if device is not None and device != "":
        try:
            return torch.device(check_device(str(device) if isinstance(device, torch.device) else device))
        except ValueError as e:
            raise NoiseCLRLabError(f"{str(e)[0].upper()}{str(e)[1:]}.") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def processes_join_on_cpu() -> bool:
    """Whether processes launched together (``accelerate launch``, torchrun) with no device given join on the
    CPU (gloo): no CUDA, no XPU, and none of the other accelerators accelerate knows (NPU, MLU, HPU, MUSA, SDAA).
    An MPS machine counts as the CPU here: accelerate has no multi-process backend for MPS, so its processes
    would each run alone. Elsewhere accelerate joins them on the accelerator."""
    if torch.cuda.is_available():
        return False
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return False
    try:
        from accelerate.utils import imports
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return True
    for name in ("npu", "mlu", "hpu", "musa", "sdaa"):
        check = getattr(imports, f"is_{name}_available", None)
        try:
            if check is not None and check():
                return False
        except Exception:  # noqa: BLE001 - a probe of an absent vendor stack failing means it is not there
            continue
    return True


def check_processes_joined(launched: int, joined: int, device) -> None:
    """One sentence and a stop when accelerate joined fewer processes than were launched (``WORLD_SIZE``): each
    would otherwise run the whole job alone into the same folder. What the trainer and the sharded sweeps check
    after ``processes_join_on_cpu`` decided where they join."""
    if launched > 1 and joined != launched:
        raise NoiseCLRLabError(f"This is one of {launched} launched processes (WORLD_SIZE) but accelerate joined "
                               f"{joined} on {device}: each would run alone into the same folder. Launch with "
                               "`accelerate launch` or torchrun and the device every process can use (--device cpu "
                               "joins them with gloo).")


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``dtype`` if given (a torch dtype or "fp32" / "fp16" / "bf16"), else fp16 on GPUs and fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if dtype not in _DTYPES:
            raise NoiseCLRLabError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
        return _DTYPES[dtype]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _sd_kwargs(dtype: torch.dtype) -> dict:
    # the safety checker is not part of the method and would double the download; users may add it back
    return {**dtype_kwargs(dtype), "safety_checker": None, "requires_safety_checker": False}


def _load_folder(path: Path, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    if not (path / "model_index.json").is_file():
        raise NoiseCLRLabError(
            f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with "
            "save_pretrained, a .safetensors/.ckpt file, a hub id or toy:<domain>."
        )
    try:
        return StableDiffusionPipeline.from_pretrained(path, local_files_only=True, **_sd_kwargs(dtype))
    except (OSError, ValueError, KeyError) as e:
        raise NoiseCLRLabError(f"Could not load the pipeline folder {path}: {_first_line(e)}") from e


def _load_single_file(path: Path, dtype: torch.dtype, config: str | None):
    from diffusers import StableDiffusionPipeline

    kwargs = _sd_kwargs(dtype)
    kwargs.pop("requires_safety_checker")
    if config is not None:
        kwargs["config"] = config
    try:
        return StableDiffusionPipeline.from_single_file(str(path), local_files_only=_offline(), **kwargs)
    except Exception as e:  # diffusers raises a mix of OSError / ValueError / SafetensorError here
        msg = _first_line(e)
        if "config" in msg.lower() or "connect" in msg.lower() or "offline" in msg.lower() or "cache" in msg.lower():
            raise NoiseCLRLabError(
                f"Could not load {path}: a single-file checkpoint needs its base model's diffusers config, which is "
                "not in the local cache; in Python pass load_pipeline(..., config=<a local diffusers folder of the "
                "same architecture>), on the command line give a diffusers folder of the model instead (e.g. saved "
                "once with save_pretrained), or run once with network access."
            ) from e
        raise NoiseCLRLabError(f"Could not load the checkpoint file {path}: {msg}") from e


def _load_hub(repo_id: str, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(repo_id, local_files_only=_offline(), **_sd_kwargs(dtype))
    except (OSError, ValueError) as e:
        raise NoiseCLRLabError(
            f"Could not load {repo_id!r}: it is not a local path and not in the Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set)" if _offline() else "")
            + f"; download it first with `hf download {repo_id}` on a machine with network access, "
            "or pass a local folder or .safetensors file."
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_pipeline(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  config: str | None = None):
    """Load a ``StableDiffusionPipeline`` from ``spec`` and move it to ``device`` in ``dtype``.

    ``spec`` is ``toy:<domain>`` (the shipped toy model), a local pipeline folder, a single
    ``.safetensors``/``.ckpt`` file (``config``: a diffusers folder or hub id describing its architecture,
    needed offline), or a hub id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5``.
    Device defaults to cuda > mps > cpu; dtype to fp16 on GPUs and fp32 on the CPU.

    The spec is recorded on the pipeline (``pipeline_spec(pipe)``, attribute ``noiseclr_spec``): this is the
    one place it is set; editing warns when a bank learned on another model is installed, and runs record it
    as provenance.
    """
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    prefix, sep, rest = spec.partition(":")
    path = Path(spec).expanduser()
    if sep and prefix in _SOURCES and not path.exists():
        pipe = _SOURCES.get(prefix)(rest, dt)
    elif path.is_dir():
        pipe = _load_folder(path, dt)
    elif path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise NoiseCLRLabError(
                f"{path} is neither a pipeline folder nor a {'/'.join(SINGLE_FILE_SUFFIXES)} checkpoint file."
            )
        pipe = _load_single_file(path, dt, config)
    elif sep and "/" not in spec:
        raise NoiseCLRLabError(f"Unknown model source {prefix!r} in {spec!r}; known: {', '.join(list_model_sources())}.")
    elif spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.suffix:
        pipe = _load_hub(spec, dt)
    else:
        raise NoiseCLRLabError(f"Model {spec!r} not found: no such file or folder, and it is not a hub id (org/name).")
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, SPEC_ATTRIBUTE, spec)
    return pipe.to(dev)


def _load_toy(domain: str, dtype: torch.dtype):
    from noiseclr_lab.toyworld import load_toy_pipeline

    return load_toy_pipeline(domain, dtype)


def _load_toy_zsnr(domain: str, dtype: torch.dtype):
    from noiseclr_lab.toyworld import load_toy_pipeline

    return load_toy_pipeline(domain, dtype, variant="zsnr")


_TOY_LOADERS = {"toy": _load_toy, "toy-zsnr": _load_toy_zsnr}  # the shipped toy models (every domain each)
TOY_MODEL_SOURCES = tuple(_TOY_LOADERS)  # their spec prefixes
for _prefix, _loader in _TOY_LOADERS.items():
    register_model_source(_prefix, _loader)


def toy_model_domain(spec) -> str | None:
    """The toy domain a model spec names (``toy:faces``, ``toy-zsnr:scenes``), else None (any other model)."""
    prefix, sep, rest = str(spec).partition(":")
    return rest if sep and rest and prefix in TOY_MODEL_SOURCES else None
