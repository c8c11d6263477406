"""``autograder audit PS``: evidence that a problem set's tests grade what they claim to.

For one problem set the audit grades, on warm workers and in parallel:

* the instructor's solution at several seeds: it must get full marks at every one;
* every catalogued mistake (``mistakes.toml``) at every seed: it must lose the points of each
  test cell it names, and the feedback must contain its phrases.  Each mistake is graded once
  more against the *visible* tests only, to tell the mistakes the visible examples catch from
  those only the hidden tests catch;
* every correct alternative (``alternatives.toml``): full marks at every seed.

The result is an :class:`AuditReport`; the CLI prints it as a table, and exits 0 only when
every claim holds.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import queue
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from autograder.catalogue import (Alternative, Mistake, load_alternatives, load_catalogue, mistake_notebook,
                                  solution_answers, with_answers)
from autograder.course import Course
from autograder.notebook import BEGIN_HIDDEN, END_HIDDEN, Node, SourceNotebook, read_notebook
from autograder.report import PASSED, GradeReport
from autograder.session import Limits

DEFAULT_SEEDS = 20


def visible_only(source: Node) -> Node:
    """The source notebook with every hidden-test block removed: what the student can run."""
    notebook = copy.deepcopy(source)
    for cell in notebook.cells:
        if cell.get("cell_type") != "code":
            continue
        kept, inside = [], False
        for line in cell.source.splitlines():
            if BEGIN_HIDDEN.match(line):
                inside = True
            elif END_HIDDEN.match(line):
                inside = False
            elif not inside:
                kept.append(line)
        cell.source = "\n".join(kept)
    return notebook


def source_from_node(name: str, notebook: Node) -> SourceNotebook:
    """A :class:`SourceNotebook` from an in-memory notebook (as :meth:`SourceNotebook.load` reads one)."""
    with tempfile.TemporaryDirectory(prefix="autograder-audit-") as folder:
        path = Path(folder) / f"{name}.ipynb"
        import json

        path.write_text(json.dumps(notebook), encoding="utf-8")
        return SourceNotebook.load(path)


# ------------------------------------------------------------------------------ grading jobs


@dataclass(frozen=True)
class Job:
    """One notebook to grade: ``key`` names it in the results."""

    key: tuple[Any, ...]
    notebook: Node
    variant: str  # "full" or "visible": which version of the tests
    seed: int


def _grading_process(sources: dict[str, SourceNotebook], limits: Limits, tasks: Any, results: Any) -> None:
    import json

    from autograder.grading import grade_notebook
    from autograder.launcher import Launcher

    with Launcher() as launcher, tempfile.TemporaryDirectory(prefix="autograder-audit-") as folder:
        while (task := tasks.get()) is not None:
            index, job = task
            path = Path(folder) / f"{sources[job.variant].name}.ipynb"
            path.write_text(json.dumps(job.notebook), encoding="utf-8")
            try:
                report = grade_notebook(sources[job.variant], path, seed=job.seed, limits=limits,
                                        launcher=launcher)
                results.put((index, report.summary().to_dict(), None))
            except Exception as error:  # noqa: BLE001 - reported as a failed audit line
                results.put((index, None, f"{type(error).__name__}: {error}"))


def grade_jobs(sources: dict[str, SourceNotebook], jobs: list[Job], *, limits: Limits,
               processes: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[GradeReport | str]:
    """Grade every job on ``processes`` processes, each with one warm worker template.

    Returns, in the order of ``jobs``, each report, or a sentence when grading itself failed."""
    if not jobs:
        return []
    count = max(1, min(processes or len(os.sched_getaffinity(0)), len(jobs)))
    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    for item in enumerate(jobs):
        tasks.put(item)
    for _ in range(count):
        tasks.put(None)
    workers = [context.Process(target=_grading_process, args=(sources, limits, tasks, results), daemon=True)
               for _ in range(count)]
    for worker in workers:
        worker.start()
    done: dict[int, GradeReport | str] = {}
    try:
        while len(done) < len(jobs):
            try:
                index, data, failure = results.get(timeout=1.0)
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers):
                    break
                continue
            done[index] = failure if data is None else GradeReport.from_dict(data)
            if progress:
                progress(len(done), len(jobs))
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    return [done.get(index, "the grading process stopped before this notebook") for index in range(len(jobs))]


# ------------------------------------------------------------------------------------ results


@dataclass
class MistakeResult:
    id: str
    cell: str
    loses: list[str]
    caught: bool  # lost every point of every `loses` test at every seed
    named: bool  # the feedback held every phrase at every seed
    by_visible: bool  # the visible tests alone already take the points
    problems: list[str] = field(default_factory=list)


@dataclass
class AlternativeResult:
    id: str
    cell: str
    full_marks: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    ps: str
    seeds: list[int]
    solution_problems: list[str] = field(default_factory=list)
    mistakes: list[MistakeResult] = field(default_factory=list)
    alternatives: list[AlternativeResult] = field(default_factory=list)

    @property
    def hidden_only(self) -> list[MistakeResult]:
        return [m for m in self.mistakes if m.caught and not m.by_visible]

    @property
    def passed(self) -> bool:
        return (not self.solution_problems
                and all(m.caught and m.named for m in self.mistakes)
                and all(a.full_marks for a in self.alternatives))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["hidden_only"] = len(self.hidden_only)
        return data


def _test_problems(report: GradeReport | str) -> list[str]:
    """Why a notebook did not get full marks (empty when it did)."""
    if isinstance(report, str):
        return [report]
    if report.status != "graded":
        return [f"not graded: {report.error}"]
    problems = [f"{test.id}: {test.message.splitlines()[0] if test.message else test.status}"
                for test in report.tests if test.status != PASSED]
    problems += [f"cell {problem.cell}: {problem.message.splitlines()[0]}" for problem in report.cell_problems]
    return problems


def audit_problem_set(course: Course, ps: str, *, seeds: Iterable[int] = range(DEFAULT_SEEDS),
                      limits: Limits | None = None, processes: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Grade the solution, every catalogued mistake and every alternative of ``ps``."""
    seeds = list(seeds)
    limits = limits or Limits(cell_timeout=30, submission_timeout=300)
    source_node = read_notebook(course.source_notebook(ps))
    release = read_notebook(course.release_notebook(ps))
    sources = {"full": course.source(ps),
               "visible": source_from_node(ps, visible_only(source_node))}
    mistakes: list[Mistake] = load_catalogue(course.catalogue(ps))
    alternatives: list[Alternative] = load_alternatives(course.alternatives(ps))
    solution = with_answers(release, solution_answers(source_node))

    jobs = [Job(("solution", seed), solution, "full", seed) for seed in seeds]
    for mistake in mistakes:
        notebook = mistake_notebook(release, source_node, mistake)
        jobs += [Job(("mistake", mistake.id, seed), notebook, "full", seed) for seed in seeds]
        jobs.append(Job(("visible", mistake.id), notebook, "visible", seeds[0]))
    for alternative in alternatives:
        answers = {**solution_answers(source_node), alternative.cell: alternative.code}
        notebook = with_answers(release, answers)
        jobs += [Job(("alternative", alternative.id, seed), notebook, "full", seed) for seed in seeds]

    graded = dict(zip((job.key for job in jobs),
                      grade_jobs(sources, jobs, limits=limits, processes=processes, progress=progress)))
    audit = AuditReport(ps=ps, seeds=seeds)
    for seed in seeds:
        audit.solution_problems += [f"seed {seed}: {problem}" for problem in _test_problems(graded[("solution", seed)])]
    for mistake in mistakes:
        audit.mistakes.append(_judge_mistake(mistake, seeds, graded))
    for alternative in alternatives:
        problems = [f"seed {seed}: {problem}" for seed in seeds
                    for problem in _test_problems(graded[("alternative", alternative.id, seed)])]
        audit.alternatives.append(AlternativeResult(alternative.id, alternative.cell, not problems, problems))
    return audit


