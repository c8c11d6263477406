"""release/ and solutions/ are what the source notebooks make, and leak nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autograder.course import Course
from autograder.notebook import read_notebook
from autograder.release import generate_release, solution_notebook

ROOT = Path(__file__).resolve().parent.parent


COURSE = Course(ROOT)
PROBLEM_SETS = COURSE.problem_sets()
STALE = "is out of date with source/; run `autograder release {ps}` and commit the result"


def _cells(notebook):
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_release_is_in_sync_with_source(ps, tmp_path):
    fresh = generate_release(COURSE, ps, tmp_path)
    committed = COURSE.release_notebook(ps)
    assert committed.is_file(), f"release/{ps} is missing; run `autograder release {ps}`"
    assert json.loads(fresh.read_text()) == json.loads(committed.read_text()), \
        f"release/{ps}/{ps}.ipynb " + STALE.format(ps=ps)
    released_files = sorted(path.name for path in committed.parent.iterdir())
    assert released_files == sorted(path.name for path in fresh.parent.iterdir())


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_solutions_are_in_sync_with_source(ps):
    committed = COURSE.solution_notebook(ps)
    assert committed.is_file(), f"solutions/{ps} is missing; run `autograder release {ps}`"
    assert _cells(read_notebook(committed)) == _cells(solution_notebook(COURSE, ps)), \
        f"solutions/{ps}/{ps}.ipynb " + STALE.format(ps=ps)


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_the_release_holds_no_hidden_tests_solutions_or_catalogue(ps):
    release_dir = COURSE.release_notebook(ps).parent
    text = COURSE.release_notebook(ps).read_text()
    for marker in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "END SOLUTION"):
        assert marker not in text
    assert not (release_dir / "mistakes.toml").exists()
    assert "raise NotImplementedError()" in text


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_the_solution_is_executed_and_shows_its_work(ps):
    notebook = read_notebook(COURSE.solution_notebook(ps))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "the solution notebook was not executed"
    errors = [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert not errors
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs), \
        "the solution shows no plot"
    assert "BEGIN HIDDEN TESTS" not in COURSE.solution_notebook(ps).read_text()
