"""Exports of a graded class, read from its reports."""

from __future__ import annotations

import csv
from pathlib import Path

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
        writer.writerow(["student", "status", "score", "max_score", *exercises, "seed", "note"])
        for report in reports:
            points = {test.id: test.points for test in report.tests}
            writer.writerow([report.student, report.status, f"{report.score:g}", f"{report.max_score:g}",
                             *(f"{points[e]:g}" if e in points else "" for e in exercises),
                             report.seed, report.error or ""])
