"""Our grades in nbgrader's gradebook: nbgrader's own commands read them back.

A class with correct, wrong, late, broken and missing submissions is graded by
``autograder grade``; then ``nbgrader export``, ``nbgrader generate_feedback`` and the API
behind formgrader must show exactly the scores of our reports, the late penalty nbgrader is
configured with, and a manual override that survives a regrade.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook, split_hidden_tests

from conftest import one_set_course

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
BIN = Path(sys.executable).parent
DUE = "2026-01-10 17:00:00 UTC"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    return result


def autograder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([str(BIN / "autograder"), *args], cwd)


def nbgrader(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = run([str(BIN / "nbgrader"), *args], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def write_submission(course: Path, student: str, notebook, timestamp: str | None) -> None:
    folder = course / "submitted" / student / PS
    folder.mkdir(parents=True)
    if notebook is not None:
        if isinstance(notebook, str):
            (folder / f"{PS}.ipynb").write_text(notebook)
        else:
            nbformat.write(notebook, folder / f"{PS}.ipynb")
    if timestamp is not None:
        (folder / "timestamp.txt").write_text(timestamp)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A course folder with its own gradebook, a due date, nbgrader's zero late penalty, and
    a class of six, graded once by ``autograder grade``."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    with (course / "nbgrader_config.py").open("a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    shutil.copytree(ROOT / "source" / PS, course / "source" / PS)
    shutil.copytree(ROOT / "release" / PS, course / "release" / PS)
    nbgrader("db", "assignment", "add", PS, f"--duedate={DUE}", cwd=course)

    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    solution = with_answers(release, solution_answers(source))
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    write_submission(course, "ada", solution, "2026-01-09 12:00:00.000000 UTC")
    write_submission(course, "bob", mistake_notebook(release, source, mistake), "2026-01-10 16:59:00 UTC")
    write_submission(course, "cy", solution, "2026-01-12 08:30:00.000000 UTC")  # late
    write_submission(course, "dee", '{"cells": [ {"cell_type": ', "2026-01-09 10:00:00 UTC")  # broken
    write_submission(course, "eve", release, None)  # untouched, no timestamp
    write_submission(course, "fay", None, "2026-01-09 10:00:00 UTC")  # folder without a notebook

    result = autograder("grade", PS, cwd=course)
    assert result.returncode == 3, result.stdout + result.stderr  # dee and fay cannot be graded
    shutil.copy(course / "gradebook.db", course / "gradebook-as-graded.db")  # later tests change the gradebook
    reports = {path.stem: json.loads(path.read_text()) for path in (course / "reports" / PS).glob("*.json")}
    return course, reports, mistake


def exported(course: Path) -> dict[str, dict[str, str]]:
    target = course / "grades.csv"
    target.unlink(missing_ok=True)
    nbgrader("export", "--to", str(target), cwd=course)
    with target.open() as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle) if row["assignment"] == PS}


def test_nbgrader_export_shows_our_scores(graded_class):
    course, reports, _ = graded_class
    rows = exported(course)
    assert set(rows) == set(reports) == {"ada", "bob", "cy", "dee", "eve", "fay"}
    for student, report in reports.items():
        row = rows[student]
        assert float(row["raw_score"]) == pytest.approx(report["score"]), student
        assert float(row["max_score"]) == pytest.approx(report["max_score"]) == 20
    assert float(rows["ada"]["score"]) == 20 and float(rows["ada"]["late_submission_penalty"]) == 0
    assert 0 < float(rows["bob"]["score"]) < 20
    # Late: the same raw score as ada, and nbgrader's configured penalty ("zero") applied.
    assert float(rows["cy"]["raw_score"]) == 20
    assert float(rows["cy"]["late_submission_penalty"]) == 20 and float(rows["cy"]["score"]) == 0
    assert rows["cy"]["timestamp"].startswith("2026-01-12 08:30:00")
    assert rows["ada"]["duedate"].startswith("2026-01-10 17:00:00")
    for student in ("dee", "eve", "fay"):
        assert float(rows[student]["score"]) == 0


def test_per_cell_scores_and_comments_are_in_the_gradebook(graded_class):
    from nbgrader.api import Gradebook

    course, reports, mistake = graded_class
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "math-for-ml") as gradebook:
        for student, report in reports.items():
            notebook = gradebook.find_submission_notebook(PS, PS, student)
            points = {grade.name: grade.auto_score for grade in notebook.grades}
            assert points == {test["id"]: test["points"] for test in report["tests"]}, student
            flagged = {grade.name for grade in notebook.grades if grade.needs_manual_grade}
            # A notebook we could not grade goes to a person; graded ones do not.
            assert flagged == (set(points) if report["status"] != "graded" else set()), student
        bob = gradebook.find_submission_notebook(PS, PS, "bob")
        comment = gradebook.find_comment(mistake.cell, PS, PS, "bob").auto_comment
        failed = [test for test in reports["bob"]["tests"] if test["status"] != "passed"]
        # Each failed test is named the way students see it: by its title.
        assert failed and all((test["title"] or test["id"]) in comment for test in failed)
        assert mistake.feedback[0].lower() in comment.lower()
        assert bob.score == pytest.approx(reports["bob"]["score"])
        assert "Not graded" in gradebook.find_comment(mistake.cell, PS, PS, "dee").auto_comment


def test_autograded_notebooks_feed_nbgrader_feedback_without_hidden_tests(graded_class):
    course, reports, _ = graded_class
    for student in reports:
        nbformat.validate(nbformat.read(course / "autograded" / student / PS / f"{PS}.ipynb", as_version=4))
    assert (course / "autograded" / "cy" / PS / "timestamp.txt").read_text().startswith("2026-01-12")
    nbgrader("generate_feedback", PS, cwd=course)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    hidden_lines, visible_lines = set(), set()
    for cell in source.cells:
        text, hidden = split_hidden_tests(cell.source)
        for number, line in enumerate(text.splitlines(), start=1):
            (hidden_lines if number in hidden else visible_lines).add(line.strip())
    visible = "\n".join(visible_lines)  # what every student may see, markdown included
    hidden_lines = {line for line in hidden_lines if len(line) > 20 and line not in visible}
    assert hidden_lines
    for student, report in reports.items():
        page = (course / "feedback" / student / PS / f"{PS}.html").read_text()
        after_penalty = 0.0 if student == "cy" else report["score"]  # nbgrader shows the penalty
        assert f"Score: {after_penalty:.1f} / 20.0" in page, student
        submitted = course / "submitted" / student / PS / f"{PS}.ipynb"
        own = json.dumps(submitted.read_text()) if submitted.is_file() else ""
        # A line the student wrote themselves may appear; no other hidden-test line may.
        leaked = [line for line in hidden_lines if line in page and json.dumps(line)[1:-1] not in own]
        assert not leaked, (student, leaked[:3])


def test_formgrader_sees_our_grades_and_a_manual_grade_survives_regrading(graded_class):
    from nbgrader.api import Gradebook
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    course, reports, _ = graded_class
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    # What formgrader's "Manage submissions" page lists.
    listed = {row["student"]: row for row in api.get_submissions(PS)}
    assert listed["bob"]["score"] == pytest.approx(reports["bob"]["score"])
    assert listed["bob"]["autograded"] and listed["bob"]["needs_manual_grade"] is False
    assert listed["dee"]["needs_manual_grade"] is True

    # A grader gives dee's first exercise full marks by hand, as formgrader does.
    first = reports["dee"]["tests"][0]
    url = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(url, "math-for-ml") as gradebook:
        grade = gradebook.find_grade(first["id"], PS, PS, "dee")
        grade.manual_score = first["max_points"]
        grade.needs_manual_grade = False
        gradebook.db.commit()
    result = autograder("grade", PS, "--regrade", cwd=course)
    assert result.returncode == 3, result.stdout + result.stderr
    rows = exported(course)
    assert float(rows["dee"]["score"]) == first["max_points"]
    assert float(rows["ada"]["score"]) == 20 and float(rows["cy"]["score"]) == 0
    with Gradebook(url, "math-for-ml") as gradebook:
        assert len(gradebook.assignment_submissions(PS)) == 6  # a regrade adds no rows


def test_another_database_and_opting_out(tmp_path):
    course = one_set_course(tmp_path, PS)
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    write_submission(course, "ada", release, None)
    other = tmp_path / "elsewhere.db"
    result = autograder("grade", PS, "--db", f"sqlite:///{other}", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert other.is_file() and not (course / "gradebook.db").exists()
    result = autograder("grade", PS, "--no-gradebook", "--regrade", "--reports", str(tmp_path / "r"), cwd=course)
    assert result.returncode == 0 and not (course / "gradebook.db").exists()
    result = autograder("grade", PS, "--db", "nosuchdb://x", "--regrade", cwd=course)
    assert result.returncode == 2 and "gradebook" in result.stderr and "Traceback" not in result.stderr


def test_writing_grades_imports_nbgraders_gradebook_without_its_server_extensions(tmp_path):
    """Over half of nbgrader's import time is its Jupyter server extensions, which a batch never
    uses: opening the gradebook leaves them out, and nbgrader's apps still import and work after."""
    course = one_set_course(tmp_path, PS)
    write_submission(course, "ada", read_notebook(ROOT / "release" / PS / f"{PS}.ipynb"), None)
    assert autograder("grade", PS, cwd=course).returncode == 0  # the problem set is in the gradebook now
    probe = (
        "import sys\nfrom pathlib import Path\nfrom autograder.course import Course\n"
        "from autograder.integrations.gradebook import GradebookTarget, GradebookWriter\n"
        f"course = Course(Path({str(course)!r}))\n"
        f"with GradebookWriter(course, {PS!r}, GradebookTarget.for_course(course, course.root / 'submitted')):\n"
        "    print(sorted(name for name in ('nbgrader.server_extensions', 'nbgrader.exchange', 'nbconvert') "
        "if name in sys.modules))\n"
        "import nbgrader\nfrom nbgrader.apps import NbGraderAPI\nprint(nbgrader.__version__, NbGraderAPI.__name__)\n")
    result = run([sys.executable, "-c", probe], cwd=course)
    assert result.returncode == 0, result.stderr
    from importlib.metadata import version

    assert result.stdout.splitlines() == ["[]", f"{version('nbgrader')} NbGraderAPI"], result.stdout


