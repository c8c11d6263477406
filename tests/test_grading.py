"""The engine on a tiny problem set: verdicts come from the trusted side only."""

import json

import pytest

from autograder.batch import Submission, grade_batch
from autograder.grader.grading import grade_notebook
from autograder.report import ERROR, FAILED, PASSED, TIMEOUT, GradeReport

WRONG_DOUBLE = "def double(x):\n    return 3 * x"


def grade(tiny, name, answers=None, **kwargs):
    return grade_notebook(tiny.source, tiny.submission(name, answers, **kwargs), seed=7, limits=tiny.limits,
                         launcher=tiny.launcher)


def statuses(report):
    return {test.id: test.status for test in report.tests}


def test_the_solution_gets_full_marks(tiny):
    report = grade(tiny, "solution")
    assert report.status == "graded"
    assert statuses(report) == {"test_double": PASSED, "test_apply_twice": PASSED}
    assert report.score == report.max_score == 3


def test_a_wrong_answer_loses_the_points_of_its_exercise_only(tiny):
    report = grade(tiny, "wrong", {"double": WRONG_DOUBLE})
    assert statuses(report) == {"test_double": FAILED, "test_apply_twice": PASSED}
    assert report.score == 1
    assert "double(3.0) is 9" in report.tests[0].message


def test_stubs_score_zero_and_say_not_implemented(tiny):
    stub = {"double": "def double(x):\n    raise NotImplementedError()",
            "apply_twice": "def apply_twice(f, x):\n    raise NotImplementedError()"}
    report = grade(tiny, "stub", stub)
    assert report.score == 0
    assert all("not implemented yet" in test.message for test in report.tests)


def test_rebinding_numpy_comparisons_does_not_change_the_verdict(tiny):
    cheat = ("import numpy as np\nimport numpy.testing\n"
             "np.allclose = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True\n"
             "np.testing.assert_allclose = lambda *a, **k: None\n" + WRONG_DOUBLE)
    honest = grade(tiny, "honest", {"double": WRONG_DOUBLE})
    cheater = grade(tiny, "cheat", {"double": cheat})
    assert cheater.score == honest.score == 1
    assert statuses(cheater) == statuses(honest)


def test_a_function_passed_by_the_test_is_called_back_in_the_grader(tiny):
    # The student's code calls the test's functions (a lambda, np.sqrt): they run here, on the
    # data sent, and their results go back to the student's code, which uses them.
    right = grade(tiny, "callback", {"apply_twice": "def apply_twice(f, x):\n    y = f(x)\n    return f(y)"})
    assert statuses(right)["test_apply_twice"] == PASSED, right.tests[1].message
    once = grade(tiny, "once", {"apply_twice": "def apply_twice(f, x):\n    return f(x)"})
    assert statuses(once)["test_apply_twice"] == FAILED
    assert "2" in once.tests[1].message  # f applied once to 1.0: the value the student returned


def test_an_infinite_loop_times_out_on_its_exercise_and_the_rest_is_graded(tiny):
    loop = "def double(x):\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass"
    report = grade(tiny, "loop", {"double": loop})
    assert statuses(report) == {"test_double": TIMEOUT, "test_apply_twice": PASSED}
    assert "did not finish within 3 seconds" in report.tests[0].message


def test_a_loop_that_prints_without_end_is_told_to_print_less_not_to_end_its_loop(tiny):
    # The worker is killed before its reply (and its output) can reach the grader: the notice it
    # sends when the output passes the capture limit is what tells a flood from a silent loop.
    flood = "def double(x):\n    while True:\n        print('step', x, 'value', 2 * x)"
    report = grade(tiny, "flood", {"double": flood})
    assert statuses(report) == {"test_double": TIMEOUT, "test_apply_twice": PASSED}
    message = report.tests[0].message
    assert "did not finish within 3 seconds" in message and "printed more than" in message, message
    assert "never ends" not in message
    # The same flood at the top level of an answer cell.
    cell = "while True:\n    print('epoch loss', 0.5)\ndef double(x):\n    return 2 * x"
    report = grade(tiny, "flood_cell", {"double": cell})
    problems = " ".join(problem.message for problem in report.cell_problems)
    assert "printed more than" in problems and "never ends" not in problems, problems


def test_a_crashing_worker_costs_only_that_exercise(tiny):
    crash = "import os\ndef double(x):\n    os._exit(3)"
    report = grade(tiny, "crash", {"double": crash})
    assert statuses(report) == {"test_double": ERROR, "test_apply_twice": PASSED}
    assert "exited" in report.tests[0].message


