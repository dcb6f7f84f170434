"""Concept vocabularies: what a CLIP reader reads. Groups of mutually exclusive values, each with prompts.

A zero-shot probability is taken within a group (a softmax over its values), as a classifier would, so
"smiling" competes with "neutral expression", not with "blond hair". Sources:

- ``toy:<domain>``: one group per factor of a toy domain, one prompt per value naming that factor alone;
- a built-in vocabulary for the paper's domains: ``faces``, ``cars``, ``cats``, ``art``;
- a file: plain text (one concept per line, ``#`` comments; the concepts form one group) or TOML::

      templates = ["a photo of a person {}."]      # optional; "{}" is replaced by each value
      [groups]
      expression = ["smiling", "with a neutral expression"]
      hair = ["with black hair", "with blond hair", "with red hair"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld import get_domain, list_domains
from noiseclr_lab.toyworld.domains import zero_shot_prompts

DEFAULT_TEMPLATES = ("a photo of {}.",)


@dataclass
class Vocabulary:
    """Groups of mutually exclusive values, each value with one or more prompts (their text features are
    averaged)."""

    name: str  # where it came from: "toy:faces", "faces", a file path
    groups: dict[str, dict[str, list[str]]]  # {group: {value: [prompt, ...]}}
    factor_of: dict[str, str] = field(default_factory=dict)  # {group: toy factor} when the groups are factors

    def __post_init__(self):
        if not self.groups:
            raise NoiseCLRLabError(f"Vocabulary {self.name!r} is empty: it needs at least one group of two values.")
        for g, values in self.groups.items():
            if len(values) < 2:
                raise NoiseCLRLabError(f"Vocabulary {self.name!r}: group {g!r} has {len(values)} value(s); a group "
                                       "needs at least two mutually exclusive values.")
            for v, prompts in values.items():
                if not v or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                    raise NoiseCLRLabError(f"Vocabulary {self.name!r}: value {v!r} of group {g!r} has no prompt.")

    @property
    def values(self) -> dict[str, tuple[str, ...]]:
        """{group: value names}, the ``Reader.values`` of a CLIP reader over this vocabulary."""
        return {g: tuple(v) for g, v in self.groups.items()}

    @property
    def attributes(self) -> list[str]:
        """Every value as "group=value", in group order: the columns of a re-scoring matrix."""
        return [f"{g}={v}" for g, vals in self.groups.items() for v in vals]

    def as_dict(self) -> dict:
        return {"name": self.name, "groups": self.groups, "factor_of": self.factor_of}


def _templated(name: str, groups: dict[str, list[str]], templates) -> Vocabulary:
    templates = tuple(templates)
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise NoiseCLRLabError(f"Vocabulary {name!r}: templates must be strings holding '{{}}', got {templates!r}.")
    out = {}
    for g, vals in groups.items():
        if not isinstance(vals, list) or not all(isinstance(v, str) and v.strip() for v in vals):
            raise NoiseCLRLabError(f"Vocabulary {name!r}: group {g!r} must be a list of non-empty strings.")
        if len(set(vals)) != len(vals):
            raise NoiseCLRLabError(f"Vocabulary {name!r}: group {g!r} repeats a value.")
        out[g] = {v.strip(): [t.format(v.strip()) for t in templates] for v in vals}
    return Vocabulary(name, out)


BUILTIN: dict[str, tuple[tuple[str, ...], dict[str, list[str]]]] = {
    # the paper's face attributes (smile, glasses, lipstick, beard, age, gender, hair colour)
    "faces": (("a photo of a person {}.", "a close-up photo of a face, {}."), {
        "expression": ["smiling", "with a neutral expression"],
        "glasses": ["wearing glasses", "without glasses"],
        "lipstick": ["wearing lipstick", "without makeup"],
        "beard": ["with a beard", "clean-shaven"],
        "age": ["who is young", "who is old"],
        "gender": ["who is a man", "who is a woman"],
        "hair": ["with black hair", "with blond hair", "with brown hair", "with red hair", "with gray hair"],
    }),
    "cars": (("a photo of a {}.",), {
        "colour": ["red car", "blue car", "black car", "white car", "silver car", "yellow car", "green car"],
        "type": ["sedan", "SUV", "sports car", "pickup truck", "van", "convertible"],
    }),
    "cats": (("a photo of a {}.",), {
        "breed": ["tabby cat", "Siamese cat", "Persian cat", "Maine Coon cat", "Sphynx cat", "black cat",
                  "British Shorthair cat", "ginger cat"],
    }),
    "art": (("{}.",), {
        "style": ["a photograph", "an oil painting", "a watercolor painting", "a pencil sketch", "pop art",
                  "a cubist painting", "an impressionist painting", "an anime drawing", "a Van Gogh painting"],
    }),
}


def list_vocabularies() -> list[str]:
    """Names ``load_vocabulary`` accepts besides files: the built-ins and ``toy:<domain>``."""
    return sorted(BUILTIN) + [f"toy:{d}" for d in list_domains()]


def toy_vocabulary(domain: str) -> Vocabulary:
    """One group per factor of a toy domain; each value's prompt names that factor alone."""
    dom = get_domain(domain)
    groups = {f.name: {v: [p] for v, p in zip(f.values, zero_shot_prompts(dom, f.name))} for f in dom.factors}
    return Vocabulary(f"toy:{domain}", groups, factor_of={f.name: f.name for f in dom.factors})


def load_vocabulary(spec: str | Path) -> Vocabulary:
    """A vocabulary by name (``faces``, ``cars``, ``cats``, ``art``, ``toy:<domain>``) or from a .txt/.toml file."""
    text = str(spec)
    if text.startswith("toy:"):
        return toy_vocabulary(text[4:])
    if text in BUILTIN:
        templates, groups = BUILTIN[text]
        return _templated(text, groups, templates)
    path = Path(text).expanduser()
    if not path.is_file():
        raise NoiseCLRLabError(f"Unknown vocabulary {text!r}: not a file, and not one of {', '.join(list_vocabularies())}.")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NoiseCLRLabError(f"Cannot read the vocabulary file {path}: {e}") from e
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as e:
            raise NoiseCLRLabError(f"Vocabulary file {path} is not valid TOML: {e}") from e
        groups = data.get("groups")
        unknown = set(data) - {"groups", "templates"}
        if unknown or not isinstance(groups, dict):
            raise NoiseCLRLabError(f"Vocabulary file {path} needs a [groups] table (and optional templates); "
                                   f"found keys {sorted(data)}.")
        return _templated(str(path), groups, data.get("templates", DEFAULT_TEMPLATES))
    concepts = [ln.split("#", 1)[0].strip() for ln in raw.splitlines()]
    concepts = [c for c in concepts if c]
    return _templated(str(path), {"concept": concepts}, DEFAULT_TEMPLATES)
