"""Grading one notebook: run its cells in the worker, its tests in this (trusted) process.

A test cell is executed here, in a namespace that holds trusted objects (``np`` and the
checks) and, for every other name the cell uses, what the student's namespace holds:
a :class:`~autograder.grader.session.StudentFunction` proxy for a function, a decoded copy for plain
data.  Nothing the student's code does can reach this namespace, so the verdict depends only
on the values the student's functions return.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import functools
import io
import re
import resource
import signal
import symtable
import threading
import time
import traceback
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import autograder
from autograder import checks, stages
from autograder.grader.launcher import Launcher, LaunchError, scratch_area
from autograder.grader.session import (
    StudentError,
    StudentFunction,
    WorkerFailure,
    WorkerSession,
    WorkerTimedOut,
    bounded,
)
from autograder.notebook import (
    CodeStep,
    NotebookError,
    SourceNotebook,
    TestStep,
    grade_id,
    nbgrader_metadata,
    parse_notebook,
    read_notebook,
    restore_instructor_cells,
    split_hidden_tests,
)
from autograder.report import ERROR, FAILED, PASSED, TIMEOUT, CellProblem, GradeReport, TestResult
from autograder.settings import Limits, seconds
from autograder.wire.messages import ErrorInfo

REPORTED_OUTPUT_CHARS = 5_000
MAX_MESSAGE_CHARS = 4_000
MAX_CELL_PROBLEMS = 20
# What one test cell may make this trusted process do with the data student code returned.
GRADER_MEMORY_PER_TEST = 1024**3
GRADER_GRACE_SECONDS = 2.0


class GraderBudgetExceeded(BaseException):
    """A test cell ran past its time in the grader itself (not while waiting for student code)."""


def _virtual_memory() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


@contextlib.contextmanager
def grader_budget(deadline: float) -> Iterator[None]:
    """Bound what one test cell makes this process do: at most ``GRADER_MEMORY_PER_TEST`` more
    memory (an allocation beyond it raises MemoryError) and, in the main thread, no computing
    past ``deadline`` plus a grace period (an alarm raises :class:`GraderBudgetExceeded`).

    Waiting for student code has its own deadline; this guards the test's own work on what the
    student returned (an enormous array, a matrix that makes a check slow)."""
    limit_now, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft: int | None = limit_now
    try:
        limit = _virtual_memory() + GRADER_MEMORY_PER_TEST
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (OSError, ValueError):
        soft = None  # no /proc, or a limit that cannot be set: the test runs without this guard
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        def out_of_time(*_: object) -> None:
            raise GraderBudgetExceeded()

        previous = signal.signal(signal.SIGALRM, out_of_time)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, deadline - time.monotonic() + GRADER_GRACE_SECONDS))
    try:
        yield
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        if soft is not None:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\b(?:nan|inf)\b")
_MAX_SHOWN_NUMBERS = 6


def without_long_arrays(text: str) -> str:
    """``text`` with every bracketed list of more than six numbers replaced by its length.

    A hidden test's failure goes straight back to the student; printing its inputs in full
    would let a student tabulate them."""
    out, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            if depth == 0:
                out.append(text[start:index])
                start = index
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                group = text[start:index + 1]
                count = len(_NUMBER.findall(group))
                out.append(f"[... {count} numbers ...]" if count > _MAX_SHOWN_NUMBERS else group)
                start = index + 1
    out.append(text[start:])
    return "".join(out)


def trusted_namespace() -> dict[str, Any]:
    """What every test cell can use without importing it, all from the grader's own imports:
    ``np`` and the checks, which is what a problem set's setup cell gives its tests in a kernel."""
    namespace: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins, "np": np}
    namespace.update({name: getattr(checks, name) for name in checks.__all__})
    return namespace


def referenced_names(source: str) -> frozenset[str]:
    """Every plain name a piece of code mentions."""
    return _referenced_names(source)


@functools.lru_cache(maxsize=1024)
def _referenced_names(source: str) -> frozenset[str]:
    # Test cells are the instructor's, the same for every student: parse each once per process.
    return frozenset(node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name))


