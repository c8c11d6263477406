"""Plain-text views of reports, for the terminal.  They only read the report model."""

from __future__ import annotations

import textwrap

from autograder.report import PASSED, TIMEOUT, GradeReport

_MARK = {PASSED: "ok", TIMEOUT: "TIME"}


def _points(value: float) -> str:
    return f"{value:g}"


def render_report(report: GradeReport) -> str:
    """One student's feedback: a line per exercise, then the message of each failure."""
    who = f"{report.student}: " if report.student else ""
    lines = [f"{who}{report.assignment}  ({report.notebook})"]
    if report.status != "graded":
        lines.append(f"  Could not grade this notebook: {report.error}")
        return "\n".join(lines)
    width = max((len(test.id) for test in report.tests), default=10)
    for test in report.tests:
        mark = _MARK.get(test.status, test.status.upper())
        lines.append(f"  {mark:<6} {test.id:<{width}}  {_points(test.points):>4} / {_points(test.max_points)}")
        if test.status != PASSED and test.message:
            lines.extend(textwrap.indent(test.message, " " * 9).splitlines())
        if test.output.strip():
            lines.append(" " * 9 + "Your code printed:")
            lines.extend(textwrap.indent(test.output.rstrip()[-2000:], " " * 11).splitlines())
    for problem in report.cell_problems:
        lines.append(f"  note   cell {problem.cell}:")
        lines.extend(textwrap.indent(problem.message, " " * 9).splitlines())
    lines.append(f"  Score: {_points(report.score)} / {_points(report.max_score)}"
                 f"   (seed {report.seed}; reproduce with --seed {report.seed})")
    return "\n".join(lines)


def render_summary(reports: list[GradeReport]) -> str:
    """The class at a glance: one row per student."""
    if not reports:
        return "No submissions were found."
    width = max(7, *(len(report.student or "?") for report in reports))
    header = f"{'student':<{width}}  {'score':>11}  {'passed':>7}  note"
    lines = [header, "-" * len(header)]
    for report in reports:
        passed = sum(test.status == PASSED for test in report.tests)
        note = ""
        if report.status != "graded":
            note = f"NOT GRADED: {report.error}"
        elif any(test.status == TIMEOUT for test in report.tests):
            note = "a test timed out"
        score = f"{_points(report.score)} / {_points(report.max_score)}"
        lines.append(f"{report.student or '?':<{width}}  {score:>11}  {passed:>3}/{len(report.tests):<3}  {note}")
    graded = [report for report in reports if report.status == "graded"]
    if graded:
        mean = sum(report.score for report in graded) / len(graded)
        lines.append("-" * len(header))
        lines.append(f"{len(reports)} submissions, {len(reports) - len(graded)} not graded, "
                     f"mean score {mean:.2f} / {_points(graded[0].max_score)}")
    return "\n".join(lines)