def _judge_mistake(mistake: Mistake, seeds: list[int], graded: dict[tuple[Any, ...], Any]) -> MistakeResult:
    result = MistakeResult(mistake.id, mistake.cell, list(mistake.loses), caught=True, named=True, by_visible=True)
    for seed in seeds:
        report = graded[("mistake", mistake.id, seed)]
        if isinstance(report, str):
            result.caught = result.named = False
            result.problems.append(f"seed {seed}: {report}")
            continue
        tests = {test.id: test for test in report.tests}
        for test_id in mistake.loses:
            test = tests.get(test_id)
            if test is None:
                result.caught = False
                result.problems.append(f"{test_id} is not a test of this problem set")
            elif test.points > 0:
                result.caught = False
                result.problems.append(f"seed {seed}: kept {test.points:g} points on {test_id}")
            else:
                missing = [phrase for phrase in mistake.feedback if phrase.lower() not in test.message.lower()]
                if missing:
                    result.named = False
                    result.problems.append(f"seed {seed}: feedback on {test_id} lacks {missing}: "
                                           f"{test.message[:300]!r}")
    visible = graded[("visible", mistake.id)]
    if isinstance(visible, str):
        result.by_visible = False
    else:
        tests = {test.id: test for test in visible.tests}
        result.by_visible = all(test_id in tests and tests[test_id].points == 0 for test_id in mistake.loses)
    return result