def _global_reads_and_binds(table: symtable.SymbolTable) -> tuple[set[str], set[str]]:
    reads: set[str] = set()
    binds: set[str] = set()
    module = table.get_type() == "module"
    for symbol in table.get_symbols():
        name = symbol.get_name()
        if module:
            if symbol.is_referenced():
                reads.add(name)
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace():
                binds.add(name)
        elif symbol.is_global():
            if symbol.is_referenced():
                reads.add(name)
            if symbol.is_declared_global() and symbol.is_assigned():
                binds.add(name)
    for child in table.get_children():
        inner_reads, inner_binds = _global_reads_and_binds(child)
        reads |= inner_reads
        binds |= inner_binds
    return reads, binds


def unsafe_test_names(source: SourceNotebook) -> list[str]:
    """Sentences for the instructor, one per name a test cell reads that only a read-only cell
    defines (empty when the test cells are safe).

    A test cell runs in the grader; a name it does not define itself is looked up in the
    student's process, where the student could have rebound it.  So a test cell may read only
    ``np`` and the checks, what test cells define, and what the answer cells' solutions define."""
    trusted = set(trusted_namespace()) | set(dir(builtins))
    defined_by_tests: set[str] = set()
    problems = []
    for cell in source.cells:
        meta = nbgrader_metadata(cell)
        test_id = grade_id(cell)
        if not meta.get("grade") or meta.get("solution") or not test_id:
            continue
        text, _ = split_hidden_tests(cell.source)
        try:
            reads, binds = _global_reads_and_binds(symtable.symtable(text, f"<test {test_id}>", "exec"))
        except SyntaxError as error:
            problems.append(f"test cell {test_id} of {source.name} is not valid Python (line {error.lineno}).")
            continue
        outside = sorted(reads - binds - trusted - defined_by_tests - source.answer_names)
        for name in outside:
            problems.append(
                f"test cell {test_id} of {source.name} reads `{name}`, which no test cell or answer cell "
                "defines: it would be looked up in the student's process, where the student can rebind it. "
                "Define it in the test cell (or an earlier one), or import it there.")
        defined_by_tests |= binds
    return problems


@functools.lru_cache(maxsize=1024)
def _compiled(source: str, name: str) -> types.CodeType:
    """A test cell's code, compiled once per process (a batch grades the same cells again and again)."""
    return compile(source, name, "exec")


def grade_notebook(
    source: SourceNotebook,
    submission: Path | bytes,
    *,
    notebook_name: str | None = None,
    student: str | None = None,
    seed: int = 0,
    limits: Limits = Limits(),
    launcher: Launcher | None = None,
) -> GradeReport:
    """Grade one submitted notebook against the instructor's source notebook.

    ``submission`` is a notebook file the caller trusts, or the bytes of a hand-in (read with
    :meth:`autograder.batch.Submission.read`) whose file name is ``notebook_name``.  Pass a
    :class:`Launcher` to share one warm worker template across many notebooks.
    """
    started = time.monotonic()
    name = notebook_name or (submission.name if isinstance(submission, Path) else f"{source.name}.ipynb")
    report = GradeReport(assignment=source.name, notebook=str(submission) if isinstance(submission, Path) else name,
                         student=student, seed=seed, engine=f"autograder {autograder.__version__}")
    try:
        with stages.stage("parse the notebook"):
            notebook = read_notebook(submission) if isinstance(submission, Path) else parse_notebook(submission, name)
            steps = restore_instructor_cells(source, notebook)
    except NotebookError as error:
        return _not_graded(report, source, str(error))

    with contextlib.ExitStack() as stack:
        if launcher is None:
            launcher = stack.enter_context(Launcher())
        session = WorkerSession(stack.enter_context(scratch_area()), launcher, limits)
        student_cells = {step.label: step.source for step in steps
                         if isinstance(step, CodeStep) and step.origin == "student"}
        tests = _TestRunner(session, seed, student_cells, source.answer_names, dict(source.titles))
        try:
            with stages.stage("start a worker (fork, confine)"):
                session.start()
        except (WorkerFailure, LaunchError) as refusal:  # strict mode, or no worker could start
            session.close()
            return _not_graded(report, source, str(refusal))
        try:
            for step in steps:
                if isinstance(step, TestStep):
                    with stages.stage("test cells"):
                        report.tests.append(tests.run(step))
                    continue
                if not step.source.strip():
                    continue
                with stages.stage(f"{step.origin} cells"):
                    outcome = session.run_cell(step.source, step.label)
                if outcome.failure:
                    report.cell_problems.append(CellProblem(step.label, outcome.failure))
                elif outcome.error and step.origin == "student":
                    report.cell_problems.append(CellProblem(step.label, _describe_cell_error(outcome.error)))
            if len(report.cell_problems) > MAX_CELL_PROBLEMS:
                more = len(report.cell_problems) - MAX_CELL_PROBLEMS
                report.cell_problems[MAX_CELL_PROBLEMS:] = [CellProblem(
                    "(more cells)", f"{more} more cells failed; fix the ones above first.")]
        finally:
            with stages.stage("stop the worker"):
                session.close()
            report.protections = session.protections
            report.missing_protections = session.missing_protections
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _not_graded(report: GradeReport, source: SourceNotebook, reason: str) -> GradeReport:
    report.status, report.error = "error", reason
    report.tests = [TestResult(test_id, 0.0, source.points(test_id), ERROR, reason, title=source.title(test_id))
                    for test_id in source.test_ids]
    return report


