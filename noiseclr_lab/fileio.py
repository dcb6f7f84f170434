"""Atomic writes: a temporary sibling, then ``os.replace`` over the target, so a kill never leaves half a file;
and the one JSON reader whose failures are one sentence.

Every file noiseclr_lab writes goes through here (base layer: imports only ``errors``); see docs/design.md.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    """The process's umask: from /proc where there is one; else set (to the strictest mask, so that a file another
    thread creates meanwhile is no more open than intended) and put back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file; safetensors writes 0600, mkdtemp makes 0700
DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block. On success it replaces ``path`` with
    the permissions any new file gets here (``FILE_MODE``), on an error the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # threads: the dashboard's sessions
    try:
        yield tmp
        try:
            os.chmod(tmp, FILE_MODE)
        except OSError:  # a file system that keeps its own modes (some network or FAT mounts)
            pass
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path, remedy: str = ""):
    """The JSON value in ``path``; a missing, unreadable or damaged file is one NoiseCLRLabError sentence
    (ending with ``remedy``, e.g. the command that remakes it)."""
    from noiseclr_lab.errors import NoiseCLRLabError

    path = Path(path)
    tail = f"; {remedy}." if remedy else "."
    if not path.is_file():
        raise NoiseCLRLabError(f"{path} is missing{tail}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NoiseCLRLabError(f"{path} is damaged ({e}){tail}") from e


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    with atomic_target(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def save_safetensors_atomic(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of ``tensors`` (moved to the CPU, made contiguous) written atomically; parent folders are
    created."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_torch_atomic(obj, path: Path) -> None:
    """``torch.save(obj)`` atomically (optimizer states: tensors and plain containers, read back with
    ``torch.load(weights_only=True)``)."""
    import torch

    with atomic_target(Path(path)) as tmp:
        torch.save(obj, tmp)


def image_format(path: Path) -> str:
    """PIL's format for an image file name (from its extension); an unknown one is one NoiseCLRLabError (so a
    command can check its output before any work)."""
    from PIL import Image

    from noiseclr_lab.errors import NoiseCLRLabError

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise NoiseCLRLabError(f"Cannot write {path}: unknown image extension {path.suffix!r} (use .png, .jpg, .webp).")
    return fmt


def save_image_atomic(img, path: Path) -> None:
    """Save a PIL image to ``path`` (format from its extension) through a temporary file; an unknown extension
    or a failed write is one NoiseCLRLabError and leaves any existing file as it was."""
    from noiseclr_lab.errors import NoiseCLRLabError

    path = Path(path)
    fmt = image_format(path)
    try:
        with atomic_target(path) as tmp:
            img.save(tmp, format=fmt)
    except (ValueError, OSError) as e:
        raise NoiseCLRLabError(f"Cannot write {path}: {e}") from e
