"""Every problem set: the solution passes, the release scores zero, every mistake is caught."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.course import Course
from autograder.grading import grade_notebook
from autograder.notebook import SourceNotebook, read_notebook
from autograder.report import PASSED
from autograder.settings import Limits

from conftest import ROOT

COURSE = Course(ROOT)
PROBLEM_SETS = COURSE.problem_sets()
MISTAKES = [(ps, mistake) for ps in PROBLEM_SETS for mistake in load_catalogue(COURSE.catalogue(ps))]
LIMITS = Limits(cell_timeout=20, submission_timeout=120)


def _grade(ps: str, notebook: nbformat.NotebookNode, folder: Path, seed: int = 1234):
    path = folder / f"{ps}.ipynb"
    nbformat.write(notebook, path)
    return grade_notebook(SourceNotebook.load(COURSE.source_notebook(ps)), path, seed=seed, limits=LIMITS)


def _notebooks(ps: str):
    return read_notebook(COURSE.source_notebook(ps)), read_notebook(COURSE.release_notebook(ps))


def test_the_course_has_problem_sets_with_catalogues():
    assert "ps05_derivatives" in PROBLEM_SETS
    for ps in PROBLEM_SETS:
        source = SourceNotebook.load(COURSE.source_notebook(ps))
        assert len(source.test_ids) >= 5, f"{ps} has fewer than five graded exercises"
        caught = {test for _, mistake in MISTAKES for test in mistake.loses if _ == ps}
        for test_id in source.test_ids:
            count = sum(test_id in mistake.loses for p, mistake in MISTAKES if p == ps)
            assert count >= 3, f"{ps}: {test_id} has only {count} catalogued mistakes"
        assert caught <= set(source.test_ids)


def _bound_names(source: str) -> set[str]:
    """Names a piece of code binds: imports, assignments, definitions."""
    bound = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return bound


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_tests_use_only_what_the_notebook_imports_for_them(ps):
    """The grader gives test cells np and the checks; a kernel gives them what the notebook
    imports. A test that used more would pass here and fail under plain nbgrader."""
    from autograder.grading import referenced_names, trusted_namespace

    notebook = read_notebook(COURSE.source_notebook(ps))
    provided: set[str] = set()
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if meta.get("grade"):
            needed = referenced_names(cell.source) & set(trusted_namespace()) - _bound_names(cell.source)
            assert needed <= provided, f"{ps}: {meta['grade_id']} uses {sorted(needed - provided)} " \
                                       "without the notebook importing it"
            provided |= _bound_names(cell.source)
        elif not meta.get("solution"):
            provided |= _bound_names(cell.source)


@pytest.mark.parametrize("ps", PROBLEM_SETS)
@pytest.mark.parametrize("seed", [0, 99, 2024])
def test_the_solution_gets_full_marks(ps, seed, tmp_path):
    source, release = _notebooks(ps)
    report = _grade(ps, with_answers(release, solution_answers(source)), tmp_path, seed)
    failures = {test.id: test.message for test in report.tests if test.status != PASSED}
    assert report.status == "graded" and not failures
    assert report.score == report.max_score > 0
    assert not report.cell_problems


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_the_untouched_release_scores_zero_without_crashing_the_grader(ps, tmp_path):
    _, release = _notebooks(ps)
    report = _grade(ps, release, tmp_path)
    assert report.status == "graded"
    assert [test.points for test in report.tests] == [0] * len(report.tests)
    assert all("not implemented yet" in test.message for test in report.tests)


@pytest.mark.parametrize("ps, mistake", MISTAKES, ids=[f"{ps}:{m.id}" for ps, m in MISTAKES])
def test_every_catalogued_mistake_loses_points_and_is_named(ps, mistake, tmp_path):
    source, release = _notebooks(ps)
    report = _grade(ps, mistake_notebook(release, source, mistake), tmp_path)
    by_id = {test.id: test for test in report.tests}
    for test_id in mistake.loses:
        result = by_id[test_id]
        assert result.points == 0, f"{mistake.id} kept its points on {test_id}"
        for phrase in mistake.feedback:
            assert phrase.lower() in result.message.lower(), \
                f"{mistake.id}: feedback on {test_id} does not name it: {result.message!r}"


@pytest.mark.parametrize("ps, mistake", MISTAKES[:3], ids=[f"{ps}:{m.id}" for ps, m in MISTAKES[:3]])
def test_rebinding_numpy_comparisons_does_not_rescue_a_wrong_answer(ps, mistake, tmp_path):
    source, release = _notebooks(ps)
    honest = _grade(ps, mistake_notebook(release, source, mistake), tmp_path)
    cheat_code = ("import numpy as np\nimport numpy.testing\n"
                  "np.allclose = lambda *a, **k: True\n"
                  "np.isclose = lambda *a, **k: np.ones(np.shape(a[0]), dtype=bool)\n"
                  "np.testing.assert_allclose = lambda *a, **k: None\n" + mistake.code)
    cheating = type(mistake)(**{**mistake.__dict__, "code": cheat_code})
    cheater = _grade(ps, mistake_notebook(release, source, cheating), tmp_path)
    assert cheater.score == honest.score < cheater.max_score
    assert [test.status for test in cheater.tests] == [test.status for test in honest.tests]