def not_graded(source: SourceNotebook, reason: str, *, notebook: str, student: str | None = None,
               seed: int | None = None) -> GradeReport:
    """The report of a notebook that could not be graded: every test at 0 with ``reason``."""
    report = GradeReport(assignment=source.name, notebook=notebook, student=student, seed=seed,
                         engine=f"autograder {autograder.__version__}")
    return _not_graded(report, source, reason)


def _describe_cell_error(error: ErrorInfo) -> str:
    if error.not_implemented:
        return "Not answered yet: this cell still raises NotImplementedError."
    message = f"This cell raised {error.type}: {error.message}"
    return f"{message}\n{error.traceback}" if error.traceback else message


class _TestRunner:
    """Runs test cells in the trusted namespace and turns their outcome into a result."""

    def __init__(self, session: WorkerSession, seed: int, student_cells: dict[str, str],
                 answer_names: frozenset[str], titles: dict[str, str]) -> None:
        self._session = session
        self._titles = titles
        self._answer_names = answer_names
        self._seed = seed
        self._student_cells = student_cells
        self._namespace = trusted_namespace()
        self._unsupported: dict[str, str] = {}
        self._student_names: dict[str, Any] = {}

    def run(self, step: TestStep) -> TestResult:
        started = time.monotonic()
        result = TestResult(step.grade_id, 0.0, step.points, PASSED, title=self._titles.get(step.grade_id, ""))
        self._session.begin_cell()
        if self._session.out_of_time:
            result.status = TIMEOUT
            result.message = "Not run: your notebook used up its total time limit before this test."
            return result
        try:
            namespace = self._namespace_for(step.source)
            code = _compiled(step.source, f"<test {step.grade_id}>")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    warnings.catch_warnings(), np.errstate(all="ignore"), checks.seeded(self._seed), \
                    checks.student_code(self._student_cells), checks.collecting_figures() as figures, \
                    grader_budget(self._session.deadline):
                warnings.simplefilter("ignore")
                try:
                    exec(code, namespace)  # noqa: S102 - instructor test code, in the trusted process
                finally:
                    result.figures = figures
            self._keep_test_names(namespace)
            result.points = step.points
        except BaseException as error:  # noqa: BLE001 - every failure becomes a result
            if isinstance(error, KeyboardInterrupt):
                raise
            if isinstance(error, (GraderBudgetExceeded, MemoryError)):
                # It may have struck in the middle of a request: that worker cannot be trusted
                # to be in step any more; the next cell starts a fresh one.
                self._session.discard_worker()
            result.status, result.message = self._classify(error, step)
            result.diagnosis = getattr(error, "diagnosis", None) if isinstance(error, checks.CheckFailure) else None
            result.hidden = _failed_on_hidden_line(error, step)
            if result.hidden:
                result.message = without_long_arrays(result.message)
            result.message = bounded(result.message, MAX_MESSAGE_CHARS)
        result.output = "".join(self._session.output)[:REPORTED_OUTPUT_CHARS]
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _namespace_for(self, source: str) -> dict[str, Any]:
        # Only names the answer cells define come from the student's process: anything a
        # read-only cell binds there could have been rebound by the student (the course's test
        # cells are checked for this when it is loaded, see check_test_names).
        wanted = sorted((referenced_names(source) & self._answer_names) - set(self._namespace))
        student: dict[str, Any] = {}
        if wanted:
            described = self._session.describe(wanted)
            for name in wanted:
                description = described.get(name)
                if not isinstance(description, list) or not description:
                    continue
                kind = description[0]
                if kind == "function":
                    student[name] = StudentFunction(self._session, name, name)
                elif kind == "data":
                    student[name] = description[1]
                elif kind == "unsupported" and len(description) > 1:
                    self._unsupported[name] = bounded(description[1], 100)
        self._student_names = student
        return {**student, **self._namespace}

    def _keep_test_names(self, namespace: dict[str, Any]) -> None:
        # Names a test cell defines stay for later test cells, like in a notebook.
        for name, value in namespace.items():
            if self._student_names.get(name) is not value:
                self._namespace[name] = value

    def _classify(self, error: BaseException, step: TestStep) -> tuple[str, str]:
        if isinstance(error, GraderBudgetExceeded):
            return ERROR, ("This test was stopped: checking what your function returned kept the grader busy "
                           f"for more than {seconds(self._session.limits.cell_timeout)}. Check the size and "
                           "shape of what your function returns.")
        if isinstance(error, MemoryError) and self._session.failure is None:
            return ERROR, ("This test was stopped: checking what your function returned needed more than "
                           f"{GRADER_MEMORY_PER_TEST // 2**30} GiB of memory in the grader. Check the size and "
                           "shape of what your function returns.")
        failure = self._session.failure
        if isinstance(failure, WorkerTimedOut):
            return TIMEOUT, (f"Your code did not finish within {seconds(self._session.limits.cell_timeout)} "
                             f"in this test. {failure.advice}")
        if failure is not None:
            return ERROR, f"{failure} This happened while this test called your code."
        if isinstance(error, StudentError):
            return FAILED, _student_error_message(error)
        if isinstance(error, AssertionError):
            text = str(error).strip()
            return FAILED, text or _failed_line(error, step)
        if isinstance(error, NameError):
            name = getattr(error, "name", None) or str(error)
            if name in self._unsupported:
                return FAILED, (f"The test needs `{name}`, but it is {self._unsupported[name]}, "
                                "which the grader cannot read. Use numbers, arrays or lists.")
            return FAILED, (f"The test uses `{name}`, which your notebook does not define. "
                            + _defined_instead(name, self._student_cells))
        return FAILED, (f"The test could not use your result: {type(error).__name__}: {error}. "
                        "Check the type and shape of what your function returns.")


