"""Terminal views of reports (rich).  They only read the report model.

Messages are printed below the tables without wrapping, so that a script can search them.
Every text that came from a submission (output, messages quoting it, names) passes through
:func:`printable` first: a student's escape sequences must not clear the terminal of whoever
reads the report, or draw a score of their own.
"""

from __future__ import annotations

import re
import shutil
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from autograder.report import PASSED, TIMEOUT, GradeReport

if TYPE_CHECKING:
    from autograder.audit import AuditReport

_STYLE = {PASSED: ("✓ passed", "green"), TIMEOUT: ("⏱ timeout", "yellow"), "error": ("! error", "yellow")}


def console(file=None) -> Console:
    """A console that does not squeeze messages into 80 columns when piped."""
    width = max(shutil.get_terminal_size((120, 24)).columns, 100)
    return Console(file=file or sys.stdout, width=width, soft_wrap=True, highlight=False)


# ANSI/VT escape sequences (CSI, OSC, and two-character ESC sequences), other C0 and C1 control
# characters except newline and tab, and the Unicode controls that reorder or hide text.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")


def printable(text: object) -> str:
    """``text`` with terminal control sequences and characters removed (newlines and tabs kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", str(text)))


def _points(value: float) -> str:
    return f"{value:g}"


def print_report(report: GradeReport, out: Console | None = None) -> None:
    """One student's feedback: a row per exercise, then what went wrong and why."""
    out = out or console()
    who = f"{printable(report.student)}: " if report.student else ""
    out.print(Text(f"{who}{printable(report.assignment)}  ({printable(report.notebook)})", style="bold"))
    if report.status != "graded":
        out.print(Text(f"  Could not grade this notebook: {printable(report.error)}", style="red"))
        return
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("status")
    table.add_column("exercise")
    table.add_column("points", justify="right")
    for test in report.tests:
        label, style = _STYLE.get(test.status, ("✗ failed", "red"))
        table.add_row(Text(label, style=style), printable(test.name), f"{_points(test.points)} / {_points(test.max_points)}")
    out.print(table)
    for test in report.tests:
        if test.status == PASSED and not test.output.strip():
            continue
        out.print()
        out.print(Text(printable(test.name), style="bold"))
        if test.status != PASSED and test.message:
            out.print(Text("  " + printable(test.message).replace("\n", "\n  ")))
        if test.diagnosis:
            out.print(Text(f"  Likely mistake: {printable(test.diagnosis)}", style="yellow"))
        if test.output.strip():
            out.print(Text("  Your code printed:", style="dim"))
            out.print(Text("    " + printable(test.output.rstrip()[-2000:]).replace("\n", "\n    "), style="dim"))
    for problem in report.cell_problems:
        out.print()
        out.print(Text(f"Note on cell {printable(problem.cell)}:", style="bold"))
        out.print(Text("  " + printable(problem.message).replace("\n", "\n  ")))
    for note in report.notes:
        out.print()
        out.print(Text("Note: " + printable(note), style="yellow"))
    out.print()
    style = "bold green" if report.all_passed else "bold"
    out.print(Text(f"Score: {_points(report.final_score)} / {_points(report.max_score)}", style=style),
              Text(_adjusted(report), style="dim"),
              Text(f"  (seed {report.seed}; reproduce with --seed {report.seed})", style="dim"))


def _adjusted(report: GradeReport) -> str:
    """How the tests' points became the final score, when something changed them."""
    adjustments = report.adjustments()
    return f" (tests {_points(report.score)}; {adjustments})" if adjustments else ""