def test_a_warning_on_stderr_keeps_its_points_and_is_shown(tiny):
    noisy = ("import sys, warnings\ndef double(x):\n    print('careful', file=sys.stderr)\n"
             "    warnings.warn('watch out')\n    return 2 * x")
    report = grade(tiny, "noisy", {"double": noisy})
    assert report.score == 3
    assert "careful" in report.tests[0].output


def test_an_unsendable_result_fails_with_a_sentence(tiny):
    report = grade(tiny, "generator", {"double": "def double(x):\n    yield 2 * x"})
    assert statuses(report)["test_double"] == FAILED
    assert "generator cannot be sent" in report.tests[0].message


def test_magics_and_shell_commands_in_answers(tiny):
    answer = "%matplotlib inline\n!echo hi\n" + "def double(x):\n    return 2 * x"
    report = grade(tiny, "magic", {"double": answer})
    # The shell line is refused, so the function below it is never defined.
    assert statuses(report)["test_double"] == FAILED
    assert any("Shell commands" in problem.message for problem in report.cell_problems)


def test_only_plain_python_skips_ipythons_transformer():
    """A cell that is plain Python is compiled as it is; every IPython-only form goes through
    IPython's transformer, and so does a cell whose first lines are blank (IPython drops them,
    and with them shifts the line numbers a traceback shows)."""
    from autograder.worker.runtime import _plain_python

    for ipython_only in ("%time x = 1\n", "%%time\nx = 1\n", "!ls\n", "x = !ls\n", "x = %who_ls\n", "np.sum?\n",
                         ">>> x = 1\n", "In [1]: x = 1\n", "x = 1\n   ...: y = 2\n", "d = {\n    ...: 1}\n",
                         "  x = 1\n", "\n\nx = 1\n", "/print 1\n", ""):
        assert _plain_python(ipython_only, "<cell t>") is None, ipython_only
    code = _plain_python("x = 1\ny = x % 2  # not a magic\n", "<cell t>")
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["y"] == 1


def test_a_cell_that_starts_with_blank_lines_runs_and_reports_its_error(tiny):
    report = grade(tiny, "blank-lines", {"double": "\n\ndef double(x):\n    return 2 * x\n\nundefined_name\n"})
    [problem] = report.cell_problems
    assert "undefined_name" in problem.message and "NameError" in problem.message


def test_a_batch_with_broken_submissions_grades_the_rest(tiny, tmp_path):
    submitted = tmp_path / "submitted"
    good = submitted / "ada" / "tiny"
    good.mkdir(parents=True)
    tiny.submission("solution").rename(good / "tiny.ipynb")
    broken = submitted / "bob" / "tiny"
    broken.mkdir(parents=True)
    (broken / "tiny.ipynb").write_text('{"cells": [')
    empty = submitted / "cy" / "tiny"
    empty.mkdir(parents=True)
    subs = [Submission(name, "tiny", submitted / name / "tiny") for name in ("ada", "bob", "cy")]
    reports = grade_batch(tiny.path, subs, tmp_path / "reports", limits=tiny.limits, jobs=2)
    assert [report.status for report in reports] == ["graded", "error", "error"]
    assert reports[0].score == 3
    assert "not valid JSON" in reports[1].error
    assert "no .ipynb file" in reports[2].error
    saved = GradeReport.read_json(tmp_path / "reports" / "bob.json")
    assert saved.status == "error" and saved.max_score == 3


def test_check_not_using_reads_the_students_code_not_the_worker(tiny, tmp_path):
    import nbformat

    from autograder.notebook import SourceNotebook

    def add_test(notebook):
        notebook.cells.append(nbformat.v4.new_code_cell(
            "check_not_using(double, 'linalg.eig', 'linalg.eigh')",
            metadata={"nbgrader": {"grade": True, "grade_id": "test_no_eig", "locked": True, "points": 1,
                                   "solution": False, "schema_version": 3, "task": False}}))

    add_test(tiny.notebook)
    nbformat.write(tiny.notebook, tiny.path)
    source = SourceNotebook.load(tiny.path)
    helper = "import numpy as np\ndef helper(x):\n    return np.linalg.eigh(np.eye(2))[0][0] * 2 * x\n"
    uses = grade_notebook(source, tiny.submission("uses", {"double": helper + "def double(x):\n    return helper(x)"}),
                          limits=tiny.limits, launcher=tiny.launcher)
    clean = grade_notebook(source, tiny.submission("clean", {"double": "def double(x):\n    return 2 * x\n"
                                                             "import numpy as np\ncheck = np.linalg.eig(np.eye(2))"}),
                           limits=tiny.limits, launcher=tiny.launcher)
    assert {t.id: t.status for t in uses.tests}["test_no_eig"] == FAILED
    assert "uses linalg.eigh" in uses.tests[-1].message
    # Using np.linalg in the same cell but outside the function (to check an answer) is fine.
    assert {t.id: t.status for t in clean.tests}["test_no_eig"] == PASSED


