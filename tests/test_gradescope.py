"""Gradescope's results.json, validated against the schema of its autograder specification."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from autograder.grader.grading import grade_notebook
from autograder.integrations.gradescope import gradescope_results

ROOT = Path(__file__).resolve().parent.parent

# The fields and types Gradescope documents for results.json (autograder specifications).
TEST_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "max_score": {"type": "number"},
        "status": {"enum": ["passed", "failed"]},
        "name": {"type": "string"},
        "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "number": {"type": "string"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "extra_data": {"type": "object"},
    },
    "additionalProperties": False,
}
RESULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": TEST_SCHEMA},
        "leaderboard": {"type": "array"},
    },
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "additionalProperties": False,
}


@pytest.mark.parametrize("answers, full", [(None, True), ({"double": "def double(x):\n    return -2 * x"}, False)])
def test_results_json_validates_and_carries_the_verdicts(tiny, answers, full):
    report = grade_notebook(tiny.source, tiny.submission("s", answers), limits=tiny.limits, launcher=tiny.launcher)
    results = gradescope_results(report)
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == report.score
    assert sum(test["max_score"] for test in results["tests"]) == report.max_score == 3
    assert [test["status"] for test in results["tests"]] == (["passed", "passed"] if full else ["failed", "passed"])
    if not full:
        assert "sign error" in results["tests"][0]["output"]
        assert results["tests"][0]["extra_data"]["diagnosis"] == "a sign error"


def test_an_ungradable_notebook_still_gives_valid_results(tiny, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{]")
    results = gradescope_results(grade_notebook(tiny.source, broken, limits=tiny.limits, launcher=tiny.launcher))
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 0 and "not valid JSON" in results["output"]
    assert json.loads(json.dumps(results)) == results


def test_the_gradescope_zip_grades_a_submission_in_an_autograder_layout(tmp_path):
    import os
    import shutil
    import stat
    import subprocess
    import sys
    import zipfile

    import nbformat

    from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
    from autograder.notebook import read_notebook


    ps = "ps05_derivatives"
    bin_dir = Path(sys.executable).parent
    archive = tmp_path / "autograder.zip"
    made = subprocess.run([str(bin_dir / "autograder"), "export", "gradescope", ps, "--out", str(archive)],
                          cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    names = zipfile.ZipFile(archive).namelist()
    assert {"setup.sh", "run_autograder", f"course/source/{ps}/{ps}.ipynb", "package/pyproject.toml"} <= set(names)
    assert not [name for name in names if "mistakes.toml" in name or "solutions/" in name]
    assert not [name for name in names if "/source/" in name and ps not in name]

    source = read_notebook(ROOT / "source" / ps / f"{ps}.ipynb")
    release = read_notebook(ROOT / "release" / ps / f"{ps}.ipynb")
    mistake = load_catalogue(ROOT / "source" / ps / "mistakes.toml")[0]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}  # as setup.sh installs it
    expected = {"solution": with_answers(release, solution_answers(source)),
                "mistake": mistake_notebook(release, source, mistake), "nothing": None}
    for name, notebook in expected.items():
        root = tmp_path / name / "autograder"
        (root / "source").mkdir(parents=True)
        zipfile.ZipFile(archive).extractall(root / "source")
        run_autograder = root / "source" / "run_autograder"
        run_autograder.chmod(run_autograder.stat().st_mode | stat.S_IEXEC)
        shutil.copy(run_autograder, root / "run_autograder")
        (root / "submission").mkdir()
        if notebook is not None:
            nbformat.write(notebook, root / "submission" / "my answers.ipynb")
        result = subprocess.run([str(root / "run_autograder")], env={**env, "AUTOGRADER_ROOT": str(root)},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        results = json.loads((root / "results" / "results.json").read_text())
        jsonschema.validate(results, RESULTS_SCHEMA)
        total = sum(test["max_score"] for test in results["tests"])
        if name == "solution":
            assert results["score"] == total == 20
        elif name == "mistake":
            assert 0 < results["score"] < total
        else:
            assert results["score"] == 0 and "No notebook was submitted" in results["output"]
    assert subprocess.run(["bash", "-n", str(tmp_path / "solution" / "autograder" / "source" / "setup.sh")]).returncode == 0


@pytest.mark.slow
def test_setup_sh_installs_what_run_autograder_needs(tmp_path):
    """setup.sh, run for real in a fresh environment, installs an autograder that grades."""
    import os
    import shutil
    import subprocess
    import sys
    import venv
    import zipfile

    import nbformat

    from autograder.catalogue import solution_answers, with_answers
    from autograder.notebook import read_notebook


    ps = "ps05_derivatives"
    archive = tmp_path / "autograder.zip"
    subprocess.run([str(Path(sys.executable).parent / "autograder"), "export", "gradescope", ps,
                    "--out", str(archive)], cwd=ROOT, check=True, capture_output=True)
    root = tmp_path / "autograder"
    zipfile.ZipFile(archive).extractall(root / "source")
    fresh = tmp_path / "image-python"
    venv.EnvBuilder(with_pip=True).create(fresh)
    env = {**os.environ, "PATH": f"{fresh / 'bin'}{os.pathsep}{os.environ['PATH']}", "AUTOGRADER_ROOT": str(root)}
    env.pop("VIRTUAL_ENV", None)
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=env, capture_output=True, text=True,
                           timeout=900)
    assert setup.returncode == 0, setup.stderr[-3000:]
    (root / "submission").mkdir()
    source = read_notebook(ROOT / "source" / ps / f"{ps}.ipynb")
    release = read_notebook(ROOT / "release" / ps / f"{ps}.ipynb")
    nbformat.write(with_answers(release, solution_answers(source)), root / "submission" / f"{ps}.ipynb")
    run = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 20
    # run_autograder found the autograder that setup.sh installed, not this suite's own.
    assert Path(shutil.which("autograder", path=env["PATH"])).parent == fresh / "bin"
