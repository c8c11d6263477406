"""Reading notebooks and turning a submission into a grading plan.

The instructor's source notebook is the one source of truth for tests, read-only cells,
points and ids.  :func:`restore_instructor_cells` keeps only the student's answer cells (and
any cells the student added) from a submission, and takes everything else from the source,
so editing or deleting a test cell changes nothing.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BEGIN_SOLUTION = re.compile(r"^\s*### BEGIN SOLUTION\s*$")
END_SOLUTION = re.compile(r"^\s*### END SOLUTION\s*$")
BEGIN_HIDDEN = re.compile(r"^\s*### BEGIN HIDDEN TESTS\s*$")
END_HIDDEN = re.compile(r"^\s*### END HIDDEN TESTS\s*$")
# A read-only cell with this tag only draws or prints for the reader; grading skips it.
DISPLAY_ONLY = "display-only"


class NotebookError(Exception):
    """A notebook that cannot be graded; ``str(error)`` is one sentence for its author."""


class Node(dict):
    """A JSON object with attribute access, like ``nbformat.NotebookNode`` (and accepted by
    ``nbformat.write``).  Reading with plain ``json`` keeps nbformat, whose import alone
    takes most of a second, off the grading path."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


_ADVICE = "Download a fresh copy of the problem set and copy your answers into it."


def read_notebook(path: Path) -> Node:
    """Read a notebook, failing with a :class:`NotebookError` that says what is wrong.

    For files the caller trusts (the course's own, or a notebook a user names on the command
    line); a hand-in is read with :meth:`autograder.batch.Submission.read` and parsed with
    :func:`parse_notebook`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotebookError(f"There is no file {path}.") from None
    except OSError as error:
        raise NotebookError(f"{path.name} could not be read: {error.strerror}.") from None
    return parse_notebook(data, path.name)


def parse_notebook(raw: bytes, name: str) -> Node:
    """The notebook in ``raw`` (the file ``name``), or a :class:`NotebookError` saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not a text file, so it is not a notebook. {_ADVICE}") from None
    try:
        data = json.loads(text, object_hook=Node)
    except (json.JSONDecodeError, RecursionError) as error:
        where = f" (line {error.lineno}, column {error.colno})" if isinstance(error, json.JSONDecodeError) else ""
        raise NotebookError(
            f"{name} is not valid JSON{where}, so it is not a readable notebook; it may have been damaged. {_ADVICE}"
        ) from None
    if not isinstance(data, Node) or not isinstance(data.get("cells"), list):
        raise NotebookError(f"{name} is JSON but not a Jupyter notebook (it has no list of cells). {_ADVICE}")
    if not isinstance(data.get("nbformat"), int) or data["nbformat"] < 4:
        raise NotebookError(
            f"{name} is in an old notebook format; open it in JupyterLab and save it again."
        )
    data.setdefault("metadata", Node())
    for index, cell in enumerate(data["cells"]):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            cell["source"] = source = "".join(source)  # the on-disk form splits lines
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str) or not isinstance(source, str):
            raise NotebookError(f"{name} has a malformed cell (number {index + 1}). {_ADVICE}")
        cell.setdefault("metadata", Node())
    return data


def nbgrader_metadata(cell: Any) -> dict[str, Any]:
    metadata = cell.get("metadata") or {}
    value = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return value if isinstance(value, dict) else {}


def grade_id(cell: Any) -> str | None:
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def strip_solution_markers(source: str) -> str:
    """The instructor's answer: the source with the solution marker lines removed."""
    lines = source.splitlines()
    return "\n".join(line for line in lines if not (BEGIN_SOLUTION.match(line) or END_SOLUTION.match(line)))


@functools.lru_cache(maxsize=1024)
def split_hidden_tests(source: str) -> tuple[str, frozenset[int]]:
    """The test source without hidden-test markers, and the (1-based) lines that are hidden
    (worked out once per process: a batch splits the same test cells for every notebook)."""
    kept: list[str] = []
    hidden: set[int] = set()
    inside = False
    for line in source.splitlines():
        if BEGIN_HIDDEN.match(line):
            inside = True
            continue
        if END_HIDDEN.match(line):
            inside = False
            continue
        kept.append(line)
        if inside:
            hidden.add(len(kept))
    return "\n".join(kept), frozenset(hidden)


def _stored_names(node: ast.AST) -> set[str]:
    """Names an expression or assignment target binds, outside nested scopes."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
            found.add(item.id)
        stack.extend(ast.iter_child_nodes(item))
    return found


def top_level_names(source: str) -> set[str]:
    """The names a cell binds in the notebook's namespace: definitions, assignments, imports,
    loop and ``with`` targets at top level (also inside top-level ``if``/``for``/``try`` blocks),
    not inside functions or classes."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                names.update(_stored_names(node.target))
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    names.update(_stored_names(item))
                visit(node.body)
            elif isinstance(node, (ast.If, ast.While)):
                names.update(_stored_names(node.test))
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    if handler.name:
                        names.add(handler.name)
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            else:
                names.update(_stored_names(node))

    visit(tree.body)
    return names


# --------------------------------------------------------------------------- grading plan


@dataclass(frozen=True)
class CodeStep:
    """A cell that runs in the worker: the student's, or an instructor's read-only cell."""

    label: str
    source: str
    origin: str  # "student" or "instructor"


