"""Speed accounting shared by the benchmarks and the sweeps: FLOPs of a call and model FLOPs utilisation (MFU).

MFU = (FLOPs the work needs, counted by ``torch.utils.flop_counter``) / seconds / the chip's dense bf16/fp16
tensor-core peak. A forward pass that gradient checkpointing runs again in the backward pass is not work the
step needs: ``count_step_flops`` counts it apart (with it, the ratio is the hardware FLOPs utilisation, HFU).
The peak is known for the GPUs below (by name); elsewhere MFU is None and only the achieved FLOP rate is
reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI's parser reads COMPILE_MODES without it
    import torch

COMPILE_MODES = ("no", "default", "reduce-overhead", "max-autotune", "aot-eager")

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device | str | None = None) -> float | None:
    """The dense bf16/fp16 peak (TFLOP/s) of ``device`` when it is a known CUDA GPU, else None."""
    import torch

    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _count_cpu_attention() -> None:
    """Teach ``torch.utils.flop_counter`` the CPU's fused attention kernels (it knows the CUDA ones only, so on
    a CPU attention counted 0 FLOPs): the same formulas as the CUDA flash kernels, so that a count made on
    the CPU equals one made on a GPU."""
    import torch
    from torch.utils import flop_counter as fc

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        op = getattr(aten, name, None)
        try:  # torch versions without the op (before 2.3) or without these flop_counter internals: count as before
            if op is not None and op not in fc.flop_registry and op.default not in fc.flop_registry:
                fc.register_flop_formula(op)(formula)
        except (AttributeError, TypeError, RuntimeError):
            return


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention), as ``torch.utils.flop_counter`` counts them.
    Everything that runs is counted, a forward pass that gradient checkpointing repeats in the backward pass
    too: count a training step with ``count_step_flops``."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def count_step_flops(fn: Callable[[], object], models=()) -> tuple[float, float]:
    """(model FLOPs, recomputed FLOPs) of one call of ``fn``, typically a training step. The second is what
    gradient checkpointing in ``models`` (diffusers or transformers models) spends running forward passes again
    during the backward pass; the first is the rest, the work the step needs, MFU's numerator (hardware FLOPs
    utilisation, HFU, divides the sum). Each checkpointing layer's function is wrapped for the call: its first
    run of a block is the forward pass, any later run of it a recomputation, counted apart."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()
    recomputed = [0.0]

    def counting(checkpoint):
        def wrapped(block, *args, **kwargs):
            runs = [0]

            def run(*a, **k):
                runs[0] += 1
                if runs[0] == 1:
                    return block(*a, **k)
                inner = FlopCounterMode(display=False)
                try:  # a recomputation may stop early (torch's checkpoint ends it once it has what it needs)
                    with inner:
                        return block(*a, **k)
                finally:
                    recomputed[0] += inner.get_total_flops()

            return checkpoint(run, *args, **kwargs)

        return wrapped

    layers = [m for model in models for m in model.modules()
              if getattr(m, "gradient_checkpointing", False) is True
              and callable(getattr(m, "_gradient_checkpointing_func", None))]
    own = [(m, "_gradient_checkpointing_func" in m.__dict__, m._gradient_checkpointing_func) for m in layers]
    for m, _, f in own:
        m._gradient_checkpointing_func = counting(f)
    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    finally:
        for m, had, f in own:
            if had:
                m._gradient_checkpointing_func = f
            else:
                del m._gradient_checkpointing_func
    total = float(fc.get_total_flops())
    return total - recomputed[0], recomputed[0]


def mfu(flops: float, seconds: float, device: torch.device | str | None = None) -> float | None:
    """Model FLOPs utilisation of ``flops`` done in ``seconds`` on ``device`` (None where the peak is unknown)."""
    peak = peak_tflops(device)
    return None if peak is None or seconds <= 0 else flops / seconds / (peak * 1e12)


def speed_up(module: torch.nn.Module, compile: str = "no", channels_last: bool = False):
    """The speed levers that change no result beyond rounding: returns the callable to run ``module`` through.

    - ``channels_last``: the module's weights in NHWC, in place (activations follow them): cuDNN's fastest
      convolution layout on tensor cores; inputs should be made ``channels_last`` too;
    - ``compile``: a ``torch.compile`` wrapper of ``module`` (sharing its parameters; the module itself, its
      config and ``state_dict`` keys are unchanged, so code that calls it directly runs it uncompiled) in the
      mode given: "default" fuses elementwise work, "reduce-overhead" adds CUDA graphs (no host work between
      kernels), "max-autotune" tunes the matmul kernels and also uses CUDA graphs. Under CUDA graphs a call's
      output may be overwritten by the next call: copy an output that must outlive it. Shapes are static
      (``dynamic=False``): the first call at each new input shape compiles (seconds to minutes) a graph of its
      own, as the few shapes of a training step or an edit loop want. "aot-eager" traces the module (TorchDynamo)
      and its backward (AOT autograd) but runs the captured graphs eagerly, without generating code: the first
      rung of torch.compile's troubleshooting ladder, which says in seconds whether a model compiles (graph
      breaks, recompiles) and computes the same, before paying inductor's minutes of code generation (92 s for
      the tests' tiny UNet forward + backward on 2 CPU cores, 10 s under aot-eager). "no" returns ``module``.
    """
    import torch

    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {compile!r}.")
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile == "no":
        return module
    if compile == "aot-eager":
        return torch.compile(module, backend="aot_eager", dynamic=False)
    return torch.compile(module, mode=None if compile == "default" else compile, dynamic=False)


