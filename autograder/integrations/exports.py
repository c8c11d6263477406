"""Exports of a graded class, read from its reports."""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from autograder.course import CONFIG_FILE, Course
from autograder.errors import AutograderError
from autograder.report import GradeReport


def read_reports(folder: Path) -> list[GradeReport]:
    """Every ``<student>.json`` report in ``folder``, sorted by student."""
    return [GradeReport.read_json(path) for path in sorted(folder.glob("*.json"))]


def write_grades_csv(reports: list[GradeReport], target: Path) -> None:
    """One row per student: total, maximum, each exercise's points, and why a notebook was not graded."""
    exercises: list[str] = []
    for report in reports:
        exercises += [test.id for test in report.tests if test.id not in exercises]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        # score is the final score, as nbgrader export gives it (raw_score less the late penalty);
        # tests is what the tests gave, raw_score the same with hand grades in their place.
        writer.writerow(["student", "status", "score", "max_score", "tests", "raw_score", "late_penalty",
                         *exercises, "seed", "note"])
        for report in reports:
            points = {test.id: test.points for test in report.tests}
            final = report.final
            writer.writerow([report.student, report.status, f"{report.final_score:g}", f"{report.max_score:g}",
                             f"{report.score:g}", f"{final.raw_score if final else report.score:g}",
                             f"{final.late_penalty if final else 0:g}",
                             *(f"{points[e]:g}" if e in points else "" for e in exercises),
                             report.seed, report.error or ""])


_GRADESCOPE_FILES = Path(__file__).resolve().parent / "gradescope_files"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the autograder package


# What grading needs at run time; the course tools (nbgrader, JupyterLab) stay out of the
# Gradescope image, which then builds in a fraction of the time.
GRADING_RUNTIME = ("numpy", "scipy", "ipython", "nbformat", "matplotlib", "traitlets", "rich", "tomli")


def _package_metadata() -> str:
    """A ``pyproject.toml`` that installs this engine with what grading needs, at the versions
    this installation requires (from a source checkout or an installed package alike)."""
    from importlib import metadata

    from autograder import DISTRIBUTION

    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise AutograderError(f"The Gradescope package is built from the installed {DISTRIBUTION} package, and "
                              "this Python has none: install the course's package first (python3 run.py shell, "
                              "or pip install -e .).") from None
    requirements = [requirement for requirement in distribution.requires or []
                    if "extra ==" not in requirement and _requirement_name(requirement) in GRADING_RUNTIME]
    listed = "".join(f"    {json.dumps(requirement)},\n" for requirement in requirements)  # TOML strings
    scripts = "".join(f"{entry.name} = {json.dumps(entry.value)}\n" for entry in distribution.entry_points
                      if entry.group == "console_scripts")
    return ("[build-system]\nrequires = [\"setuptools>=68\"]\nbuild-backend = \"setuptools.build_meta\"\n\n"
            f"[project]\nname = \"{DISTRIBUTION}\"\nversion = \"{distribution.version}\"\n"
            f"requires-python = \"{(distribution.metadata.get_all('Requires-Python') or ['>=3.10'])[0]}\"\n"
            f"dependencies = [\n{listed}]\n\n"
            f"[project.scripts]\n{scripts}\n"
            "[tool.setuptools.packages.find]\ninclude = [\"autograder*\"]\n\n"
            "[tool.setuptools.package-data]\nautograder = [\"integrations/gradescope_files/*\"]\n")


def _requirement_name(requirement: str) -> str:
    """The distribution a requirement line names (``"numpy>=1.24"`` -> ``"numpy"``)."""
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower()


def write_gradescope_zip(course: Course, ps: str, target: Path) -> None:
    """A Gradescope autograder: ``setup.sh`` installs this package, ``run_autograder`` grades the
    submitted notebook with it and writes ``results/results.json``.  The zip holds this one
    problem set's source notebook (tests included) and the engine, nothing of other sets."""
    with tempfile.TemporaryDirectory(prefix="autograder-gradescope-") as scratch:
        build = Path(scratch)
        course_dir = build / "course"
        (course_dir / "source" / ps).mkdir(parents=True)
        shutil.copy(course.source_notebook(ps), course_dir / "source" / ps)
        shutil.copy(course.root / CONFIG_FILE, course_dir)
        package = build / "package"
        shutil.copytree(_PACKAGE_DIR, package / "autograder",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (package / "pyproject.toml").write_text(_package_metadata(), encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in ("setup.sh", "run_autograder"):
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o755 << 16  # executable, as Gradescope runs them
                archive.writestr(info, (_GRADESCOPE_FILES / name).read_bytes())
            for path in sorted(build.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(build).as_posix())
