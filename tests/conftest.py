"""Shared fixtures: the real course, and a tiny synthetic problem set for engine tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.catalogue import solution_answers, with_answers
from autograder.course import Course
from autograder.notebook import SourceNotebook
from autograder.settings import Limits

ROOT = Path(__file__).resolve().parent.parent

# Checks record a learner's progress in their data directory: the suite's go to a folder of its
# own (inherited by every command it runs), never to the home of whoever runs the tests.
os.environ["AUTOGRADER_DATA_DIR"] = tempfile.mkdtemp(prefix="autograder-test-data-")
atexit.register(shutil.rmtree, os.environ["AUTOGRADER_DATA_DIR"], ignore_errors=True)

# The files that take longest, slowest first (seconds on 2 cores, `--durations=0`). `run.py test`
# hands whole files to its two test processes in collection order (`--dist loadfile
# --no-loadscope-reorder`), so these start first and the quick files fill in at the end;
# pytest-xdist's own order (most tests first) left a one-test file of a minute for last.
SLOWEST_FILES = ["test_problem_sets.py", "test_otter.py", "test_unprivileged.py", "test_attacks.py",
                 "test_gradebook.py", "test_cli.py", "test_batch.py", "test_wheel.py", "test_grading.py",
                 "test_distributed.py", "test_service.py", "test_docs.py", "test_gradescope.py",
                 "test_nbgrader_fallback.py", "test_html.py", "test_nbgrader_autograde.py", "test_lab.py"]


def pytest_collection_modifyitems(config, items):
    missing = [name for name in SLOWEST_FILES if not (Path(__file__).parent / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py's SLOWEST_FILES names files that do not exist: {missing}")
    rank = {name: place for place, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order


def _orphaned_worker_processes() -> list[str]:
    import subprocess

    rows = subprocess.run(["ps", "-ww", "-eo", "uid=,pid=,ppid=,args="], capture_output=True, text=True).stdout
    processes = [line.split(None, 3) for line in rows.splitlines() if len(line.split(None, 3)) == 4]
    supervisors = {pid for _, pid, _, args in processes if "autograder.worker.template" in args}
    return [" ".join(row) for row in processes if int(row[0]) >= 100_000 and row[2] not in supervisors]


def leaked_worker_processes(patience: float = 10.0) -> list[str]:
    """Processes under a worker's uid whose supervisor is gone: leaks, as opposed to the
    workers of a grader that is still running (perhaps another one on this machine, or another
    test process).  A worker whose grader is shutting down this instant is orphaned for a moment;
    a leak stays, so the list is the one still there after ``patience`` seconds of waiting for
    it to empty."""
    import time

    deadline = time.monotonic() + patience
    while (leaked := _orphaned_worker_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return leaked


def _meta(**values):
    base = {"grade": False, "locked": False, "solution": False, "schema_version": 3, "task": False}
    base.update(values)
    return {"nbgrader": base}


def tiny_source_notebook() -> nbformat.NotebookNode:
    """Two exercises: a vectorised function, and one that takes a function argument."""
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        new_markdown_cell("# Tiny set", metadata=_meta(grade_id="intro", locked=True)),
        new_code_cell("import numpy as np\nfrom autograder.checks import check_close, test_rng",
                      metadata=_meta(grade_id="setup", locked=True)),
        new_code_cell('def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return 2 * x\n'
                      "    ### END SOLUTION", metadata=_meta(grade_id="double", solution=True)),
        new_code_cell("check_close(double(3.0), 6.0, what='double(3.0)')\n### BEGIN HIDDEN TESTS\n"
                      "x = test_rng('double').normal(size=5)\ncheck_close(double(x), 2 * x, what='double(x)')\n"
                      "### END HIDDEN TESTS",
                      metadata=_meta(grade_id="test_double", grade=True, locked=True, points=2)),
        new_code_cell('def apply_twice(f, x):\n    """f(f(x))."""\n    ### BEGIN SOLUTION\n'
                      "    return f(f(x))\n    ### END SOLUTION",
                      metadata=_meta(grade_id="apply_twice", solution=True)),
        new_code_cell("check_close(apply_twice(lambda t: t + 1, 1.0), 3.0, what='apply_twice(t+1, 1)')\n"
                      "### BEGIN HIDDEN TESTS\nassert apply_twice(np.sqrt, 16.0) == 2.0\n### END HIDDEN TESTS",
                      metadata=_meta(grade_id="test_apply_twice", grade=True, locked=True, points=1)),
    ]
    return notebook


class TinySet:
    """A synthetic problem set on disk, and helpers to write submissions of it."""

    def __init__(self, folder: Path, launcher=None) -> None:
        self.folder = folder
        self.launcher = launcher  # the suite's warm worker template, for grade_notebook
        self.notebook = tiny_source_notebook()
        self.path = folder / "tiny.ipynb"
        nbformat.write(self.notebook, self.path)
        self.source = SourceNotebook.load(self.path)
        self.limits = Limits(cell_timeout=3, submission_timeout=60)

    def submission(self, name: str, answers: dict[str, str] | None = None, *,
                   edit=None) -> Path:
        """Write a submission: the solution, with ``answers`` replacing some answer cells."""
        chosen = {**solution_answers(self.notebook), **(answers or {})}
        notebook = with_answers(self.notebook, chosen)
        if edit is not None:
            edit(notebook)
        path = self.folder / f"{name}.ipynb"
        nbformat.write(notebook, path)
        return path


@pytest.fixture(scope="session")
def warm_launcher():
    """One warm worker template for the tests that grade a notebook at a time (starting one costs
    0.6 s of CPU), as a batch shares one; tests of the template itself start their own."""
    from autograder.grader.launcher import Launcher

    with Launcher() as launcher:
        yield launcher


@pytest.fixture
def tiny(tmp_path: Path, warm_launcher) -> TinySet:
    return TinySet(tmp_path, warm_launcher)


@pytest.fixture(scope="session")
def course() -> Course:
    return Course(ROOT)


@pytest.fixture(scope="session")
def leaked_workers():
    """A function listing confined-worker processes whose supervisor is gone (call it after grading)."""
    return leaked_worker_processes


@pytest.fixture(scope="session")
def make_tiny_notebook():
    """A function that builds the tiny problem set's instructor notebook afresh."""
    return tiny_source_notebook


