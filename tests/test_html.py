"""The feedback page and the class summary, as a browser shows them (headless Chromium).

The pages must render, show every exercise, and contain neither the hidden tests' code nor the
solution's.  Screenshots land in build/screenshots/ for review.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook
from autograder.course import Course
from autograder.grader.grading import grade_notebook
from autograder.html import class_page, student_page
from autograder.notebook import SourceNotebook, nbgrader_metadata, read_notebook, split_hidden_tests

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.fail("Chromium is needed for the page tests; `python3 run.py test` installs it (apt-get install chromium).")
    return found


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def graded(tmp_path_factory, warm_launcher):
    """Reports of a few ps05 submissions: the solution and several catalogued mistakes."""
    course = Course(ROOT)
    folder = tmp_path_factory.mktemp("html")
    source_nb = read_notebook(course.source_notebook(PS))
    release = read_notebook(course.release_notebook(PS))
    source = SourceNotebook.load(course.source_notebook(PS))
    reports = []
    for mistake in load_catalogue(course.catalogue(PS))[::6]:
        path = folder / f"{mistake.id}.ipynb"
        nbformat.write(mistake_notebook(release, source_nb, mistake), path)
        report = grade_notebook(source, path, student=mistake.id, seed=3, launcher=warm_launcher)
        reports.append(report)
    return folder, source_nb, reports


def secret_lines(source_nb) -> set[str]:
    """Lines of hidden tests and of solutions, long enough to be recognisable."""
    secrets = set()
    for cell in source_nb.cells:
        meta = nbgrader_metadata(cell)
        if cell.cell_type != "code":
            continue
        if meta.get("grade"):
            text, hidden = split_hidden_tests(cell.source)
            lines = text.splitlines()
            secrets |= {lines[number - 1].strip() for number in hidden}
        if meta.get("solution"):
            inside = False
            for line in cell.source.splitlines():
                if "### BEGIN SOLUTION" in line:
                    inside = True
                elif "### END SOLUTION" in line:
                    inside = False
                elif inside:
                    secrets.add(line.strip())
    return {line for line in secrets if len(line) >= 24 and not line.startswith("#")}


def test_the_feedback_page_renders_every_exercise_and_no_secrets(graded, tmp_path):
    folder, source_nb, reports = graded
    secrets = secret_lines(source_nb)
    assert len(secrets) > 20
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for report in reports:
        page = folder / f"{report.student}.html"
        page.write_text(student_page(report))
        dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
        assert "<body>" in dom or "<body" in dom
        for test in report.tests:
            assert re.search(rf'<section class="exercise [a-z]+" id="{test.id}"', dom), test.id
        assert f"{report.score:g} / {report.max_score:g}" in dom
        leaked = [line for line in secrets if line in dom]
        assert not leaked, f"{report.student}: the page shows hidden tests or solutions: {leaked[:3]}"
    shot = SCREENSHOTS / "student-feedback.png"
    browse(folder / f"{reports[0].student}.html", tmp_path / "profile", f"--screenshot={shot}",
           "--window-size=1100,1600")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_the_class_summary_renders_its_charts(graded, tmp_path):
    folder, _, reports = graded
    page = folder / "index.html"
    page.write_text(class_page(reports))
    dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
    assert dom.count("<svg") >= 2
    assert "Pass rate per exercise" in dom
    for report in reports:
        assert report.student in dom
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "class-summary.png"
    browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1100,1400")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_failed_exercises_carry_messages_and_diagnoses_on_the_page(graded):
    _, _, reports = graded
    pages = "".join(student_page(report) for report in reports)
    assert 'class="exercise failed"' in pages
    assert "Likely mistake" in pages or "This looks like" in pages
    assert "BEGIN HIDDEN TESTS" not in pages and "BEGIN SOLUTION" not in pages


def test_a_wrong_error_curve_is_drawn_against_the_reference(tmp_path, warm_launcher):
    course = Course(ROOT)
    mistake = next(m for m in load_catalogue(course.catalogue(PS)) if m.id == "errors-of-forward-difference")
    path = tmp_path / "curve.ipynb"
    nbformat.write(mistake_notebook(read_notebook(course.release_notebook(PS)),
                                    read_notebook(course.source_notebook(PS)), mistake), path)
    report = grade_notebook(SourceNotebook.load(course.source_notebook(PS)), path, seed=1, launcher=warm_launcher)
    result = next(test for test in report.tests if test.id == "test_difference_errors")
    assert result.status == "failed" and result.figures
    curves = result.figures[0]["curves"]
    assert len(curves) == 2 and "yours" in curves
    assert curves["yours"][0] > 10 * next(values for name, values in curves.items() if name != "yours")[0]
    page = tmp_path / "curve.html"
    page.write_text(student_page(report))
    dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
    section = dom.split('id="test_difference_errors"')[1].split("</section>")[0]
    assert section.count("<polyline") == 2


def test_the_class_summary_groups_undiagnosed_failures_counts_untouched_notebooks_and_links_pages():
    from autograder.html import class_page
    from autograder.report import FinalScore, GradeReport, TestResult

    def report(student, message, diagnosis=None, final=None):
        tests = [TestResult("test_a", 0, 2, "failed", message, diagnosis, title="Exercise 1 — A"),
                 TestResult("test_b", 1, 1, "passed", title="Exercise 2 — B")]
        return GradeReport("ps", "ps", student=student, tests=tests, final=final)

    untouched = GradeReport("ps", "ps", student="ned", tests=[
        TestResult("test_a", 0, 2, "failed", "a is not implemented yet."),
        TestResult("test_b", 0, 1, "failed", "b is not implemented yet.")])
    page = class_page([
        report("ada", "a(x) returned 3.25 for x of shape (5,); expected 6.5. Check the factor."),
        report("bob", "a(x) returned -1e+30 for x of shape (7,); expected 2. Check the factor."),
        report("cy", "wrong", diagnosis="dividing by n - 1", final=FinalScore(raw_score=3, late_penalty=1)),
        untouched,
    ])
    rows = re.findall(r"<tr><td>Exercise 1 — A</td><td>(.*?)</td><td>(\d+)</td></tr>", page)
    assert ("a(x) returned … for x of shape (…,); expected ….", "2") in rows
    assert ("Likely mistake: dividing by n - 1", "1") in rows
    assert "1 untouched notebooks" in page and "ned" in page
    assert all(f'href="{name}.html"' in page for name in ("ada", "bob", "cy", "ned"))
    assert "2 / 3" in page and "late penalty -1" in page  # cy's final score, and why
