"""Grading one notebook: run its cells in the worker, its tests in this (trusted) process.

A test cell is executed here, in a namespace that holds trusted objects (``np`` and the
checks) and, for every other name the cell uses, what the student's namespace holds:
a :class:`~autograder.session.StudentFunction` proxy for a function, a decoded copy for plain
data.  Nothing the student's code does can reach this namespace, so the verdict depends only
on the values the student's functions return.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import autograder
from autograder import checks
from autograder.launcher import LaunchError, Launcher, scratch_area
from autograder.notebook import (CodeStep, NotebookError, SourceNotebook, TestStep, parse_notebook,
                                 read_notebook, restore_instructor_cells)
from autograder.report import ERROR, FAILED, PASSED, TIMEOUT, CellProblem, GradeReport, TestResult
from autograder.session import (Limits, WorkerFailure, StudentError, StudentFunction, WorkerSession,
                                WorkerTimedOut, seconds)

MAX_OUTPUT_CHARS = 5_000


def trusted_namespace() -> dict[str, Any]:
    """What every test cell can use without importing it, all from the grader's own imports:
    ``np`` and the checks, which is what a problem set's setup cell gives its tests in a kernel."""
    namespace: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins, "np": np}
    namespace.update({name: getattr(checks, name) for name in checks.__all__})
    return namespace


def referenced_names(source: str) -> set[str]:
    """Every plain name a piece of code mentions."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


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
        tests = _TestRunner(session, seed, student_cells)
        try:
            session.start()
        except (WorkerFailure, LaunchError) as refusal:  # strict mode, or no worker could start
            session.close()
            return _not_graded(report, source, str(refusal))
        try:
            for step in steps:
                if isinstance(step, TestStep):
                    report.tests.append(tests.run(step))
                    continue
                if not step.source.strip():
                    continue
                outcome = session.run_cell(step.source, step.label)
                if outcome.failure:
                    report.cell_problems.append(CellProblem(step.label, outcome.failure))
                elif outcome.error and step.origin == "student":
                    report.cell_problems.append(CellProblem(step.label, _describe_cell_error(outcome.error)))
        finally:
            session.close()
            report.protections = session.protections
            report.missing_protections = session.missing_protections
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _not_graded(report: GradeReport, source: SourceNotebook, reason: str) -> GradeReport:
    report.status, report.error = "error", reason
    report.tests = [TestResult(test_id, 0.0, source.points(test_id), ERROR, reason) for test_id in source.test_ids]
    return report


def _describe_cell_error(error: dict[str, Any]) -> str:
    if error.get("not_implemented"):
        return "Not answered yet: this cell still raises NotImplementedError."
    message = f"This cell raised {error.get('type')}: {error.get('message')}"
    where = error.get("traceback")
    return f"{message}\n{where}" if where else message


class _TestRunner:
    """Runs test cells in the trusted namespace and turns their outcome into a result."""

    def __init__(self, session: WorkerSession, seed: int, student_cells: dict[str, str]) -> None:
        self._session = session
        self._seed = seed
        self._student_cells = student_cells
        self._namespace = trusted_namespace()
        self._unsupported: dict[str, str] = {}
        self._student_names: dict[str, Any] = {}

    def run(self, step: TestStep) -> TestResult:
        started = time.monotonic()
        result = TestResult(step.grade_id, 0.0, step.points, PASSED)
        self._session.begin_cell()
        if self._session.out_of_time:
            result.status = TIMEOUT
            result.message = "Not run: your notebook used up its total time limit before this test."
            return result
        try:
            namespace = self._namespace_for(step.source)
            code = compile(step.source, f"<test {step.grade_id}>", "exec")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    warnings.catch_warnings(), np.errstate(all="ignore"), checks.seeded(self._seed), \
                    checks.student_code(self._student_cells), checks.collecting_figures() as figures:
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
            result.status, result.message = self._classify(error, step)
            result.diagnosis = getattr(error, "diagnosis", None) if isinstance(error, checks.CheckFailure) else None
        result.output = "".join(self._session.output)[:MAX_OUTPUT_CHARS]
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _namespace_for(self, source: str) -> dict[str, Any]:
        wanted = sorted(referenced_names(source) - set(self._namespace) - set(dir(builtins)))
        student: dict[str, Any] = {}
        if wanted:
            for name, description in self._session.describe(wanted).items():
                kind = description[0] if isinstance(description, list) and description else None
                if kind == "function":
                    student[name] = StudentFunction(self._session, name, name)
                elif kind == "data":
                    student[name] = description[1]
                elif kind == "unsupported":
                    self._unsupported[name] = str(description[1])
        self._student_names = student
        return {**student, **self._namespace}

    def _keep_test_names(self, namespace: dict[str, Any]) -> None:
        # Names a test cell defines stay for later test cells, like in a notebook.
        for name, value in namespace.items():
            if self._student_names.get(name) is not value:
                self._namespace[name] = value

    def _classify(self, error: BaseException, step: TestStep) -> tuple[str, str]:
        failure = self._session.failure
        if isinstance(failure, WorkerTimedOut):
            return TIMEOUT, (f"Your code did not finish within {seconds(self._session.limits.cell_timeout)} "
                             "in this test. Look for a loop that never ends.")
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
                            "Check its spelling, and that its cell runs without errors.")
        return FAILED, (f"The test could not use your result: {type(error).__name__}: {error}. "
                        "Check the type and shape of what your function returns.")


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
