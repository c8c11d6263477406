"""An otter-grader master notebook of a problem set: ``autograder export otter PS``.

The instructor's nbgrader notebook becomes a notebook in otter-assign's format
(https://otter-grader.readthedocs.io, "Otter Assign" > "Notebook Format"), which
``otter assign PS.ipynb dist`` turns into a student notebook and an otter autograder zip:

* a raw ``# ASSIGNMENT CONFIG`` cell first (assignment name, exception-based tests, no PDFs);
* one otter question per nbgrader graded test cell, named after the cell's ``grade_id``, worth
  the cell's points, all-or-nothing.  Its solution block holds the answer cells that come
  before it (nbgrader's ``### BEGIN SOLUTION`` region becomes otter's
  ``# BEGIN SOLUTION NO PROMPT`` with nbgrader's stub as the prompt, so both tools give the
  student the same cell).  Its tests are the test cell's visible part as a public test case
  and the whole cell (visible, then hidden code, as nbgrader runs it) as a hidden test case;
* every other cell as it is; ``display-only`` cells are tagged ``otter_ignore`` so that
  otter's grader skips them, as ours does.

Points: nbgrader and this engine give a test cell all its points or none, so each question
is ``all_or_nothing`` and otter splits its points evenly between its two cases for display
only; an answer gets the cell's points exactly when the whole cell, hidden part included,
passes.

Otter runs an exception-based test as a function that receives the names it uses from the
student's global environment as arguments, so each test cell becomes ``def test_...(names
it reads): <the cell's code>``.  The function body is the cell's code unchanged (checked
by comparing syntax trees), so names the test defines stay inside it.  A construct that does
not survive the move into a function, or a line that otter-assign would read as one of its
own directives, is refused with a sentence that says which cell and why.

Nothing here imports otter: the output is plain notebook JSON.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import re
import symtable
import tokenize
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autograder.course import Course, CourseError
from autograder.notebook import (
    BEGIN_SOLUTION,
    DISPLAY_ONLY,
    END_SOLUTION,
    Node,
    grade_id,
    nbgrader_metadata,
    read_notebook,
    split_hidden_tests,
)

# What nbgrader's generate_assignment puts where a solution was (its ClearSolutions code stub).
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
# Otter's grader skips cells with this tag (otter.execute.preprocessor.IGNORE_CELL_TAG).
OTTER_IGNORE = "otter_ignore"

# Lines otter-assign reads as its own directives (otter/assign/solutions.py, blocks.py, utils.py).
_IGNORE_LINE = re.compile(r"#\s*(BEGIN\s*|END\s*)?IGNORE\s*$")
_BEGIN_IGNORE = re.compile(r"\s*#\s*BEGIN\s*IGNORE", re.IGNORECASE)
_IGNORE_CELL = re.compile(r"(##\s*ignore\s*##\s*|#\s*ignore\s*)", re.IGNORECASE)
_SOLUTION_LINE = re.compile(r".*# ?SOLUTION|\s*# BEGIN SOLUTION")
_STUDENT_DROPS = ("# SOLUTION NO PROMPT", "# BEGIN PROMPT", "# END PROMPT", "# END SOLUTION")
_PLUGIN = re.compile(r"#\s*(BEGIN|END)\s*PLUGIN", re.IGNORECASE)
_BOUNDARY = re.compile(r"#\s+(begin|end)\s+(question|prompt|solution|tests)|#\s+assignment\s+config",
                       re.IGNORECASE)


class OtterExportError(CourseError):
    """A source notebook that cannot become an otter master notebook; the message says why."""


def write_otter_notebook(course: Course, ps: str, target: Path) -> None:
    """Write the otter-assign master notebook of problem set ``ps`` to ``target``."""
    notebook = otter_master_notebook(read_notebook(course.source_notebook(ps)), ps)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                      encoding="utf-8")


def otter_master_notebook(source: Node, ps: str) -> dict[str, Any]:
    """The master notebook (as notebook JSON) made from an nbgrader source notebook."""
    cells = list(source.cells)
    for number, cell in enumerate(cells, start=1):
        _refuse_unsupported(cell, number)
    builder = _Builder(existing_ids={cell.get("id") for cell in cells} - {None})
    builder.add(builder.raw(_assignment_config(ps)))
    builder.add(builder.markdown(_grading_note(ps)))

    tests = [index for index, cell in enumerate(cells) if _is_test(cell)]
    names = _question_names(cells, tests)
    starts = _question_starts(cells, tests)
    covered = {index for test in tests for index in range(starts[test], test + 1)}
    env_names = _student_names(cells)
    test_defined: set[str] = set()
    for index, cell in enumerate(cells):
        if index in starts:
            test_defined |= _convert_question(builder, cells, starts[index], index, names[index],
                                              env_names, test_defined)
        elif index in covered:
            continue  # emitted with its question
        elif _is_answer(cell):
            # An answer that no test cell follows: a 0-point question, so its solution stays hidden.
            builder.begin_question(_clean_name(grade_id(cell) or f"answer_{index + 1}", set(names.values())), 0)
            builder.solution([cell])
            builder.end_question()
        else:
            builder.add(_plain_cell(cell))

    metadata = json.loads(json.dumps(source.get("metadata", {})))
    kernelspec = metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3"})
    kernelspec.setdefault("language", "python")
    return {"cells": builder.cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


# --------------------------------------------------------------------------- questions


def _question_starts(cells: list[Node], tests: list[int]) -> dict[int, int]:
    """For each test cell, where its question starts: at the first answer cell after the
    previous test cell (the answers in between are what it tests), else at the test itself."""
    starts: dict[int, int] = {}
    previous = -1
    for test in tests:
        answers = [index for index in range(previous + 1, test) if _is_answer(cells[index])]
        starts[test] = answers[0] if answers else test
        previous = test
    return starts


def _convert_question(builder: _Builder, cells: list[Node], start: int, test_index: int,
                      name: str, env_names: set[str], test_defined: set[str]) -> set[str]:
    """Emit the question of the test cell at ``test_index`` (cells ``start`` to it); return
    the names the test cell defines."""
    test = cells[test_index]
    builder.begin_question(name, nbgrader_metadata(test).get("points") or 0)
    run: list[Node] = []
    for index in range(start, test_index):
        if _is_answer(cells[index]):
            run.append(cells[index])
            continue
        if run:
            builder.solution(run)
            run = []
        builder.add(_plain_cell(cells[index]))  # e.g. a read-only cell between two answers
    if run:
        builder.solution(run)
    defined = builder.tests(test, name, env_names, test_defined)
    builder.end_question()
    return defined


def _question_names(cells: list[Node], tests: list[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for index in tests:
        names[index] = _clean_name(grade_id(cells[index]) or f"question_{index + 1}", set(names.values()))
    return names


def _clean_name(raw: str, used: set[str]) -> str:
    """``raw`` as a question name otter can use as a file and function name, unlike ``used``."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if not re.match(r"[A-Za-z_]", base):
        base = f"q_{base}"
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    return name