@dataclass(frozen=True)
class TestStep:
    """A test cell; it runs in the trusted grader, never in the worker."""

    __test__ = False  # not a pytest class

    grade_id: str
    source: str
    points: float
    hidden_lines: frozenset[int] = field(default_factory=frozenset)


Step = CodeStep | TestStep


@dataclass(frozen=True)
class SourceNotebook:
    """The parts of an instructor notebook that grading needs."""

    name: str
    cells: tuple[Any, ...]
    answer_ids: frozenset[str]
    test_ids: tuple[str, ...]
    # Every name the solutions of the answer cells bind at top level: the only names a test
    # cell reads from the student's process.
    answer_names: frozenset[str] = frozenset()
    # What students see for each test cell: the heading above it ("Exercise 4 — The chain rule").
    titles: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, path: Path) -> SourceNotebook:
        notebook = read_notebook(path)
        code_cells = tuple(cell for cell in notebook.cells if cell.cell_type == "code")
        answer_cells = [cell for cell in code_cells if nbgrader_metadata(cell).get("solution") and grade_id(cell)]
        tests = tuple(
            test_id for cell in code_cells
            if nbgrader_metadata(cell).get("grade") and not nbgrader_metadata(cell).get("solution")
            and (test_id := grade_id(cell))
        )
        names = frozenset().union(*(top_level_names(strip_solution_markers(cell.source)) for cell in answer_cells))
        return cls(name=path.stem, cells=code_cells, answer_ids=frozenset(filter(None, map(grade_id, answer_cells))),
                   test_ids=tests, answer_names=names, titles=tuple(exercise_titles(notebook).items()))

    def title(self, test_id: str) -> str:
        return dict(self.titles).get(test_id, test_id)

    def points(self, test_id: str) -> float:
        for cell in self.cells:
            if grade_id(cell) == test_id:
                return float(nbgrader_metadata(cell).get("points") or 0)
        raise KeyError(test_id)


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_POINTS = re.compile(r"\s*\(\s*\d+(?:\.\d+)?\s+points?\s*\)\s*$", re.IGNORECASE)


def exercise_titles(notebook: Node) -> dict[str, str]:
    """Each test cell's title: the last heading above it, without "(N points)" and emphasis;
    where several test cells share a heading, each gets its exercise's name after it."""
    heading = ""
    titles: dict[str, str] = {}
    for cell in notebook.cells:
        if cell.get("cell_type") == "markdown":
            for line in cell.get("source", "").splitlines():
                match = _HEADING.match(line)
                if match:
                    heading = _POINTS.sub("", match.group(1)).replace("**", "").replace("`", "").replace("$", "").strip()
        elif nbgrader_metadata(cell).get("grade") and not nbgrader_metadata(cell).get("solution") \
                and (test_id := grade_id(cell)):
            titles[test_id] = heading or test_id
    shared = {title for title in titles.values() if list(titles.values()).count(title) > 1}
    for test_id, title in titles.items():
        if title in shared and title != test_id:
            titles[test_id] = f"{title}: {test_id.removeprefix('test_')}"
    return titles


def restore_instructor_cells(source: SourceNotebook, submission: Node) -> list[Step]:
    """The cells to grade, in the source's order: instructor cells from the source, answers
    and added cells from the submission.

    A cell the student added runs after the known cell it follows in their notebook; an
    answer cell the student deleted is graded as empty.
    """
    answers: dict[str, str] = {}
    added: dict[str | None, list[str]] = {}
    anchor: str | None = None
    known = {grade_id(cell) for cell in source.cells} - {None}
    anchored: set[str] = set()
    for cell in submission.cells:
        if cell.get("cell_type") != "code":
            continue
        cell_id = grade_id(cell)
        # The first cell with a known id takes its place; a copy of it counts as added.
        if cell_id is not None and cell_id in known and cell_id not in anchored:
            anchored.add(cell_id)
            anchor = cell_id
            if cell_id in source.answer_ids:
                answers[cell_id] = cell.get("source", "")
            continue
        added.setdefault(anchor, []).append(cell.get("source", ""))

    if not answers and source.answer_ids:
        raise NotebookError(
            f"This notebook has none of the answer cells of {source.name}. "
            f"Submit the {source.name}.ipynb notebook you worked in (made from the release notebook)."
        )

    steps: list[Step] = [
        CodeStep(label=f"added before the first cell #{n + 1}", source=text, origin="student")
        for n, text in enumerate(added.get(None, []))
    ]
    for index, cell in enumerate(source.cells):
        cell_id = grade_id(cell)
        meta = nbgrader_metadata(cell)
        if cell_id in source.answer_ids:
            steps.append(CodeStep(label=cell_id, source=answers.get(cell_id, ""), origin="student"))
        elif meta.get("grade") and cell_id:
            text, hidden = split_hidden_tests(cell.source)
            steps.append(TestStep(cell_id, text, float(meta.get("points") or 0), hidden))
        elif DISPLAY_ONLY in (cell.get("metadata", {}).get("tags") or []):
            pass
        else:
            steps.append(CodeStep(label=cell_id or f"read-only #{index + 1}", source=cell.source,
                                  origin="instructor"))
        for n, text in enumerate(added.get(cell_id, []) if cell_id else []):
            steps.append(CodeStep(label=f"added after {cell_id} #{n + 1}", source=text, origin="student"))
    return steps

