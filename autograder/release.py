"""Making the student and solution notebooks from the instructor's source.

``release/<ps>/`` is produced by nbgrader's own ``generate_assignment`` (run without a
gradebook, in a scratch copy of the course), so it is exactly what nbgrader would release.
``solutions/<ps>/<ps>.ipynb`` is the source with the solution markers and hidden tests
removed, executed so that a self-learner sees every output and picture.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from autograder.course import Course
from autograder.errors import AutograderError
from autograder.notebook import read_notebook, strip_solution_markers


class ReleaseError(AutograderError):
    """nbgrader could not release a problem set; the message carries its reason."""


def generate_release(course: Course, ps: str, destination: Path, *, db_url: str | None = None) -> Path:
    """Write the student version of ``ps`` to ``destination/<ps>/`` with nbgrader.

    With ``db_url``, nbgrader also records the assignment's notebook and cells in that
    gradebook, as ``nbgrader generate_assignment`` does."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    with tempfile.TemporaryDirectory(prefix="autograder-release-") as scratch:
        root = Path(scratch)
        shutil.copytree(course.source_notebook(ps).parent, root / "source" / ps)
        config = course.config()
        config.CourseDirectory.root = str(root)
        if db_url:
            config.CourseDirectory.db_url = db_url
        else:
            # What `nbgrader generate_assignment --no-db` sets.
            config.GenerateAssignment.no_database = True
            config.SaveCells.enabled = False
        # nbgrader logs through the root logger as well; keep a library call quiet.
        logging.getLogger("traitlets").setLevel(logging.WARNING)
        api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
        result = api.generate_assignment(ps, force=True, create=bool(db_url))
        if not result.get("success"):
            log = [line for line in (result.get("log") or "").splitlines()
                   if line.startswith(("[ERROR]", "[CRITICAL]")) or "Error" in line]
            detail = "\n".join(log) or result.get("error") or "no details"
            raise ReleaseError(f"nbgrader could not release {ps}:\n{detail}")
        target = destination / ps
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(root / "release" / ps, target)
    return target / f"{ps}.ipynb"


def solution_notebook(course: Course, ps: str) -> Any:
    """The worked solution, not yet executed: answers filled in, hidden tests removed."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput

    notebook = read_notebook(course.source_notebook(ps))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = strip_solution_markers(cell.source)
    resources: dict = {}
    notebook, resources = ClearHiddenTests().preprocess(notebook, resources)
    notebook, resources = ClearOutput().preprocess(notebook, resources)
    return notebook


def generate_solution(course: Course, ps: str, destination: Path, *, execute: bool = True,
                      timeout: int = 300) -> Path:
    """Write the (executed) worked solution of ``ps`` to ``destination/<ps>/<ps>.ipynb``."""
    notebook = solution_notebook(course, ps)
    if execute:
        from nbclient import NotebookClient

        with tempfile.TemporaryDirectory(prefix="autograder-solution-") as scratch:
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": scratch}})
            client.execute()
        for cell in notebook.cells:
            # Execution timestamps would make every regeneration a change.
            cell.metadata.pop("execution", None)
    import nbformat  # slow to import; only releasing needs it

    target = destination / ps / f"{ps}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def release(course: Course, ps: str, *, execute_solution: bool = True) -> tuple[Path, Path]:
    """Regenerate ``release/<ps>/`` and ``solutions/<ps>/`` in the course (refused when a test
    cell reads a name a student could rebind)."""
    course.source(ps)
    student = generate_release(course, ps, course.root / "release")
    solution = generate_solution(course, ps, course.root / "solutions", execute=execute_solution)
    return student, solution
