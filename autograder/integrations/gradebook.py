"""Our grades in nbgrader's gradebook, so nbgrader's own tools work on them.

After a batch, every student's scores and comments are in the gradebook (through nbgrader's
``Gradebook`` API and its tables, so any ``db_url`` nbgrader accepts works: a first submission's
rows are inserted many students at a time, the rest through nbgrader's objects), and the graded
notebook is in
``autograded/<student>/<ps>/<ps>.ipynb``.  ``nbgrader export``, formgrader's manual grading and
``nbgrader generate_feedback`` then work as if ``nbgrader autograde`` had run, with two
differences that are on purpose:

* the hidden tests' code is not in the autograded notebook (only the verdict is), so feedback
  made from it cannot show a student the hidden tests;
* a notebook that could not be graded (corrupt, the wrong problem set) still gets a row: zero
  points, the reason as the comment, and "needs manual grade" so formgrader shows it to you.

Submission times come from ``submitted/<student>/<ps>/timestamp.txt`` (what ``nbgrader collect``
writes) and the due date from the gradebook (``nbgrader db assignment add PS --duedate ...``);
the late penalty is nbgrader's configured ``LateSubmissionPlugin``.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder import stages
from autograder.batch import TIMESTAMP_FILE, Submission
from autograder.course import Course
from autograder.errors import AutograderError
from autograder.notebook import (
    NotebookError,
    SourceNotebook,
    grade_id,
    nbgrader_metadata,
    parse_notebook,
    read_notebook,
    split_hidden_tests,
    strip_solution_markers,
)
from autograder.report import PASSED, FinalScore, GradeReport


class GradebookError(AutograderError):
    """The gradebook cannot be opened or written; the message says what to do."""


@dataclass(frozen=True)
class GradebookTarget:
    """Where grades go: the database and the ``autograded`` folder."""

    db_url: str
    autograded: Path
    course_id: str

    @classmethod
    def for_course(cls, course: Course, submitted: Path, db_url: str | None = None) -> GradebookTarget:
        """nbgrader's settings from the course's ``nbgrader_config.py``.

        The gradebook and ``autograded/`` sit beside ``submitted/`` (the course folder, unless
        ``--submitted`` points elsewhere), as nbgrader lays them out; an explicit
        ``CourseDirectory.db_url`` in the configuration, or ``db_url``, names another database.
        """
        config = course.config().get("CourseDirectory", {})
        root = submitted.resolve().parent
        url = db_url or config.get("db_url") or f"sqlite:///{root / 'gradebook.db'}"
        autograded = root / config.get("autograded_directory", "autograded")
        return cls(url, autograded, str(config.get("course_id") or "default_course"))


def _nbgrader_on_path() -> None:
    """nbgrader runs its tools (``alembic``) by name; they live beside this interpreter."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def register_assignment(course: Course, ps: str, target: GradebookTarget) -> None:
    """Record the problem set's notebook, grade cells and solution cells in the gradebook, with
    nbgrader's own ``generate_assignment`` (into a scratch folder; ``release/`` is untouched)."""
    from autograder.release import ReleaseError, generate_release

    _nbgrader_on_path()
    with tempfile.TemporaryDirectory(prefix="autograder-register-") as scratch:
        try:
            generate_release(course, ps, Path(scratch), db_url=target.db_url)
        except ReleaseError as error:
            reasons = re.findall(r"^\s*\w*(?:Error|Exception): (.+)$", str(error), flags=re.M)
            reason = (reasons[-1] if reasons else str(error).strip().splitlines()[-1]).rstrip(".")
            raise GradebookError(
                f"nbgrader could not record this version of {ps} in the gradebook {target.db_url}: {reason}. "
                "nbgrader keeps a problem set's graded cells fixed once it has submissions: restore the "
                "cells' ids, or remove the old grades with `nbgrader db assignment remove "
                f"{ps} --force` and grade again (or grade with --no-gradebook)."
            ) from None


