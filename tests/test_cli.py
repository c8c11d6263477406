"""The ``autograder`` command, through its real entry point, as students and instructors run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
AUTOGRADER = Path(sys.executable).parent / "autograder"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(AUTOGRADER), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    """Solution, untouched release, a wrong answer, a loop, and broken files of ps05."""
    folder = tmp_path_factory.mktemp("notebooks")
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    answers = solution_answers(source)
    first_answer = next(iter(answers))
    loop = {**answers, first_answer: answers[first_answer] + "\nwhile True:\n    pass\n"}
    made = {
        "solution": with_answers(release, answers),
        "release": release,
        "mistake": mistake_notebook(release, source, mistake),
        "loop": with_answers(release, loop),
    }
    paths = {}
    for name, notebook in made.items():
        paths[name] = folder / name / f"{PS}.ipynb"
        paths[name].parent.mkdir()
        nbformat.write(notebook, paths[name])
    paths["corrupt"] = folder / "corrupt" / f"{PS}.ipynb"
    paths["corrupt"].parent.mkdir()
    paths["corrupt"].write_text('{"cells": [ {"cell_type": "code", ')
    paths["foreign"] = folder / "foreign" / f"{PS}.ipynb"
    paths["foreign"].parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), paths["foreign"])
    return paths


def test_check_a_correct_notebook(notebooks):
    result = run("check", str(notebooks["solution"]))
    assert result.returncode == 0, result.stdout + result.stderr
    score, _, max_score = result.stdout.split("Score: ")[1].split()[0:3]
    assert score == max_score and float(score) > 0


def test_check_an_unanswered_notebook_exits_1_and_says_why(notebooks):
    result = run("check", str(notebooks["release"]))
    assert result.returncode == 1
    assert "not implemented yet" in result.stdout


def test_check_json_report_and_seed_reproduce_a_run(notebooks, tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    run("check", str(notebooks["mistake"]), "--seed", "5", "--json", str(first))
    run("check", str(notebooks["mistake"]), "--seed", "5", "--json", str(second))
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["seed"] == b["seed"] == 5
    assert [(t["id"], t["status"], t["message"]) for t in a["tests"]] == \
        [(t["id"], t["status"], t["message"]) for t in b["tests"]]
    assert a["score"] < a["max_score"]


def test_check_writes_the_feedback_page_and_gradescope_results(notebooks, tmp_path):
    page, results = tmp_path / "feedback.html", tmp_path / "results.json"
    run("check", str(notebooks["mistake"]), "--html", str(page), "--gradescope", str(results))
    assert 'class="exercise failed"' in page.read_text()
    data = json.loads(results.read_text())
    assert data["score"] < sum(test["max_score"] for test in data["tests"])


def test_check_a_corrupt_notebook_exits_3_with_one_line(notebooks):
    result = run("check", str(notebooks["corrupt"]))
    assert result.returncode == 3
    reason = [line for line in result.stdout.splitlines() if "Could not grade" in line]
    assert len(reason) == 1 and "not valid JSON" in reason[0]


def test_usage_errors_exit_2_with_advice(notebooks, tmp_path):
    missing = run("check", str(tmp_path / "nothing.ipynb"))
    assert missing.returncode == 2 and "There is no notebook" in missing.stderr
    unknown = run("grade", "ps05_derivativs")
    assert unknown.returncode == 2 and "Did you mean ps05_derivatives?" in unknown.stderr


def test_grade_a_class_with_broken_and_hanging_submissions(notebooks, tmp_path):
    submitted = tmp_path / "submitted"
    for name in ("solution", "release", "mistake", "loop", "corrupt", "foreign"):
        target = submitted / name / PS
        target.mkdir(parents=True)
        shutil.copy(notebooks[name], target / f"{PS}.ipynb")
    (submitted / "nothing" / PS).mkdir(parents=True)
    reports = tmp_path / "reports"
    result = run("grade", "ps05", "--submitted", str(submitted), "--reports", str(reports), "--timeout", "2")
    assert result.returncode == 3, result.stdout + result.stderr
    graded = {path.stem: json.loads(path.read_text()) for path in reports.glob("*.json")}
    assert sorted(graded) == ["corrupt", "foreign", "loop", "mistake", "nothing", "release", "solution"]
    assert graded["solution"]["score"] == graded["solution"]["max_score"] > 0
    assert graded["release"]["score"] == 0
    assert 0 < graded["mistake"]["score"] < graded["mistake"]["max_score"]
    assert graded["loop"]["status"] == "graded"
    assert graded["loop"]["score"] < graded["loop"]["max_score"]
    for broken in ("corrupt", "foreign", "nothing"):
        assert graded[broken]["status"] == "error" and graded[broken]["error"]
    assert "NOT GRADED" in result.stdout and "7 submissions" in result.stdout


def test_export_csv_has_the_reports_scores(notebooks, tmp_path):
    import csv

    submitted = tmp_path / "submitted"
    for name in ("solution", "mistake", "corrupt"):
        (submitted / name / PS).mkdir(parents=True)
        shutil.copy(notebooks[name], submitted / name / PS / f"{PS}.ipynb")
    reports = tmp_path / "reports"
    run("grade", PS, "--submitted", str(submitted), "--reports", str(reports))
    result = run("export", "csv", PS, "--reports", str(reports), "--out", str(tmp_path / "grades.csv"))
    assert result.returncode == 0, result.stderr
    rows = {row["student"]: row for row in csv.DictReader((tmp_path / "grades.csv").open())}
    for student in ("solution", "mistake", "corrupt"):
        report = json.loads((reports / f"{student}.json").read_text())
        assert float(rows[student]["score"]) == report["score"]
        assert sum(float(rows[student][t["id"]]) for t in report["tests"]) == report["score"]
    assert rows["corrupt"]["status"] == "error" and "not valid JSON" in rows["corrupt"]["note"]
    empty = run("export", "csv", PS, "--reports", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "run `autograder grade" in empty.stderr


def test_grade_only_some_students(notebooks, tmp_path):
    submitted = tmp_path / "submitted"
    for name in ("solution", "release"):
        (submitted / name / PS).mkdir(parents=True)
        shutil.copy(notebooks[name], submitted / name / PS / f"{PS}.ipynb")
    result = run("grade", PS, "--submitted", str(submitted), "--reports", str(tmp_path / "r"),
                 "--student", "solution")
    assert result.returncode == 0
    assert [path.stem for path in (tmp_path / "r").glob("*.json")] == ["solution"]


def test_demo_grades_the_built_in_class(tmp_path):
    # One set (every set's catalogue is graded by tests/test_problem_sets.py): the demo's
    # class, reports and summary for it.
    result = run("demo", "--ps", PS, "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "demo" / "reports" / PS).glob("*.json")}
    assert reports["solution"]["score"] == reports["solution"]["max_score"]
    assert reports["untouched-release"]["score"] == 0
    mistakes = [name for name in reports if name.startswith("mistake-")]
    assert len(mistakes) == len(load_catalogue(ROOT / "source" / PS / "mistakes.toml"))
    assert all(reports[name]["score"] < reports[name]["max_score"] for name in mistakes)


def test_commands_open_the_gradebook_without_building_the_iri_parsers():
    """jsonschema builds rfc3987-syntax's parsers (a second or more) when nbgrader imports nbformat,
    unless rfc3987 is installed; our commands do without them either way."""
    probe = ("import sys\n"
             "sys.modules['rfc3987'] = None  # as on a machine without it\n"
             "from autograder import cli\n"
             "cli._skip_the_iri_parsers()\n"
             "from nbgrader.api import Gradebook\n"
             "import jsonschema\n"
             "print(sys.modules.get('rfc3987_syntax') is None, 'iri' in jsonschema.FormatChecker().checkers)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
