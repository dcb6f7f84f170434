"""What one batched NoiseCLR training step costs on Stable Diffusion 1.5's architecture, counted without a GPU.

The model is built on PyTorch's meta device (shapes only, no weights, no arithmetic), so this runs in seconds
on any machine. For each M (directions per step) at batch B it prints:

  model TFLOP     the step's own work (the unedited no-grad call on B rows, the M*B-row call with its backward
                  to the direction embeddings, the text encoder): MFU's numerator;
  recomputed      what gradient checkpointing runs again in the backward pass (HFU adds it; the two differ by
                  that factor, e.g. about 1.33x at M=12, B=6);
  saved GiB       the activations autograd keeps for the backward pass (UNet and text encoder), with and
                  without checkpointing. Attention goes through the fused memory-efficient kernel's op, as on
                  a GPU (it keeps q, k, v, the output and the log-sum-exp; the meta device would otherwise
                  decompose attention, keep every attention matrix and count its backward at 2x the forward
                  instead of 2.5x). Weights, the optimiser and the transient working memory of the backward
                  pass come on top, so a GPU's peak is higher (see README, "Benchmarks").

    python scripts/count_train_work.py                   # M = 4, 12, 21 at B = 6, bf16
    python scripts/count_train_work.py --m 12 --batch-size 4
    python scripts/count_train_work.py --m 21 --chunk 3        # with gradient caching over 3 directions
"""

from __future__ import annotations

import argparse

import torch

from noiseclr_lab.perf import count_flops, count_step_flops


def _fused(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    """Attention through the memory-efficient fused kernel's op, as on a GPU (the meta device would otherwise
    decompose it into matrix products, which keep every attention matrix and whose backward the flop counter
    counts at 2x the forward instead of the fused kernels' 2.5x)."""
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, True, dropout_p, is_causal,
                                                                   scale=scale)[0]


def sd15_on_meta(dtype: torch.dtype):
    """SD 1.5's UNet and CLIP text encoder in ``dtype`` (the trainer loads the pipeline in its mixed-precision
    dtype), on the meta device."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280)).to(dtype)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                          num_hidden_layers=12, projection_dim=768)).to(dtype)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    te.get_input_embeddings().weight.requires_grad_(True)  # the direction rows live in this table
    return unet, te


def batched_step(unet, te, m: int, b: int, dtype: torch.dtype, saved: list | None = None):
    """The trainer's batched step (``Trainer.loss_for``) in shapes: returns a callable running it once; with
    ``saved`` (a one-element list) the bytes of the activations kept for the backward pass are added to it."""
    side = int(unet.config.sample_size)

    def run():
        z = torch.empty(b, 4, side, side, device="meta", dtype=dtype)
        t = torch.zeros(1, dtype=torch.long, device="meta")
        empty = torch.empty(1, 77, 768, device="meta", dtype=dtype)
        with torch.no_grad():
            u = unet(z, t, encoder_hidden_states=empty.expand(b, -1, -1)).sample
        seen = {p.untyped_storage()._cdata for p in (*unet.parameters(), *te.parameters())}
        held = []  # every counted tensor stays referenced, so no storage address is reused within the pass

        def pack(x):
            key = x.untyped_storage()._cdata
            if saved is not None and key not in seen:
                seen.add(key)
                held.append(x)
                saved[0] += x.untyped_storage().nbytes()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            emb = te(torch.zeros(m, 77, dtype=torch.long, device="meta"))[0]
            eps = unet(z.repeat(m, 1, 1, 1), t, encoder_hidden_states=emb.repeat_interleave(b, 0)).sample
        ((eps.unflatten(0, (m, b)).float() - u.float()[None]) ** 2).mean().backward()

    return run


def _estimates(unet, te, m: int, b: int, dtype: torch.dtype) -> None:
    """The edited rows' forward pass without autograd (what gradient caching runs in addition)."""
    side = int(unet.config.sample_size)
    with torch.no_grad():
        emb = te(torch.zeros(m, 77, dtype=torch.long, device="meta"))[0]
        unet(torch.empty(m * b, 4, side, side, device="meta", dtype=dtype), torch.zeros(1, dtype=torch.long, device="meta"),
             encoder_hidden_states=emb.repeat_interleave(b, 0))


def count(ms: list[int], b: int, dtype: torch.dtype, chunk: int = 0) -> list[dict]:
    """Per M: model and recomputed TFLOP and the GiB kept for the backward pass without and with gradient
    checkpointing, attention going through the fused memory-efficient kernel's op as on a GPU; with ``chunk``
    also what gradient caching over directions (``TrainConfig.direction_chunk``) keeps: one chunk's."""
    import torch.nn.functional as F

    unet, te = sd15_on_meta(dtype)
    rows = []
    sdpa, F.scaled_dot_product_attention = F.scaled_dot_product_attention, _fused
    try:
        for m in ms:
            row = {"M": m, "B": b}
            for ckpt in (False, True):
                if ckpt:
                    unet.enable_gradient_checkpointing()
                    unet.train()
                else:
                    unet.disable_gradient_checkpointing()
                key = "ckpt" if ckpt else "no_ckpt"
                saved = [0]  # one pass counts both: the saved-tensor hook sees the forward, the counter everything
                model, recomputed = count_step_flops(batched_step(unet, te, m, b, dtype, saved), [unet, te])
                row |= {"model_tflop": model / 1e12, f"recomputed_tflop_{key}": recomputed / 1e12,
                        f"saved_gib_{key}": saved[0] / 2**30}
                if chunk:  # the chunked step keeps one chunk's activations at a time (and the u call's none)
                    saved = [0]
                    batched_step(unet, te, min(chunk, m), b, dtype, saved)()
                    row[f"saved_gib_chunk_{key}"] = saved[0] / 2**30
            if chunk:  # ... and runs every edited row once more, without autograd
                row["chunk_extra_tflop"] = count_flops(lambda m=m: _estimates(unet, te, m, b, dtype)) / 1e12
            rows.append(row)
    finally:
        F.scaled_dot_product_attention = sdpa
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", default="4,12,21", help="directions per step, comma-separated")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="the UNet's dtype")
    p.add_argument("--chunk", type=int, default=0,
                   help="also the activations kept with gradient caching over chunks of this many directions")
    args = p.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    rows = count([int(x) for x in args.m.split(",")], args.batch_size, dtype, args.chunk)
    print(f"SD 1.5 architecture, batched step, B={args.batch_size}, UNet {args.dtype}, counted on the meta device")
    chunked = f" {'chunk ' + str(args.chunk) + ', no ckpt':>17} {'with ckpt':>10}" if args.chunk else ""
    print(f"{'M':>3} {'model TFLOP':>12} {'recomputed':>11} {'HFU/MFU':>8} {'saved GiB, no ckpt':>19} {'with ckpt':>10}"
          + chunked)
    for r in rows:
        rec = r["recomputed_tflop_ckpt"]
        line = (f"{r['M']:>3} {r['model_tflop']:>12.2f} {rec:>11.2f} {1 + rec / r['model_tflop']:>8.3f} "
                f"{r['saved_gib_no_ckpt']:>19.1f} {r['saved_gib_ckpt']:>10.1f}")
        if args.chunk:
            line += f" {r['saved_gib_chunk_no_ckpt']:>17.1f} {r['saved_gib_chunk_ckpt']:>10.1f}"
        print(line)
    if args.chunk:
        print("gradient caching runs the edited rows' forward pass once more: "
              + ", ".join(f"{r['chunk_extra_tflop']:.2f} TFLOP at M={r['M']}" for r in rows)
              + " (recomputed work, as checkpointing's; with both, the two add)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
