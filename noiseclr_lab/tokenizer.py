"""Build the Stable Diffusion (OpenAI CLIP) tokenizer offline from the BPE file open_clip ships.

open_clip's ``bpe_simple_vocab_16e6.txt.gz`` holds the same merges as ``openai/clip-vit-large-patch14``'s
``merges.txt``; the vocabulary is the 256 byte symbols, the same with ``</w>``, one entry per merge and
the two special tokens, so the ids equal those of SD's ``CLIPTokenizer``.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # the merges CLIP uses (the rest of the file is unused)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP's reversible byte -> printable character table
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _bpe_path() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


def write_clip_tokenizer_files(folder: str | os.PathLike, model_max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and tokenizer configs of the CLIP BPE tokenizer into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(_bpe_path(), "rt", encoding="utf-8") as fh:
        merges = fh.read().split("\n")[1 : N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2)
    )
    return folder


def build_clip_tokenizer(model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` equal to SD 1.x's, built without any download (its files are written to
    a temporary folder, read, and removed: the tokenizer keeps nothing on disk)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="noiseclr_lab_tokenizer_") as folder:
        write_clip_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
