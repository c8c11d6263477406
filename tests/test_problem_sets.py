"""Every problem set: the solution passes, the release scores zero, every mistake is caught and
named, every correct alternative gets full marks.

Each set's notebooks are graded once, in one batch on warm worker templates (the audit's own
machinery); the tests then read the reports. A catalogued mistake is graded with only the test cells
it is said to lose (the others left empty): those are the tests its assertions read.
`autograder audit` grades every mistake against every test, at many seeds."""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import pytest

from autograder.audit import DEFAULT_MUTANT_SEEDS, MUTANT_LIMITS, Job, grade_jobs, load_survivor_records
from autograder.catalogue import load_alternatives, load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.course import Course
from autograder.mutants import Mutant, mutants_of
from autograder.notebook import SourceNotebook, grade_id, read_notebook
from autograder.report import PASSED, GradeReport
from autograder.settings import Limits

ROOT = Path(__file__).resolve().parent.parent


COURSE = Course(ROOT)
PROBLEM_SETS = COURSE.problem_sets()
MISTAKES = [(ps, mistake) for ps in PROBLEM_SETS for mistake in load_catalogue(COURSE.catalogue(ps))]
ALTERNATIVES = [(ps, alternative) for ps in PROBLEM_SETS for alternative in load_alternatives(COURSE.alternatives(ps))]
LIMITS = Limits(cell_timeout=20, submission_timeout=120)
SEED = 1234
SOLUTION_SEEDS = [0, 99, 2024]
CHEATS = 3  # mistakes per set graded again with numpy's comparisons rebound
# Automatic mutants per set checked here (the same ones every run: the first by a hash of their
# key); `autograder audit PS` checks them all.  Graded at the audit's mutant seeds.
MUTANT_SAMPLE = 16
MUTANT_SEEDS = list(range(DEFAULT_MUTANT_SEEDS))

NUMPY_REBOUND = ("import numpy as np\nimport numpy.testing\n"
                 "np.allclose = lambda *a, **k: True\n"
                 "np.isclose = lambda *a, **k: np.ones(np.shape(a[0]), dtype=bool)\n"
                 "np.testing.assert_allclose = lambda *a, **k: None\n")


@functools.cache
def graded(ps: str) -> dict[tuple[Any, ...], GradeReport | str]:
    """Every notebook the tests below look at, graded once per test run in one batch on warm
    worker templates: the solution at a few seeds, the untouched release, each catalogued
    mistake, each correct alternative, and a few mistakes with numpy's comparisons rebound."""
    source, release = _notebooks(ps)
    answers = solution_answers(source)
    jobs = [Job(("solution", seed), with_answers(release, answers), "full", seed) for seed in SOLUTION_SEEDS]
    jobs.append(Job(("release",), release, "full", SEED))
    mistakes = load_catalogue(COURSE.catalogue(ps))
    sources = {"full": COURSE.source(ps)}
    for mistake in mistakes:
        variant = ",".join(sorted(mistake.loses))
        if variant not in sources:
            sources[variant] = _only_tests(sources["full"], frozenset(mistake.loses))
        jobs.append(Job(("mistake", mistake.id), mistake_notebook(release, source, mistake), variant, SEED))
    for mistake in mistakes[:CHEATS]:
        cheating = type(mistake)(**{**mistake.__dict__, "code": NUMPY_REBOUND + mistake.code})
        jobs.append(Job(("cheating", mistake.id), mistake_notebook(release, source, cheating),
                        ",".join(sorted(mistake.loses)), SEED))
    for alternative in load_alternatives(COURSE.alternatives(ps)):
        notebook = with_answers(release, {**answers, alternative.cell: alternative.code})
        jobs.append(Job(("alternative", alternative.id), notebook, "full", SEED))
    mutants = {mutant.key: with_answers(release, {**answers, mutant.cell: mutant.code}) for mutant in sampled_mutants(ps)}
    jobs += [Job(("mutant", key, MUTANT_SEEDS[0]), notebook, "full", MUTANT_SEEDS[0], MUTANT_LIMITS)
             for key, notebook in mutants.items()]
    graded = dict(zip((job.key for job in jobs), grade_jobs(sources, jobs, limits=LIMITS)))
    # As the audit does: a mutant that survives the first seed is graded at the others.
    later = [Job(("mutant", key, seed), mutants[key], "full", seed, MUTANT_LIMITS)
             for key in mutants if _full_marks(graded[("mutant", key, MUTANT_SEEDS[0])]) for seed in MUTANT_SEEDS[1:]]
    graded.update(zip((job.key for job in later), grade_jobs(sources, later, limits=LIMITS)))
    return graded


def _only_tests(source: SourceNotebook, keep: frozenset[str]) -> SourceNotebook:
    """``source`` with every test cell but those in ``keep`` left empty (each still in the report)."""
    assert keep <= set(source.test_ids), f"tests not in {source.name}: {sorted(keep - set(source.test_ids))}"

    def emptied(cell: Any) -> Any:
        if grade_id(cell) not in source.test_ids or grade_id(cell) in keep:
            return cell
        cell = copy.deepcopy(cell)
        cell.source = ""
        return cell

    return dataclasses.replace(source, cells=tuple(map(emptied, source.cells)))


