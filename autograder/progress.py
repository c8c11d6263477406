"""A learner's progress: every problem set's best score so far and when, from their checks.

Kept in the user's data directory (``$AUTOGRADER_DATA_DIR``, else ``$XDG_DATA_HOME/autograder``,
else ``~/.local/share/autograder``) as ``progress.json``; written by ``autograder check`` and by
the Check button, read by ``autograder progress`` and the feedback panel.  Only checks against
the hidden tests count as a score; a visible-tests-only check is remembered as such.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autograder.report import GradeReport

FILE = "progress.json"
VERSION = 1


def data_dir() -> Path:
    explicit = os.environ.get("AUTOGRADER_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "autograder"


@dataclass
class Entry:
    """One problem set's record."""

    ps: str
    best: float | None = None  # the best score with the hidden tests
    max_score: float = 0.0
    best_at: str | None = None  # when it was reached (UTC, ISO 8601)
    last: float | None = None
    last_at: str | None = None
    checks: int = 0
    visible_only_checks: int = 0


_TYPES: dict[str, tuple[type, ...]] = {
    "best": (int, float, type(None)), "max_score": (int, float), "best_at": (str, type(None)),
    "last": (int, float, type(None)), "last_at": (str, type(None)), "checks": (int,), "visible_only_checks": (int,)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read(path: Path) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged file starts afresh rather than stopping a check
    entries: dict[str, Entry] = {}
    for ps, row in (data.get("problem_sets") or {}).items() if isinstance(data, dict) else ():
        if not isinstance(row, dict):
            continue
        known = {key: row[key] for key in _TYPES if key in row}
        if all(isinstance(value, _TYPES[key]) and not isinstance(value, bool) for key, value in known.items()):
            entries[str(ps)] = Entry(ps=str(ps), **known)
    return entries


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(folder: Path | None = None) -> dict[str, Entry]:
    return _read((folder or data_dir()) / FILE)


def record(ps: str, score: float, max_score: float, *, hidden_tests: bool, folder: Path | None = None) -> Entry:
    """Remember one check of ``ps``; returns the updated record."""
    folder = folder or data_dir()
    with _locked(folder):
        entries = _read(folder / FILE)
        entry = entries.get(ps) or Entry(ps=ps)
        now = _now()
        if hidden_tests:
            entry.checks += 1
            entry.last, entry.last_at, entry.max_score = float(score), now, float(max_score)
            if entry.best is None or score > entry.best:
                entry.best, entry.best_at = float(score), now
        else:
            entry.visible_only_checks += 1
            entry.max_score = entry.max_score or float(max_score)
        entries[ps] = entry
        payload: dict[str, Any] = {"version": VERSION, "problem_sets": {
            name: {key: value for key, value in asdict(row).items() if key != "ps"} for name, row in entries.items()}}
        temporary = folder / f".{FILE}.tmp"
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        temporary.replace(folder / FILE)
    return entry


def overview(problem_sets: list[str], folder: Path | None = None) -> list[Entry]:
    """Every problem set of the course (and any other checked one), in order, with its record."""
    entries = load(folder)
    names = list(problem_sets) + sorted(name for name in entries if name not in problem_sets)
    return [entries.get(name) or Entry(ps=name) for name in names]


def remember(ps: str, report: GradeReport, *, hidden_tests: bool, folder: Path | None = None) -> None:
    """A graded check counts toward the learner's progress; a place that cannot be written (a
    read-only home) costs nothing but the record."""
    if report.status != "graded":
        return
    try:
        record(ps, report.score, report.max_score, hidden_tests=hidden_tests, folder=folder)
    except OSError:
        pass
