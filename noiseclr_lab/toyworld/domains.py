"""Procedural toy domains with known generating factors.

Each domain samples factor records, renders them deterministically to 64x64 RGB images
(with a little nuisance jitter driven by a per-record seed) and writes an English caption.
Images are drawn at 4x and downsampled, so edges are anti-aliased like real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from noiseclr_lab.registry import Registry

RESOLUTION = 64  # output side length in pixels
_SS = 4  # supersampling factor used while drawing
NUISANCE_KEY = "nuisance_seed"  # record key holding the seed of the nuisance jitter


@dataclass(frozen=True)
class Factor:
    """One generating factor of a domain and its discrete values (in label order)."""

    name: str  # factor name, a key of every record ("hair")
    values: tuple[str, ...]  # the values it takes ("black", "brown", ...); label i is values[i]


Record = dict  # {factor name: value, NUISANCE_KEY: int}


class Domain:
    """Base class: subclasses set ``name`` and ``factors`` and implement ``_draw`` and ``_phrases``."""

    name: str = ""
    factors: tuple[Factor, ...] = ()
    prefix: str = ""  # the caption head shared by every image of the domain ("a cartoon face")

    def factor(self, name: str) -> Factor:
        """The factor called ``name``."""
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(f"domain {self.name!r} has no factor {name!r}; factors: {[f.name for f in self.factors]}")

    def sample(self, rng: np.random.Generator, n: int) -> list[Record]:
        """``n`` records with every factor drawn uniformly and an independent nuisance seed."""
        records = []
        for _ in range(n):
            rec: Record = {f.name: f.values[int(rng.integers(len(f.values)))] for f in self.factors}
            rec[NUISANCE_KEY] = int(rng.integers(2**31 - 1))
            records.append(rec)
        return records

    def labels(self, records: list[Record]) -> dict[str, np.ndarray]:
        """Integer labels per factor: {factor: (n,) int64}."""
        return {
            f.name: np.array([f.values.index(r[f.name]) for r in records], dtype=np.int64)
            for f in self.factors
        }

    def render(self, records: list[Record]) -> list[Image.Image]:
        """64x64 RGB images, one per record; the same record always gives the same pixels."""
        out = []
        for rec in records:
            jit = np.random.default_rng(rec[NUISANCE_KEY])
            canvas = Image.new("RGB", (RESOLUTION * _SS, RESOLUTION * _SS))
            self._draw(ImageDraw.Draw(canvas), rec, jit)
            out.append(canvas.resize((RESOLUTION, RESOLUTION), Image.Resampling.LANCZOS))
        return out

    def caption(self, record: Record, rng: np.random.Generator | None = None, keep: float = 1.0) -> str:
        """Caption naming every factor; with ``rng`` each phrase is kept with probability ``keep``
        (partial captions teach the text encoder each attribute word on its own)."""
        phrases = self.phrases(record)
        if rng is not None and keep < 1.0:
            phrases = [p for p in phrases if rng.random() < keep]
        return self.join(phrases)

    def phrases(self, record: Record) -> list[str]:
        """One attribute phrase per factor, in factor order ("red hair", "glasses", ...)."""
        return self._phrases(record)

    def join(self, phrases: list[str]) -> str:
        """A caption made of the domain head and ``phrases`` ("a cartoon face with red hair, glasses")."""
        return self.prefix if not phrases else f"{self.prefix} with " + ", ".join(phrases)

    def _phrases(self, record: Record) -> list[str]:
        raise NotImplementedError

    def _draw(self, draw: ImageDraw.ImageDraw, rec: Record, jit: np.random.Generator) -> None:
        raise NotImplementedError


def _jitter_colour(rgb: tuple[int, int, int], jit: np.random.Generator, amount: int = 8) -> tuple[int, ...]:
    return tuple(int(np.clip(c + jit.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _ellipse(draw, cx, cy, rx, ry, fill=None, outline=None, width=0):
    s = _SS
    draw.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], fill=fill, outline=outline,
                 width=int(round(width * s)))


SKIN = {"light": (250, 222, 196), "tan": (206, 150, 100), "dark": (112, 72, 44)}
HAIR = {"black": (28, 28, 32), "brown": (120, 72, 30), "blonde": (246, 214, 96), "red": (204, 52, 30)}
BACKGROUND = {"blue": (70, 110, 215), "green": (70, 170, 90), "purple": (150, 85, 190), "gray": (150, 150, 150)}
SHAPE_COLOUR = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40)}


def draw_face(draw, rec: Record, jit: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    """A cartoon face centred at (cx, cy) in output pixels; ``scale`` 1 fills most of a 64 px image."""
    cx += jit.uniform(-2, 2) * scale
    cy += jit.uniform(-2, 2) * scale
    scale *= jit.uniform(0.95, 1.05)
    hair = _jitter_colour(HAIR[rec["hair"]], jit)
    skin = _jitter_colour(SKIN[rec["skin"]], jit)
    r = 19 * scale
    # hair: a cap behind the top of the head, with side locks
    _ellipse(draw, cx, cy - 4 * scale, r + 3 * scale, r + 1 * scale, fill=hair)
    _ellipse(draw, cx, cy + 2 * scale, r, r, fill=skin)
    # fringe over the forehead
    s = _SS
    draw.chord([(cx - r) * s, (cy - r - 4 * scale) * s, (cx + r) * s, (cy + r - 10 * scale) * s], 180, 360, fill=hair)
    eye_r = (4.0 if rec["eyes"] == "large" else 2.0) * scale
    ex, ey = 7.5 * scale, cy - 1 * scale
    for sx in (-1, 1):
        _ellipse(draw, cx + sx * ex, ey, eye_r, eye_r, fill=(255, 255, 255))
        _ellipse(draw, cx + sx * ex, ey, eye_r * 0.55, eye_r * 0.55, fill=(20, 20, 20))
    if rec["glasses"] == "glasses":
        ring = 6.0 * scale
        for sx in (-1, 1):
            _ellipse(draw, cx + sx * ex, ey, ring, ring, outline=(15, 15, 15), width=1.6 * scale)
        draw.line([(cx - ex + ring) * s, ey * s, (cx + ex - ring) * s, ey * s], fill=(15, 15, 15),
                  width=int(1.6 * scale * s))
    mw, my = 7.0 * scale, cy + 10 * scale
    mouth_col, mouth_w = (90, 20, 20), int(2.0 * scale * s)
    if rec["expression"] == "neutral":
        draw.line([(cx - mw) * s, my * s, (cx + mw) * s, my * s], fill=mouth_col, width=mouth_w)
    else:
        # a smile is the lower half of an ellipse, a frown the upper half lower down
        top = my - 5 * scale if rec["expression"] == "smiling" else my
        box = [(cx - mw) * s, top * s, (cx + mw) * s, (top + 10 * scale) * s]
        start, end = (20, 160) if rec["expression"] == "smiling" else (200, 340)
        draw.arc(box, start, end, fill=mouth_col, width=mouth_w)


def draw_shape(draw, rec: Record, jit: np.random.Generator, cx: float, cy: float, radius: float) -> None:
    """A filled shape of the record's kind and colour, centred at (cx, cy), output-pixel units."""
    s = _SS
    cx += jit.uniform(-1.5, 1.5)
    cy += jit.uniform(-1.5, 1.5)
    radius *= jit.uniform(0.93, 1.07)
    col = _jitter_colour(SHAPE_COLOUR[rec["colour"]], jit)
    angle = jit.uniform(-0.15, 0.15)
    kind = rec["shape"]
    if kind == "circle":
        _ellipse(draw, cx, cy, radius, radius, fill=col)
        return
    if kind == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2) * radius * 1.25, math.sin(angle + math.pi / 4 + k * math.pi / 2) * radius * 1.25) for k in range(4)]
    elif kind == "triangle":
        pts = [(math.cos(angle - math.pi / 2 + k * 2 * math.pi / 3) * radius * 1.2, math.sin(angle - math.pi / 2 + k * 2 * math.pi / 3) * radius * 1.2 + radius * 0.2) for k in range(3)]
    else:  # star
        pts = []
        for k in range(10):
            rr = radius * (1.25 if k % 2 == 0 else 0.55)
            a = angle - math.pi / 2 + k * math.pi / 5
            pts.append((math.cos(a) * rr, math.sin(a) * rr))
    draw.polygon([((cx + x) * s, (cy + y) * s) for x, y in pts], fill=col)