def sampled_mutants(ps: str) -> list[Mutant]:
    answers = solution_answers(read_notebook(COURSE.source_notebook(ps)))
    every = [mutant for cell, code in answers.items() for mutant in mutants_of(cell, code)]
    return sorted(every, key=lambda mutant: hashlib.sha256(mutant.key.encode()).hexdigest())[:MUTANT_SAMPLE]


def _full_marks(report: GradeReport | str) -> bool:
    return isinstance(report, GradeReport) and report.status == "graded" and report.score == report.max_score


def _report(ps: str, key: tuple[Any, ...]) -> GradeReport:
    report = graded(ps)[key]
    assert isinstance(report, GradeReport), f"{ps}: {key} could not be graded: {report}"
    return report


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
    from autograder.grader.grading import referenced_names, trusted_namespace

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
@pytest.mark.parametrize("seed", SOLUTION_SEEDS)
def test_the_solution_gets_full_marks(ps, seed):
    report = _report(ps, ("solution", seed))
    failures = {test.id: test.message for test in report.tests if test.status != PASSED}
    assert report.status == "graded" and not failures
    assert report.score == report.max_score > 0
    assert not report.cell_problems


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_the_untouched_release_scores_zero_without_crashing_the_grader(ps):
    report = _report(ps, ("release",))
    assert report.status == "graded"
    assert [test.points for test in report.tests] == [0] * len(report.tests)
    assert all("not implemented yet" in test.message for test in report.tests)


@pytest.mark.parametrize("ps, mistake", MISTAKES, ids=[f"{ps}:{m.id}" for ps, m in MISTAKES])
def test_every_catalogued_mistake_loses_points_and_is_named(ps, mistake):
    by_id = {test.id: test for test in _report(ps, ("mistake", mistake.id)).tests}
    for test_id in mistake.loses:
        result = by_id[test_id]
        assert result.points == 0, f"{mistake.id} kept its points on {test_id}"
        for phrase in mistake.feedback:
            assert phrase.lower() in result.message.lower(), \
                f"{mistake.id}: feedback on {test_id} does not name it: {result.message!r}"


@pytest.mark.parametrize("ps, alternative", ALTERNATIVES, ids=[f"{ps}:{a.id}" for ps, a in ALTERNATIVES])
def test_every_correct_alternative_gets_full_marks(ps, alternative):
    report = _report(ps, ("alternative", alternative.id))
    failures = {test.id: test.message for test in report.tests if test.status != PASSED}
    assert not failures and not report.cell_problems, f"{alternative.id}: {failures or report.cell_problems}"


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_rebinding_numpy_comparisons_does_not_rescue_a_wrong_answer(ps):
    for mistake in load_catalogue(COURSE.catalogue(ps))[:CHEATS]:
        honest = _report(ps, ("mistake", mistake.id))
        cheater = _report(ps, ("cheating", mistake.id))
        assert cheater.score == honest.score < cheater.max_score, f"{mistake.id}: rebinding numpy changed the score"
        assert [test.status for test in cheater.tests] == [test.status for test in honest.tests]


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_automatic_mutants_lose_points_or_are_recorded(ps):
    """A sample of the audit's mutants: each loses points at one of the audit's mutant seeds, or
    audit.toml says why no correct test can tell it from the solution."""
    records = load_survivor_records(COURSE.audit_records(ps))
    reports = graded(ps)
    unexplained = [mutant.key for mutant in sampled_mutants(ps) if mutant.key not in records and all(
        _full_marks(reports[("mutant", mutant.key, seed)]) for seed in MUTANT_SEEDS
        if ("mutant", mutant.key, seed) in reports)]
    assert not unexplained, (f"{ps}: these mutants of the solution get full marks at seeds {MUTANT_SEEDS}; write "
                             f"a hidden test that tells them apart, or record them in audit.toml: {unexplained}")


def test_the_readme_audit_table_matches_the_sets():
    """The README's figures per set are those of the files the audit reads."""
    import re

    rows = {match[0]: tuple(int(n) for n in match[1:]) for match in re.findall(
        r"^\| (ps\d\d_\w+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", (ROOT / "README.md").read_text(), flags=re.M)}
    assert set(rows) == set(PROBLEM_SETS), set(rows) ^ set(PROBLEM_SETS)
    for ps in PROBLEM_SETS:
        answers = solution_answers(read_notebook(COURSE.source_notebook(ps)))
        counted = (len(load_catalogue(COURSE.catalogue(ps))), len(load_alternatives(COURSE.alternatives(ps))),
                   sum(len(mutants_of(cell, code)) for cell, code in answers.items()),
                   len(load_survivor_records(COURSE.audit_records(ps))))
        assert rows[ps] == counted, (ps, rows[ps], counted)
