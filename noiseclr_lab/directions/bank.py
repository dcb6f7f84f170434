"""DirectionBank: K learned direction tokens and their provenance, in one safetensors file (docs/design.md, "Formats")."""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from noiseclr_lab._version import __version__
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_safetensors_atomic

FORMAT_VERSION = 2  # 2 added calibrated_scales (written only by banks that have some: others stay version 1,
# which older releases read); version 1 files still load
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "noiseclr_lab"
TENSOR_KEY = "embeddings"


def _version() -> str:
    return f"noiseclr_lab {__version__}"


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's base vocabulary (added tokens excluded), to tell tokenizers apart."""
    added = set(tokenizer.get_added_vocab())
    base = sorted((tok, idx) for tok, idx in tokenizer.get_vocab().items() if tok not in added)
    return hashlib.sha256(json.dumps(base, ensure_ascii=False).encode()).hexdigest()[:16]


EXPORT_FORMATS = ("a1111", "comfyui", "diffusers-ti")


FILE_STEM_BYTES = 96  # a stem is cut to this many UTF-8 bytes: file systems allow 255 a name, and an export's
# name can hold two stems ("<label>_<token>") plus ".safetensors" and the atomic write's temporary suffix


def _file_stem(name: str) -> str:
    """A file-name-safe version of a token or label ("<d3>" -> "d3", "hair=red (+)" -> "hair_red",
    "lächeln" -> "lächeln": letters and digits of any script are kept, NFC-normalised), at most
    ``FILE_STEM_BYTES`` bytes in UTF-8 (cut between characters)."""
    stem = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", name))
    stem = stem.encode()[:FILE_STEM_BYTES].decode(errors="ignore")  # a character cut in two is dropped whole
    return stem.strip("_.") or "direction"


def text_encoder_hidden_size(text_encoder) -> int:
    """D, the width of the text encoder's input token embeddings."""
    return int(text_encoder.get_input_embeddings().weight.shape[1])