def _import_nbgrader() -> None:
    """Import nbgrader's gradebook without the parts of its import time nothing here uses.

    - jsonschema (through nbformat) compiles a grammar for checking IRIs when the optional
      ``rfc3987-syntax`` package is installed, which was half of nbgrader's import time.
    - nbgrader's package ``__init__`` imports its Jupyter server extensions (and with them its
      exchange, its apps and nbconvert: a third of a second of CPU) only to offer
      their entry points to a Jupyter server.  Where nbgrader is not imported yet, its package is
      set up as that ``__init__`` would leave it for everything else (``__version__`` included)
      without running it; its submodules (the gradebook, its apps, its preprocessors) import as
      usual.  A Jupyter server loads nbgrader's extensions in a process of its own."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    if "nbgrader" not in sys.modules:
        spec = importlib.util.find_spec("nbgrader")
        if spec is not None and spec.submodule_search_locations is not None:
            package = importlib.util.module_from_spec(spec)
            sys.modules["nbgrader"] = package
            try:
                from nbgrader._version import __version__

                package.__version__ = __version__  # type: ignore[attr-defined]
            except BaseException:
                sys.modules.pop("nbgrader", None)
                raise
    import nbgrader.api  # noqa: F401


class GradebookWriter:
    """Writes reports to the gradebook as they arrive; one open session for a whole batch.

    With ``batch=True`` the rows of several students go into one transaction (committed every
    ``COMMIT_EVERY`` students or ``COMMIT_SECONDS``, and when the writer closes): a commit per
    student is most of the cost of writing a gradebook.  A killed batch then loses at most the
    last uncommitted students' rows, whose reports are on disk: the next ``autograder grade``
    records them.  Without it (the service), each student's rows are committed at once."""

    COMMIT_EVERY = 50
    COMMIT_SECONDS = 1.0

    def __init__(self, course: Course, ps: str, target: GradebookTarget, *, batch: bool = False) -> None:
        self.course = course
        self.ps = ps
        self.target = target
        self.batch = batch
        self.warnings: list[str] = []
        self._gradebook: Any = None
        self._plugin: Any = None  # nbgrader's late-submission plugin, made when a due date needs it
        self._pending: list[tuple[GradeReport, str]] = []  # recorded, not yet committed
        self._new_rows = _NewRows()  # first submissions' rows, inserted at the next commit
        self._added_students: set[str] = set()  # students added in the open transaction
        self._last_commit = time.monotonic()
        self._source = read_notebook(course.source_notebook(ps))
        self._tests = SourceNotebook.load(course.source_notebook(ps))
        self._answer_of_test = _answer_cell_of_each_test(self._source)

    # Session ------------------------------------------------------------------------------
    def __enter__(self) -> GradebookWriter:
        with stages.stage("gradebook: import nbgrader, open"):
            return self._open()

    def _open(self) -> GradebookWriter:
        _import_nbgrader()
        from nbgrader.api import Gradebook, MissingEntry

        logging.getLogger("traitlets").setLevel(logging.WARNING)
        _nbgrader_on_path()  # a new gradebook is set up with alembic
        try:
            if not self._registered(Gradebook, MissingEntry):
                register_assignment(self.course, self.ps, self.target)
            self._gradebook = Gradebook(self.target.db_url, self.target.course_id)
            notebook = self._gradebook.find_notebook(self.ps, self.ps)
            self._notebook_id = notebook.id
            cells = [*notebook.grade_cells, *notebook.solution_cells, *notebook.task_cells]
            self._cell_names = {cell.id: cell.name for cell in cells}
            self._students = {student.id for student in self._gradebook.students}
            self._layout = _AssignmentLayout.of(self._gradebook, self.ps)
        except GradebookError:
            raise
        except Exception as error:  # noqa: BLE001 - any database failure becomes one sentence
            raise GradebookError(
                f"The gradebook {self.target.db_url} could not be opened: {error}. "
                "Check CourseDirectory.db_url in nbgrader_config.py, or grade with --no-gradebook."
            ) from error
        # Without a due date nobody is late: nbgrader's preprocessors (and nbconvert, a fifth of
        # a second to import) are left out.
        self._plugin = self._late_plugin() if self._layout.duedate is not None else None
        return self

    def _late_plugin(self) -> Any:
        """nbgrader's configured late-submission plugin (c.AssignLatePenalties.plugin_class,
        c.LateSubmissionPlugin.*)."""
        from nbgrader.preprocessors import AssignLatePenalties

        assigner = AssignLatePenalties(config=self.course.config())
        assigner.init_plugin()
        return assigner.plugin_inst

    def __exit__(self, *exc: object) -> None:
        if self._gradebook is not None:
            try:
                with stages.stage("gradebook rows"):
                    self.commit()  # also after an interrupt: those students' reports are written
            finally:
                self._gradebook.close()
                self._gradebook = None

    def commit(self) -> None:
        """Commit the students recorded so far.  When the transaction fails as a whole, each of
        them is recorded again on its own, so that one bad row costs only its student."""
        pending, self._pending = self._pending, []
        self._last_commit = time.monotonic()
        if not pending:
            return
        try:
            self._new_rows.insert(self._gradebook.db)
            self._gradebook.db.commit()
            self._added_students.clear()
        except Exception:  # noqa: BLE001 - any database failure: retry student by student
            self._rollback()
            for report, student in pending:
                self._record_alone(report, student)

    def _rollback(self) -> None:
        """Undo the open transaction, the rows waiting for it and the students it added."""
        self._gradebook.db.rollback()
        self._new_rows.clear()
        self._students -= self._added_students
        self._added_students.clear()

    def _registered(self, gradebook_class: Any, missing: type[Exception]) -> bool:
        """Whether the gradebook knows this problem set's notebook and every graded cell, with
        its current points."""
        wanted = {test_id: self._tests.points(test_id) for test_id in self._tests.test_ids}
        with gradebook_class(self.target.db_url, self.target.course_id) as gradebook:
            try:
                notebook = gradebook.find_notebook(self.ps, self.ps)
            except missing:
                return False
            known = {cell.name: cell.max_score for cell in notebook.grade_cells}
            return all(name in known and float(known[name]) == points for name, points in wanted.items())

    # Writing ------------------------------------------------------------------------------
    def record(self, report: GradeReport, submission: Submission) -> None:
        """Scores, comments, the submission time and the late penalty of one student, and the
        autograded notebook.  Recording the same report again changes nothing.

        A student whose rows cannot be written is a warning, not the end of the batch: the
        report is on disk, and the next run records it."""
        student = submission.student
        with stages.stage("gradebook rows"):
            if not self._record(report, student):
                return
        try:
            with stages.stage("autograded notebooks"):
                self._write_autograded(report, submission)
        except OSError as error:
            self.warnings.append(f"{student}: the autograded notebook could not be written: {error}")

    def _record(self, report: GradeReport, student: str) -> bool:
        """Record one student in the open transaction (committing it when it is due); whether
        the rows are written."""
        if not self.batch:
            return self._record_alone(report, student)
        try:
            if student in self._layout.submitted:
                self._record_rows(report, student)
            else:  # a first submission: its rows wait for the commit, with other students'
                self._add_new_rows(report, student)
        except Exception:  # noqa: BLE001 - the transaction is lost: record its students one by one
            self._rollback()
            pending, self._pending = self._pending, []
            for earlier, name in pending:
                self._record_alone(earlier, name)
            return self._record_alone(report, student)
        self._pending.append((report, student))
        if len(self._pending) >= self.COMMIT_EVERY or time.monotonic() - self._last_commit >= self.COMMIT_SECONDS:
            self.commit()
        return True

    def _record_alone(self, report: GradeReport, student: str) -> bool:
        """Record one student in a transaction of its own; a failure is a warning for that student."""
        try:
            self._record_rows(report, student)
            self._gradebook.db.commit()
        except Exception as error:  # noqa: BLE001 - any database failure, for this student only
            self._rollback()  # so that the next student's rows can be written
            self.warnings.append(f"{student}: not recorded in the gradebook: {error}")
            return False
        return True

    def _submission(self, student: str, timestamp: Any) -> Any:
        """The student's submission of this problem set, made (with a row for each graded cell
        and comment, as nbgrader's ``add_submission`` makes them) if there is none.  Unlike
        nbgrader's ``update_or_create_submission``, this does not commit."""
        from nbgrader.api import Comment, Grade, MissingEntry, SubmittedAssignment, SubmittedNotebook

        gradebook = self._gradebook
        try:
            submission = gradebook.find_submission(self.ps, student)
        except MissingEntry:
            assignment = gradebook.find_assignment(self.ps)
            submission = SubmittedAssignment(assignment=assignment, student=gradebook.find_student(student))
            for notebook in assignment.notebooks:
                submitted = SubmittedNotebook(notebook=notebook, assignment=submission)
                for cell in notebook.grade_cells:
                    Grade(cell_id=cell.id, notebook=submitted)
                for cell in notebook.solution_cells:
                    Comment(cell_id=cell.id, notebook=submitted)
                for cell in notebook.task_cells:
                    Comment(cell_id=cell.id, notebook=submitted)
                    Grade(cell_id=cell.id, notebook=submitted)
            gradebook.db.add(submission)
        if timestamp is not None:
            submission.timestamp = timestamp
        return submission

    def _record_rows(self, report: GradeReport, student: str) -> None:
        """The student's rows through nbgrader's objects (several times slower to make and to
        flush than :meth:`_add_new_rows`' inserts, and able to update rows that exist)."""
        self._new_rows.insert(self._gradebook.db)  # a student recorded twice finds the first rows
        gradebook = self._gradebook
        if student not in self._students:  # not on the roster when the gradebook was opened
            from nbgrader.api import Student

            if gradebook.db.get(Student, student) is None:  # added in this transaction, not committed
                gradebook.db.add(Student(id=student))
                gradebook.db.flush()
        timestamp = self._timestamp(report.submitted_at, student)
        # A new submission's rows are built before they join the session; flushing half-built
        # rows on the way only makes SQLAlchemy warn.
        with gradebook.db.no_autoflush:
            submission = self._submission(student, timestamp)
        notebook = next(nb for nb in submission.notebooks if nb.notebook.id == self._notebook_id)
        graded = report.status == "graded"
        results = {test.id: test for test in report.tests}
        score = 0.0
        for grade in notebook.grades:
            result = results.get(self._cell_names.get(grade.cell_id, ""))
            if result is None:
                # A cell we do not grade (a written answer): formgrader asks a person.
                grade.needs_manual_grade = grade.manual_score is None
            else:
                grade.auto_score = result.points
                # As nbgrader does: a score someone already overrode is flagged for review again;
                # and so is a hand-in graded with a note (one of several notebooks).
                grade.needs_manual_grade = grade.manual_score is not None or not graded or bool(report.notes)
            kept = grade.manual_score if grade.manual_score is not None else grade.auto_score
            score += kept or 0.0
        for comment in notebook.comments:
            comment.auto_comment = self._comment(self._cell_names.get(comment.cell_id), report)
        notebook.late_submission_penalty = self._late_penalty(student, score, submission.total_seconds_late)
        # What nbgrader export will say, for every output we write (see GradeReport.final): the
        # sums nbgrader's gradebook makes in SQL, made here from the rows just set, so that the
        # rows go to the database with the transaction's others (one flush for many students).
        grades = [grade for each in submission.notebooks for grade in each.grades]
        raw_score = math.fsum(_nbgrader_grade_score(grade) for grade in grades)
        report.final = FinalScore(
            raw_score=raw_score,
            late_penalty=math.fsum(float(each.late_submission_penalty or 0.0) for each in submission.notebooks),
            manual_adjustment=raw_score - report.score,
            needs_manual_grade=any(grade.needs_manual_grade for grade in grades))

    def _add_new_rows(self, report: GradeReport, student: str) -> None:
        """A first submission's rows, as :meth:`_submission` and :meth:`_record_rows` would make
        them with nbgrader's objects: the same columns, the same values, the same final score.
        They are inserted, many students at once, by :meth:`commit`."""
        from nbgrader.api import new_uuid

        layout, rows = self._layout, self._new_rows
        timestamp = self._timestamp(report.submitted_at, student)
        seconds_late = 0.0 if timestamp is None or layout.duedate is None else \
            max(0.0, (timestamp - layout.duedate).total_seconds())
        graded = report.status == "graded"
        results = {test.id: test for test in report.tests}
        if student not in self._students:  # not on the roster: added, as nbgrader's autograde adds them
            rows.students.append({"id": student, "first_name": None, "last_name": None, "email": None,
                                  "lms_user_id": None})
            self._students.add(student)
            self._added_students.add(student)
        submission_id = new_uuid()
        rows.submissions.append({"id": submission_id, "assignment_id": layout.assignment_id, "student_id": student,
                                 "timestamp": timestamp, "extension": None})
        scores: list[float] = []
        penalties: list[float] = []
        needs_manual = False
        for notebook_id, grade_cells, comment_cells in layout.notebooks:
            ours = notebook_id == self._notebook_id
            submitted_id = new_uuid()
            score = 0.0
            for cell_id in grade_cells:
                result = results.get(self._cell_names.get(cell_id, "")) if ours else None
                if result is None:  # a cell we do not grade: formgrader asks a person
                    auto, manual = None, True
                else:
                    auto, manual = result.points, not graded or bool(report.notes)
                rows.grades.append({"id": new_uuid(), "notebook_id": submitted_id, "cell_id": cell_id,
                                    "auto_score": auto, "manual_score": None, "extra_credit": None,
                                    "needs_manual_grade": manual})
                score += auto or 0.0
                scores.append(float(auto or 0.0))
                needs_manual = needs_manual or manual
            for cell_id in comment_cells:
                rows.comments.append({"id": new_uuid(), "notebook_id": submitted_id, "cell_id": cell_id,
                                      "auto_comment": self._comment(self._cell_names.get(cell_id), report) if ours else None,
                                      "manual_comment": None})
            penalty = self._late_penalty(student, score, seconds_late) if ours else None
            penalties.append(float(penalty or 0.0))
            rows.notebooks.append({"id": submitted_id, "assignment_id": submission_id, "notebook_id": notebook_id,
                                   "flagged": False, "late_submission_penalty": penalty})
        layout.submitted.add(student)
        raw_score = math.fsum(scores)
        report.final = FinalScore(raw_score=raw_score, late_penalty=math.fsum(penalties),
                                  manual_adjustment=raw_score - report.score, needs_manual_grade=needs_manual)

    def _timestamp(self, text: str | None, student: str) -> Any:
        """The submission time of ``timestamp.txt`` (read with the hand-in, never by path here)."""
        from nbgrader.utils import parse_utc

        if not text:
            return None
        try:
            return parse_utc(text)
        except (ValueError, OverflowError):
            self.warnings.append(f"{student}: {TIMESTAMP_FILE} does not hold a date ({text[:40]!r}); "
                                 "graded as submitted on time.")
            return None

    def _late_penalty(self, student: str, score: float, seconds_late: float) -> float | None:
        """nbgrader's configured late-submission plugin decides the penalty, as in autograde."""
        if seconds_late <= 0:
            return None
        if self._plugin is None:  # the due date was set while this batch ran
            self._plugin = self._late_plugin()
        penalty = self._plugin.late_submission_penalty(student, score, seconds_late)
        return None if penalty is None else min(max(penalty, 0), score)

    def _comment(self, answer_id: str | None, report: GradeReport) -> str | None:
        return answer_comment(self._answer_of_test, answer_id, report)

    def _write_autograded(self, report: GradeReport, submission: Submission) -> None:
        target = self.target.autograded / submission.student / self.ps
        target.mkdir(parents=True, exist_ok=True)
        notebook = autograded_notebook(self._source, report, _submitted_answers(submission))
        temporary = target / f".{self.ps}.ipynb.tmp"
        # Valid nbformat 4 by construction (tests/test_gradebook.py validates it), without
        # importing and running nbformat's validator per student; compact, which is several
        # times quicker to write than nbformat's indented layout and reads the same.
        temporary.write_text(json.dumps(notebook, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        temporary.replace(target / f"{self.ps}.ipynb")
        if report.submitted_at:
            (target / TIMESTAMP_FILE).write_text(report.submitted_at[:200] + "\n", encoding="utf-8")


@dataclass
class _AssignmentLayout:
    """What a first submission's rows need to know of the problem set in the gradebook."""

    assignment_id: str
    duedate: Any
    notebooks: list[tuple[str, list[str], list[str]]]  # notebook id, its graded cells, its commented cells
    submitted: set[str]  # the students who have a submission already

    @classmethod
    def of(cls, gradebook: Any, ps: str) -> _AssignmentLayout:
        from nbgrader.api import SubmittedAssignment

        assignment = gradebook.find_assignment(ps)
        # In the order nbgrader's add_submission makes them: grade cells, solution cells, task cells.
        notebooks = [(notebook.id, [cell.id for cell in [*notebook.grade_cells, *notebook.task_cells]],
                      [cell.id for cell in [*notebook.solution_cells, *notebook.task_cells]])
                     for notebook in assignment.notebooks]
        query = gradebook.db.query(SubmittedAssignment.student_id).filter(
            SubmittedAssignment.assignment_id == assignment.id)
        return cls(assignment.id, assignment.duedate, notebooks, {student for (student,) in query})


@dataclass
class _NewRows:
    """First submissions' rows, waiting for the commit: inserted table by table, many at once."""

    students: list[dict[str, Any]] = field(default_factory=list)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    notebooks: list[dict[str, Any]] = field(default_factory=list)
    grades: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)

    def insert(self, session: Any) -> None:
        """Insert them in the session's transaction (parents first), and forget them."""
        from nbgrader.api import Comment, Grade, Student, SubmittedAssignment, SubmittedNotebook
        from sqlalchemy import insert

        for model, rows in ((Student, self.students), (SubmittedAssignment, self.submissions), (SubmittedNotebook, self.notebooks),
                            (Grade, self.grades), (Comment, self.comments)):
            if rows:
                session.execute(insert(model.__table__), rows)
        self.clear()

    def clear(self) -> None:
        self.students, self.submissions, self.notebooks, self.grades, self.comments = [], [], [], [], []


def _nbgrader_grade_score(grade: Any) -> float:
    """A grade's score as nbgrader's gradebook defines it in SQL (``Grade.score``): the manual
    score if there is one, else the automatic one, plus any extra credit; 0 if neither."""
    base = grade.manual_score if grade.manual_score is not None else grade.auto_score
    if base is None:
        return 0.0
    return float(base) + float(grade.extra_credit or 0.0)


def _answer_cell_of_each_test(source: Any) -> dict[str, str]:
    """Each test cell's answer cell: the nearest answer cell above it."""
    owner: dict[str, str] = {}
    current: str | None = None
    for cell in source.cells:
        meta = nbgrader_metadata(cell)
        cell_id = grade_id(cell)
        if meta.get("solution") and cell_id:
            current = cell_id
        elif meta.get("grade") and cell_id and current is not None:
            owner[cell_id] = current
    return owner


def _submitted_answers(submission: Submission) -> dict[str, str]:
    """The student's answer cells, by id (empty when there is no readable notebook)."""
    hand_in = submission.read()
    if isinstance(hand_in, str):
        return {}
    try:
        notebook = parse_notebook(hand_in.notebook, hand_in.notebook_name)
    except NotebookError:
        return {}
    answers: dict[str, str] = {}
    for cell in notebook.cells:
        cell_id = grade_id(cell)
        if cell_id and nbgrader_metadata(cell).get("solution") and cell_id not in answers:
            answers[cell_id] = cell.get("source", "")
    return answers


@functools.lru_cache(maxsize=1024)
def _public_source(source: str) -> str:
    """An instructor's code cell as students may see it (the same for every student: made once)."""
    return strip_solution_markers(_without_hidden_tests(source))


def _without_hidden_tests(source: str) -> str:
    """A test cell with each run of hidden lines replaced by one comment saying how many."""
    text, hidden = split_hidden_tests(source)
    kept: list[str] = []
    numbered = enumerate(text.splitlines(), start=1)
    for is_hidden, run in itertools.groupby(numbered, key=lambda item: item[0] in hidden):
        lines = [line for _, line in run]
        kept += [f"# ({len(lines)} lines of hidden tests ran in the grader)"] if is_hidden else lines
    return "\n".join(kept)


def answer_comment(answer_of_test: dict[str, str], answer_id: str | None, report: GradeReport) -> str | None:
    """The feedback of the tests that check the answer cell ``answer_id``, one line each: the
    comment formgrader shows beside that cell."""
    if report.status != "graded":
        return f"Not graded: {report.error}"
    lines = list(report.notes) if answer_id == _first_answer(answer_of_test) else []
    for test in report.tests:
        if answer_of_test.get(test.id) != answer_id:
            continue
        if test.status == PASSED:
            lines.append(f"{test.name}: passed ({test.points:g}/{test.max_points:g}).")
        else:
            named = f" Likely mistake: {test.diagnosis}." if test.diagnosis else ""
            lines.append(f"{test.name}: {test.points:g}/{test.max_points:g}. {test.message.strip()}{named}")
    problems = [f"Running this cell failed: {problem.message}" for problem in report.cell_problems
                if problem.cell == answer_id]
    return "\n".join(problems + lines) or None


def _first_answer(answer_of_test: dict[str, str]) -> str | None:
    """The answer cell whose comment carries the notes about the whole hand-in."""
    return next(iter(answer_of_test.values()), None)


def feedback_comments(source_path: Path, report: GradeReport) -> dict[str, str | None]:
    """Each answer cell's comment (see :func:`answer_comment`), by the cell's id."""
    source = read_notebook(source_path)
    answer_of_test = _answer_cell_of_each_test(source)
    answers = [grade_id(cell) for cell in source.cells if nbgrader_metadata(cell).get("solution") and grade_id(cell)]
    return {answer: answer_comment(answer_of_test, answer, report) for answer in answers if answer}


def _graded_cell(cell: Any, source_cell: Any, results: dict[str, Any], problems: dict[str, list[str]],
                 report: GradeReport, answer: str | None) -> dict[str, Any]:
    """One cell as an autograded notebook shows it: the student's answer, or the instructor's
    cell without solutions and hidden tests, with the verdict as the output."""
    meta = nbgrader_metadata(cell)
    cell_id = grade_id(cell)
    new = {"cell_type": cell.cell_type, "metadata": dict(cell.get("metadata", {})), "source": cell.source}
    if meta.get("solution") and cell_id:
        new["source"] = answer if answer is not None else cell.source
    elif cell.cell_type == "code":
        new["source"] = _public_source(source_cell.source)
    if cell.cell_type == "code":
        new["execution_count"] = None
        new["outputs"] = _outputs(results.get(cell_id or ""), problems.get(cell_id or "", []), report)
    if "id" in cell:
        new["id"] = cell["id"]
    return new


def _problems_by_cell(report: GradeReport) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    for problem in report.cell_problems:
        problems.setdefault(problem.cell, []).append(problem.message)
    return problems


def autograded_notebook(source: Any, report: GradeReport, answers: dict[str, str]) -> dict[str, Any]:
    """The notebook formgrader and ``generate_feedback`` read: the source's cells, the student's
    answers, and each test cell's verdict as its output.  No solution, no hidden test code."""
    results = {test.id: test for test in report.tests}
    problems = _problems_by_cell(report)
    cells = [_graded_cell(cell, cell, results, problems, report, answers.get(grade_id(cell) or "", ""))
             for cell in source.cells]
    return {"nbformat": 4, "nbformat_minor": source.get("nbformat_minor", 5),
            "metadata": dict(source.get("metadata", {})), "cells": cells}


def apply_report(notebook: Any, report: GradeReport, source: Any) -> None:
    """Make nbgrader's sanitized notebook (in ``nbgrader autograde``) what
    :func:`autograded_notebook` makes: the student's answers as they are, each test cell's
    verdict as its output, and no hidden test code (each instructor cell is taken from
    ``source``, the notebook the report was graded against, whatever nbgrader restored)."""
    import nbformat

    results = {test.id: test for test in report.tests}
    problems = _problems_by_cell(report)
    instructor = {grade_id(cell): cell for cell in source.cells if grade_id(cell)}
    for index, cell in enumerate(notebook.cells):
        cell_id = grade_id(cell)
        source_cell = instructor.get(cell_id or "", cell)
        notebook.cells[index] = nbformat.from_dict(_graded_cell(cell, source_cell, results, problems, report, None))


def _outputs(result: Any, problems: list[str], report: GradeReport) -> list[dict[str, Any]]:
    outputs: list[dict[str, Any]] = []
    for message in problems:
        outputs.append({"output_type": "error", "ename": "CellError", "evalue": message, "traceback": [message]})
    if result is None:
        return outputs
    if result.output:
        outputs.append({"output_type": "stream", "name": "stdout", "text": result.output})
    if report.status != "graded":
        text = f"Not graded: {report.error}"
        outputs.append({"output_type": "error", "ename": "NotGraded", "evalue": text, "traceback": [text]})
    elif result.status != PASSED and result.points > 0:
        # Partial credit, as nbgrader reads it: a number as the cell's result, no error.
        lines = [result.message.strip()] + ([f"Likely mistake: {result.diagnosis}"] if result.diagnosis else [])
        outputs.append({"output_type": "execute_result", "execution_count": None, "metadata": {},
                        "data": {"text/plain": f"{result.points:g}"}})
        outputs.append({"output_type": "stream", "name": "stdout", "text": "\n".join(lines) + "\n"})
    elif result.status != PASSED:
        lines = [result.message.strip()] + ([f"Likely mistake: {result.diagnosis}"] if result.diagnosis else [])
        outputs.append({"output_type": "error", "ename": result.status.capitalize(),
                        "evalue": lines[0], "traceback": lines})
    else:
        outputs.append({"output_type": "stream", "name": "stdout",
                        "text": f"Passed: {result.points:g}/{result.max_points:g} points\n"})
    return outputs
