"""Grading a class: every ``submitted/<student>/<ps>/`` notebook, one report per student.

A submission that cannot be graded (missing, corrupt, the wrong problem set) gets a report
with status ``error`` and the reason; the batch always goes on.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import multiprocessing
import os
import queue
import resource
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from autograder import safefs, stages
from autograder.grader.grading import grade_notebook, not_graded
from autograder.grader.launcher import Launcher, SharedTemplate, share_a_core
from autograder.html import class_page, student_page
from autograder.notebook import SourceNotebook
from autograder.report import GradeReport, ReportFormatError
from autograder.settings import Limits

_PR_SET_PDEATHSIG = 1


TIMESTAMP_FILE = "timestamp.txt"  # what ``nbgrader collect`` writes beside each hand-in
MAX_NOTEBOOKS_PER_HAND_IN = 5  # more is not a hand-in but a folder for a person to look at
MAX_NOTEBOOK_BYTES = 64 * 1024**2
MAX_TIMESTAMP_BYTES = 1024


@dataclass(frozen=True)
class HandIn:
    """What a student handed in, as read from ``submitted/``: the notebook and the submission
    time nbgrader recorded (``timestamp.txt``), if any."""

    notebook_name: str
    notebook: bytes
    timestamp: str | None = None
    # The other notebooks of a hand-in with several (name, bytes): a student who worked in
    # "ps05_derivatives-Copy1.ipynb" and left the named one untouched is graded on the work.
    others: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Submission:
    """The hand-in folder ``submitted/<student>/<ps>/``.

    Students wrote everything in it, so it is read only through :meth:`read`, which follows no
    link (the folder above ``<student>/`` is the instructor's)."""

    student: str
    ps: str
    folder: Path

    def _open(self) -> int:
        return safefs.open_directory(self.folder.parent.parent, (self.folder.parent.name, self.folder.name))

    def read(self) -> HandIn | str:
        """The hand-in, or a sentence saying why there is none to grade (see :func:`read_hand_in`)."""
        return read_hand_in(self.folder.parent.parent, (self.folder.parent.name, self.folder.name), self.ps)

    def modified(self) -> float | None:
        """When the hand-in last changed (its notebook, else its folder), without following links."""
        try:
            folder = self._open()
        except (OSError, safefs.UnsafeFile):
            return None
        try:
            names = [f"{self.ps}.ipynb"] + [entry.name for entry in safefs.list_directory(folder)
                                            if entry.name.endswith(".ipynb")]
            for name in names:
                try:
                    return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
            return os.fstat(folder).st_mtime
        finally:
            os.close(folder)


def _notebooks_in(folder: int, depth: int, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths (as parts) of the ``.ipynb`` entries in an open folder and, down to ``depth`` more
    levels, in its subfolders (not hidden ones such as ``.ipynb_checkpoints``, never through a link)."""
    found: list[tuple[str, ...]] = []
    for entry in safefs.list_directory(folder):
        if entry.name.endswith(".ipynb") and entry.kind != "directory":
            found.append((*prefix, entry.name))
        elif entry.kind == "directory" and depth > 0 and not entry.name.startswith("."):
            inner = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            try:
                found += _notebooks_in(inner, depth - 1, (*prefix, entry.name))
            finally:
                os.close(inner)
    return found


def read_hand_in(base: Path, parts: tuple[str, ...], ps: str, *, depth: int = 0) -> HandIn | str:
    """The hand-in in the folder ``base/parts...``, or a sentence saying why there is none to grade.

    ``base`` is the grader's own folder; below it nothing is followed through a link.  The
    notebook is ``<ps>.ipynb``, else the only ``.ipynb`` file (looking ``depth`` folders deep).
    A notebook or ``timestamp.txt`` that is a link (symbolic or hard), a pipe or a device, or a
    notebook larger than 64 MiB, is refused: such a hand-in needs a person to look at it."""
    manual = "The hand-in needs a person to look at it."
    try:
        folder = safefs.open_directory(base, parts)
    except safefs.UnsafeFile as refusal:
        return f"{refusal} {manual}"
    except FileNotFoundError:
        return "There is no hand-in folder."
    except OSError as error:
        return f"The hand-in folder could not be opened: {error.strerror}."
    opened: list[int] = [folder]
    try:
        found = _notebooks_in(folder, depth)
        expected = f"{ps}.ipynb"
        named = sorted((path for path in found if path[-1] == expected), key=len)
        if not found:
            return "No notebook was submitted: the hand-in has no .ipynb file."
        if len(found) > MAX_NOTEBOOKS_PER_HAND_IN:
            names = ", ".join("/".join(path) for path in sorted(found)[:MAX_NOTEBOOKS_PER_HAND_IN]) + ", ..."
            return f"The hand-in has {len(found)} notebooks ({names}). {manual}"
        # The one named for the problem set first, then the others by name.
        chosen = named[0] if named else sorted(found)[0]
        rest = [path for path in sorted(found) if path != chosen]

        def read(path: tuple[str, ...]) -> bytes:
            where = folder
            for part in path[:-1]:
                where = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where)
                opened.append(where)
            return safefs.read_file(where, path[-1], max_bytes=MAX_NOTEBOOK_BYTES, shown=path[-1])

        data = read(chosen)
        others = tuple(("/".join(path), read(path)) for path in rest)
        timestamp = None
        if any(entry.name == TIMESTAMP_FILE for entry in safefs.list_directory(folder)):
            raw = safefs.read_file(folder, TIMESTAMP_FILE, max_bytes=MAX_TIMESTAMP_BYTES)
            timestamp = raw.decode("utf-8", errors="replace").strip() or None
        return HandIn(chosen[-1], data, timestamp, others)
    except safefs.UnsafeFile as refusal:
        return f"{refusal} {manual}"
    except OSError as error:
        return f"The hand-in could not be read: {error.strerror}."
    finally:
        for fd in opened:
            os.close(fd)


def find_submissions(submitted: Path, ps: str, students: Iterable[str] | None = None) -> list[Submission]:
    """Every ``submitted/<student>/<ps>/`` folder, sorted by student.  A student folder that is
    a link is listed too, and refused when it is read (so it is reported, not silently skipped)."""
    wanted = set(students) if students else None
    if not submitted.is_dir():
        return []
    found = []
    for student_dir in sorted(submitted.iterdir()):
        if wanted is not None and student_dir.name not in wanted:
            continue
        if student_dir.is_symlink() or (student_dir.is_dir() and (student_dir / ps).is_symlink()):
            found.append(Submission(student_dir.name, ps, student_dir / ps))
            continue
        if student_dir.is_dir() and (student_dir / ps).is_dir():
            found.append(Submission(student_dir.name, ps, student_dir / ps))
    return found


def already_graded(submission: Submission, reports: Path, source_path: Path) -> bool:
    """Whether ``reports`` holds this student's report, newer than the notebook and the source."""
    report = reports / f"{submission.student}.json"
    if not report.is_file():
        return False
    modified = submission.modified()
    if modified is None:
        return False
    if report.stat().st_mtime < max(source_path.stat().st_mtime, modified):
        return False
    try:
        GradeReport.read_json(report)
    except (OSError, ValueError, TypeError, ReportFormatError):
        return False  # damaged, or written by another version: grade again
    return True


def submission_seed(ps: str, student: str, notebook: bytes = b"") -> int:
    """The default seed of a student's hidden-test inputs: the same for the same hand-in, so a
    regrade agrees, and a new one when the notebook changes, so answers read off one report's
    feedback cannot be hard-coded into the next hand-in."""
    digest = hashlib.sha256(f"{ps}/{student}/".encode() + hashlib.sha256(notebook).digest()).digest()
    return int.from_bytes(digest[:4], "little")


def grade_hand_in(source: SourceNotebook, submission: Submission, hand_in: HandIn | str, *, limits: Limits,
                  launcher: Launcher | None, seed: int | None = None) -> GradeReport:
    """Grade what :meth:`Submission.read` returned (a sentence is a hand-in that cannot be graded)."""
    if isinstance(hand_in, str):
        return not_graded_submission(source, submission, hand_in,
                              seed=submission_seed(submission.ps, submission.student) if seed is None else seed)
    return grade_handed_notebooks(source, hand_in, ps=submission.ps, student=submission.student, limits=limits,
                                  launcher=launcher, seed=seed)


def grade_handed_notebooks(source: SourceNotebook, hand_in: HandIn, *, ps: str, student: str | None,
                           limits: Limits, launcher: Launcher | None, seed: int | None = None) -> GradeReport:
    """Grade a hand-in's notebook; of a hand-in with several, the one that holds the work, with a
    note saying so (and flagged for a person: see the gradebook)."""
    candidates = [(hand_in.notebook_name, hand_in.notebook), *hand_in.others]
    if seed is None:  # one seed for all of a hand-in's notebooks: copies do not buy more draws
        seed = submission_seed(ps, student or "", b"".join(sorted(data for _, data in candidates)))
    reports = [grade_notebook(source, data, notebook_name=name, student=student, seed=seed,
                              limits=limits, launcher=launcher) for name, data in candidates]
    # The notebook that holds the work: the most points; on a tie, the one named for the set.
    best = max(range(len(reports)), key=lambda i: (reports[i].status == "graded", reports[i].score, -i))
    report = reports[best]
    if len(candidates) > 1:
        scores = ", ".join(f"{name} ({r.score:g}/{r.max_score:g})" if r.status == "graded" else f"{name} (not gradable)"
                           for (name, _), r in zip(candidates, reports))
        report.notes.append(
            f"This hand-in has {len(candidates)} notebooks: {scores}. {candidates[best][0]} was graded, as the one "
            f"with the most points; it is flagged for a person to check. Hand in one notebook, {ps}.ipynb.")
    report.submitted_at = hand_in.timestamp
    return report


def grade_submission(source: SourceNotebook, submission: Submission, *, limits: Limits,
                     launcher: Launcher | None, seed: int | None = None) -> GradeReport:
    with stages.stage("read the hand-in"):
        hand_in = submission.read()
    return grade_hand_in(source, submission, hand_in, limits=limits, launcher=launcher, seed=seed)


def _grading_process(source_path: Path, limits: Limits, seed: int | None,
                     tasks: multiprocessing.Queue, results: multiprocessing.Queue, number: int = 0,
                     shared: SharedTemplate | None = None) -> None:
    """One of the batch's processes: grade submissions from ``tasks`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    share_a_core(number)
    # Die with the parent, even when it is killed with SIGKILL.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    stages.take()  # what the parent summed before the fork is the parent's
    # What this process inherited (the parent's modules, nbgrader's among them) is never garbage:
    # the collector leaves it alone, instead of walking it, and copying its pages, at every full pass.
    gc.freeze()
    with stages.stage("start: load the problem set"):
        source = SourceNotebook.load(source_path)
    with stages.stage("start: the warm worker template"):
        launcher = shared.launcher() if shared is not None else Launcher()
        launcher.warm()
    cpu = 0.0
    with launcher:
        while (task := tasks.get()) is not None:
            index, submission = task
            try:
                report = grade_submission(source, submission, limits=limits, launcher=launcher, seed=seed)
            except Exception as error:  # noqa: BLE001 - one submission never stops the batch
                report = grader_fault(source, submission, error)
            with stages.stage("send the report to the parent"):
                data = report.to_dict()
            # With its peak memory so far (the grader's own, not its workers') and its stages.
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu, used = usage.ru_utime + usage.ru_stime, cpu
            results.put((index, data, usage.ru_maxrss * 1024, stages.take(), cpu - used))


GRADER_FAULT = ("The grader itself failed on this notebook, so it was not graded: this says nothing about "
                "your work. Your instructor has the details; grading it again is safe.")


def grader_fault(source: SourceNotebook, submission: Submission, error: BaseException | str,
                 seed: int | None = None) -> GradeReport:
    """The report of a hand-in the grader failed on.  Students read reports: the details (an
    exception, a server path, a cluster address) go to the instructor's log, not into it."""
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    logging.getLogger("autograder").error("grading %s/%s failed: %s", submission.student, submission.ps, detail,
                                          exc_info=None if isinstance(error, str) else error)
    return not_graded_submission(source, submission, GRADER_FAULT, seed=seed)


def not_graded_submission(source: SourceNotebook, submission: Submission, reason: str,
                          seed: int | None = None) -> GradeReport:
    """The report of a hand-in that could not be graded (see :func:`autograder.grader.grading.not_graded`)."""
    return not_graded(source, reason, notebook=f"{submission.student}/{submission.ps}", student=submission.student,
                      seed=seed)


@dataclass
class BatchStats:
    """Measurements of a batch, for benchmarks and tests."""

    grader_peak_bytes: int = 0  # the largest peak resident memory of a grading process (not its workers)
    grader_cpu_seconds: float = 0.0  # CPU time of the grading processes themselves (not their workers)
    jobs: int = 0  # grading processes
    grader_stages: stages.Totals = field(default_factory=dict)  # summed over the grading processes


def default_jobs() -> int:
    """One grading process per core (measured: more only add worker templates to start)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


class Executor(Protocol):
    """Where a class is graded: the local process pool or a Dask cluster.

    :meth:`results` grades every submission and yields ``(index, report)`` as each finishes, in
    any order; a submission it could not grade may be left out (the core reports it)."""

    def results(self, source_path: Path, submissions: list[Submission], *, limits: Limits,
                seed: int | None) -> Iterator[tuple[int, GradeReport]]: ...


class LocalPool:
    """Graders in processes of this machine, one warm worker template each.

    Used as a context manager, the pool starts the template they fork theirs from at once, so
    that it imports NumPy and Matplotlib on another core while the caller gets ready (opens the
    gradebook); otherwise :meth:`results` starts it."""

    def __init__(self, jobs: int | None = None, stats: BatchStats | None = None) -> None:
        self.jobs = jobs
        self.stats = stats
        self._context = multiprocessing.get_context("fork")  # forking this process is quick; it holds no student data
        self._shared: SharedTemplate | None = None

    def __enter__(self) -> LocalPool:
        self._shared = SharedTemplate(self._context.Lock())
        return self

    def __exit__(self, *_: object) -> None:
        if self._shared is not None:
            self._shared.__exit__()
            self._shared = None

    def results(self, source_path: Path, submissions: list[Submission], *, limits: Limits,
                seed: int | None) -> Iterator[tuple[int, GradeReport]]:
        jobs = max(1, min(self.jobs or default_jobs(), len(submissions)))
        if self.stats is not None:
            self.stats.jobs = jobs
        context = self._context
        # Results wait in a short queue: when the caller falls behind (writing the gradebook),
        # the graders pause instead of piling up reports in memory.
        tasks, results = context.Queue(), context.Queue(maxsize=4 * jobs)
        for item in enumerate(submissions):
            tasks.put(item)
        for _ in range(jobs):
            tasks.put(None)
        # One template warms up (imports NumPy, Matplotlib) for all the graders, which fork theirs from it.
        shared = self._shared or SharedTemplate(context.Lock())
        processes = [context.Process(target=_grading_process,
                                     args=(source_path, limits, seed, tasks, results, number, shared), daemon=True)
                     for number in range(jobs)]
        for process in processes:
            process.start()
        received = 0
        try:
            while received < len(submissions):
                try:
                    with stages.stage("wait for the graders"):
                        index, data, peak, their_stages, their_cpu = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(process.is_alive() for process in processes):
                        return
                    continue
                received += 1
                if self.stats is not None:
                    self.stats.grader_peak_bytes = max(self.stats.grader_peak_bytes, peak)
                    stages.merge(self.stats.grader_stages, their_stages)
                    self.stats.grader_cpu_seconds += their_cpu
                with stages.stage("receive reports"):
                    report = GradeReport.from_dict(data)
                yield index, report
        finally:
            for process in processes:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
            if shared is not self._shared:
                shared.__exit__()


def grade_class(
    source_path: Path,
    submissions: list[Submission],
    reports: Path,
    *,
    executor: Executor,
    limits: Limits,
    seed: int | None = None,
    progress: Callable[[int, int, GradeReport], None] | None = None,
) -> list[GradeReport]:
    """Grade submissions with ``executor``: the one loop every way of grading a class shares.

    Writes ``reports/<student>.json`` and ``.html`` as each finishes, and ``reports/index.html``
    (the class summary) at the end.  Every submission gets a report: one the executor did not
    return says so.  Reports come back in the order of ``submissions``, as summaries (without
    pictures and output), so that memory stays flat over a large class.
    """
    if not submissions:
        return []
    reports.mkdir(parents=True, exist_ok=True)
    source = SourceNotebook.load(source_path)
    done: dict[int, GradeReport] = {}

    def finish(index: int, report: GradeReport) -> None:
        if progress:  # first: recording it in a gradebook sets the report's final score
            progress(len(done) + 1, len(submissions), report)
        with stages.stage("write reports and pages"):
            write_student_files(report, reports, submissions[index].student)
            done[index] = report.summary()

    for index, report in executor.results(source_path, submissions, limits=limits, seed=seed):
        finish(index, report)
    for index, submission in enumerate(submissions):
        if index not in done:
            finish(index, not_graded_submission(source, submission, "The grading process stopped before this notebook."))
    ordered = [done[index] for index in range(len(submissions))]
    with stages.stage("write the class summary"):
        write_class_summary(reports)
    return ordered


def grade_batch(source_path: Path, submissions: list[Submission], reports: Path, *, limits: Limits,
                seed: int | None = None, jobs: int | None = None,
                progress: Callable[[int, int, GradeReport], None] | None = None,
                stats: BatchStats | None = None, pool: LocalPool | None = None) -> list[GradeReport]:
    """:func:`grade_class` on ``jobs`` local processes (default: every core), or on ``pool``."""
    return grade_class(source_path, submissions, reports, executor=pool or LocalPool(jobs, stats), limits=limits,
                       seed=seed, progress=progress)


def write_class_page(reports_list: list[GradeReport], folder: Path) -> None:
    """``index.html``: the class summary."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(class_page(reports_list), encoding="utf-8")


def class_reports(folder: Path) -> list[GradeReport]:
    """The summary of every student's report in ``folder`` (the whole class, whoever was graded
    last), sorted by student; a report that cannot be read is left out."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(GradeReport.read_json(path).summary())
        except (OSError, ValueError, KeyError, TypeError, ReportFormatError) as error:
            logging.getLogger(__name__).warning("%s left out of the class summary: %s", path.name, error)
    return found


def write_class_summary(folder: Path) -> list[GradeReport]:
    """``index.html`` from every report in ``folder``: grading one student keeps the class whole."""
    reports_list = class_reports(folder)
    write_class_page(reports_list, folder)
    return reports_list


def write_student_files(report: GradeReport, folder: Path, student: str) -> None:
    """``<student>.json`` (the report) and ``<student>.html`` (the student's feedback page)."""
    report.write_json(folder / f"{student}.json")
    (folder / f"{student}.html").write_text(student_page(report), encoding="utf-8")