def _defined_instead(name: str, student_cells: dict[str, str]) -> str:
    """What to say about a name the tests need and the notebook lacks: the name the student's
    answer cells define instead, when one is close (a renamed function)."""
    defined: set[str] = set()
    for source in student_cells.values():
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    close = difflib.get_close_matches(name, sorted(defined), n=1, cutoff=0.6)
    if close:
        return (f"Your notebook defines `{close[0]}` instead: keep the name `{name}` that the exercise gives "
                "(the tests call the function by that name).")
    return "Check its spelling, and that its cell runs without errors."


def _student_error_message(error: StudentError) -> str:
    if error.type == "UnsendableResult":
        return f"{error.function} returned something the grader cannot read: {error.message}."
    if error.not_implemented:
        return f"{error.function} is not implemented yet: it still raises NotImplementedError."
    message = f"{error.function} raised {error.type}: {error.message}"
    if error.student_traceback:
        message += f"\n{error.student_traceback}"
    return message


def _failed_line(error: BaseException, step: TestStep) -> str:
    """For an assert without a message: quote the line if it is a visible test."""
    filename = f"<test {step.grade_id}>"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    if frames:
        lineno = frames[-1].lineno or 0
        if lineno not in step.hidden_lines:
            lines = step.source.splitlines()
            if 0 < lineno <= len(lines):
                return f"This check failed: {lines[lineno - 1].strip()}"
    return "A hidden test failed. Check your function on other inputs than the visible tests use."


def _failed_on_hidden_line(error: BaseException, step: TestStep) -> bool:
    """Whether the test cell's line that failed is one of its hidden lines."""
    filename = f"<test {step.grade_id}>"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    return bool(frames) and (frames[-1].lineno or 0) in step.hidden_lines
