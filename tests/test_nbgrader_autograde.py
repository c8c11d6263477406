"""nbgrader's own autograde, and formgrader's Autograde button (nbgrader's API), grade with the
confined engine: the same scores as `autograder grade`, our feedback as comments, and no
hidden-test code in the autograded notebook or in `nbgrader generate_feedback`'s pages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook, split_hidden_tests

ROOT = Path(__file__).resolve().parent.parent
PS = "ps05_derivatives"
BIN = Path(sys.executable).parent

# An answer that would win every test under nbgrader's own Execute, where test cells run in the
# student's kernel: it replaces the checks the test cells call.
CHEAT = textwrap.dedent('''
    def forward_difference(f, x, h=1e-5):
        return 0.0

    import autograder.checks
    check_close = check_scalar = check_finite = lambda *args, **kwargs: args[0] if args else None
    autograder.checks.check_close = check_close
''')


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    # This checkout's package, for nbgrader_config.py's import and our CLI.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _hidden_lines() -> list[str]:
    """Lines of the source's hidden tests that occur nowhere else in the notebook (and are long
    enough not to occur by chance)."""
    hidden_lines, visible_lines = set(), set()
    for cell in read_notebook(ROOT / "source" / PS / f"{PS}.ipynb").cells:
        text, hidden = split_hidden_tests(cell.source) if cell.cell_type == "code" else (cell.source, frozenset())
        for number, line in enumerate(text.splitlines(), start=1):
            (hidden_lines if number in hidden else visible_lines).add(line.strip())
    lines = sorted(line for line in hidden_lines - visible_lines if len(line) > 30)
    assert len(lines) > 10
    return lines


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course of one problem set, released with nbgrader, with three hand-ins: a catalogued
    mistake (ada), the cheat above (bob), the solution (cy)."""
    root = tmp_path_factory.mktemp("nbgrader-course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "source" / PS, root / "source" / PS)
    _run(BIN / "nbgrader", "generate_assignment", PS, "--force", cwd=root)
    release = read_notebook(root / "release" / PS / f"{PS}.ipynb")
    source = read_notebook(root / "source" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(root / "source" / PS / "mistakes.toml")[0]
    hand_ins = {
        "ada": mistake_notebook(release, source, mistake),
        "bob": with_answers(release, {**solution_answers(source), "forward_difference": CHEAT}),
        "cy": with_answers(release, solution_answers(source)),
    }
    for student, notebook in hand_ins.items():
        _run(BIN / "nbgrader", "db", "student", "add", student, cwd=root)
        target = root / "submitted" / student / PS / f"{PS}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(notebook, target)
    return root


def _gradebook_scores(root: Path) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {submission.student_id: (submission.score, submission.max_score)
                for submission in gradebook.assignment_submissions(PS)}


def test_nbgrader_autograde_scores_as_autograder_grade_and_hides_the_hidden_tests(course):
    _run(BIN / "nbgrader", "autograde", PS, "--CourseDirectory.student_id_exclude=cy", cwd=course)
    ours = course / "our-reports"
    _run(sys.executable, "-m", "autograder.cli", "--course", course, "grade", PS, "--no-gradebook", "--reports", ours,
         "--student", "ada", "--student", "bob", cwd=course)
    scores = _gradebook_scores(course)
    for student in ("ada", "bob"):
        expected = json.loads((ours / f"{student}.json").read_text())
        assert scores[student] == (expected["score"], expected["max_score"])
        assert expected["score"] < expected["max_score"]  # the cheat did not help
        # Our report and page were written by nbgrader's autograde too, with the same score.
        written = json.loads((course / "reports" / PS / f"{student}.json").read_text())
        assert written["score"] == expected["score"] and written["seed"] == expected["seed"]

    _run(BIN / "nbgrader", "generate_feedback", PS, "--force", cwd=course)
    hidden = _hidden_lines()
    for student in ("ada", "bob"):
        autograded = (course / "autograded" / student / PS / f"{PS}.ipynb").read_text()
        feedback = (course / "feedback" / student / PS / f"{PS}.html").read_text()
        for line in hidden:
            assert line not in autograded and line not in feedback, f"a hidden test line reached {student}: {line}"
        assert "BEGIN HIDDEN TESTS" not in autograded
    # The catalogued mistake is named in ada's feedback page and in formgrader's comments.
    mistake = load_catalogue(course / "source" / PS / "mistakes.toml")[0]
    page = (course / "feedback" / "ada" / PS / f"{PS}.html").read_text().lower()
    assert all(phrase.lower() in page for phrase in mistake.feedback)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        comments = [comment.auto_comment or "" for comment in
                    gradebook.find_submission_notebook(PS, PS, "ada").comments]
    assert any(mistake.feedback[0].lower() in comment.lower() for comment in comments)


def test_formgraders_autograde_button_grades_with_the_engine(course):
    """Formgrader's button calls NbGraderAPI.autograde in the server's process."""
    script = textwrap.dedent(f'''
        import json
        from traitlets.config.loader import PyFileConfigLoader
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        config = PyFileConfigLoader("nbgrader_config.py", path={str(course)!r}).load_config()
        config.CourseDirectory.root = {str(course)!r}
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        print(json.dumps(api.autograde({PS!r}, "cy")))
    ''')
    result = _run(sys.executable, "-c", script, cwd=course)
    assert json.loads(result.stdout.strip().splitlines()[-1])["success"]
    assert _gradebook_scores(course)["cy"] == (20.0, 20.0)
    report = json.loads((course / "reports" / PS / "cy.json").read_text())
    assert report["score"] == 20
    autograded = (course / "autograded" / "cy" / PS / f"{PS}.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in autograded and "hidden tests ran in the grader" in autograded


def test_the_course_configuration_is_nbgraders_autograde_with_the_engine_in_place_of_its_kernel():
    from autograder.course import Course
    from autograder.integrations.autograde import autograde_preprocessors

    configured = Course(ROOT).config().Autograde.autograde_preprocessors
    assert configured == autograde_preprocessors()
    assert "nbgrader.preprocessors.Execute" not in configured
