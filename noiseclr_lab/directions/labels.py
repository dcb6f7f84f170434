"""Human labels of directions in a SQLite database (WAL mode): one table of events with their history.

Every change is a row (bank hash, token, field, old value, new value, who, when); the current value of a
field is its newest row. Several writers (two dashboard sessions, a script) may write at once: each change
is one short ``BEGIN IMMEDIATE`` transaction and waits for the others (busy timeout), so none is lost.
``export`` writes the labels into a bank file (atomically) so that every other command sees them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from noiseclr_lab.directions.bank import DirectionBank
from noiseclr_lab.errors import NoiseCLRLabError

FIELDS = ("label", "notes", "verdict")
VERDICTS = ("", "good", "bad")
SCHEMA = """
CREATE TABLE IF NOT EXISTS label_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bank_hash TEXT NOT NULL,
    token TEXT NOT NULL,
    field TEXT NOT NULL CHECK (field IN ('label', 'notes', 'verdict')),
    old_value TEXT,
    new_value TEXT NOT NULL,
    who TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS label_events_key ON label_events (bank_hash, token, field, id);
"""


class LabelStore:
    """Labels, notes and good/bad verdicts of directions, keyed by (bank content hash, token)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise NoiseCLRLabError(f"{self.path} is not a label database ({e}).") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def set(self, bank_hash: str, token: str, field: str, value: str, who: str = "", baseline: str = "") -> bool:
        """Record a new value (False, and nothing written, when it equals the current one). ``baseline``: the
        value before any recorded change (e.g. the label the bank file already holds), so that clearing it is a
        change too."""
        if field not in FIELDS:
            raise NoiseCLRLabError(f"Unknown label field {field!r}; known: {', '.join(FIELDS)}.")
        value = str(value).strip()
        if field == "verdict" and value not in VERDICTS:
            raise NoiseCLRLabError(f"A verdict is 'good', 'bad' or empty, got {value!r}.")
        if field == "label" and len(value) > 200:
            raise NoiseCLRLabError("A label is at most 200 characters.")
        try:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT new_value FROM label_events WHERE bank_hash=? AND token=? AND field=? "
                                  "ORDER BY id DESC LIMIT 1", (bank_hash, token, field)).fetchone()
                old = row[0] if row else None
                if value == (old if row else (baseline or "")):
                    cur.execute("COMMIT")
                    return False
                cur.execute("INSERT INTO label_events (bank_hash, token, field, old_value, new_value, who, at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (bank_hash, token, field, old, value, who, time.time()))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:  # locked past the timeout, read-only or full disk
            raise NoiseCLRLabError(f"Could not record the {field} of {token} in {self.path} ({e}).") from e
        return True

    def current(self, bank_hash: str) -> dict[str, dict[str, str]]:
        """{token: {field: newest value}} for one bank."""
        rows = self._db.execute(
            "SELECT token, field, new_value FROM label_events e WHERE bank_hash=? AND id = (SELECT MAX(id) FROM "
            "label_events WHERE bank_hash=e.bank_hash AND token=e.token AND field=e.field)", (bank_hash,)).fetchall()
        out: dict[str, dict[str, str]] = {}
        for token, field, value in rows:
            out.setdefault(token, {})[field] = value
        return out

    def history(self, bank_hash: str, token: str | None = None) -> list[dict]:
        """Every change, oldest first."""
        q = "SELECT token, field, old_value, new_value, who, at FROM label_events WHERE bank_hash=?"
        args: tuple = (bank_hash,)
        if token is not None:
            q, args = q + " AND token=?", (bank_hash, token)
        keys = ("token", "field", "old", "new", "who", "at")
        return [dict(zip(keys, r)) for r in self._db.execute(q + " ORDER BY id", args).fetchall()]

    def export(self, bank_path: str | os.PathLike) -> int:
        """Write the current labels of this bank's directions into the bank file (atomically); the number
        of labels changed. Notes and verdicts stay in the database."""
        bank = DirectionBank.load(bank_path)
        labels = self.current(bank.content_hash())
        changed = 0
        new = list(bank.labels)
        for k, tok in enumerate(bank.tokens):
            value = labels.get(tok, {}).get("label")
            if value is not None and value != new[k]:
                new[k], changed = value, changed + 1
        if changed:
            bank.labels = new
            bank.save(bank_path)
        return changed
