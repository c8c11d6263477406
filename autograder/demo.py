"""The built-in demo class, made from the course itself.

For every problem set with a release notebook: one student submits the worked solution, one
submits the release notebook untouched, and one per catalogued mistake submits the solution
with that mistake in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.course import Course
from autograder.notebook import read_notebook

SOLUTION_STUDENT = "solution"
STUB_STUDENT = "untouched-release"


def mistake_student(mistake_id: str) -> str:
    return f"mistake-{mistake_id}"


def build_demo_class(course: Course, destination: Path, problem_sets: list[str]) -> dict[str, list[str]]:
    """Write ``destination/submitted/<student>/<ps>/<ps>.ipynb``; return the students per set."""
    import nbformat  # slow to import; only writing notebooks needs it

    submitted = destination / "submitted"
    if submitted.exists():
        shutil.rmtree(submitted)
    students: dict[str, list[str]] = {}
    for ps in problem_sets:
        source = read_notebook(course.source_notebook(ps))
        release = read_notebook(course.release_notebook(ps))
        notebooks = {
            SOLUTION_STUDENT: with_answers(release, solution_answers(source)),
            STUB_STUDENT: release,
        }
        for mistake in load_catalogue(course.catalogue(ps)):
            notebooks[mistake_student(mistake.id)] = mistake_notebook(release, source, mistake)
        for student, notebook in notebooks.items():
            target = submitted / student / ps / f"{ps}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)
        students[ps] = sorted(notebooks)
    return students