def test_renaming_a_graded_cell_after_grading_says_what_to_do(tmp_path):
    course = one_set_course(tmp_path, PS)
    write_submission(course, "ada", read_notebook(ROOT / "release" / PS / f"{PS}.ipynb"), None)
    assert autograder("grade", PS, cwd=course).returncode == 0
    path = course / "source" / PS / f"{PS}.ipynb"
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        metadata = cell["metadata"].get("nbgrader", {})
        if metadata.get("grade_id") == "test_newton_1d":
            metadata["grade_id"] = "test_newton_one_dimension"
    path.write_text(json.dumps(notebook))

    result = autograder("grade", PS, "--regrade", cwd=course)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "Cannot add or remove cells" in result.stderr
    assert f"nbgrader db assignment remove {PS} --force" in result.stderr
    nbgrader("db", "assignment", "remove", PS, "--force", cwd=course)
    result = autograder("grade", PS, "--regrade", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_newton_one_dimension" in exported_cells(course)

    # Changing a test's points is allowed: the gradebook follows.
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        metadata = cell["metadata"].get("nbgrader", {})
        if metadata.get("grade_id") == "test_newton_one_dimension":
            metadata["points"] = metadata["points"] + 2
    path.write_text(json.dumps(notebook))
    result = autograder("grade", PS, "--regrade", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert float(exported(course)["ada"]["max_score"]) == 22


def exported_cells(course: Path) -> set[str]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "math-for-ml") as gradebook:
        return {grade.name for grade in gradebook.find_submission_notebook(PS, PS, "ada").grades}


def test_every_output_shows_the_gradebooks_final_score(graded_class):
    """After grading, hand grading (without a regrade), a late hand-in's penalty, an extension
    given after grading, a hand-in of two notebooks and one student regraded alone, nbgrader
    export, our CSV, the reports, the pages and the terminal table agree on every student's
    final score, and the class summary still lists the class."""
    from nbgrader.api import Gradebook

    course, reports, _ = graded_class
    url = f"sqlite:///{course / 'gradebook.db'}"
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    solution = with_answers(release, solution_answers(source))
    # Two more hand-ins: gus is a day late and gets an extension after grading; hal worked in a
    # copy of the notebook and left the named one untouched.
    write_submission(course, "gus", solution, "2026-01-11 17:00:00 UTC")
    write_submission(course, "hal", release, "2026-01-09 12:00:00 UTC")
    nbformat.write(solution, course / "submitted" / "hal" / PS / f"{PS}-Copy1.ipynb")
    result = autograder("grade", PS, cwd=course)
    assert result.returncode == 3, result.stdout + result.stderr
    with Gradebook(url, "math-for-ml") as gradebook:
        gradebook.grant_extension(PS, "gus", days=3)
    first = reports["bob"]["tests"][0]
    with Gradebook(url, "math-for-ml") as gradebook:  # a hand grade in formgrader: bob gets 0.5 more
        grade = gradebook.find_grade(first["id"], PS, PS, "bob")
        grade.manual_score = (grade.auto_score or 0) + 0.5
        # and eve (who handed in the untouched notebook) a point of extra credit, which nbgrader adds
        gradebook.find_grade(first["id"], PS, PS, "eve").extra_credit = 1.0
        gradebook.db.commit()
    result = autograder("grade", PS, cwd=course)  # nothing to grade: refreshes what changed
    assert result.returncode == 3, result.stdout + result.stderr
    result = autograder("grade", PS, "--student", "ada", "--regrade", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    table = autograder("grade", PS, cwd=course).stdout
    assert autograder("export", "csv", PS, cwd=course).returncode == 0

    folder = course / "reports" / PS
    with (folder / "grades.csv").open() as handle:
        ours = {row["student"]: row for row in csv.DictReader(handle)}
    theirs = exported(course)
    summary = (folder / "index.html").read_text()
    assert set(ours) == set(theirs) == {"ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal"}
    for student, row in theirs.items():
        final = float(row["score"])
        report = json.loads((folder / f"{student}.json").read_text())
        assert report["final_score"] == pytest.approx(final), student
        assert float(ours[student]["score"]) == pytest.approx(final), student
        assert float(ours[student]["late_penalty"]) == pytest.approx(float(row["late_submission_penalty"]))
        shown = f"{final:g} / 20"
        assert shown in (folder / f"{student}.html").read_text() or report["status"] != "graded", student
        assert f'href="{student}.html"' in summary and shown in summary, student
        assert any(line.split()[:1] == [student] and shown in line for line in table.splitlines()), student
    assert float(theirs["bob"]["score"]) == pytest.approx(reports["bob"]["score"] + 0.5)
    assert float(theirs["eve"]["score"]) == pytest.approx(reports["eve"]["score"] + 1.0)
    assert float(theirs["cy"]["raw_score"]) == 20 and float(theirs["cy"]["score"]) == 0
    assert "late penalty -20" in (folder / "cy.html").read_text()
    assert "hand grading +0.5" in (folder / "bob.html").read_text()
    assert float(theirs["gus"]["late_submission_penalty"]) == 0 and float(theirs["gus"]["score"]) == 20
    assert float(theirs["hal"]["score"]) == 20
    assert f"{PS}-Copy1.ipynb was graded" in (folder / "hal.html").read_text()
    with Gradebook(url, "math-for-ml") as gradebook:  # and formgrader asks a person to look
        assert gradebook.find_submission(PS, "hal").needs_manual_grade


def _rows_of(db_url: str) -> dict[str, tuple]:
    """Every student's rows of PS, by cell name, without the rows' ids."""
    from nbgrader.api import Gradebook

    rows = {}
    with Gradebook(db_url) as gradebook:
        for submission in gradebook.assignment_submissions(PS):
            notebooks = []
            for notebook in submission.notebooks:
                grades = sorted((grade.name, grade.auto_score, grade.manual_score, grade.extra_credit,
                                 grade.needs_manual_grade) for grade in notebook.grades)
                comments = sorted((comment.name, comment.auto_comment, comment.manual_comment)
                                  for comment in notebook.comments)
                notebooks.append((notebook.name, notebook.flagged, notebook.late_submission_penalty, grades, comments))
            student = submission.student
            rows[student.id] = (submission.timestamp, submission.extension, submission.score,
                                submission.needs_manual_grade, notebooks,
                                (student.first_name, student.last_name, student.email, student.lms_user_id))
    return rows


def test_a_first_submissions_rows_are_those_nbgraders_objects_make(graded_class, tmp_path):
    """``autograder grade`` inserts a first submission's rows many students at once, without
    nbgrader's objects; recorded again through those objects (as a regrade or the service does),
    every row, score, comment, flag and late penalty comes out the same."""
    from autograder.batch import Submission
    from autograder.course import Course
    from autograder.integrations.gradebook import GradebookTarget, GradebookWriter
    from autograder.report import GradeReport

    course, reports, _ = graded_class
    inserted = _rows_of(f"sqlite:///{course / 'gradebook-as-graded.db'}")
    assert set(inserted) == set(reports) and inserted["cy"][4][0][2] == 20  # cy is late: all 20 points off
    copy = tmp_path / "gradebook.db"
    shutil.copy(course / "gradebook-as-graded.db", copy)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{copy}") as gradebook:
        for student in reports:  # none was on the roster: autograde added them
            gradebook.remove_submission(PS, student)
            gradebook.remove_student(student)
    target = GradebookTarget(f"sqlite:///{copy}", tmp_path / "autograded", "default_course")
    with GradebookWriter(Course(course), PS, target, batch=False) as writer:
        for student in sorted(reports):
            report = GradeReport.read_json(course / "reports" / PS / f"{student}.json")
            writer.record(report, Submission(student, PS, course / "submitted" / student / PS))
    assert writer.warnings == []
    assert _rows_of(f"sqlite:///{copy}") == inserted


@pytest.mark.parametrize("batch", [False, True], ids=["commit-each", "one-transaction"])
def test_a_student_whose_rows_fail_costs_only_that_student(tmp_path, monkeypatch, batch):
    """A failure halfway through one student's rows undoes its scores only (the report stays on
    disk for the next run), and the students before and after it reach the gradebook; also when
    several students share a transaction (``autograder grade``), which the failure rolls back."""
    from nbgrader.api import Gradebook, MissingEntry

    from autograder.batch import Submission
    from autograder.course import Course
    from autograder.integrations.gradebook import GradebookTarget, GradebookWriter
    from autograder.report import GradeReport

    course = one_set_course(tmp_path, PS)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    for student in ("ada", "bob", "cy"):
        write_submission(course, student, with_answers(release, solution_answers(source)), None)
    result = autograder("grade", PS, "--no-gradebook", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr

    target = GradebookTarget.for_course(Course(course), course / "submitted", None)
    with GradebookWriter(Course(course), PS, target, batch=batch) as writer:
        real_penalty = writer._late_penalty

        def failing_for_bob(student, score, seconds_late):
            if student == "bob":  # after bob's submission and grades were written in the session
                raise RuntimeError("disk full")
            return real_penalty(student, score, seconds_late)

        monkeypatch.setattr(writer, "_late_penalty", failing_for_bob)
        for student in ("ada", "bob", "cy"):
            report = GradeReport.read_json(course / "reports" / PS / f"{student}.json")
            writer.record(report, Submission(student, PS, course / "submitted" / student / PS))
    assert writer.warnings == ["bob: not recorded in the gradebook: disk full"]
    with Gradebook(target.db_url) as gradebook:
        assert gradebook.find_submission(PS, "ada").score == 20
        assert gradebook.find_submission(PS, "cy").score == 20
        try:
            assert gradebook.find_submission(PS, "bob").score == 0
        except MissingEntry:
            pass


def test_one_transaction_for_many_students_reaches_the_gradebook_when_its_commit_fails(tmp_path, monkeypatch):
    """``autograder grade`` commits many students at once; a commit that fails records each of
    them again on its own, so none is lost for another's fault."""
    from nbgrader.api import Gradebook

    from autograder.batch import Submission
    from autograder.course import Course
    from autograder.integrations.gradebook import GradebookTarget, GradebookWriter
    from autograder.report import GradeReport

    course = one_set_course(tmp_path, PS)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    students = ("ada", "bob", "cy")
    for student in students:
        write_submission(course, student, with_answers(release, solution_answers(source)), None)
    assert autograder("grade", PS, "--no-gradebook", cwd=course).returncode == 0

    target = GradebookTarget.for_course(Course(course), course / "submitted", None)
    with GradebookWriter(Course(course), PS, target, batch=True) as writer:
        session = writer._gradebook.db
        real_commit, commits = session.commit, []

        def commit_failing_once():
            commits.append(1)
            if len(commits) == 1:
                raise RuntimeError("database is locked")
            return real_commit()

        monkeypatch.setattr(session, "commit", commit_failing_once)
        monkeypatch.setattr(writer, "COMMIT_SECONDS", 3600.0)
        for student in students:
            report = GradeReport.read_json(course / "reports" / PS / f"{student}.json")
            writer.record(report, Submission(student, PS, course / "submitted" / student / PS))
            assert report.final is not None and report.final.raw_score == 20
        assert commits == []  # nothing committed yet: one transaction for the three
    assert len(commits) == 4, commits  # the one that failed, then one per student
    assert writer.warnings == []
    with Gradebook(target.db_url) as gradebook:
        assert [gradebook.find_submission(PS, student).score for student in students] == [20, 20, 20]
