"""``autograder audit PS``: evidence that a problem set's tests grade what they claim to.

For one problem set the audit grades, on warm workers and in parallel:

* the instructor's solution at several seeds: it must get full marks at every one;
* every catalogued mistake (``mistakes.toml``) at every seed: it must lose the points of each
  test cell it names, and the feedback must contain its phrases.  Each mistake is graded once
  more against the *visible* tests only, to tell the mistakes the visible examples catch from
  those only the hidden tests catch;
* every correct alternative (``alternatives.toml``): full marks at every seed;
* every automatic mutant of the solution (:mod:`autograder.mutants`): a mutant is *killed* when
  it loses points at one of the mutant seeds.  A survivor is either recorded in ``audit.toml``
  with a reason (as equivalent to the solution, or as a known gap that counts as a survivor), or
  it fails the audit.

The bar (``CURRICULUM.md``) is part of the verdict: at least 100 mutants, at least 95% of the
non-equivalent ones killed, at least a third of the catalogued mistakes caught only by the
hidden tests, at least eight alternatives, at least three mistakes per graded test cell.  The
result is an :class:`AuditReport`; renderers print it as a table, JSON or a web page.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import queue
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autograder.catalogue import (
    Alternative,
    CatalogueError,
    Mistake,
    load_alternatives,
    load_catalogue,
    mistake_notebook,
    solution_answers,
    with_answers,
)
from autograder.course import Course
from autograder.mutants import Mutant, mutants_of
from autograder.notebook import BEGIN_HIDDEN, END_HIDDEN, Node, SourceNotebook, read_notebook
from autograder.report import PASSED, GradeReport
from autograder.settings import Limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_SEEDS = 20
DEFAULT_MUTANT_SEEDS = 3
MIN_MUTANTS = 100
MIN_KILL_RATE = 0.95
MIN_HIDDEN_ONLY = 1 / 3
MIN_ALTERNATIVES = 8
MIN_MISTAKES_PER_TEST = 3
# A mutant may loop for ever (a comparison turned round); it is killed by the time limit, quickly.
MUTANT_LIMITS = Limits(cell_timeout=5, submission_timeout=60)


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
    limits: Limits | None = None  # None: the audit's limits


def _grading_process(sources: dict[str, SourceNotebook], limits: Limits, tasks: Any, results: Any,
                     number: int = 0, shared: Any = None) -> None:
    from autograder.grader.grading import grade_notebook
    from autograder.grader.launcher import Launcher, share_a_core

    share_a_core(number)
    with shared.launcher() if shared is not None else Launcher() as launcher:
        while (task := tasks.get()) is not None:
            index, job = task
            data = json.dumps(job.notebook).encode()
            try:
                report = grade_notebook(sources[job.variant], data, notebook_name=f"{sources[job.variant].name}.ipynb",
                                        seed=job.seed, limits=job.limits or limits, launcher=launcher)
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
    from autograder.grader.launcher import SharedTemplate

    shared = SharedTemplate(context.Lock())  # one warm-up; each process forks its template from it
    workers = [context.Process(target=_grading_process, args=(sources, limits, tasks, results, number, shared),
                               daemon=True) for number in range(count)]
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
        shared.__exit__()
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
class MutantResult:
    key: str
    cell: str
    operator: str
    diff: str
    killed: bool
    killed_by: list[str]  # the test cells that took points at some seed
    visible_killed_by: list[str]  # ... and those whose visible part alone takes points
    status: str = ""  # "killed", "equivalent", "accepted" (a recorded gap) or "unexplained"
    reason: str = ""


@dataclass
class Condition:
    """One line of the bar: what is required, what was found, and whether it holds."""

    name: str
    holds: bool
    detail: str


@dataclass
class AuditReport:
    ps: str
    seeds: list[int]
    mutant_seeds: list[int] = field(default_factory=list)
    solution_problems: list[str] = field(default_factory=list)
    mistakes: list[MistakeResult] = field(default_factory=list)
    alternatives: list[AlternativeResult] = field(default_factory=list)
    mutants: list[MutantResult] = field(default_factory=list)
    stale_records: list[str] = field(default_factory=list)  # audit.toml keys that match no survivor
    test_ids: list[str] = field(default_factory=list)
    mutants_checked: bool = True

    @property
    def hidden_only(self) -> list[MistakeResult]:
        return [m for m in self.mistakes if m.caught and not m.by_visible]

    @property
    def kill_rate(self) -> float:
        counted = [m for m in self.mutants if m.status != "equivalent"]
        return sum(m.killed for m in counted) / len(counted) if counted else 1.0

    def per_test(self) -> dict[str, dict[str, int]]:
        """For each test cell: the mutants and mistakes it catches, and how many only by its hidden part."""
        table = {test: {"mutants": 0, "mutants hidden only": 0, "mistakes": 0, "mistakes hidden only": 0}
                 for test in self.test_ids}
        for mutant in self.mutants:
            for test in mutant.killed_by:
                row = table.setdefault(test, {"mutants": 0, "mutants hidden only": 0, "mistakes": 0,
                                              "mistakes hidden only": 0})
                row["mutants"] += 1
                row["mutants hidden only"] += test not in mutant.visible_killed_by
        for mistake in self.mistakes:
            for test in mistake.loses:
                if test in table:
                    table[test]["mistakes"] += 1
                    table[test]["mistakes hidden only"] += mistake.caught and not mistake.by_visible
        return table

    @property
    def conditions(self) -> list[Condition]:
        caught = [m for m in self.mistakes if m.caught and m.named]
        counts = {test: sum(test in mistake.loses for mistake in self.mistakes) for test in self.test_ids}
        thin = {test: count for test, count in counts.items() if count < MIN_MISTAKES_PER_TEST}
        conditions = [
            Condition("solution", not self.solution_problems,
                      f"full marks at {len(self.seeds)} seeds" if not self.solution_problems
                      else self.solution_problems[0]),
            Condition("mistakes", len(caught) == len(self.mistakes),
                      f"{len(caught)}/{len(self.mistakes)} caught and named at every seed"),
            Condition("hidden tests", len(self.hidden_only) >= MIN_HIDDEN_ONLY * len(self.mistakes) and bool(self.mistakes),
                      f"{len(self.hidden_only)}/{len(self.mistakes)} mistakes caught only by the hidden tests "
                      f"(at least a third)"),
            Condition("mistakes per test", not thin,
                      "at least 3 for every test cell" if not thin else
                      ", ".join(f"{test}: {count}" for test, count in thin.items())),
            Condition("alternatives", len(self.alternatives) >= MIN_ALTERNATIVES and
                      all(a.full_marks for a in self.alternatives),
                      f"{sum(a.full_marks for a in self.alternatives)}/{len(self.alternatives)} at full marks "
                      f"(at least {MIN_ALTERNATIVES})"),
        ]
        if self.mutants_checked:
            unexplained = [m for m in self.mutants if m.status == "unexplained"]
            equivalent = sum(m.status == "equivalent" for m in self.mutants)
            conditions += [
                Condition("mutants", len(self.mutants) >= MIN_MUTANTS,
                          f"{len(self.mutants)} automatic mutants (at least {MIN_MUTANTS})"),
                Condition("mutants killed", self.kill_rate >= MIN_KILL_RATE,
                          f"{self.kill_rate:.1%} of the {len(self.mutants) - equivalent} non-equivalent mutants "
                          f"killed (at least {MIN_KILL_RATE:.0%}); {equivalent} recorded as equivalent"),
                Condition("survivors explained", not unexplained,
                          f"{len(unexplained)} surviving mutants have no reason in audit.toml"),
            ]
        return conditions

    @property
    def passed(self) -> bool:
        return all(condition.holds for condition in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["hidden_only"] = len(self.hidden_only)
        data["kill_rate"] = self.kill_rate
        data["conditions"] = [asdict(condition) for condition in self.conditions]
        data["per_test"] = self.per_test()
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


@dataclass(frozen=True)
class SurvivorRecord:
    mutant: str
    equivalent: bool
    reason: str


def load_survivor_records(path: Path) -> dict[str, SurvivorRecord]:
    """``audit.toml``: surviving mutants the instructor has looked at, by key, with a reason."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"{path}: {error}") from None
    records = {}
    for number, entry in enumerate(data.get("survivor", []), start=1):
        missing = {"mutant", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            raise CatalogueError(f"{path}: survivor #{number} needs a mutant key and a reason")
        records[str(entry["mutant"])] = SurvivorRecord(str(entry["mutant"]), bool(entry.get("equivalent", True)),
                                                       str(entry["reason"]).strip())
    return records


def audit_problem_set(course: Course, ps: str, *, seeds: Iterable[int] = range(DEFAULT_SEEDS),
                      mutant_seeds: Iterable[int] | None = range(DEFAULT_MUTANT_SEEDS),
                      limits: Limits | None = None, processes: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Grade the solution, every catalogued mistake, every alternative and (unless
    ``mutant_seeds`` is None) every automatic mutant of ``ps``."""
    seeds = list(seeds)
    limits = limits or Limits(cell_timeout=30, submission_timeout=300)
    source_node = read_notebook(course.source_notebook(ps))
    release = read_notebook(course.release_notebook(ps))
    full = course.source(ps)
    sources = {"full": full, "visible": source_from_node(ps, visible_only(source_node))}
    mistakes: list[Mistake] = load_catalogue(course.catalogue(ps))
    alternatives: list[Alternative] = load_alternatives(course.alternatives(ps))
    records = load_survivor_records(course.audit_records(ps))
    answers = solution_answers(source_node)
    solution = with_answers(release, answers)
    mutants: list[Mutant] = [mutant for cell, code in answers.items() for mutant in mutants_of(cell, code)] \
        if mutant_seeds is not None else []
    mutant_limits = Limits(cell_timeout=min(limits.cell_timeout, MUTANT_LIMITS.cell_timeout),
                           submission_timeout=min(limits.submission_timeout, MUTANT_LIMITS.submission_timeout))
    mutant_seeds = list(mutant_seeds or [])

    jobs = [Job(("solution", seed), solution, "full", seed) for seed in seeds]
    for mistake in mistakes:
        notebook = mistake_notebook(release, source_node, mistake)
        jobs += [Job(("mistake", mistake.id, seed), notebook, "full", seed) for seed in seeds]
        jobs.append(Job(("visible", mistake.id), notebook, "visible", seeds[0]))
    for alternative in alternatives:
        notebook = with_answers(release, {**answers, alternative.cell: alternative.code})
        jobs += [Job(("alternative", alternative.id, seed), notebook, "full", seed) for seed in seeds]
    mutant_notebooks = [with_answers(release, {**answers, mutant.cell: mutant.code}) for mutant in mutants]
    for number, notebook in enumerate(mutant_notebooks):
        jobs.append(Job(("mutant", number, mutant_seeds[0]), notebook, "full", mutant_seeds[0], mutant_limits))
        jobs.append(Job(("mutant visible", number), notebook, "visible", mutant_seeds[0], mutant_limits))

    graded = dict(zip((job.key for job in jobs),
                      grade_jobs(sources, jobs, limits=limits, processes=processes, progress=progress)))
    # Most mutants die at the first seed; only the survivors are graded at the other seeds.
    survivors = [number for number in range(len(mutants)) if _lost(graded[("mutant", number, mutant_seeds[0])]) == set()]
    later = [Job(("mutant", number, seed), mutant_notebooks[number], "full", seed, mutant_limits)
             for number in survivors for seed in mutant_seeds[1:]]
    graded.update(zip((job.key for job in later),
                      grade_jobs(sources, later, limits=limits, processes=processes, progress=progress)))
    audit = AuditReport(ps=ps, seeds=seeds, mutant_seeds=mutant_seeds, test_ids=list(full.test_ids),
                        mutants_checked=bool(mutant_seeds))
    for seed in seeds:
        audit.solution_problems += [f"seed {seed}: {problem}" for problem in _test_problems(graded[("solution", seed)])]
    for mistake in mistakes:
        audit.mistakes.append(_judge_mistake(mistake, seeds, graded))
    for alternative in alternatives:
        problems = [f"seed {seed}: {problem}" for seed in seeds
                    for problem in _test_problems(graded[("alternative", alternative.id, seed)])]
        audit.alternatives.append(AlternativeResult(alternative.id, alternative.cell, not problems, problems))
    used: set[str] = set()
    for number, mutant in enumerate(mutants):
        result = _judge_mutant(mutant, [graded[("mutant", number, seed)] for seed in mutant_seeds
                                        if ("mutant", number, seed) in graded], graded[("mutant visible", number)])
        record = records.get(mutant.key)
        if result.killed:
            result.status = "killed"
        elif record is not None:
            result.status, result.reason = ("equivalent" if record.equivalent else "accepted"), record.reason
        else:
            result.status = "unexplained"
        if record is not None and not result.killed:
            used.add(mutant.key)
        audit.mutants.append(result)
    if mutant_seeds:
        audit.stale_records = sorted(set(records) - used)
    return audit


def _lost(report: GradeReport | str) -> set[str] | None:
    """The tests that lost points (None: the notebook could not be graded at all)."""
    if isinstance(report, str) or report.status != "graded":
        return None
    return {test.id for test in report.tests if test.points < test.max_points}


def _judge_mutant(mutant: Mutant, reports: list[GradeReport | str], visible: GradeReport | str) -> MutantResult:
    killed_by: set[str] = set()
    killed = False
    for report in reports:
        lost = _lost(report)
        if lost is None or lost:
            killed = True
            killed_by |= lost or {"(the whole notebook)"}
    visible_lost = _lost(visible)
    return MutantResult(mutant.key, mutant.cell, mutant.operator, mutant.diff, killed, sorted(killed_by),
                        sorted(visible_lost if visible_lost is not None else killed_by))


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
