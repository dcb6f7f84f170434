"""Bank commands: inspect, import-official, export, export-ti."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.cli.args import positive_int


def cmd_inspect(args) -> int:
    from noiseclr_lab.directions import DirectionBank

    bank = DirectionBank.load(args.bank)
    print(f"bank:        {args.bank}")
    print(f"directions:  {len(bank)} x {bank.hidden_size} (K x D)")
    print(f"base model:  {bank.base_model or '(unknown)'}")
    print(f"tokenizer:   {bank.tokenizer_fingerprint or '(unknown)'}")
    print(f"created by:  {bank.created_with}")
    norms = bank.embeddings.norm(dim=1)
    width = max(len(t) for t in bank.tokens)
    suggested = any(bank.suggestions)
    calibrated = any(v is not None for v in bank.calibrated_scales)
    lw = max([len(lab) for lab in bank.labels] + [5])
    print(f"{'token':<{width}}  {'norm':>7}  {'label':<{lw}}" + ("  calib." if calibrated else "")
          + ("  suggested (analyze)" if suggested else ""))
    for k, (tok, lab, n) in enumerate(zip(bank.tokens, bank.labels, norms.tolist())):
        cal = bank.calibrated_scales[k]
        print(f"{tok:<{width}}  {n:7.4f}  {lab:<{lw}}" + ((f"  {cal:+6.2f}" if cal is not None else "       ")
                                                           if calibrated else "")
              + (f"  {bank.suggestions[k]}" if suggested else ""))
    if bank.training_config:
        keys = ", ".join(sorted(bank.training_config))
        print(f"training config keys: {keys}")
    return 0


def cmd_import_official(args) -> int:
    from noiseclr_lab.directions import import_official

    bank = import_official(args.source, num_tokens=args.num_tokens, base_model=args.base_model or "")
    out = bank.save(args.out)
    print(f"imported {len(bank)} directions ({bank.hidden_size}-d) from {args.source} -> {out}")
    return 0


def cmd_export_ti(args) -> int:
    from noiseclr_lab.directions import DirectionBank

    bank = DirectionBank.load(args.bank)
    paths = bank.export_textual_inversion(args.out)
    print(f"wrote {len(paths)} textual-inversion files to {args.out} "
          "(load each with StableDiffusionPipeline.load_textual_inversion)")
    return 0


HOW_TO_USE = {
    "a1111": "copy them into stable-diffusion-webui/embeddings/ and write a file's name in the prompt",
    "comfyui": "copy them into ComfyUI/models/embeddings/ and write embedding:<name> in the prompt",
    "diffusers-ti": "load each with StableDiffusionPipeline.load_textual_inversion",
}


def cmd_export(args) -> int:
    from noiseclr_lab.directions import DirectionBank

    bank = DirectionBank.load(args.bank)
    paths = bank.export_embeddings(args.out, args.format)
    print(f"wrote {len(paths)} {args.format} files to {args.out} ({HOW_TO_USE[args.format]})")
    for p, scale in zip(paths, bank.calibrated_scales):
        print(f"  {p.name}" + (f"  calibrated scale {scale:+.2f}" if scale is not None else ""))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("inspect", help="print a direction bank's tokens, labels, base model and shapes")
    s.add_argument("bank", type=Path, help="a directions.safetensors file")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("import-official", help="convert official NoiseCLR outputs into a direction bank")
    s.add_argument("source", type=Path, help="a saved pipeline folder, learned_embeds.bin, or an accelerate pytorch_model.bin")
    s.add_argument("--out", type=Path, required=True, help="where to write directions.safetensors")
    s.add_argument("--num-tokens", type=positive_int, default=None,
                   help="number of directions in a pytorch_model.bin (default: rows beyond CLIP's 49408)")
    s.add_argument("--base-model", default=None, help="the model spec the directions were trained on (provenance)")
    s.set_defaults(func=cmd_import_official)

    s = sub.add_parser("export", help="export a bank for AUTOMATIC1111, ComfyUI or diffusers, one file per direction")
    s.add_argument("bank", type=Path, help="a directions.safetensors file")
    s.add_argument("--format", choices=("a1111", "comfyui", "diffusers-ti"), default="a1111", help="target UI")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("export-ti", help="export a bank as diffusers textual-inversion files, one per token")
    s.add_argument("bank", type=Path, help="a directions.safetensors file")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.set_defaults(func=cmd_export_ti)
