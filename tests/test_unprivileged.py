"""The attack suite again, as an unprivileged user.

When the suite runs as root (as CI does), this test builds a small environment that user
`nobody` can execute (the system's Python, NumPy, IPython, nbformat, Matplotlib and this
package) and runs the attack and engine tests as `nobody`.  Run as a non-root user, the
suite's own test_attacks.py is already that run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


NOBODY = 65534
RUNTIME = ["numpy", "ipython", "nbformat", "matplotlib", "traitlets", "pytest", "rich"]


def _system_python() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def unprivileged_env(environment_like_this_one):
    python = _system_python()
    if os.geteuid() != 0 or python is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, setpriv and a system Python: the suite itself runs unprivileged then")
    folder = Path(tempfile.mkdtemp(prefix="autograder-nobody-"))
    folder.chmod(0o755)
    venv = folder / "venv"
    # A copy of the project, so the unprivileged run reads nothing of root's.
    project = folder / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info",
                                                                 "demo-class", "build", ".pytest_cache",
                                                                 "node_modules"))
    # The clone may be private (mktemp -d makes 0700 folders); the copy must be readable by nobody.
    for path in [project, *project.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    if environment_like_this_one(RUNTIME, venv, python):
        # The package from the copy, as an editable install would have it: found on the path,
        # with its metadata (the Gradescope export reads it) and its command.
        from importlib import metadata

        from autograder import DISTRIBUTION

        [site] = venv.glob("lib/python*/site-packages")
        (site / "autograder-project.pth").write_text(f"{project}\n")
        installed = metadata.distribution(DISTRIBUTION)
        info = site / f"{DISTRIBUTION}-{installed.version}.dist-info"
        info.mkdir()
        for name in ("METADATA", "entry_points.txt"):
            (info / name).write_text(installed.read_text(name) or "")
        for entry in installed.entry_points.select(group="console_scripts"):
            module, _, function = entry.value.partition(":")
            command = venv / "bin" / entry.name
            command.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\n"
                               f"sys.exit({function}())\n")
            command.chmod(0o755)
    else:  # this environment cannot stand in (another Python version): install afresh
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *RUNTIME], check=True)
        subprocess.run([*pip, "--no-deps", str(project)], check=True)
    work = folder / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    yield venv, project, work
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_attacks_hold_for_an_unprivileged_grader(unprivileged_env):
    venv, project, work = unprivileged_env
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={work / 'pytest'}", "--rootdir", str(project),
         str(project / "tests" / "test_attacks.py"), str(project / "tests" / "test_grading.py")],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert " passed" in output and "failed" not in output
