"""Gradescope's ``results.json`` from a report (the autograder specification's format)."""

from __future__ import annotations

from typing import Any

from autograder.report import PASSED, GradeReport


def gradescope_results(report: GradeReport) -> dict[str, Any]:
    """One test entry per test cell; the overall output says what could not be graded."""
    tests = []
    for number, test in enumerate(report.tests, start=1):
        output = test.message
        if test.output.strip():
            output = f"{output}\n\nYour code printed:\n{test.output}".strip()
        tests.append({
            "name": test.name,
            "number": str(number),
            "score": test.points,
            "max_score": test.max_points,
            "status": "passed" if test.status == PASSED else "failed",
            "output": output,
            "visibility": "visible",
            "extra_data": {"status": test.status, "diagnosis": test.diagnosis},
        })
    results: dict[str, Any] = {
        "score": report.score,
        "execution_time": round(report.seconds, 3),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"seed": report.seed, "engine": report.engine, "protections": report.protections},
    }
    notes = [f"Could not grade this notebook: {report.error}"] if report.status != "graded" else []
    notes += [f"Cell {problem.cell}: {problem.message}" for problem in report.cell_problems]
    if notes:
        results["output"] = "\n\n".join(notes)
    return results
