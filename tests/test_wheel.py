"""What a student installs: the wheel alone, in a fresh virtual environment, outside the course.

The wheel is built from a copy of the project (with the lab extension that `run.py` built), and
installed into a new environment of the Python that runs the suite, which holds exactly the
distributions the wheel's metadata requires (with theirs), and nothing else.  In a
folder that is not the course, a released notebook's visible tests then run in that environment's
own kernel, the lab extension and its server half are enabled, and nothing of the course's hidden
tests or solutions is in the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook
from autograder.checks import PASSED_LINE
from autograder.course import Course
from autograder.notebook import nbgrader_metadata, read_notebook

ROOT = Path(__file__).resolve().parent.parent
PS = "ps05_derivatives"
MISTAKE = "central-sign-flipped"

EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=300, allow_errors=True, kernel_name="python3").execute(cwd=sys.argv[3])
nbformat.write(notebook, sys.argv[2])
"""


def _run(command: list[str], env: dict[str, str], cwd: Path, timeout: int = 900) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _requirements(wheel: Path) -> list[str]:
    """The wheel's own list of what it needs (its metadata's Requires-Dist)."""
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as archive:
        [name] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode()).get_all("Requires-Dist") or []


@pytest.fixture(scope="module")
def installed(tmp_path_factory, environment_like_this_one):
    if not (ROOT / "autograder" / "lab" / "labextension" / "package.json").is_file():
        pytest.fail("The lab extension is not built: `python3 run.py test` builds it (npm).")
    folder = tmp_path_factory.mktemp("wheel")
    project = folder / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "node_modules", "demo-class", "build", ".pytest_cache"))
    home = folder / "home"
    home.mkdir()
    # A clean HOME and no inherited Jupyter or Python paths: only what the wheel brings is found.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT",
                 "PIP_CONFIG_FILE", "SSL_CERT_FILE", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    base = getattr(sys, "_base_executable", sys.executable)
    wheels = folder / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(project)],
         env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}, cwd=folder)
    [wheel] = wheels.glob("mathgrader-*.whl")
    venv = folder / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # What the wheel says it needs, and nothing else: the same distributions pip would install,
    # from the suite's environment (seconds, where installing them again takes a minute) ...
    if environment_like_this_one([*_requirements(wheel), "pip"], venv, base):
        _run([*pip, "--no-deps", "--no-index", str(wheel)], env=env, cwd=folder)
        _run([str(venv / "bin" / "python"), "-m", "pip", "check"], env=env, cwd=folder)
    else:  # ... or, when the suite's Python is another version, from the package index
        _run([base, "-m", "venv", str(venv)], env=env, cwd=folder)
        _run([*pip, str(wheel)], env=env, cwd=folder)
    work = folder / "work"
    work.mkdir()
    return wheel, venv, {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}"}, work


@pytest.mark.slow
def test_the_wheel_holds_the_engine_and_the_lab_extension_but_nothing_of_the_course(installed):
    wheel, _, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "autograder/checks.py" in names and "autograder/lab/handlers.py" in names
    assert any(name.endswith("share/jupyter/labextensions/autograder-lab/package.json") for name in names)
    assert any("/labextensions/autograder-lab/static/remoteEntry." in name for name in names)
    assert any(name.endswith("etc/jupyter/jupyter_server_config.d/autograder.json") for name in names)
    course_files = [name for name in names if name.endswith((".ipynb", "mistakes.toml", "audit.toml"))
                    or "/source/" in name or "/solutions/" in name]
    assert course_files == []


@pytest.mark.slow
def test_a_released_notebook_runs_its_visible_tests_with_only_the_wheel(installed, tmp_path):
    _, venv, env, work = installed
    python = str(venv / "bin" / "python")
    location = _run([python, "-c", "import autograder; print(autograder.__file__)"], env=env, cwd=work)
    assert str(venv) in location and str(ROOT) not in location
    # The student's copy: every answer right except the central difference, which has its signs flipped.
    course = Course(ROOT)
    mistake = next(m for m in load_catalogue(course.catalogue(PS)) if m.id == MISTAKE)
    notebook = mistake_notebook(read_notebook(course.release_notebook(PS)), read_notebook(course.source_notebook(PS)),
                                mistake)
    path, done = work / f"{PS}.ipynb", work / "executed.ipynb"
    nbformat.write(notebook, path)
    _run([python, "-c", EXECUTE, str(path), str(done), str(work)], env=env, cwd=work)
    executed = nbformat.read(done, as_version=4)
    verdicts: dict[str, str] = {}
    for cell in executed.cells:
        grade_id = nbgrader_metadata(cell).get("grade_id")
        if cell.cell_type != "code" or not nbgrader_metadata(cell).get("grade"):
            continue
        errors = [output for output in cell.outputs if output.output_type == "error"]
        text = "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
        verdicts[grade_id] = "\n".join(errors[0].traceback) if errors else text.strip()
    assert verdicts, "the released notebook has no test cells"
    assert all(verdicts.values()), f"test cells that said nothing: {[k for k, v in verdicts.items() if not v]}"
    failed = {grade_id: shown for grade_id, shown in verdicts.items() if shown != PASSED_LINE}
    # The wrong function fails its own test with its mistake named; tests of the functions built on
    # it (the error curve, the best step) may fail too; everything else passes.
    assert verdicts["test_forward_difference"] == PASSED_LINE
    assert "test_central_difference" in failed and len(failed) <= 3, failed
    shown = failed["test_central_difference"]
    assert any(phrase in shown for phrase in mistake.feedback), shown
    for shown in failed.values():
        assert "checks.py" not in shown and "Traceback" not in shown and str(venv) not in shown, shown


@pytest.mark.slow
def test_the_wheel_enables_the_check_button_in_jupyterlab(installed):
    _, venv, env, work = installed
    labextensions = _run([str(venv / "bin" / "jupyter"), "labextension", "list"], env=env, cwd=work)
    assert any("autograder-lab" in line and "enabled" in line and "OK" in line for line in labextensions.splitlines()), \
        labextensions
    server = _run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], env=env, cwd=work)
    assert any("autograder.lab" in line and "enabled" in line for line in server.splitlines()), server
    version = _run([str(venv / "bin" / "autograder"), "--version"], env=env, cwd=work)
    assert version.startswith("autograder ")
    config = json.loads((venv / "etc" / "jupyter" / "jupyter_server_config.d" / "autograder.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"]["autograder.lab"] is True