class _Builder:
    """The master notebook's cells, with deterministic ids for the cells it adds."""

    def __init__(self, existing_ids: set[str]) -> None:
        self.cells: list[dict[str, Any]] = []
        self._ids = set(existing_ids)
        self._counter = 0

    def _new_id(self) -> str:
        while True:
            self._counter += 1
            candidate = f"otter-{self._counter}"
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def add(self, cell: dict[str, Any]) -> None:
        if not cell.get("id"):  # a source notebook older than nbformat 4.5 has no cell ids
            cell["id"] = self._new_id()
        self.cells.append(cell)

    def raw(self, text: str) -> dict[str, Any]:
        return {"cell_type": "raw", "id": self._new_id(), "metadata": {}, "source": text}

    def markdown(self, text: str) -> dict[str, Any]:
        return {"cell_type": "markdown", "id": self._new_id(), "metadata": {}, "source": text}

    def code(self, text: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "id": self._new_id(),
                "metadata": {}, "outputs": [], "source": text}

    def begin_question(self, name: str, points: float) -> None:
        config = {"name": name, "points": _number(points), "all_or_nothing": True}
        self.add(self.raw("# BEGIN QUESTION\n" + _yaml(config)))

    def end_question(self) -> None:
        self.add(self.raw("# END QUESTION"))

    def solution(self, answers: list[Node]) -> None:
        self.add(self.raw("# BEGIN SOLUTION"))
        for answer in answers:
            self.add(_plain_cell(answer, _otter_solution(answer.source, grade_id(answer) or "an answer cell")))
        self.add(self.raw("# END SOLUTION"))

    def tests(self, test: Node, name: str, env_names: set[str], test_defined: set[str]) -> set[str]:
        label = f"test cell {grade_id(test)}"
        text, hidden = split_hidden_tests(test.source)
        lines = text.splitlines()
        visible = "\n".join(line for number, line in enumerate(lines, start=1) if number not in hidden)
        function = re.sub(r"\W", "_", name)
        cases = []
        if _has_code(visible, label):
            cases.append((False, _test_function(visible, f"{function}_visible", label, env_names, test_defined)))
        if hidden and _has_code(text, label):
            cases.append((True, _test_function(text, f"{function}_hidden", label, env_names, test_defined)))
        if not cases:
            raise OtterExportError(f"The {label} has no test code, so it cannot become an otter question.")
        self.add(self.raw("# BEGIN TESTS"))
        for is_hidden, source in cases:
            config = f'""" # BEGIN TEST CONFIG\nhidden: {"true" if is_hidden else "false"}\n""" # END TEST CONFIG\n'
            self.add(self.code(config + source))
        self.add(self.raw("# END TESTS"))
        return _top_level_bindings(ast.parse(text))