def print_summary(reports: list[GradeReport], out: Console | None = None) -> None:
    """The class at a glance: one row per student."""
    out = out or console()
    if not reports:
        out.print("No submissions were found.")
        return
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("student")
    table.add_column("score", justify="right")
    table.add_column("passed", justify="right")
    table.add_column("note")
    for report in reports:
        passed = sum(test.status == PASSED for test in report.tests)
        note = Text("")
        if report.status != "graded":
            note = Text(f"NOT GRADED: {printable(report.error)}", style="red")
        elif any(test.status == TIMEOUT for test in report.tests):
            note = Text("a test timed out", style="yellow")
        elif report.notes:
            note = Text(printable(report.notes[0])[:120], style="yellow")
        elif report.adjustments():
            note = Text(f"tests {_points(report.score)}; {report.adjustments()}")
        table.add_row(printable(report.student or "?"), f"{_points(report.final_score)} / {_points(report.max_score)}",
                      f"{passed}/{len(report.tests)}", note)
    out.print(table)
    graded = [report for report in reports if report.status == "graded"]
    if graded:
        mean = sum(report.final_score for report in graded) / len(graded)
        out.print(f"{len(reports)} submissions, {len(reports) - len(graded)} not graded, "
                  f"mean score {mean:.2f} / {_points(graded[0].max_score)}")


def print_audit(audit: AuditReport, out: Console | None = None, *, verbose: bool = False) -> None:
    """An audit: the bar's conditions, what failed, the survivors, and the verdict.  With
    ``verbose``, every mistake, alternative and mutant."""
    out = out or console()
    out.print(Text(f"Audit of {audit.ps}: {len(audit.seeds)} seeds"
                   + (f", mutants at {len(audit.mutant_seeds)}" if audit.mutants_checked else ", no mutants"),
                   style="bold"))
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("", "condition", "found"):
        table.add_column(column)
    for condition in audit.conditions:
        table.add_row(Text("✓", style="green") if condition.holds else Text("✗", style="red"), condition.name,
                      printable(condition.detail))
    out.print(table)
    problems = [(mistake.id, problem) for mistake in audit.mistakes for problem in mistake.problems[:2]]
    problems += [(f"alternative {a.id}", problem) for a in audit.alternatives for problem in a.problems[:2]]
    for name, problem in problems:
        out.print(Text(f"  {name}: {printable(problem)}", style="red"))
    if verbose:
        mistakes = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("mistake", "cell", "caught", "named", "caught by"):
            mistakes.add_column(column)
        for mistake in audit.mistakes:
            mistakes.add_row(mistake.id, mistake.cell, "yes" if mistake.caught else Text("NO", style="red"),
                             "yes" if mistake.named else Text("NO", style="red"),
                             "visible tests" if mistake.by_visible else "hidden tests only")
        out.print(mistakes)
    if audit.mutants_checked:
        per_test = Table(show_edge=False, pad_edge=False, box=None, title="per test cell", title_justify="left")
        for column in ("test cell", "mutants killed", "of which only by hidden tests", "mistakes",
                       "of which only by hidden tests"):
            per_test.add_column(column, justify="left" if column == "test cell" else "right")
        for test, row in audit.per_test().items():
            per_test.add_row(test, str(row["mutants"]), str(row["mutants hidden only"]), str(row["mistakes"]),
                             str(row["mistakes hidden only"]))
        out.print(per_test)
        shown = [m for m in audit.mutants if m.status == "unexplained" or (verbose and m.status != "killed")]
        for mutant in shown:
            label = {"unexplained": ("survives, no reason recorded", "red"), "equivalent": ("equivalent", "dim"),
                     "accepted": ("survives (recorded gap)", "yellow")}[mutant.status]
            out.print(Text(f"  {label[0]}: {mutant.key}", style=label[1]))
            out.print(Text("      " + mutant.diff.replace("\n", "\n      "), style="dim"))
            if mutant.reason:
                out.print(Text(f"      reason: {mutant.reason}", style="dim"))
        for key in audit.stale_records:
            out.print(Text(f"  audit.toml records a survivor that no longer survives (remove it): {key}",
                           style="yellow"))
    out.print(Text("PASSED" if audit.passed else "FAILED", style="bold green" if audit.passed else "bold red"))
