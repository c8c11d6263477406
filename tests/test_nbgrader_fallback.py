"""The course stays usable with plain nbgrader: with nbgrader's own autograde steps restored
(tests in the student's kernel), `nbgrader autograde` grades it too.  (The course's own
configuration grades with our engine behind nbgrader's commands: tests/test_nbgrader_autograde.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import solution_answers, with_answers
from autograder.integrations.autograde import write_plain_nbgrader_config
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
NBGRADER = Path(sys.executable).parent / "nbgrader"


def nbgrader(*args: str, cwd: Path) -> None:
    # nbgrader runs `alembic` by name: put this environment's tools first, as activation would.
    env = {**os.environ, "PATH": f"{NBGRADER.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([str(NBGRADER), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("student, full_marks", [("solver", True), ("untouched", False)])
def test_nbgrader_autograde_grades_the_course(tmp_path, student, full_marks):
    from nbgrader.api import Gradebook

    write_plain_nbgrader_config(ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    shutil.copytree(ROOT / "source" / PS, tmp_path / "source" / PS)
    nbgrader("generate_assignment", PS, "--force", cwd=tmp_path)
    nbgrader("db", "student", "add", student, cwd=tmp_path)

    release = read_notebook(tmp_path / "release" / PS / f"{PS}.ipynb")
    source = read_notebook(tmp_path / "source" / PS / f"{PS}.ipynb")
    notebook = with_answers(release, solution_answers(source)) if full_marks else release
    target = tmp_path / "submitted" / student / PS / f"{PS}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(notebook, target)

    nbgrader("autograde", PS, "--force", cwd=tmp_path)
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(PS, student)
        assert submission.max_score > 0
        if full_marks:
            assert submission.score == submission.max_score
        else:
            assert submission.score == 0