def _installed_closure(requirements: list[str]) -> list | None:
    """The distributions installed here that ``requirements`` need, with everything they need in
    turn (markers and extras as pip evaluates them); None when one is missing or of a version the
    requirement excludes."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(text), {""}) for text in requirements]
    while todo:
        requirement, extras = todo.pop()
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": extra})
                                                      for extra in extras):
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            return None
        if not requirement.specifier.contains(distribution.version, prereleases=True):
            return None
        key = distribution.metadata["Name"].lower().replace("_", "-")
        if (key, frozenset(requirement.extras)) in seen:
            continue
        seen.add((key, frozenset(requirement.extras)))
        found[key] = distribution
        todo += [(Requirement(text), {"", *requirement.extras}) for text in distribution.requires or []]
    return list(found.values())


def _environment_like_this_one(requirements: list[str], target: Path, python: str) -> bool:
    """Make the virtual environment ``target`` for ``python`` with what ``pip install
    requirements`` would put in it, taken from this environment: the same distributions, their
    files hard-linked (copied where they cannot be, and where a script names this environment's
    interpreter).  Seconds instead of the minute pip takes to install them again.  False, with
    nothing made, when this environment cannot stand in for pip: another Python version, or a
    distribution missing here; the caller installs with pip then."""
    import subprocess
    import sys
    import sysconfig

    version = subprocess.run([python, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.split()
    ours = [sys.implementation.name, *map(str, sys.version_info[:2])]
    closure = _installed_closure(requirements) if version == ours else None
    if closure is None or any(distribution.files is None for distribution in closure):
        return False
    subprocess.run([python, "-m", "venv", "--without-pip", str(target)], check=True)
    here_site, prefix = Path(sysconfig.get_paths()["purelib"]), Path(sys.prefix)
    there_site = target / here_site.relative_to(prefix)
    shebang = f"#!{Path(sys.executable)}".encode()
    for distribution in closure:
        for entry in distribution.files:
            source = Path(os.path.normpath(distribution.locate_file(entry)))
            if not source.is_file() or not source.is_relative_to(prefix):
                continue  # a file pip recorded but that is gone, or one outside the environment
            destination = (there_site / source.relative_to(here_site) if source.is_relative_to(here_site)
                           else target / source.relative_to(prefix))
            if destination.exists():
                continue  # bytecode that pip also lists, already linked with its module
            destination.parent.mkdir(parents=True, exist_ok=True)
            script = source.read_bytes() if source.parent == prefix / "bin" else b""
            if script.startswith(shebang):  # a console script: it must name the new environment's interpreter
                destination.write_bytes(f"#!{target / 'bin' / 'python'}".encode() + script[len(shebang):])
                destination.chmod(0o755)
            elif source.stat().st_mode & 0o444 == 0o444:
                try:
                    os.link(source, destination)
                except OSError:
                    shutil.copy2(source, destination)
            else:  # a link would share its restrictive mode; a copy gets a readable one
                shutil.copy2(source, destination)
                destination.chmod(destination.stat().st_mode | 0o444)
            _link_bytecode(source, destination)
    return True


def _link_bytecode(source: Path, destination: Path) -> None:
    """The compiled bytecode of a module, next to its copy: pip lists it among a distribution's
    files, uv does not.  Without it a user who cannot write the folder (the unprivileged run)
    compiles every module it imports, in every process."""
    import importlib.util

    if source.suffix != ".py":
        return
    cached = Path(importlib.util.cache_from_source(str(source)))
    target = Path(importlib.util.cache_from_source(str(destination)))
    if cached.is_file() and not target.exists():
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(cached, target)
        except OSError:
            shutil.copy2(cached, target)


@pytest.fixture(scope="session")
def environment_like_this_one():
    """A function ``(requirements, target, python) -> bool`` that makes a virtual environment
    with what pip would install for ``requirements``, from this one (see
    :func:`_environment_like_this_one`)."""
    return _environment_like_this_one


def one_set_course(folder: Path, ps: str) -> Path:
    """``folder/course``: the course's settings and one problem set's source, for a test to grade in."""
    root = Path(__file__).resolve().parent.parent
    course = folder / "course"
    course.mkdir()
    shutil.copy(root / "nbgrader_config.py", course)
    shutil.copytree(root / "source" / ps, course / "source" / ps)
    return course
