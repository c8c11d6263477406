"""A PostgreSQL gradebook: ``CourseDirectory.db_url`` pointing at a real server (started here,
on loopback, for the test), written by ``autograder grade`` and read back by ``nbgrader export``."""

from __future__ import annotations

import csv
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
BIN = Path(sys.executable).parent


def postgres_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    assert found, f"PostgreSQL's {name} is not installed (`python3 run.py test` installs it on Debian)"
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server; as root it runs as the ``postgres`` (or ``nobody``) user,
    since PostgreSQL refuses to run as root."""
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="autograder-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    if os.geteuid() == 0:
        name = "postgres" if any(entry.pw_name == "postgres" for entry in pwd.getpwall()) else "nobody"
        user = pwd.getpwnam(name)
        os.chown(data, user.pw_uid, user.pw_gid)
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    port = free_port()
    subprocess.run([*as_user, postgres_tool("initdb"), "-D", str(data), "-U", "grader", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, cwd=folder)
    subprocess.run([*as_user, postgres_tool("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "start"], check=True, capture_output=True,
                   cwd=folder)
    try:
        subprocess.run([postgres_tool("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "grader", "-d", "postgres",
                        "-c", "CREATE DATABASE gradebook"], check=True, capture_output=True)
        yield f"postgresql://grader@127.0.0.1:{port}/gradebook"
    finally:
        subprocess.run([*as_user, postgres_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=folder)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_postgresql_gradebook(tmp_path, postgres_url):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.CourseDirectory.db_url = {postgres_url!r}\n")
    shutil.copytree(ROOT / "source" / PS, course / "source" / PS)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    for student, notebook in (("ada", with_answers(release, solution_answers(source))),
                              ("bob", mistake_notebook(release, source, mistake)), ("eve", release)):
        target = course / "submitted" / student / PS / f"{PS}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(notebook, target)
    (course / "submitted" / "dee" / PS).mkdir(parents=True)
    (course / "submitted" / "dee" / PS / f"{PS}.ipynb").write_text("not json")

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([str(BIN / "autograder"), "grade", PS], cwd=course, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 3, result.stdout + result.stderr
    assert not (course / "gradebook.db").exists()  # everything went to PostgreSQL
    result = subprocess.run([str(BIN / "nbgrader"), "export", "--to", "grades.csv"], cwd=course, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with (course / "grades.csv").open() as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle)}
    ours = {path.stem: json.loads(path.read_text())["score"] for path in (course / "reports" / PS).glob("*.json")}
    assert exported == ours
    assert ours["ada"] == 20 and 0 < ours["bob"] < 20 and ours["eve"] == 0 and ours["dee"] == 0
