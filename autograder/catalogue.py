"""Mistakes catalogues and correct alternatives, kept next to each source notebook.

``source/<ps>/mistakes.toml`` lists, per mistake, the answer cell it replaces, the complete
wrong code, the test cells that must fail, and phrases the feedback must contain.  The test
suite grades every mistake; the demo class is built from the same catalogue.

``source/<ps>/alternatives.toml`` lists correct answers written differently from the
solution (loops instead of vectorised code, an equivalent formula with other round-off): each
must get full marks.  Neither file is released to students.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

from autograder.errors import AutograderError
from autograder.notebook import Node, grade_id, nbgrader_metadata, strip_solution_markers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class CatalogueError(AutograderError):
    """A catalogue, alternatives or audit file that cannot be read; the message names the entry."""


@dataclass(frozen=True)
class Mistake:
    id: str
    cell: str
    loses: tuple[str, ...]
    title: str
    feedback: tuple[str, ...]
    code: str


@dataclass(frozen=True)
class Alternative:
    """A correct answer to one answer cell, written differently from the solution."""

    id: str
    cell: str
    title: str
    code: str


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"{path}: {error}") from None


def _check_unique(path: Path, ids: list[str]) -> None:
    duplicates = {name for name in ids if ids.count(name) > 1}
    if duplicates:
        raise CatalogueError(f"{path}: duplicate ids {sorted(duplicates)}")


def load_alternatives(path: Path) -> list[Alternative]:
    """The correct alternatives of ``alternatives.toml`` (none when the file is absent)."""
    if not path.is_file():
        return []
    alternatives = []
    for number, entry in enumerate(_read_toml(path).get("alternatives", []), start=1):
        missing = {"id", "cell", "title", "code"} - set(entry)
        if missing:
            raise CatalogueError(f"{path}: alternative #{number} lacks {', '.join(sorted(missing))}")
        alternatives.append(Alternative(id=str(entry["id"]), cell=str(entry["cell"]),
                                        title=str(entry["title"]), code=str(entry["code"])))
    _check_unique(path, [alternative.id for alternative in alternatives])
    return alternatives


def load_catalogue(path: Path) -> list[Mistake]:
    if not path.is_file():
        return []
    data = _read_toml(path)
    mistakes = []
    for number, entry in enumerate(data.get("mistakes", []), start=1):
        missing = {"id", "cell", "loses", "title", "code"} - set(entry)
        if missing:
            raise CatalogueError(f"{path}: mistake #{number} lacks {', '.join(sorted(missing))}")
        mistakes.append(Mistake(
            id=str(entry["id"]), cell=str(entry["cell"]), loses=tuple(entry["loses"]),
            title=str(entry["title"]), feedback=tuple(entry.get("feedback", ())), code=str(entry["code"]),
        ))
    _check_unique(path, [mistake.id for mistake in mistakes])
    return mistakes


def solution_answers(source: Node) -> dict[str, str]:
    """The instructor's answer for every answer cell of a source notebook."""
    return {
        grade_id(cell): strip_solution_markers(cell.source)
        for cell in source.cells
        if cell.cell_type == "code" and nbgrader_metadata(cell).get("solution") and grade_id(cell)
    }


def with_answers(release: Node, answers: dict[str, str]) -> Node:
    """A copy of a student notebook with some answer cells' sources replaced."""
    notebook = copy.deepcopy(release)
    for cell in notebook.cells:
        cell_id = grade_id(cell)
        if cell_id in answers:
            cell.source = answers[cell_id]
    return notebook


def mistake_notebook(release: Node, source: Node,
                     mistake: Mistake) -> Node:
    """The solution, except for the one cell the mistake replaces."""
    answers = solution_answers(source)
    if mistake.cell not in answers:
        raise CatalogueError(f"mistake {mistake.id} names cell {mistake.cell!r}, which is not an answer cell")
    answers[mistake.cell] = mistake.code
    return with_answers(release, answers)