def _assignment_config(ps: str) -> str:
    return "\n".join([
        "# ASSIGNMENT CONFIG",
        f"# Made by `autograder export otter {ps}` from source/{ps}/{ps}.ipynb; regenerate it",
        "# instead of editing it. Then: otter assign <this notebook> dist",
        "# The tests call autograder.checks (check_close, test_rng, ...): the grading environment",
        "# needs this course's `autograder` package. `otter run` uses the environment it runs in;",
        "# for `otter grade` or Gradescope, list it under a `requirements:` key (a pip requirement",
        "# for the course repository, or a wheel of it named in `files:`).",
        _yaml({"name": ps}).rstrip("\n"),
        "export_cell:",
        "  pdf: false",
        "solutions_pdf: false",
        "template_pdf: false",
        "tests:",
        "  ok_format: false",
        "  files: false",
        "generate:",
        "  pdf: false",
    ]) + "\n"


def _grading_note(ps: str) -> str:
    return (
        f"*This otter-grader version of {ps} was made from the course's nbgrader notebook. "
        "Its tests use `autograder.checks`, so the environment that runs them, yours and the "
        "grader's, needs the course's `autograder` package installed "
        "(`pip install` the course repository).*"
    )


# --------------------------------------------------------------------------- cells


def _is_test(cell: Node) -> bool:
    meta = nbgrader_metadata(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution") and bool(grade_id(cell))


def _is_answer(cell: Node) -> bool:
    meta = nbgrader_metadata(cell)
    return cell.cell_type == "code" and bool(meta.get("solution")) and not meta.get("grade")


def _refuse_unsupported(cell: Node, number: int) -> None:
    meta = nbgrader_metadata(cell)
    where = f"Cell {number}" + (f" ({grade_id(cell)})" if grade_id(cell) else "")
    if meta.get("task") or (meta.get("solution") and meta.get("grade")) or \
            (meta.get("solution") and cell.cell_type != "code"):
        raise OtterExportError(
            f"{where} is a written or manually graded nbgrader cell (a task, a Markdown answer or an "
            "answer with points); the otter export handles auto-graded problem sets only: code "
            "answer cells, and test cells with points."
        )
    lines = cell.source.splitlines()
    if cell.cell_type == "raw" and lines and _BOUNDARY.match(lines[0]):
        raise OtterExportError(f"{where} is a raw cell that otter-assign would read as one of its "
                               "own boundary cells; remove it or change its first line.")
    if cell.cell_type == "markdown" and any(line.strip() == "```otter" for line in lines):
        raise OtterExportError(f"{where} has an ```otter block, which otter-assign reads as its own "
                               "configuration; use another language name for the block.")
    in_solution = False
    for line_number, line in enumerate(lines, start=1):
        problem = None
        if _is_answer(cell) and (BEGIN_SOLUTION.match(line) or END_SOLUTION.match(line)):
            in_solution = bool(BEGIN_SOLUTION.match(line))  # nbgrader's markers: converted
        elif _IGNORE_LINE.search(line.rstrip()) or _BEGIN_IGNORE.match(line):
            problem = "marks lines to drop (# IGNORE)"
        elif _PLUGIN.search(line):
            problem = "calls a plugin (# BEGIN PLUGIN)"
        elif cell.cell_type == "code" and line.rstrip().endswith("# SEED"):
            problem = "marks seeding lines (# SEED)"
        elif _is_answer(cell) and (
                # inside a solution region every line goes anyway, unless it ends or nests the region
                (in_solution and (line.rstrip().endswith("# END SOLUTION") or re.match(r"\s*# BEGIN SOLUTION", line)))
                or (not in_solution and (_SOLUTION_LINE.match(line)
                                         or any(line.rstrip().endswith(d) for d in _STUDENT_DROPS)))):
            problem = "marks solution lines (# SOLUTION, # BEGIN PROMPT)"
        if problem:
            raise OtterExportError(
                f"{where}, line {line_number} ({line.strip()!r}), looks like an otter-assign directive that "
                f"{problem}; otter would change the cell. Reword that line."
            )


def _plain_cell(cell: Node, source: str | None = None) -> dict[str, Any]:
    """A copy of a cell (with ``source`` if given) for the master notebook, as otter-assign
    should see it."""
    copy = json.loads(json.dumps(cell))
    source = copy.get("source", "") if source is None else source
    # otter-assign drops a cell whose first line starts with "# ignore" (a heading "# Ignore ...",
    # say); a blank first line keeps it and changes nothing the reader sees.
    first = source.split("\n", 1)[0]
    if _IGNORE_CELL.match(first):
        source = "\n" + source
    copy["source"] = source
    if cell.cell_type == "code":
        tags = copy["metadata"].get("tags") or []
        if DISPLAY_ONLY in tags and OTTER_IGNORE not in tags:
            copy["metadata"]["tags"] = [*tags, OTTER_IGNORE]
    return copy


def _otter_solution(source: str, where: str) -> str:
    """An nbgrader answer cell in otter's solution syntax.

    Each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes a ``# BEGIN SOLUTION NO
    PROMPT`` region followed by a prompt block holding nbgrader's stub, at the same indentation:
    otter's student version then has exactly the cell nbgrader's release has.  A cell without
    regions is a solution as a whole, as nbgrader treats it.
    """
    lines = source.split("\n")
    if not any(BEGIN_SOLUTION.match(line) for line in lines):
        lines = ["### BEGIN SOLUTION", *lines, "### END SOLUTION"]
    out: list[str] = []
    indent: str | None = None
    for line in lines:
        if BEGIN_SOLUTION.match(line):
            if indent is not None:
                raise OtterExportError(f"The answer cell {where} has a BEGIN SOLUTION inside another one.")
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}# BEGIN SOLUTION NO PROMPT")
        elif END_SOLUTION.match(line):
            if indent is None:
                raise OtterExportError(f"The answer cell {where} has an END SOLUTION without a BEGIN SOLUTION.")
            out.append(f"{indent}# END SOLUTION")
            out.append(f'{indent}""" # BEGIN PROMPT')
            out.extend(f"{indent}{stub}" for stub in CODE_STUB)
            out.append(f'{indent}"""; # END PROMPT')
            indent = None
        else:
            out.append(line)
    if indent is not None:
        raise OtterExportError(f"The answer cell {where} has a BEGIN SOLUTION without an END SOLUTION.")
    return "\n".join(out)


