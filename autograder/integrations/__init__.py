"""What the engine exchanges with other tools: nbgrader's gradebook (written while a class is
graded, :mod:`~autograder.integrations.gradebook`), and the exports of ``autograder export``,
all listed in :data:`EXPORTS`, from which the command's choices come.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autograder.course import Course


@dataclass(frozen=True)
class Export:
    """One kind of ``autograder export``: where it writes by default, and how."""

    name: str
    help: str
    default_target: Callable[[Course, str, Path], Path]  # (course, problem set, reports folder)
    write: Callable[[Course, str, Path, Path], str]  # (course, problem set, target, reports folder) -> summary


def _csv(course: Course, ps: str, target: Path, reports: Path) -> str:
    from autograder.errors import UsageError
    from autograder.integrations.exports import read_reports, write_grades_csv

    found = read_reports(reports)
    if not found:
        raise UsageError(f"There are no reports in {reports}; run `autograder grade {ps}` first.")
    write_grades_csv(found, target)
    return f"{len(found)} students -> {target}"


def _gradescope(course: Course, ps: str, target: Path, reports: Path) -> str:
    from autograder.integrations.exports import write_gradescope_zip

    write_gradescope_zip(course, ps, target)
    return f"Gradescope autograder for {ps} -> {target} (upload it as the assignment's autograder)"


def _otter(course: Course, ps: str, target: Path, reports: Path) -> str:
    from autograder.integrations.otter import write_otter_notebook

    write_otter_notebook(course, ps, target)
    return f"otter-grader master notebook for {ps} -> {target} (run `otter assign {target.name} dist` there)"


EXPORTS: dict[str, Export] = {export.name: export for export in (
    Export("csv", "one row per student, one column per exercise (from the reports)",
           lambda course, ps, reports: reports / "grades.csv", _csv),
    Export("gradescope", "an autograder zip that grades with this engine",
           lambda course, ps, reports: course.root / "exports" / f"{ps}-gradescope.zip", _gradescope),
    Export("otter", "an otter-grader master notebook of the problem set",
           lambda course, ps, reports: course.root / "exports" / f"{ps}-otter" / f"{ps}.ipynb", _otter),
)}
