"""`autograder audit`: automatic mutants, and the audit's verdicts on a small synthetic course."""

from __future__ import annotations

import json

import nbformat
import pytest

from autograder.audit import audit_problem_set
from autograder.course import Course
from autograder.mutants import mutants_of

NORM = '''def norm(x, p=2):
    """The p-norm of x."""
    total = 0.0
    for i in range(len(x)):
        total = total + abs(x[i]) ** p
    return total ** (1 / p)
'''


def _by_operator(mutants):
    found: dict[str, list[str]] = {}
    for mutant in mutants:
        found.setdefault(mutant.operator, []).append(mutant.diff)
    return found


def test_mutants_make_the_slips_students_make():
    mutants = mutants_of("norm", NORM)
    found = _by_operator(mutants)
    for operator in ("arithmetic", "constant", "statement", "loop bound", "ignored argument", "call"):
        assert operator in found, f"no {operator} mutant of a p-norm: {sorted(found)}"
    diffs = "\n".join(mutant.diff for mutant in mutants)
    assert "+ total = total - abs(x[i]) ** p" in diffs  # + to -
    assert "range(len(x) - 1)" in diffs  # a loop bound off by one
    assert "total + x[i] ** p" in diffs  # abs left out
    # Each mutant compiles, differs from the solution and from every other mutant.
    codes = [mutant.code for mutant in mutants]
    assert len(set(codes)) == len(codes)
    for code in codes:
        compile(code, "<mutant>", "exec")


def test_a_mutants_key_survives_edits_elsewhere_in_the_cell():
    before = {mutant.key for mutant in mutants_of("norm", NORM)}
    edited = NORM.replace('"""The p-norm of x."""', '"""The p-norm of x.\n\n    A longer docstring."""')
    after = {mutant.key for mutant in mutants_of("norm", edited)}
    assert before == after
    assert all(key.startswith("norm: ") for key in before)


def test_the_same_change_on_the_same_line_twice_is_numbered():
    code = "def twice(x):\n    y = x + 1\n    y = x + 1\n    return y\n"
    keys = [mutant.key for mutant in mutants_of("twice", code)]
    assert any(key.endswith("(occurrence 2)") for key in keys)
    assert len(set(keys)) == len(keys)


def test_code_that_does_not_parse_has_no_mutants():
    assert mutants_of("broken", "def f(:\n    pass\n") == []


# ------------------------------------------------------------------------------ the audit itself

WRONG_ON_ARRAYS = '''
def double(x):
    """Twice x."""
    return 2 * x if np.ndim(x) == 0 else x + 1
'''


@pytest.fixture(scope="module")
def tiny_course(tmp_path_factory, make_tiny_notebook) -> Course:
    """A course with one small set: a mistake only the hidden test catches, another that the
    visible test catches, two alternatives (one of them wrong), and one recorded survivor."""
    root = tmp_path_factory.mktemp("course")
    notebook = make_tiny_notebook()
    # A solution with a line that changes nothing: its mutants survive (`y * 1` made `y / 1`).
    cell = next(cell for cell in notebook.cells if cell.metadata["nbgrader"].get("grade_id") == "double")
    cell.source = cell.source.replace("    return 2 * x\n", "    y = 2 * x\n    y = y * 1\n    return y\n")
    assert "y * 1" in cell.source
    for folder in ("source", "release"):
        (root / folder / "tiny").mkdir(parents=True)
        nbformat.write(notebook, root / folder / "tiny" / "tiny.ipynb")
    (root / "source" / "tiny" / "mistakes.toml").write_text(f'''
[[mistakes]]
id = "wrong-on-arrays"
cell = "double"
loses = ["test_double"]
title = "Right for numbers, wrong for arrays"
feedback = ["double(x)"]
code = \'\'\'{WRONG_ON_ARRAYS}\'\'\'

[[mistakes]]
id = "triple"
cell = "double"
loses = ["test_double"]
title = "Three times x"
feedback = ["double(3.0)"]
code = \'\'\'
def double(x):
    return 3 * x
\'\'\'
''')
    (root / "source" / "tiny" / "alternatives.toml").write_text('''
[[alternatives]]
id = "sum"
cell = "double"
title = "x + x"
code = \'\'\'
def double(x):
    return x + x
\'\'\'

[[alternatives]]
id = "not-really"
cell = "apply_twice"
title = "An alternative that is wrong"
code = \'\'\'
def apply_twice(f, x):
    return f(x)
\'\'\'
''')
    (root / "source" / "tiny" / "audit.toml").write_text('''
[[survivor]]
mutant = "a mutant that no longer exists"
equivalent = true
reason = "Recorded for an older solution."
''')
    return Course(root)


