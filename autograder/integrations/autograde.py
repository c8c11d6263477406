"""nbgrader's own ``autograde`` (and so formgrader's Autograde button) grading with this engine.

nbgrader autogrades a hand-in in two passes: it *sanitizes* the submitted notebook (restoring the
instructor's test cells, hidden tests included), then runs ``Autograde.autograde_preprocessors``
on it, the first of which, ``Execute``, runs every cell, tests too, in one kernel beside the
student's code.  The course's ``nbgrader_config.py`` replaces that list with
:func:`autograde_preprocessors` (written out, by import name, so that loading the configuration
imports nothing): the same list, with ``Execute`` replaced by :class:`GradeWithEngine`, and
:class:`RecordFeedbackComments` at the end.

:class:`GradeWithEngine` grades the hand-in exactly as ``autograder grade`` does (the same bytes
read from ``submitted/`` without following links, the same seed, the same confined worker, the
tests run outside it), writes the student's report and page and refreshes the class summary,
and leaves in the notebook what nbgrader's later steps read: each test cell's verdict as its
output (an error output for a failure, so ``SaveAutoGrades`` gives it no points) and the test
cell's code **without its hidden lines**.  The autograded notebook, formgrader's view of it and
``nbgrader generate_feedback``'s page therefore never show a student the hidden tests, whichever
command graded.  Late penalties stay nbgrader's (``AssignLatePenalties`` runs as before).
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from autograder.report import GradeReport

REPORT_KEY = "autograder_report"  # where GradeWithEngine leaves the report for later steps

_launcher_lock = threading.Lock()
_launcher: Any = None


def autograde_preprocessors() -> list[str]:
    """nbgrader's autograde steps, by import name, with our engine in place of its kernel and
    our feedback comments recorded after its scores: what ``nbgrader_config.py`` sets (a test
    checks that the two agree for the installed nbgrader)."""
    from nbgrader.converters.autograde import Autograde
    from nbgrader.preprocessors import Execute

    def name(step: type) -> str:
        package = step.__module__.rsplit(".", 1)[0]  # as the package exports it
        return f"{package}.{step.__name__}"

    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    steps = [f"{__name__}.{GradeWithEngine.__name__}" if step is Execute else name(step) for step in default]
    return [*steps, f"{__name__}.{RecordFeedbackComments.__name__}"]


PLAIN_NBGRADER = (
    "\n# Plain nbgrader: its own Execute step, the tests in the student's kernel.\n"
    "from nbgrader.converters.autograde import Autograde  # noqa: E402\n"
    "c.Autograde.autograde_preprocessors = Autograde.class_traits()['autograde_preprocessors'].default()\n"
)


def write_plain_nbgrader_config(course_config: Path, target: Path) -> None:
    """``course_config`` with nbgrader's own autograde steps restored, written to ``target``
    (for comparing with plain nbgrader: the benchmark, and the test that the course still
    grades that way)."""
    target.write_text(course_config.read_text(encoding="utf-8") + PLAIN_NBGRADER, encoding="utf-8")


def _shared_launcher() -> Any:
    """One warm worker template for every notebook this process autogrades (a class graded
    with ``nbgrader autograde PS`` starts it once), stopped when the process exits."""
    global _launcher
    from autograder.grader.launcher import Launcher

    with _launcher_lock:
        if _launcher is None:
            _launcher = Launcher()
            _launcher.start()
            atexit.register(_launcher.__exit__, None, None, None)
        return _launcher


def _course_and_folders(config: Any, ps: str) -> tuple[Any, Path, Path]:
    """The course, its ``submitted/`` folder and this problem set's reports folder, from
    nbgrader's own course-directory settings."""
    from nbgrader.coursedir import CourseDirectory

    from autograder.course import Course

    coursedir = CourseDirectory(config=config)
    root = Path(coursedir.root)
    course = Course(root)
    return course, root / coursedir.submitted_directory, root / "reports" / ps


class GradeWithEngine(Preprocessor):
    """In place of nbgrader's ``Execute``: grade with the confined engine (see the module)."""

    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled

    def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from autograder.batch import Submission, grade_hand_in, write_class_summary, write_student_files
        from autograder.integrations.gradebook import apply_report
        from autograder.notebook import read_notebook

        info = resources["nbgrader"]
        ps, student = str(info["assignment"]), str(info["student"])
        course, submitted, reports = _course_and_folders(self.config, ps)
        source = course.source(ps)
        submission = Submission(student, ps, submitted / student / ps)
        try:
            report = grade_hand_in(source, submission, submission.read(), limits=course.limits(),
                                   launcher=_shared_launcher())
        except Exception as error:  # noqa: BLE001 - a hand-in never stops nbgrader's batch
            from autograder.batch import grader_fault

            report = grader_fault(source, submission, error)
        write_student_files(report, reports, student)
        write_class_summary(reports)
        apply_report(nb, report, read_notebook(course.source_notebook(ps)))
        resources[REPORT_KEY] = report
        return nb, resources


class RecordFeedbackComments(Preprocessor):
    """After nbgrader's ``SaveAutoGrades`` (which clears comments): each answer cell's comment
    is the feedback of the tests that check it, as ``autograder grade`` writes it."""

    enabled = Bool(True)

    def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from nbgrader.api import Gradebook, MissingEntry

        from autograder.integrations.gradebook import feedback_comments

        report: GradeReport | None = resources.get(REPORT_KEY)
        if report is None:
            return nb, resources
        info = resources["nbgrader"]
        course, _, _ = _course_and_folders(self.config, str(info["assignment"]))
        comments = feedback_comments(course.source_notebook(str(info["assignment"])), report)
        with Gradebook(info["db_url"]) as gradebook:
            for cell_id, text in comments.items():
                try:
                    comment = gradebook.find_comment(cell_id, info["notebook"], info["assignment"], info["student"])
                except MissingEntry:
                    continue
                comment.auto_comment = text
            gradebook.db.commit()
        return nb, resources
