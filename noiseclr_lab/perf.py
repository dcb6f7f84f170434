"""Speed accounting shared by the benchmarks and the sweeps: FLOPs of a call and model FLOPs utilisation (MFU).

MFU = (FLOPs the work needs, counted by ``torch.utils.flop_counter``) / seconds / the chip's dense bf16/fp16
tensor-core peak. A forward pass that gradient checkpointing runs again in the backward pass is not work the
step needs: ``count_step_flops`` counts it apart (with it, the ratio is the hardware FLOPs utilisation, HFU).
The peak is known for the GPUs below (by name); elsewhere MFU is None and only the achieved FLOP rate is
reported.
"""

from __future__ import annotations

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