# ---------------------------------------------------------------- CPU row splitting (no autograd)

CPU_PART_ROWS = 48  # at most this many rows per part when a CPU call is split (the toy UNet's fastest size, below)
CPU_MIN_PART_ROWS = 16  # no part smaller: below it a part's Python overhead outweighs the gain (below)
CPU_SPLIT_ENV = "NOISECLR_LAB_CPU_SPLIT"  # "0" turns every CPU split off (editing and sweeps)
_POOLS: dict = {}  # parts run at once -> the ThreadPoolExecutor of that many threads


def _thread_state_blocks_split() -> bool:
    """Whether the calling thread has state a worker thread would not inherit, so a split would change or hide
    the work: autograd on (the parts would lose their graph), CPU autocast (they would run in fp32), a
    dispatch or torch-function mode (a FLOP counter would not see them), or the profiler."""
    import torch
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    profiler = getattr(torch.autograd.profiler, "_is_profiler_enabled", False)
    return bool(torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or profiler
                or _get_current_dispatch_mode() is not None or torch._C._is_torch_function_mode_enabled())


def cpu_split_workers(device, enabled: bool = True) -> int:
    """Worker threads ``split_rows`` may use for a call on ``device`` from this thread now: torch's intra-op
    thread count on the CPU; 1 (no split) on any other device, when ``enabled`` is False, when the
    environment says ``NOISECLR_LAB_CPU_SPLIT=0``, and while this thread has state the workers would not
    inherit (``_thread_state_blocks_split``: autograd, autocast, a dispatch / function mode, the profiler)."""
    import torch

    if (not enabled or torch.device(device).type != "cpu" or os.environ.get(CPU_SPLIT_ENV, "1") == "0"
            or _thread_state_blocks_split()):
        return 1
    return max(1, torch.get_num_threads())


def cpu_pool(workers: int):
    """The shared pool of ``workers`` threads (made on first use; a forked child makes its own)."""
    from concurrent.futures import ThreadPoolExecutor

    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="noiseclr-rows")
    return _POOLS[workers]


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: its pools are empty shells
    os.register_at_fork(after_in_child=_POOLS.clear)


def split_parts(n: int, workers: int, part_rows: int = CPU_PART_ROWS,
                min_part_rows: int = CPU_MIN_PART_ROWS) -> list[tuple[int, int]]:
    """The consecutive row ranges ``split_rows`` runs for ``n`` rows and a caller with ``workers`` intra-op
    threads: one part (no split) when fewer than two parts of ``min_part_rows`` fit, else parts of at most
    ``part_rows`` rows, their count a multiple of ``concurrent_parts`` (a divisor of ``workers``, so that the
    parts running at once share every thread evenly)."""
    return _parts(n, concurrent_parts(n, workers, min_part_rows), part_rows)


def _parts(n: int, used: int, part_rows: int = CPU_PART_ROWS) -> list[tuple[int, int]]:
    """``n`` rows as parts of at most ``part_rows``, their count a multiple of ``used`` (one part if used <= 1)."""
    if used <= 1:
        return [(0, n)]
    k = math.ceil(math.ceil(n / max(1, part_rows)) / used) * used
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def concurrent_parts(n: int, workers: int, min_part_rows: int = CPU_MIN_PART_ROWS) -> int:
    """How many parts of ``n`` rows run at once: the largest divisor of ``workers`` (the caller's threads) with a
    part of at least ``min_part_rows`` each (1: no split). Each then takes ``workers // it`` threads: on 2
    cores 2 parts of one thread; on 16, 144 rows run as 8 parts of 2 threads (not 9 of 1, which would leave 7
    cores idle)."""
    limit = min(workers, n // max(1, min_part_rows))
    return max((d for d in range(1, limit + 1) if workers % d == 0), default=1)


def split_rows(fn: Callable[[int, int], torch.Tensor], n: int, workers: int) -> torch.Tensor:
    """``fn(0, n)`` computed as ``cat(fn(a, b) for consecutive parts)`` (``split_parts``), the parts run side by
    side on worker threads that share the caller's ``workers`` intra-op threads evenly (one each on 2 cores): a
    no-autograd CPU call (a UNet step of many rows) as data parallelism over the cores instead of parallelism
    inside each operator. ``workers`` is ``cpu_split_workers(...)`` (1: ``fn(0, n)``, no thread involved).

    Why: on 2 CPU cores the toy UNet's forward pass took 2.62 ms a row at 144 rows split in parts of 36 on 2
    worker threads against 3.43 with torch's 2 intra-op threads (72 rows: 2.70 / 3.08; 36: 2.87 / 3.20; 18
    rows in parts of 9: 3.45 / 3.09, slower, hence ``CPU_MIN_PART_ROWS``), with the same outputs bit for bit
    there (``scripts/bench_cpu_split.py`` prints the largest difference; the tests allow rounding). Each part
    sets its thread's intra-op count and restores the caller's afterwards (torch also takes it as the default
    of threads started later). Only measured on 2 cores: elsewhere the parts share the cores the same way.
    """
    import torch

    used = concurrent_parts(n, workers)
    if used <= 1:
        return fn(0, n)
    parts = _parts(n, used)
    caller = torch.get_num_threads()
    each = max(1, workers // used)

    def part(ab: tuple[int, int]) -> torch.Tensor:
        torch.set_num_threads(each)
        try:
            with torch.no_grad():
                return fn(*ab)
        finally:
            torch.set_num_threads(caller)

    return torch.cat(list(cpu_pool(used).map(part, parts)))
