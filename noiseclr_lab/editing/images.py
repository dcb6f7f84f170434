"""Turn any user image (path, PIL, array; any size or mode) into the model's square RGB input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from noiseclr_lab.errors import NoiseCLRLabError


def _to_8bit(img: Image.Image, notes: list[str]) -> Image.Image:
    # 16/32-bit integer and float modes: rescale to 0..255 from the file's own range
    arr = np.asarray(img).astype(np.float64)
    hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max()) or 1.0
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255
    else:
        arr = arr / hi * 255
    notes.append(f"converted {img.mode} ({'16' if hi > 255 else '32'}-bit) to 8-bit")
    return Image.fromarray(np.clip(arr.round(), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """EXIF rotation applied; palette, grayscale, CMYK and 16-bit modes converted to RGB; transparency
    composited onto white. Each step recorded in ``notes``."""
    orientation = img.getexif().get(0x0112, 1)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        notes.append(f"applied EXIF orientation {orientation}")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _to_8bit(img, notes)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        notes.append("expanded palette image")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
        notes.append("composited transparency onto white")
    if img.mode != "RGB":
        notes.append(f"converted {img.mode} to RGB")
        img = img.convert("RGB")
    return img


def prepare_image(image, size: int) -> tuple[Image.Image, list[str]]:
    """Load and convert ``image`` (a path, PIL image or HxW[xC] uint8 array) to a ``size`` x ``size`` RGB image.

    Steps, each recorded in the returned notes: EXIF rotation applied; palette, grayscale, CMYK and 16-bit
    modes converted to RGB; transparency composited onto white; centre crop to a square; resize (Lanczos).
    """
    notes: list[str] = []
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise NoiseCLRLabError(f"Image {path} " + ("is a folder, not an image file." if path.is_dir() else "does not exist."))
        try:
            img = Image.open(path)
            img.load()
        except Image.DecompressionBombError as e:  # a header claiming more pixels than PIL's safety limit
            raise NoiseCLRLabError(f"Cannot read image {path}: {e}") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise NoiseCLRLabError(f"Cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from e
    elif isinstance(image, np.ndarray):
        img = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        img = image
    else:
        raise NoiseCLRLabError(f"Expected an image path, PIL image or array, got {type(image).__name__}.")
    img = _to_rgb(img, notes)
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        notes.append(f"centre-cropped {w}x{h} to {s}x{s}")
    if img.size != (size, size):
        notes.append(f"resized {img.size[0]}x{img.size[1]} to {size}x{size}")
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img, notes


def decode_upload(data: bytes, name: str = "the upload", max_bytes: int = 10 * 1024 * 1024,
                  max_pixels: int = 4096 * 4096) -> Image.Image:
    """An uploaded image file as RGB, decoded safely: too large a file, too many pixels (checked from the
    header, before decoding) or a file that is not an image is one NoiseCLRLabError sentence."""
    import io

    if len(data) > max_bytes:
        raise NoiseCLRLabError(f"{name} is {len(data) / 1e6:.1f} MB; at most {max_bytes / 1e6:.0f} MB are accepted.")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as img:  # no other decoder (e.g. PostScript)
            if img.width * img.height > max_pixels:
                raise NoiseCLRLabError(f"{name} has {img.width} x {img.height} pixels; at most {max_pixels} are accepted.")
            img.load()
            rgb = _to_rgb(img, [])  # converted as prepare_image converts files (transparency onto white)
            return rgb.copy() if rgb is img else rgb  # the opened image is closed when the block ends
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise NoiseCLRLabError(f"{name} is not a readable image ({type(e).__name__}).") from e