class FacesDomain(Domain):
    name = "faces"
    prefix = "a cartoon face"
    factors = (
        Factor("skin", tuple(SKIN)),
        Factor("hair", tuple(HAIR)),
        Factor("expression", ("smiling", "neutral", "frowning")),
        Factor("glasses", ("glasses", "no glasses")),
        Factor("eyes", ("small", "large")),
        Factor("background", tuple(BACKGROUND)),
    )

    def _phrases(self, rec):
        return [f"{rec['skin']} skin", f"{rec['hair']} hair", rec["expression"],
                "glasses" if rec["glasses"] == "glasses" else "no glasses",
                f"{rec['eyes']} eyes", f"a {rec['background']} background"]

    def _draw(self, draw, rec, jit):
        bg = _jitter_colour(BACKGROUND[rec["background"]], jit)
        draw.rectangle([0, 0, RESOLUTION * _SS, RESOLUTION * _SS], fill=bg)
        draw_face(draw, rec, jit, 32, 32, 1.25)


_QUADRANT = {"top left": (17, 17), "top right": (47, 17), "bottom left": (17, 47), "bottom right": (47, 47)}


class ShapesDomain(Domain):
    name = "shapes"
    prefix = "a shape"
    factors = (
        Factor("shape", ("circle", "square", "triangle", "star")),
        Factor("colour", tuple(SHAPE_COLOUR)),
        Factor("size", ("small", "large")),
        Factor("position", tuple(_QUADRANT)),
    )

    def _phrases(self, rec):
        return [f"a {rec['shape']} form", f"{rec['colour']} colour", f"{rec['size']} size", f"at the {rec['position']}"]

    def _draw(self, draw, rec, jit):
        grey = int(jit.integers(225, 240))
        draw.rectangle([0, 0, RESOLUTION * _SS, RESOLUTION * _SS], fill=(grey, grey, grey))
        cx, cy = _QUADRANT[rec["position"]]
        draw_shape(draw, rec, jit, cx, cy, 11.0 if rec["size"] == "large" else 6.0)


