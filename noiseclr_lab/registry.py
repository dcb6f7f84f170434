"""A tiny named-registry helper: plain dicts behind register / get / list (timm, open_clip style)."""

from __future__ import annotations

from typing import Generic, TypeVar

from noiseclr_lab.errors import NoiseCLRLabError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries whose unknown-name error lists the known names."""

    def __init__(self, kind: str):
        self.kind = kind  # what the entries are, used in error messages ("toy domain", "metric")
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name``; registering a taken name twice is an error unless ``overwrite``."""
        if name in self._entries and not overwrite:
            raise NoiseCLRLabError(f"{self.kind} {name!r} is already registered.")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises an error listing the known ones."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise NoiseCLRLabError(f"Unknown {self.kind} {name!r}; known: {known}.")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
