"""Import the three output kinds of the official NoiseCLR code (gemlab-vt/NoiseCLR) into a DirectionBank.

1. a saved pipeline folder whose tokenizer holds the added tokens ``<t1>..<tN>``;
2. ``learned_embeds.bin``: a pickled ``{token: (D,)}`` dict (also ``weights.bin``: ``{"weights": (N, D)}``);
3. an accelerate checkpoint's ``pytorch_model.bin`` (``model.safetensors`` where a newer accelerate wrote
   it): the whole text encoder state dict, whose last N input-embedding rows are the directions (the
   official code appends them after the base vocabulary).

Pickles are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, never code.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from noiseclr_lab.directions.bank import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError

EMBED_KEY_SUFFIX = "embeddings.token_embedding.weight"
CLIP_BASE_VOCAB = 49408  # SD 1.x / 2.x CLIP vocabulary size before any added token
CHECKPOINT_FILES = ("pytorch_model.bin", "model.safetensors")  # an accelerate checkpoint's text encoder, older / newer
_OFFICIAL_TOKEN = re.compile(r"^<t(\d+)>$")


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise NoiseCLRLabError(  # torch's own message advises weights_only=False: not repeated here
            f"{path} is not a PyTorch file of tensors (not one at all, or one holding other Python objects, which "
            "are never unpickled here for safety)."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise NoiseCLRLabError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {str(e).splitlines()[0]}") from e


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise NoiseCLRLabError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
    return _torch_load(path)


def _refuse_our_bank(path: Path) -> None:
    """A noiseclr_lab bank given to the importer would be read as one long {name: tensor} token: refuse it."""
    if path.suffix != ".safetensors":
        return
    from safetensors import SafetensorError, safe_open

    from noiseclr_lab.directions.bank import METADATA_KEY

    try:
        with safe_open(str(path), framework="pt") as fh:
            ours = METADATA_KEY in (fh.metadata() or {})
    except (SafetensorError, OSError):
        return  # _read_state_dict says what is wrong with it
    if ours:
        raise NoiseCLRLabError(f"{path} is a noiseclr_lab direction bank already, not an official NoiseCLR output; "
                               "use it as it is (e.g. --bank).")


def _sorted_tokens(tokens: list[str]) -> list[str]:
    def key(t):
        m = _OFFICIAL_TOKEN.match(t)
        return (0, int(m.group(1)), t) if m else (1, 0, t)

    return sorted(tokens, key=key)


def _embedding_matrix(state: dict, path: Path) -> torch.Tensor:
    keys = [k for k in state if isinstance(k, str) and k.endswith(EMBED_KEY_SUFFIX)]
    if len(keys) != 1:
        raise NoiseCLRLabError(f"{path} has no text-encoder token embedding ('...{EMBED_KEY_SUFFIX}'); is it a CLIP text encoder?")
    return state[keys[0]]


def _from_embeds_dict(obj, path: Path) -> tuple[torch.Tensor, list[str]]:
    if not isinstance(obj, dict) or not obj:
        raise NoiseCLRLabError(f"{path} does not hold a {{token: embedding}} dict.")
    if set(obj) == {"weights"} and torch.is_tensor(obj["weights"]):  # official save_weights()
        w = obj["weights"]
        if w.ndim == 0 or w.numel() == 0:
            raise NoiseCLRLabError(f"{path} holds an empty 'weights' tensor (shape {tuple(w.shape)}).")
        return w.reshape(w.shape[0], -1), [f"<t{i + 1}>" for i in range(w.shape[0])]
    tokens = _sorted_tokens([t for t in obj if isinstance(t, str)])
    if len(tokens) != len(obj) or not all(torch.is_tensor(obj[t]) for t in tokens):
        raise NoiseCLRLabError(f"{path} does not hold a {{token: embedding}} dict of tensors.")
    rows = [obj[t].reshape(-1) for t in tokens]
    if len({r.numel() for r in rows}) != 1:
        raise NoiseCLRLabError(f"{path} holds embeddings of different sizes.")
    return torch.stack(rows), tokens


def _from_text_encoder_state(state: dict, path: Path, num_tokens: int | None, base_vocab: int) -> tuple[torch.Tensor, list[str]]:
    if not isinstance(state, dict):
        raise NoiseCLRLabError(f"{path} does not hold a state dict.")
    w = _embedding_matrix(state, path)
    n = num_tokens if num_tokens is not None else w.shape[0] - base_vocab
    if num_tokens is not None and not 0 < n <= w.shape[0]:
        raise NoiseCLRLabError(f"{path}: --num-tokens {n} is not between 1 and the embedding's {w.shape[0]} rows.")
    if n <= 0:
        raise NoiseCLRLabError(
            f"{path}: the token embedding has {w.shape[0]} rows, no added tokens beyond the base vocabulary of "
            f"{base_vocab}; pass num_tokens (CLI --num-tokens) if the base vocabulary differs."
        )
    return w[-n:], [f"<t{i + 1}>" for i in range(n)]


def _from_pipeline_folder(folder: Path) -> tuple[torch.Tensor, list[str]]:
    added_path = folder / "tokenizer" / "added_tokens.json"
    if added_path.is_file():
        try:
            added = json.loads(added_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise NoiseCLRLabError(f"{added_path} is damaged: {e}") from e
        if not isinstance(added, dict) or not all(isinstance(i, int) for i in added.values()):
            raise NoiseCLRLabError(f"{added_path} does not map tokens to ids.")
    elif not (folder / "tokenizer").is_dir():
        raise NoiseCLRLabError(f"The pipeline in {folder} has no tokenizer folder, so its direction tokens are unknown.")
    else:  # newer transformers keep added tokens in tokenizer.json / tokenizer_config.json only
        from transformers import AutoTokenizer

        try:
            added = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True).get_added_vocab()
        except (OSError, ValueError) as e:
            raise NoiseCLRLabError(f"The tokenizer in {folder / 'tokenizer'} cannot be read: {str(e).splitlines()[0]}") from e
    added = {t: i for t, i in added.items() if t not in ("<|startoftext|>", "<|endoftext|>")}
    if not added:
        raise NoiseCLRLabError(f"The pipeline in {folder} has no added tokens, so it holds no directions.")
    te = folder / "text_encoder"
    files = [te / n for n in ("model.safetensors", "pytorch_model.bin") if (te / n).is_file()]
    if not files:
        raise NoiseCLRLabError(f"{te} has no model.safetensors or pytorch_model.bin.")
    w = _embedding_matrix(_read_state_dict(files[0]), files[0])
    tokens = _sorted_tokens(list(added))
    ids = [added[t] for t in tokens]
    if max(ids) >= w.shape[0]:
        raise NoiseCLRLabError(f"{folder}: tokenizer ids exceed the text encoder's {w.shape[0]} embedding rows.")
    return w[ids], tokens


def import_official(path, *, num_tokens: int | None = None, base_vocab: int = CLIP_BASE_VOCAB,
                    base_model: str = "", **kwargs) -> DirectionBank:
    """A DirectionBank from any official NoiseCLR output: pipeline folder, learned_embeds.bin, or an accelerate
    checkpoint's text encoder (pytorch_model.bin, or model.safetensors from a newer accelerate).

    A folder is searched in that order (pipeline, then ``learned_embeds.bin``, ``pytorch_model.bin``,
    ``model.safetensors``).
    ``num_tokens`` overrides the count inferred from ``base_vocab`` for text-encoder checkpoints.
    """
    path = Path(path)
    if not path.exists():
        raise NoiseCLRLabError(f"{path} does not exist.")
    if path.is_dir():
        if (path / "model_index.json").is_file():
            emb, tokens = _from_pipeline_folder(path)
        elif (path / "learned_embeds.bin").is_file():
            return import_official(path / "learned_embeds.bin", base_model=base_model, **kwargs)
        elif (state := next((path / n for n in CHECKPOINT_FILES if (path / n).is_file()), None)) is not None:
            return import_official(state, num_tokens=num_tokens, base_vocab=base_vocab, base_model=base_model, **kwargs)
        else:
            raise NoiseCLRLabError(
                f"{path} holds no official NoiseCLR output (model_index.json, learned_embeds.bin, "
                f"{' or '.join(CHECKPOINT_FILES)})."
            )
    else:
        _refuse_our_bank(path)
        obj = _read_state_dict(path)
        if isinstance(obj, dict) and any(isinstance(k, str) and k.endswith(EMBED_KEY_SUFFIX) for k in obj):
            emb, tokens = _from_text_encoder_state(obj, path, num_tokens, base_vocab)
        else:
            emb, tokens = _from_embeds_dict(obj, path)
    provenance = {"imported_from": str(path.resolve()), "source": "gemlab-vt/NoiseCLR"}
    kwargs.setdefault("training_config", provenance)
    return DirectionBank(emb.float(), tokens, base_model=base_model, **kwargs)