# --------------------------------------------------------------------------- test functions


def _has_code(source: str, label: str) -> bool:
    return bool(_parse(source, label).body)


def _parse(source: str, label: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as error:
        raise OtterExportError(
            f"The {label} is not plain Python (line {error.lineno}: {error.msg}); otter runs tests "
            "as Python functions, so a test cell cannot use IPython magics or shell lines."
        ) from None


def _test_function(source: str, function: str, label: str, env_names: set[str],
                   test_defined: set[str]) -> str:
    """A test cell for otter: ``def function(<names the code reads from the notebook>):
    <source>``, then a call of it, so that running the master notebook runs the test."""
    tree = _parse(source, label)
    body = _indent(source)
    params = _free_names(f"def {function}():\n{body}\n", tree, label)
    missing = sorted(name for name in params if name in test_defined and name not in env_names)
    if missing:
        raise OtterExportError(
            f"The {label} uses {', '.join(missing)}, which only an earlier test cell defines; otter "
            "runs each test on its own, so define it in this test cell or in a read-only cell."
        )
    if "env" in params:
        raise OtterExportError(f"The {label} reads a variable called env, a name otter reserves for "
                               "the whole environment in test functions; rename it.")
    text = f"def {function}({', '.join(params)}):\n{body}\n"
    wrapped = ast.parse(text).body[0]
    if not isinstance(wrapped, ast.FunctionDef) or \
            ast.dump(ast.Module(body=wrapped.body, type_ignores=[])) != ast.dump(tree):
        raise OtterExportError(f"The {label} changed meaning when moved into a test function.")  # pragma: no cover
    call = f"{function}({', '.join(params)})"
    return f"{text}\n\n{call}"


def _indent(source: str) -> str:
    """``source`` indented by four spaces, except the lines that continue a multi-line string
    token (indenting those would change the string)."""
    keep: set[int] = set()
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ splits f-strings up
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    depth, opened = 0, 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and depth == 0:
            keep.update(range(token.start[0] + 1, token.end[0] + 1))
        elif fstring_start is not None and token.type == fstring_start:
            depth, opened = depth + 1, opened if depth else token.start[0]
        elif fstring_end is not None and token.type == fstring_end:
            depth -= 1
            if depth == 0:
                keep.update(range(opened + 1, token.end[0] + 1))
    lines = source.split("\n")
    return "\n".join(line if (number in keep or not line.strip()) else "    " + line
                     for number, line in enumerate(lines, start=1)).rstrip("\n")


def _free_names(function_source: str, tree: ast.Module, label: str) -> list[str]:
    """The names the test code reads from the notebook: names it uses and never binds, and
    names it may read before binding them (at module level these read the notebook's value)."""
    table = symtable.symtable(function_source, "<test>", "exec").get_children()[0]
    global_names: set[str] = set()
    local_names = {symbol.get_name() for symbol in table.get_symbols() if symbol.is_local()}
    for scope in _scopes(table):
        for symbol in scope.get_symbols():
            if symbol.is_declared_global():
                raise OtterExportError(
                    f"The {label} declares `global {symbol.get_name()}`, which would mean something else "
                    "inside otter's test function; use a plain variable instead."
                )
            if symbol.is_global():
                global_names.add(symbol.get_name())
    early = _ReadsBeforeBinding()
    early.visit(tree)
    builtin_names = set(dir(builtins))
    params = {name for name in global_names if name not in builtin_names}
    params |= {name for name in early.reads & local_names if name not in builtin_names}
    return sorted(name for name in params if not name.startswith("__"))


def _scopes(table: symtable.SymbolTable) -> Iterable[symtable.SymbolTable]:
    yield table
    for child in table.get_children():
        yield from _scopes(child)


class _ReadsBeforeBinding(ast.NodeVisitor):
    """Names the code reads at a point where no earlier statement has bound them, in the
    order the code runs (function bodies run later, so only their defaults count)."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.reads: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id not in self.bound:
                self.reads.add(node.id)
        else:
            self.bound.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name) and node.target.id not in self.bound:
            self.reads.add(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
            self.visit(default)
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                self.visit(decorator)
            self.bound.add(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in [*node.decorator_list, *node.bases, *[k.value for k in node.keywords], *node.body]:
            self.visit(child)
        self.bound.add(node.name)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self.bound.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bound.add(node.name)
        for statement in node.body:
            self.visit(statement)


def _top_level_bindings(tree: ast.Module) -> set[str]:
    """Names a piece of code binds at its top level."""
    table = symtable.symtable(ast.unparse(tree), "<cell>", "exec")
    return {symbol.get_name() for symbol in table.get_symbols()
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()}


def _student_names(cells: list[Node]) -> set[str]:
    """Names the notebook's own code cells (setup, answers, read-only cells) define."""
    names: set[str] = set()
    for cell in cells:
        if cell.cell_type != "code" or _is_test(cell):
            continue
        try:
            names |= _top_level_bindings(ast.parse(cell.source))
        except SyntaxError:
            continue
    return names


# --------------------------------------------------------------------------- YAML


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def _yaml(mapping: dict[str, Any]) -> str:
    """A flat YAML mapping of names, numbers and booleans (all this module writes)."""
    lines = []
    for key, value in mapping.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))  # a JSON string is a YAML string
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"