class ScenesDomain(Domain):
    """A face on the left and a shape on the right: both factor sets in one image."""

    name = "scenes"
    prefix = "a scene"
    factors = FacesDomain.factors + (
        Factor("shape", ShapesDomain.factors[0].values),
        Factor("colour", ShapesDomain.factors[1].values),
        Factor("size", ShapesDomain.factors[2].values),
        Factor("position", ("top", "bottom")),
    )

    def _phrases(self, rec):
        return FacesDomain._phrases(self, rec) + [
            f"a {rec['shape']} form", f"{rec['colour']} colour", f"{rec['size']} size", f"shape at the {rec['position']}"]

    def _draw(self, draw, rec, jit):
        bg = _jitter_colour(BACKGROUND[rec["background"]], jit)
        draw.rectangle([0, 0, RESOLUTION * _SS, RESOLUTION * _SS], fill=bg)
        # the shape sits on a light panel so that no shape colour can vanish into the background
        draw.rectangle([44 * _SS, 0, RESOLUTION * _SS, RESOLUTION * _SS], fill=(232, 232, 232))
        draw_face(draw, rec, jit, 22, 34, 0.95)
        draw_shape(draw, rec, jit, 54, 17 if rec["position"] == "top" else 47, 7.5 if rec["size"] == "large" else 4.0)


_DOMAINS: Registry[Domain] = Registry("toy domain")


def register_domain(domain: Domain) -> Domain:
    """Add a domain instance to the registry under ``domain.name``."""
    return _DOMAINS.register(domain.name, domain)


def get_domain(name: str) -> Domain:
    """The registered domain called ``name``."""
    return _DOMAINS.get(name)


def list_domains() -> list[str]:
    """Names of the registered domains."""
    return _DOMAINS.names()


for _d in (FacesDomain(), ShapesDomain(), ScenesDomain()):
    register_domain(_d)


def zero_shot_prompts(dom, factor: str) -> list[str]:
    """One prompt per value of ``factor``, naming that factor alone ("a cartoon face with red hair")."""
    j = [f.name for f in dom.factors].index(factor)
    base = dom.sample(np.random.default_rng(0), 1)[0]
    return [dom.join([dom.phrases(base | {factor: v})[j]]) for v in dom.factor(factor).values]
