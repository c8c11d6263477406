"""The instructor guide is true: every command in its ``console`` blocks runs, in order, on a
scratch copy of the course with a small class, and does what the guide says."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent


GUIDE = ROOT / "docs" / "instructors.md"
PS = "ps05_derivatives"
BIN = Path(sys.executable).parent


def guide_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def test_the_guide_has_the_whole_workflow():
    commands = guide_commands()
    words = [" ".join(command.split()[:2]) for command in commands]
    for step in ("autograder release", "autograder check", "nbgrader db", "autograder grade", "nbgrader export",
                 "autograder export", "nbgrader generate_feedback"):
        assert step in words, step
    assert words.index("autograder release") < words.index("autograder grade") < words.index("nbgrader export")


def test_every_command_in_the_instructor_guide(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    with (course / "nbgrader_config.py").open("a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')  # as the guide shows
    for folder in ("source", "release", "solutions"):
        shutil.copytree(ROOT / folder / PS, course / folder / PS)
    (course / "students.csv").write_text("id,first_name,last_name,email\n"
                                         "ada,Ada,Lovelace,ada@example.org\nbob,Bob,,\nkim,Kim,,\n")
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    class_ = {
        "ada": (with_answers(release, solution_answers(source)), "2026-11-30 16:59:00 UTC"),
        "bob": (mistake_notebook(release, source, load_catalogue(course / "source" / PS / "mistakes.toml")[0]),
                "2026-12-01 09:00:00 UTC"),
        "kim": (with_answers(release, solution_answers(source)), "2026-12-02 10:00:00 UTC"),  # late
    }
    for student, (notebook, handed_in) in class_.items():
        folder = course / "submitted" / student / PS
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / f"{PS}.ipynb")
        (folder / "timestamp.txt").write_text(handed_in)

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in guide_commands():
        result = subprocess.run(["bash", "-c", command], cwd=course, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"

    # What the guide says each step leaves behind.
    assert (course / "release" / PS / f"{PS}.ipynb").is_file()
    reports = {path.stem: json.loads(path.read_text()) for path in (course / "reports" / PS).glob("*.json")}
    assert {s: r["score"] for s, r in reports.items()} == {"ada": 20, "bob": reports["bob"]["score"], "kim": 20}
    assert reports["bob"]["score"] < 20
    assert (course / "reports" / PS / "index.html").is_file()
    with (course / "grades.csv").open() as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert rows["ada"]["duedate"].startswith("2026-12-01 17:00:00")
    assert float(rows["ada"]["score"]) == 20
    assert float(rows["bob"]["score"]) == reports["bob"]["score"]  # the day before the deadline
    assert float(rows["kim"]["raw_score"]) == 20 and float(rows["kim"]["score"]) == 0  # late: "zero"
    with (course / "reports" / PS / "grades.csv").open() as handle:
        assert {row["student"] for row in csv.DictReader(handle)} == {"ada", "bob", "kim"}
    for student in class_:
        assert (course / "feedback" / student / PS / f"{PS}.html").is_file()
        assert (course / "autograded" / student / PS / f"{PS}.ipynb").is_file()
    with zipfile.ZipFile(course / "exports" / f"{PS}-gradescope.zip") as archive:
        assert {"setup.sh", "run_autograder"} <= set(archive.namelist())
    assert (course / "exports" / f"{PS}-otter" / f"{PS}.ipynb").is_file()