@dataclass
class DirectionBank:
    """K direction tokens: their input embeddings (K, D) plus labels and provenance."""

    embeddings: torch.Tensor  # (K, D) float32 input-embedding rows, one per token
    tokens: list[str]  # K new tokens, e.g. ["<d1>", ..., "<dK>"]
    labels: list[str] = field(default_factory=list)  # K human labels ("" when unlabelled)
    base_model: str = ""  # the model spec the directions were learned on
    tokenizer_fingerprint: str = ""  # tokenizer_fingerprint() of that model's tokenizer ("" = unknown)
    training_config: dict = field(default_factory=dict)  # resolved training config, when trained here
    created_with: str = ""  # library and version that wrote the bank
    suggestions: list[str] = field(default_factory=list)  # K machine-suggested labels (auto-labels; "" = none);
    # kept apart from ``labels``, which only people set
    calibrated_scales: list[float | None] = field(default_factory=list)  # K scales at which each edit reaches
    # the common calibration target (signed; None = not calibrated); `analyze` writes them

    def __post_init__(self):
        emb = torch.as_tensor(self.embeddings)
        if emb.ndim != 2:
            raise NoiseCLRLabError(f"Direction embeddings must be a (K, D) matrix, got shape {tuple(emb.shape)}.")
        self.embeddings = emb.detach().to(torch.float32).cpu()
        if emb.shape[0] == 0:
            raise NoiseCLRLabError("A direction bank holds at least one direction, this one none.")
        if not torch.isfinite(self.embeddings).all():
            bad = sorted({int(i) for i in (~torch.isfinite(self.embeddings)).nonzero()[:, 0]})
            raise NoiseCLRLabError(f"Direction embeddings must be finite; rows {bad[:10]} hold nan or inf.")
        self.tokens = list(self.tokens)
        if not all(isinstance(t, str) for t in self.tokens):
            raise NoiseCLRLabError(f"Direction tokens must be strings, got {self.tokens[:5]}.")
        if len(self.tokens) != emb.shape[0]:
            raise NoiseCLRLabError(f"{len(self.tokens)} tokens for {emb.shape[0]} embeddings; they must match.")
        if len(set(self.tokens)) != len(self.tokens):
            raise NoiseCLRLabError(f"Direction tokens must be unique: {self.tokens}.")
        bad = [t for t in self.tokens if not t or any(c.isspace() for c in t)]
        if bad:
            raise NoiseCLRLabError(f"Direction tokens must be non-empty and hold no spaces: {bad}.")
        self.labels = list(self.labels) if self.labels else [""] * len(self.tokens)
        if len(self.labels) != len(self.tokens):
            raise NoiseCLRLabError(f"{len(self.labels)} labels for {len(self.tokens)} tokens; they must match.")
        self.suggestions = list(self.suggestions) if self.suggestions else [""] * len(self.tokens)
        cal = list(self.calibrated_scales) if self.calibrated_scales else [None] * len(self.tokens)
        if len(cal) != len(self.tokens):
            raise NoiseCLRLabError(f"{len(cal)} calibrated scales for {len(self.tokens)} tokens; they must match.")
        try:
            self.calibrated_scales = [None if v is None else float(v) for v in cal]
        except (TypeError, ValueError):
            raise NoiseCLRLabError(f"Calibrated scales must be numbers or None, got {cal}.") from None
        if len(self.suggestions) != len(self.tokens):
            raise NoiseCLRLabError(f"{len(self.suggestions)} suggested labels for {len(self.tokens)} tokens; they must match.")
        if not self.created_with:
            self.created_with = _version()

    # ------------------------------------------------------------------ basics

    @classmethod
    def random(cls, k: int, hidden_size: int, *, std: float = 0.02, prefix: str = "d", seed: int = 0,
               **kwargs) -> DirectionBank:
        """K random directions N(0, std^2) named <d1>..<dK> (the official random initialisation)."""
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(k, hidden_size, generator=g) * std
        return cls(emb, [f"<{prefix}{i + 1}>" for i in range(k)], **kwargs)

    def subset(self, names) -> DirectionBank:
        """A bank of the named directions (tokens or labels), in the order given, with all their fields."""
        idx = [self.index(n) for n in names]
        if len(set(idx)) != len(idx):
            raise NoiseCLRLabError(f"A direction is named twice in {list(names)}.")
        return DirectionBank(self.embeddings[idx], [self.tokens[k] for k in idx], labels=[self.labels[k] for k in idx],
                             base_model=self.base_model, tokenizer_fingerprint=self.tokenizer_fingerprint,
                             training_config=dict(self.training_config), created_with=self.created_with,
                             suggestions=[self.suggestions[k] for k in idx],
                             calibrated_scales=[self.calibrated_scales[k] for k in idx])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def hidden_size(self) -> int:
        """D, the text encoder width the directions live in."""
        return int(self.embeddings.shape[1])

    def index(self, name: str) -> int:
        """Position of a direction named by token ("<d3>") or label ("smile"); unknown names list the known."""
        if name in self.tokens:
            return self.tokens.index(name)
        hits = [i for i, lab in enumerate(self.labels) if lab and lab == name]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NoiseCLRLabError(f"Label {name!r} names several directions ({[self.tokens[i] for i in hits]}); use a token.")
        known = ", ".join(t + (f" ({lab})" if lab else "") for t, lab in zip(self.tokens, self.labels))
        raise NoiseCLRLabError(f"Unknown direction {name!r}; known: {known}.")

    def content_hash(self) -> str:
        """A short hash of what an edit depends on (tokens and embedding values; labels and provenance excluded),
        used in sweep cache keys: relabelling a bank keeps its cached sweeps, retraining it does not."""
        h = hashlib.sha256(json.dumps(self.tokens).encode())
        h.update(self.embeddings.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def metadata(self) -> dict:
        """The JSON metadata stored beside the tensor."""
        return {
            "format_version": FORMAT_VERSION if any(v is not None for v in self.calibrated_scales) else 1,
            "tokens": self.tokens,
            "labels": self.labels,
            "base_model": self.base_model,
            "text_encoder_hidden_size": self.hidden_size,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "training_config": self.training_config,
            "created_with": self.created_with,
            "suggested_labels": self.suggestions,
            "calibrated_scales": self.calibrated_scales,
        }

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``directions.safetensors`` (tensor ``embeddings`` + JSON metadata) atomically."""
        path = Path(path)
        save_safetensors_atomic({TENSOR_KEY: self.embeddings}, path, metadata={METADATA_KEY: json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionBank:
        """Read a bank written by :meth:`save`; a missing, foreign or damaged file is a one-line error."""
        path = Path(path)
        if path.is_dir():
            inside = path / "directions.safetensors"
            raise NoiseCLRLabError(f"Direction bank {path} is a folder; " + (
                f"give the bank file in it, {inside}." if inside.is_file() else "give a .safetensors bank file."))
        if not path.is_file():
            raise NoiseCLRLabError(f"Direction bank {path} does not exist.")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta_raw = (fh.metadata() or {}).get(METADATA_KEY)
                keys = list(fh.keys())
                emb = fh.get_tensor(TENSOR_KEY) if TENSOR_KEY in keys else None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise NoiseCLRLabError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e
        if meta_raw is None or emb is None:
            raise NoiseCLRLabError(
                f"{path} is a safetensors file but not a noiseclr_lab direction bank (no '{METADATA_KEY}' metadata "
                f"or '{TENSOR_KEY}' tensor); to read official NoiseCLR outputs use `noiseclr-lab import-official`."
            )
        try:
            meta = json.loads(meta_raw)
        except json.JSONDecodeError as e:
            raise NoiseCLRLabError(f"{path} has damaged bank metadata: {e}") from e
        if not isinstance(meta, dict) or not isinstance(meta.get("tokens"), list):
            raise NoiseCLRLabError(f"{path} has damaged bank metadata: no list of tokens.")
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise NoiseCLRLabError(
                f"{path} has bank format version {version}; this noiseclr_lab reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}."
            )
        if meta.get("text_encoder_hidden_size") != emb.shape[-1]:
            raise NoiseCLRLabError(
                f"{path} is inconsistent: metadata says hidden size {meta.get('text_encoder_hidden_size')}, "
                f"the tensor has {emb.shape[-1]}."
            )
        return cls(
            embeddings=emb,
            tokens=meta["tokens"],
            labels=meta.get("labels") or [],
            base_model=meta.get("base_model", ""),
            tokenizer_fingerprint=meta.get("tokenizer_fingerprint", ""),
            training_config=meta.get("training_config") or {},
            created_with=meta.get("created_with", ""),
            suggestions=meta.get("suggested_labels") or [],
            calibrated_scales=meta.get("calibrated_scales") or [],
        )

    # ------------------------------------------------------------------ pipelines

    def check_compatible(self, tokenizer, text_encoder) -> None:
        """Raise a clear error when the bank was made for another text encoder width or tokenizer."""
        d = text_encoder_hidden_size(text_encoder)
        if d != self.hidden_size:
            raise NoiseCLRLabError(
                f"Direction bank has hidden size {self.hidden_size} (base model {self.base_model or 'unknown'}) but "
                f"the pipeline's text encoder has {d}; load the bank into the model it was trained on."
            )
        if self.tokenizer_fingerprint:
            fp = tokenizer_fingerprint(tokenizer)
            if fp != self.tokenizer_fingerprint:
                raise NoiseCLRLabError(
                    f"Direction bank was made with tokenizer {self.tokenizer_fingerprint} (base model "
                    f"{self.base_model or 'unknown'}) but the pipeline's tokenizer is {fp}; load it into a matching model."
                )

    def install(self, pipe=None, *, tokenizer=None, text_encoder=None) -> list[int]:
        """Add the direction tokens to a pipeline's tokenizer and text encoder (idempotent); returns their ids.

        Pass a pipeline, or ``tokenizer=`` and ``text_encoder=``. Re-installing overwrites the rows with this
        bank's embeddings; a token that is an ordinary word of the base vocabulary is refused.
        """
        tokenizer = tokenizer if tokenizer is not None else pipe.tokenizer
        text_encoder = text_encoder if text_encoder is not None else pipe.text_encoder
        self.check_compatible(tokenizer, text_encoder)
        added = tokenizer.get_added_vocab()
        vocab = tokenizer.get_vocab()
        clash = [t for t in self.tokens if t in vocab and t not in added]
        if clash:
            raise NoiseCLRLabError(f"Direction tokens {clash} are words of the base vocabulary; rename them.")
        new = [t for t in self.tokens if t not in added]
        if new:
            tokenizer.add_tokens(new)
        ids = tokenizer.convert_tokens_to_ids(self.tokens)
        emb = text_encoder.get_input_embeddings()
        if max(ids) >= emb.weight.shape[0]:
            text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            emb = text_encoder.get_input_embeddings()
        with torch.no_grad():
            emb.weight[ids] = self.embeddings.to(emb.weight.device, emb.weight.dtype)
        return ids

    @classmethod
    def from_pipeline(cls, pipe, tokens: list[str], **kwargs) -> DirectionBank:
        """Read the current embeddings of ``tokens`` out of a pipeline's text encoder."""
        ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
        emb = pipe.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
        kwargs.setdefault("tokenizer_fingerprint", tokenizer_fingerprint(pipe.tokenizer))
        return cls(emb, tokens, **kwargs)

    # ------------------------------------------------------------------ interchange

    def export_embeddings(self, folder: str | os.PathLike, fmt: str = "a1111") -> list[Path]:
        """One file per direction for the UIs people use, named after its label (else its token).

        ``a1111`` / ``comfyui``: ``{"emb_params": (1, D)}`` safetensors (AUTOMATIC1111's and ComfyUI's
        embedding format; diffusers' ``load_textual_inversion(path, token=...)`` reads it too), with the
        token, label, calibrated scale and provenance in the metadata. ``diffusers-ti``: see
        :meth:`export_textual_inversion`.
        """
        if fmt == "diffusers-ti":
            return self.export_textual_inversion(folder)
        if fmt not in EXPORT_FORMATS:
            raise NoiseCLRLabError(f"Unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        taken: set[str] = set()  # casefolded names: "Smile" and "smile" are one file on macOS and Windows
        for k, (token, row) in enumerate(zip(self.tokens, self.embeddings)):
            stem = _file_stem(self.labels[k] or token)
            path = folder / f"{stem}.safetensors"
            if path.name.casefold() in taken:
                path = folder / f"{stem}_{_file_stem(token)}.safetensors"
            if path.name.casefold() in taken:
                raise NoiseCLRLabError(f"Directions {self.tokens} map to clashing file names; relabel them.")
            meta = {"token": token, "label": self.labels[k], "suggested_label": self.suggestions[k],
                    "calibrated_scale": self.calibrated_scales[k], "base_model": self.base_model,
                    "tokenizer_fingerprint": self.tokenizer_fingerprint, "created_with": self.created_with,
                    "exported_with": _version(), "format": fmt}
            save_safetensors_atomic({"emb_params": row[None]}, path, metadata={METADATA_KEY: json.dumps(meta)})
            paths.append(path)
            taken.add(path.name.casefold())
        return paths

    def export_textual_inversion(self, folder: str | os.PathLike) -> list[Path]:
        """One diffusers textual-inversion file per token (``{token: (D,)}`` safetensors) in ``folder``.

        Each loads with ``StableDiffusionPipeline.load_textual_inversion(path)``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for token, row in zip(self.tokens, self.embeddings):
            path = folder / f"{_file_stem(token)}.safetensors"
            if path.name.casefold() in {p.name.casefold() for p in paths}:
                raise NoiseCLRLabError(f"Tokens {self.tokens} map to clashing file names; rename them.")
            save_safetensors_atomic({token: row}, path)
            paths.append(path)
        return paths
