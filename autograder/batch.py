"""Grading a class: every ``submitted/<student>/<ps>/`` notebook, one report per student.

A submission that cannot be graded (missing, corrupt, the wrong problem set) gets a report
with status ``error`` and the reason; the batch always goes on.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import queue
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import autograder
from autograder.grading import grade_notebook
from autograder.html import class_page, student_page
from autograder.launcher import Launcher
from autograder.notebook import SourceNotebook
from autograder.report import ERROR, GradeReport, TestResult
from autograder.session import Limits


_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Submission:
    student: str
    ps: str
    folder: Path

    def notebook(self) -> Path | str:
        """The notebook to grade, or a sentence saying why there is none."""
        expected = self.folder / f"{self.ps}.ipynb"
        if expected.is_file():
            return expected
        found = sorted(self.folder.glob("*.ipynb"))
        if len(found) == 1:
            return found[0]
        if not found:
            return f"No notebook was submitted: {self.folder} has no .ipynb file."
        names = ", ".join(path.name for path in found)
        return f"{self.folder} has several notebooks ({names}) and none is named {self.ps}.ipynb."


def find_submissions(submitted: Path, ps: str, students: Iterable[str] | None = None) -> list[Submission]:
    """Every ``submitted/<student>/<ps>/`` folder, sorted by student."""
    wanted = set(students) if students else None
    if not submitted.is_dir():
        return []
    found = []
    for student_dir in sorted(submitted.iterdir()):
        if not student_dir.is_dir() or (wanted is not None and student_dir.name not in wanted):
            continue
        folder = student_dir / ps
        if folder.is_dir():
            found.append(Submission(student_dir.name, ps, folder))
    return found


def already_graded(submission: Submission, reports: Path, source_path: Path) -> bool:
    """Whether ``reports`` holds this student's report, newer than the notebook and the source."""
    report = reports / f"{submission.student}.json"
    notebook = submission.notebook()
    if not report.is_file():
        return False
    newest_input = max(source_path.stat().st_mtime,
                       notebook.stat().st_mtime if isinstance(notebook, Path) else submission.folder.stat().st_mtime)
    return report.stat().st_mtime >= newest_input


def submission_seed(ps: str, student: str) -> int:
    """The default seed of a student's hidden-test inputs: stable, so a regrade agrees."""
    digest = hashlib.sha256(f"{ps}/{student}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def grade_submission(source: SourceNotebook, submission: Submission, *, limits: Limits,
                     launcher: Launcher, seed: int | None = None) -> GradeReport:
    notebook = submission.notebook()
    seed = submission_seed(submission.ps, submission.student) if seed is None else seed
    if isinstance(notebook, str):
        return GradeReport(
            assignment=submission.ps, notebook=str(submission.folder), student=submission.student,
            status="error", error=notebook, seed=seed, engine=f"autograder {autograder.__version__}",
            tests=[TestResult(test_id, 0.0, source.points(test_id), ERROR, notebook)
                   for test_id in source.test_ids],
        )
    return grade_notebook(source, notebook, student=submission.student, seed=seed, limits=limits,
                          launcher=launcher)


def _grading_process(source_path: Path, limits: Limits, seed: int | None,
                     tasks: "multiprocessing.Queue", results: "multiprocessing.Queue") -> None:
    """One of the batch's processes: grade submissions from ``tasks`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    # Die with the parent, even when it is killed with SIGKILL.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    source = SourceNotebook.load(source_path)
    with Launcher() as launcher:
        while (task := tasks.get()) is not None:
            index, submission = task
            try:
                report = grade_submission(source, submission, limits=limits, launcher=launcher, seed=seed)
            except Exception as error:  # noqa: BLE001 - one submission never stops the batch
                report = _failed_report(source, submission, f"The grader failed on this notebook: {error}")
            results.put((index, report.to_dict()))


def _failed_report(source: SourceNotebook, submission: Submission, reason: str) -> GradeReport:
    return GradeReport(
        assignment=submission.ps, notebook=str(submission.folder), student=submission.student,
        status="error", error=reason, engine=f"autograder {autograder.__version__}",
        tests=[TestResult(test_id, 0.0, source.points(test_id), ERROR, reason) for test_id in source.test_ids],
    )


def default_jobs() -> int:
    """One grading process per core (measured: more only add worker templates to start)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


def grade_batch(
    source_path: Path,
    submissions: list[Submission],
    reports: Path,
    *,
    limits: Limits,
    seed: int | None = None,
    jobs: int | None = None,
    progress: Callable[[int, int, GradeReport], None] | None = None,
) -> list[GradeReport]:
    """Grade submissions on ``jobs`` processes (default: every core).

    Writes ``reports/<student>.json`` and ``.html`` as each finishes, and ``reports/index.html``
    (the class summary) at the end.

    Reports come back in the order of ``submissions``.
    """
    if not submissions:
        return []
    reports.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs or default_jobs(), len(submissions)))
    source = SourceNotebook.load(source_path)
    # Forking this process is quick, and it holds no student data.
    context = multiprocessing.get_context("fork")
    # Results wait in a short queue: when this process falls behind (writing the gradebook),
    # the graders pause instead of piling up reports in memory.
    tasks, results = context.Queue(), context.Queue(maxsize=4 * jobs)
    for item in enumerate(submissions):
        tasks.put(item)
    for _ in range(jobs):
        tasks.put(None)
    processes = [context.Process(target=_grading_process, args=(source_path, limits, seed, tasks, results),
                                 daemon=True) for _ in range(jobs)]
    for process in processes:
        process.start()
    done: dict[int, GradeReport] = {}
    try:
        while len(done) < len(submissions):
            try:
                index, data = results.get(timeout=1.0)
            except queue.Empty:
                if not any(process.is_alive() for process in processes):
                    break
                continue
            report = GradeReport.from_dict(data)
            write_student_files(report, reports, submissions[index].student)
            done[index] = report.summary()
            if progress:
                progress(len(done), len(submissions), report)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    for index, submission in enumerate(submissions):
        if index not in done:
            done[index] = _failed_report(source, submission, "The grading process stopped before this notebook.")
            write_student_files(done[index], reports, submission.student)
    ordered = [done[index] for index in range(len(submissions))]
    write_class_page(ordered, reports)
    return ordered


def write_class_page(reports_list: list[GradeReport], folder: Path) -> None:
    """``index.html``: the class summary."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(class_page(reports_list), encoding="utf-8")


def write_student_files(report: GradeReport, folder: Path, student: str) -> None:
    """``<student>.json`` (the report) and ``<student>.html`` (the student's feedback page)."""
    report.write_json(folder / f"{student}.json")
    (folder / f"{student}.html").write_text(student_page(report), encoding="utf-8")
