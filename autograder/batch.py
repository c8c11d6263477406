"""Grading a class: every ``submitted/<student>/<ps>/`` notebook, one report per student.

A submission that cannot be graded (missing, corrupt, the wrong problem set) gets a report
with status ``error`` and the reason; the batch always goes on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import autograder
from autograder.grading import grade_notebook
from autograder.notebook import SourceNotebook
from autograder.report import ERROR, GradeReport, TestResult
from autograder.session import Limits


@dataclass(frozen=True)
class Submission:
    student: str
    ps: str
    folder: Path

    def notebook(self) -> Path | str:
        """The notebook to grade, or a sentence saying why there is none."""
        expected = self.folder / f"{self.ps}.ipynb"
        if expected.is_file():
            return expected
        found = sorted(self.folder.glob("*.ipynb"))
        if len(found) == 1:
            return found[0]
        if not found:
            return f"No notebook was submitted: {self.folder} has no .ipynb file."
        names = ", ".join(path.name for path in found)
        return f"{self.folder} has several notebooks ({names}) and none is named {self.ps}.ipynb."


def find_submissions(submitted: Path, ps: str, students: Iterable[str] | None = None) -> list[Submission]:
    """Every ``submitted/<student>/<ps>/`` folder, sorted by student."""
    wanted = set(students) if students else None
    if not submitted.is_dir():
        return []
    found = []
    for student_dir in sorted(submitted.iterdir()):
        if not student_dir.is_dir() or (wanted is not None and student_dir.name not in wanted):
            continue
        folder = student_dir / ps
        if folder.is_dir():
            found.append(Submission(student_dir.name, ps, folder))
    return found


def submission_seed(ps: str, student: str) -> int:
    """The default seed of a student's hidden-test inputs: stable, so a regrade agrees."""
    digest = hashlib.sha256(f"{ps}/{student}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def grade_submission(source: SourceNotebook, submission: Submission, *, limits: Limits,
                     seed: int | None = None) -> GradeReport:
    notebook = submission.notebook()
    seed = submission_seed(submission.ps, submission.student) if seed is None else seed
    if isinstance(notebook, str):
        return GradeReport(
            assignment=submission.ps, notebook=str(submission.folder), student=submission.student,
            status="error", error=notebook, seed=seed, engine=f"autograder {autograder.__version__}",
            tests=[TestResult(test_id, 0.0, source.points(test_id), ERROR, notebook)
                   for test_id in source.test_ids],
        )
    return grade_notebook(source, notebook, student=submission.student, seed=seed, limits=limits)


def grade_batch(
    source: SourceNotebook,
    submissions: list[Submission],
    reports: Path,
    *,
    limits: Limits,
    seed: int | None = None,
    progress: Callable[[int, int, GradeReport], None] | None = None,
) -> list[GradeReport]:
    """Grade each submission in turn and write ``reports/<student>.json``."""
    results = []
    for number, submission in enumerate(submissions, start=1):
        report = grade_submission(source, submission, limits=limits, seed=seed)
        report.write_json(reports / f"{submission.student}.json")
        results.append(report)
        if progress:
            progress(number, len(submissions), report)
    return results