@pytest.fixture(scope="module")
def tiny_audit(tiny_course):
    return audit_problem_set(tiny_course, "tiny", seeds=[1, 2], mutant_seeds=[1, 2], processes=2)


def test_the_audit_tells_hidden_only_mistakes_from_visible_ones(tiny_audit):
    mistakes = {mistake.id: mistake for mistake in tiny_audit.mistakes}
    assert mistakes["wrong-on-arrays"].caught and mistakes["wrong-on-arrays"].named
    assert not mistakes["wrong-on-arrays"].by_visible
    assert mistakes["triple"].caught and mistakes["triple"].by_visible
    assert [mistake.id for mistake in tiny_audit.hidden_only] == ["wrong-on-arrays"]


def test_the_audit_grades_every_alternative_at_every_seed(tiny_audit):
    alternatives = {alternative.id: alternative for alternative in tiny_audit.alternatives}
    assert alternatives["sum"].full_marks and not alternatives["sum"].problems
    assert not alternatives["not-really"].full_marks
    assert any("test_apply_twice" in problem for problem in alternatives["not-really"].problems)
    condition = next(c for c in tiny_audit.conditions if c.name == "alternatives")
    assert not condition.holds and "1/2 at full marks" in condition.detail


def test_the_audit_kills_mutants_and_reports_survivors_and_stale_records(tiny_audit):
    statuses = {mutant.key: mutant.status for mutant in tiny_audit.mutants}
    assert statuses, "no mutants of the tiny set"
    # `2 * x` made `2 / x` or `1 * x` loses test_double.
    killed = [mutant for mutant in tiny_audit.mutants if mutant.cell == "double" and mutant.killed]
    assert killed and all("test_double" in mutant.killed_by for mutant in killed)
    assert set(statuses.values()) <= {"killed", "unexplained"}
    assert tiny_audit.stale_records == ["a mutant that no longer exists"]
    # Too few mutants and too few alternatives: the audit fails, and says why.
    failing = {condition.name for condition in tiny_audit.conditions if not condition.holds}
    assert {"mutants", "alternatives", "mistakes per test"} <= failing
    assert not tiny_audit.passed


def test_an_explained_survivor_is_counted_as_equivalent(tiny_course, tmp_path):
    audit = audit_problem_set(tiny_course, "tiny", seeds=[1], mutant_seeds=[1], processes=2)
    survivors = [mutant for mutant in audit.mutants if not mutant.killed]
    assert survivors and {mutant.status for mutant in survivors} == {"unexplained"}
    assert not next(c for c in audit.conditions if c.name == "survivors explained").holds
    records = tiny_course.audit_records("tiny")
    saved = records.read_text()
    try:
        records.write_text("\n".join(
            f'[[survivor]]\nmutant = {json.dumps(mutant.key)}\nequivalent = true\nreason = "Same result."\n'
            for mutant in survivors))
        again = audit_problem_set(tiny_course, "tiny", seeds=[1], mutant_seeds=[1], processes=2)
    finally:
        records.write_text(saved)
    assert {mutant.status for mutant in again.mutants if not mutant.killed} == {"equivalent"}
    explained = next(c for c in again.conditions if c.name == "survivors explained")
    assert explained.holds and again.kill_rate == 1.0
    assert again.stale_records == []


def test_the_audit_report_round_trips_as_json(tiny_audit, tmp_path):
    data = json.loads(json.dumps(tiny_audit.to_dict()))
    assert data["ps"] == "tiny" and data["passed"] is False
    assert data["hidden_only"] == 1
    assert {row["name"] for row in data["conditions"]} >= {"solution", "mistakes", "mutants killed"}
    assert set(data["per_test"]) == {"test_double", "test_apply_twice"}