def test_student_code_can_import_the_standard_library_and_numpy_random(tiny):
    # Modules the worker template did not import itself are imported after the worker is confined.
    answer = ("import fractions, random, secrets, statistics, decimal, itertools\n"
              "import numpy as np\n"
              "def double(x):\n"
              "    noise = np.random.default_rng(0).normal() * 0 + random.random() * 0\n"
              "    return 2 * x + float(fractions.Fraction(0)) + noise\n")
    report = grade(tiny, "stdlib", {"double": answer})
    assert not report.cell_problems, report.cell_problems
    assert report.score == 3


def test_a_function_that_changes_its_argument_in_place_fails_with_a_sentence(tiny, tmp_path):
    """Arguments are copied into the worker, so the grader cannot see a change in place by itself;
    the worker reports it, and the test fails unless it allows changes."""
    in_place = "import numpy as np\ndef double(x):\n    if isinstance(x, np.ndarray):\n        x *= 2\n        return x\n    return 2 * x\n"
    report = grade_notebook(tiny.source, tiny.submission("in-place", {"double": in_place}), limits=tiny.limits, launcher=tiny.launcher)
    test = report.tests[0]
    assert test.status == FAILED and test.points == 0
    assert "double changed its argument `x` in place; work on a copy" in test.message
    honest = grade_notebook(tiny.source, tiny.submission("copy", {
        "double": "import numpy as np\ndef double(x):\n    x = np.array(x, dtype=float)\n    x *= 2\n    return x\n"}),
        limits=tiny.limits, launcher=tiny.launcher)
    assert honest.tests[0].status == PASSED


def test_a_test_may_allow_changes_in_place(tiny):
    import nbformat

    from autograder.notebook import SourceNotebook

    tiny.notebook.cells.append(nbformat.v4.new_code_cell(
        "values = [3.0, 1.0]\nwith allow_in_place():\n    grow(values)\n"
        "check_close(grow([1.0]), [1.0, 0.0], what='grow([1.0])')\n"
        "### BEGIN HIDDEN TESTS\nassert grow([2.0]) == [2.0, 0.0]\n### END HIDDEN TESTS",
        metadata={"nbgrader": {"grade": True, "grade_id": "test_grow", "locked": True, "points": 1,
                               "solution": False, "schema_version": 3, "task": False}}))
    tiny.notebook.cells.insert(-1, nbformat.v4.new_code_cell(
        "def grow(values):\n    ### BEGIN SOLUTION\n    values.append(0.0)\n    return values\n    ### END SOLUTION",
        metadata={"nbgrader": {"grade": False, "grade_id": "grow", "locked": False, "solution": True,
                               "schema_version": 3, "task": False}}))
    tiny.notebook.cells[1].source += ", allow_in_place"
    nbformat.write(tiny.notebook, tiny.path)
    source = SourceNotebook.load(tiny.path)
    report = grade_notebook(source, tiny.submission("grow"), limits=tiny.limits, launcher=tiny.launcher)
    test = {test.id: test for test in report.tests}["test_grow"]
    # Allowed inside the block; outside it, appending to the list the test passed is a change.
    assert test.status == FAILED and "grow changed its argument `values` in place" in test.message


def test_a_report_names_its_schema_version_and_refuses_another(tiny, tmp_path):
    from autograder.report import SCHEMA_VERSION, ReportFormatError

    report = grade(tiny, "versioned", {})
    path = tmp_path / "report.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert GradeReport.read_json(path) == report
    path.write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ReportFormatError, match="schema version"):
        GradeReport.read_json(path)


def test_a_renamed_function_is_named_in_the_feedback(tiny):
    report = grade(tiny, "renamed", {"double": 'def doubled(x):\n    return 2 * x'})
    result = {test.id: test for test in report.tests}["test_double"]
    assert result.status != "passed"
    assert "does not define" in result.message and "defines `doubled` instead" in result.message
    report = grade(tiny, "missing", {"double": 'def something_else(x):\n    return 2 * x'})
    message = {test.id: test for test in report.tests}["test_double"].message
    assert "does not define" in message and "instead" not in message
