"""The ``autograder`` command.

Exit codes (for scripts):

* 0 — everything was graded (and, for ``check``, every test passed);
* 1 — ``check``: the notebook was graded and some tests failed; ``audit``: a claim of the
  problem set's tests does not hold;
* 2 — the command could not run: unknown command or option, missing file, unknown problem
  set, or a source notebook nbgrader cannot release;
* 3 — at least one notebook could not be graded (corrupt, not a notebook, the wrong problem
  set); every other notebook was still graded and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import secrets
import sys
import time
from pathlib import Path

from autograder import __version__, progress, stages
from autograder.batch import (
    BatchStats,
    LocalPool,
    already_graded,
    find_submissions,
    grade_batch,
    grade_handed_notebooks,
    read_hand_in,
    write_class_summary,
    write_student_files,
)
from autograder.course import Course
from autograder.errors import AutograderError, UsageError
from autograder.grader.grading import grade_notebook, not_graded
from autograder.grader.launcher import Launcher, share_a_core
from autograder.html import student_page
from autograder.integrations import EXPORTS
from autograder.integrations.gradescope import gradescope_results
from autograder.render import print_report, print_summary, printable
from autograder.report import GradeReport
from autograder.settings import Limits

EXIT_OK, EXIT_TESTS_FAILED, EXIT_USAGE, EXIT_NOT_GRADED = 0, 1, 2, 3


def _course(args: argparse.Namespace) -> Course:
    if args.course:
        root = Path(args.course)
        if not root.is_dir():
            raise UsageError(f"There is no course folder {root}.")
        return Course.find(root)
    return Course.find()


def _limits(course: Course, args: argparse.Namespace) -> Limits:
    limits = course.limits()
    if getattr(args, "timeout", None):
        limits = dataclasses.replace(limits, cell_timeout=args.timeout)
    if getattr(args, "strict", False):
        limits = dataclasses.replace(limits, strict=True)
    return limits


def cmd_check(args: argparse.Namespace) -> int:
    with Launcher() as launcher:
        launcher.start()  # warms up while the notebooks are read
        course = _course(args)
        notebook = Path(args.notebook)
        seed = args.seed if args.seed is not None else secrets.randbits(31)
        if notebook.is_dir():
            # A hand-in folder (Gradescope's submission/): someone else wrote it, so it is read
            # without following links, like submitted/ when a class is graded.
            known = course.problem_sets()
            if not args.ps and len(known) != 1:
                raise UsageError(f"{notebook} is a folder; say which problem set it holds with --ps.")
            ps = course.check_problem_set(args.ps or known[0])
            source = course.source(ps)
            hand_in = read_hand_in(notebook.parent, (notebook.name,), ps, depth=3)
            if isinstance(hand_in, str):
                report = not_graded(source, hand_in, notebook=notebook.name, seed=seed)
            else:
                report = grade_handed_notebooks(source, hand_in, ps=ps, student=None, seed=seed,
                                                limits=_limits(course, args), launcher=launcher)
        else:
            if not notebook.is_file() and not args.gradescope:
                raise UsageError(f"There is no notebook {notebook}.")
            ps = course.check_problem_set(args.ps) if args.ps else course.problem_set_of(notebook)
            source = course.source(ps)
            launcher.warm()
            share_a_core(-1, launcher)  # now that the template has warmed up on every core
            report = grade_notebook(source, notebook, seed=seed, limits=_limits(course, args), launcher=launcher)
    print_report(report)
    progress.remember(ps, report, hidden_tests=True)
    if args.json:
        report.write_json(Path(args.json))
    if args.html:
        Path(args.html).write_text(student_page(report), encoding="utf-8")
    if args.gradescope:
        Path(args.gradescope).write_text(json.dumps(gradescope_results(report), indent=2), encoding="utf-8")
    if report.status != "graded":
        return EXIT_NOT_GRADED
    return EXIT_OK if report.all_passed else EXIT_TESTS_FAILED


def cmd_progress(args: argparse.Namespace) -> int:
    try:
        known = _course(args).problem_sets()
    except AutograderError:
        known = []
    rows = progress.overview(known)
    if not rows:
        print("No problem sets checked yet: press Check in a problem set's notebook, or run `autograder check`.")
        return EXIT_OK
    print(f"{'problem set':<28}{'best':>10}  {'when (UTC)':<20}{'last':>10}{'checks':>8}")
    for row in rows:
        if row.best is None:
            state = "visible tests only" if row.visible_only_checks else "not checked yet"
            print(f"{printable(row.ps):<28}{'':>10}  {state}")
            continue
        print(f"{printable(row.ps):<28}{f'{row.best:g}/{row.max_score:g}':>10}  {(row.best_at or '')[:16]:<20}"
              f"{f'{row.last:g}':>10}{row.checks:>8}")
    print(f"\nKept in {progress.data_dir() / progress.FILE}.")
    return EXIT_OK


def _grade_class(course: Course, ps: str, submitted: Path, reports: Path, args: argparse.Namespace) -> int:
    course.source(ps)  # refuses a problem set whose tests are not safe to grade with
    submissions = find_submissions(submitted, ps, args.student)
    if not submissions:
        print(f"No submissions of {ps} in {submitted} (expected {submitted}/<student>/{ps}/{ps}.ipynb).")
        return EXIT_OK
    source_path = course.source_notebook(ps)
    done = [] if getattr(args, "regrade", True) else \
        [submission for submission in submissions if already_graded(submission, reports, source_path)]
    if done:
        print(f"{len(done)} of {len(submissions)} submissions already have a report newer than the notebook; "
              "grading the rest (--regrade grades all again).", file=sys.stderr)
    by_name = {submission.student: submission for submission in submissions}
    limits = _limits(course, args)
    stats = BatchStats()
    began = time.perf_counter()
    scheduler = getattr(args, "scheduler", None)
    with contextlib.ExitStack() as stack:
        # The worker template starts first: it warms up on one core while this process opens the
        # gradebook (importing nbgrader) on the other.
        pool = None if scheduler or len(done) == len(submissions) else \
            stack.enter_context(LocalPool(getattr(args, "jobs", None), stats))
        gradebook = None
        if not getattr(args, "no_gradebook", False):
            from autograder.integrations.gradebook import GradebookTarget, GradebookWriter

            target = GradebookTarget.for_course(course, submitted, getattr(args, "db", None))
            gradebook = stack.enter_context(GradebookWriter(course, ps, target, batch=True))

        def progress(number: int, total: int, report) -> None:
            state = "not graded" if report.status != "graded" else f"{report.score:g}/{report.max_score:g}"
            print(f"[{number}/{total}] {printable(report.student)}: {state}", file=sys.stderr, flush=True)
            if gradebook is not None:
                gradebook.record(report, by_name[report.student])

        previous = []
        for submission in done:
            report = GradeReport.read_json(reports / f"{submission.student}.json")
            if gradebook is not None:
                # A killed run may have left it out; hand grades and late penalties may have changed.
                final = report.final
                gradebook.record(report, submission)
                if report.final != final:
                    write_student_files(report, reports, submission.student)
            previous.append(report.summary())
        todo = [submission for submission in submissions if submission not in done]
        if scheduler:
            from autograder.distributed import ClusterError, grade_batch_on_cluster

            try:
                graded = grade_batch_on_cluster(scheduler, source_path, todo, reports, limits=limits,
                                                seed=args.seed, progress=progress)
            except ClusterError as error:
                raise UsageError(str(error)) from error
        else:
            graded = grade_batch(source_path, todo, reports, limits=limits, seed=args.seed,
                                 jobs=getattr(args, "jobs", None), progress=progress, stats=stats, pool=pool)
    by_student = {report.student: report for report in [*previous, *graded]}
    results = [by_student[submission.student] for submission in submissions]
    if not todo:  # grading writes it (the whole class, also when one student was graded)
        write_class_summary(reports)
    print(f"\n{ps}")
    print_summary(results)
    print(f"Reports: {reports} (class summary: {reports / 'index.html'})")
    if gradebook is not None:
        for warning in gradebook.warnings:
            print(f"warning: {printable(warning)}", file=sys.stderr)
        print(f"Gradebook: {target.db_url} (autograded notebooks: {target.autograded})")
    if getattr(args, "timings", False):
        _print_timings(stats, len(todo), time.perf_counter() - began)
    return EXIT_NOT_GRADED if any(report.status != "graded" for report in results) else EXIT_OK


def _print_timings(stats: BatchStats, notebooks: int, graded_in: float) -> None:
    mine = stages.take()
    before = stages.since_process_start()
    if before is not None:
        mine["start-up: interpreter, imports, course"] = [max(0.0, before - graded_in), 1.0]
    wall = graded_in + mine.get("start-up: interpreter, imports, course", [0.0])[0]
    print(stages.table(mine, stats.grader_stages, notebooks=notebooks, wall=wall, jobs=stats.jobs or 1),
          file=sys.stderr)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    parent_cpu = own.ru_utime + own.ru_stime
    rest = children.ru_utime + children.ru_stime - stats.grader_cpu_seconds
    print(f"CPU time: this process {parent_cpu:.2f} s, the grading processes {stats.grader_cpu_seconds:.2f} s, "
          f"worker templates and workers {max(rest, 0.0):.2f} s ({parent_cpu + stats.grader_cpu_seconds + max(rest, 0.0):.2f} s "
          f"in all, {(parent_cpu + stats.grader_cpu_seconds + max(rest, 0.0)) / max(wall, 1e-9):.2f} cores busy on average)",
          file=sys.stderr)


def cmd_grade(args: argparse.Namespace) -> int:
    course = _course(args)
    ps = course.check_problem_set(args.ps)
    submitted = Path(args.submitted) if args.submitted else course.root / "submitted"
    reports = Path(args.reports) if args.reports else course.root / "reports" / ps
    return _grade_class(course, ps, submitted, reports, args)


def cmd_release(args: argparse.Namespace) -> int:
    from autograder.release import release

    course = _course(args)
    sets = course.problem_sets() if args.ps == "all" else [course.check_problem_set(args.ps)]
    for ps in sets:
        student, solution = release(course, ps, execute_solution=not args.no_execute)
        print(f"{ps}: {student.relative_to(course.root)}, {solution.relative_to(course.root)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from autograder.demo import build_demo_class

    course = _course(args)
    sets = [course.check_problem_set(args.ps)] if args.ps else course.problem_sets()
    out = Path(args.out)
    students = build_demo_class(course, out, sets)
    print(f"Demo class written to {out}/submitted "
          f"({sum(len(names) for names in students.values())} submissions).")
    args.student = None
    worst = EXIT_OK
    for ps in sets:
        worst = max(worst, _grade_class(course, ps, out / "submitted", out / "reports" / ps, args))
    example = next(iter(sorted((out / "reports" / sets[-1]).glob("mistake-*.json"))), None) if sets else None
    if example is not None:
        print(f"\nWhat a student sees, for example {example.stem} in {sets[-1]}:\n")
        print_report(GradeReport.read_json(example))
        print(f"(the same as a web page: {example.with_suffix('.html')})")
    return worst


def cmd_export(args: argparse.Namespace) -> int:
    from autograder.integrations import EXPORTS

    course = _course(args)
    ps = course.check_problem_set(args.ps)
    export = EXPORTS[args.format]
    reports = Path(args.reports) if args.reports else course.root / "reports" / ps
    target = Path(args.out) if args.out else export.default_target(course, ps, reports)
    print(export.write(course, ps, target, reports))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from autograder.audit import audit_problem_set
    from autograder.html import audit_page
    from autograder.render import print_audit

    course = _course(args)
    sets = course.problem_sets() if args.ps == "all" else [course.check_problem_set(args.ps)]
    limits = _limits(course, args)
    audits = []
    for ps in sets:
        def progress(done: int, total: int, ps: str = ps) -> None:
            if sys.stderr.isatty():
                print(f"\r{ps}: {done}/{total} notebooks graded", end="", file=sys.stderr, flush=True)

        audit = audit_problem_set(course, ps, seeds=range(args.seeds),
                                  mutant_seeds=None if args.no_mutants else range(args.mutant_seeds),
                                  limits=limits, processes=args.jobs, progress=progress)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print_audit(audit, verbose=args.verbose)
        audits.append(audit)
    if args.json:
        Path(args.json).write_text(json.dumps([audit.to_dict() for audit in audits], indent=2) + "\n",
                                   encoding="utf-8")
    if args.html:
        Path(args.html).write_text(audit_page(audits), encoding="utf-8")
    return EXIT_OK if all(audit.passed for audit in audits) else EXIT_TESTS_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from autograder.service import serve

    course = _course(args)
    if not course.problem_sets():
        raise UsageError(f"{course.root} has no problem sets to serve.")
    if args.cooldown < 0:
        raise UsageError("--cooldown is a number of seconds, 0 or more.")
    serve(course, host=args.host, port=args.port, limit_per_hour=args.limit, gradebook=not args.no_gradebook,
          jobs=args.jobs, cooldown=args.cooldown, policy=args.policy, hub=args.hub,
          instructor_group=args.instructor_group, scheduler=args.scheduler)
    return EXIT_OK


def cmd_tokens(args: argparse.Namespace) -> int:
    from autograder.service import Tokens

    course = _course(args)
    students = list(args.student or [])
    if args.roster:
        from nbgrader.api import Gradebook

        from autograder.integrations.gradebook import GradebookTarget

        target = GradebookTarget.for_course(course, course.root / "submitted", None)
        with Gradebook(target.db_url, target.course_id) as gradebook:
            students += [student.id for student in gradebook.students]
    if not students and not args.instructor:
        raise UsageError("Name the students (--student ada --student bob), or --roster for nbgrader's, or --instructor.")
    for who, token in Tokens(course).issue(sorted(set(students)), instructor=args.instructor).items():
        print(f"{who}\t{token}")
    print("Give each student their token; a new token replaces the old one. Only digests are kept "
          f"({course.root / 'service' / 'tokens.json'}).", file=sys.stderr)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from autograder.service import ServiceClient

    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise UsageError(f"There is no notebook {notebook}.")
    client = ServiceClient(args.server, args.token)
    accepted = client.submit(args.ps or notebook.stem, notebook.read_bytes())
    print(f"Submitted {notebook.name} at {accepted['submitted_at']} (submission {accepted['id']}).")
    status = client.wait(accepted, args.wait)
    if status["status"] != "graded":
        print(f"Not graded yet: it is queued, and its feedback will be at {client.base}{accepted['poll']}.")
        return EXIT_OK
    report = GradeReport.from_dict(status["report"])
    print_report(report)
    return EXIT_OK if report.all_passed else EXIT_TESTS_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autograder",
        description="Grade notebooks of the mathematics-for-machine-learning course. "
                    "Student code runs in a separate, confined process; tests run outside it.",
    )
    parser.add_argument("--version", action="version", version=f"autograder {__version__}")
    parser.add_argument("--course", help="the course folder (default: found from the working directory)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="grade one notebook and show the feedback")
    check.add_argument("notebook", help="the notebook to check, or a hand-in folder (read without following links)")
    check.add_argument("--ps", help="its problem set (default: from the file name)")
    check.add_argument("--seed", type=int, help="seed of the hidden tests' inputs (to reproduce a run)")
    check.add_argument("--timeout", type=float, help="seconds one cell or test may run")
    check.add_argument("--strict", action="store_true",
                       help="refuse to grade if any protection of the worker is missing")
    check.add_argument("--json", help="also write the report as JSON to this file")
    check.add_argument("--html", help="also write the feedback as a web page to this file")
    check.add_argument("--gradescope", metavar="RESULTS_JSON",
                       help="also write Gradescope's results.json (the autograder specification) to this file")
    check.set_defaults(run=cmd_check)

    grade = commands.add_parser("grade", help="grade every submission of a problem set")
    grade.add_argument("ps", help="the problem set, e.g. ps05_derivatives (or a unique prefix: ps05)")
    grade.add_argument("--submitted", help="folder of submissions (default: COURSE/submitted)")
    grade.add_argument("--reports", help="folder for the JSON reports (default: COURSE/reports/PS)")
    grade.add_argument("--student", action="append", help="grade only this student (repeatable)")
    grade.add_argument("--seed", type=int, help="one seed for every student (default: one per student)")
    grade.add_argument("--timeout", type=float, help="seconds one cell or test may run")
    grade.add_argument("--strict", action="store_true",
                       help="refuse to grade if any protection of the worker is missing")
    grade.add_argument("--jobs", type=int, help="submissions graded at once (default: one per core)")
    grade.add_argument("--db", metavar="URL",
                       help="nbgrader gradebook to write (default: CourseDirectory.db_url, "
                            "else gradebook.db beside submitted/)")
    grade.add_argument("--no-gradebook", action="store_true",
                       help="write reports only, not nbgrader's gradebook and autograded/")
    grade.add_argument("--scheduler", metavar="ADDRESS",
                       help="grade on a Dask cluster, e.g. tcp://10.0.0.5:8786 (default: local processes)")
    grade.add_argument("--timings", action="store_true",
                       help="print where the time went, stage by stage (start-up, grading, gradebook, reports)")
    grade.add_argument("--regrade", action="store_true",
                       help="grade every submission again, even those with an up-to-date report")
    grade.set_defaults(run=cmd_grade)

    release = commands.add_parser("release", help="regenerate release/ and solutions/ from source/")
    release.add_argument("ps", help="the problem set, or 'all'")
    release.add_argument("--no-execute", action="store_true", help="do not execute the solution notebook")
    release.set_defaults(run=cmd_release)

    export = commands.add_parser("export", help="export a graded class's grades")
    export.add_argument("format", choices=sorted(EXPORTS),
                        help="; ".join(f"{name}: {entry.help}" for name, entry in sorted(EXPORTS.items())))
    export.add_argument("ps", help="the problem set")
    export.add_argument("--reports", help="folder of the reports (default: COURSE/reports/PS)")
    export.add_argument("--out", help="the file to write (default: REPORTS/grades.csv, "
                                      "COURSE/exports/PS-gradescope.zip, COURSE/exports/PS-otter/PS.ipynb)")
    export.set_defaults(run=cmd_export)

    audit = commands.add_parser("audit", help="prove a problem set's tests: solution, mistakes, alternatives")
    audit.add_argument("ps", help="the problem set, or 'all'")
    audit.add_argument("--seeds", type=int, default=20,
                       help="seeds to grade the solution, each mistake and each alternative at (default: 20)")
    audit.add_argument("--mutant-seeds", type=int, default=3, help="seeds to grade each mutant at (default: 3)")
    audit.add_argument("--no-mutants", action="store_true", help="leave out the automatic mutants")
    audit.add_argument("--verbose", action="store_true", help="list every mistake and mutant, not only problems")
    audit.add_argument("--jobs", type=int, help="notebooks graded at once (default: one per core)")
    audit.add_argument("--timeout", type=float, help="seconds one cell or test may run")
    audit.add_argument("--json", help="also write the audit as JSON to this file")
    audit.add_argument("--html", help="also write the audit as a web page to this file")
    audit.set_defaults(run=cmd_audit)

    serve_command = commands.add_parser("serve", help="a grading service: students submit and get feedback")
    serve_command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve_command.add_argument("--port", type=int, default=8765)
    serve_command.add_argument("--limit", type=int, default=10, help="submissions per student and problem set per hour")
    serve_command.add_argument("--jobs", type=int, help="submissions graded at once (default: one per core)")
    serve_command.add_argument("--cooldown", type=float, default=0.0,
                               help="seconds a student waits between two submissions of a problem set (default: 0)")
    serve_command.add_argument("--policy", choices=("latest", "best"), default="latest",
                               help="which graded submission nbgrader's gradebook holds: the latest (default) or "
                                    "the best so far (a tie keeps the earlier)")
    serve_command.add_argument("--scheduler", metavar="ADDRESS",
                               help="grade on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); "
                                    "--jobs is then how many submissions are in flight (default: 8)")
    serve_command.add_argument("--hub", action="store_true",
                               help="run as a JupyterHub service: the hub's users and tokens, under /services/<name>/")
    serve_command.add_argument("--instructor-group", default="instructors",
                               help="with --hub: the hub group whose members (and the hub's admins) read every "
                                    "submission (default: instructors)")
    serve_command.add_argument("--no-gradebook", action="store_true",
                               help="do not record graded submissions in nbgrader's gradebook")
    serve_command.set_defaults(run=cmd_serve)

    tokens = commands.add_parser("tokens", help="issue the service's tokens (printed once; digests are kept)")
    tokens.add_argument("--student", action="append", help="a student to issue a token for (repeatable)")
    tokens.add_argument("--roster", action="store_true", help="every student in nbgrader's gradebook")
    tokens.add_argument("--instructor", action="store_true", help="also an instructor token (reads every submission)")
    tokens.set_defaults(run=cmd_tokens)

    submit = commands.add_parser("submit", help="submit a notebook to the course's service and show the feedback")
    submit.add_argument("notebook")
    submit.add_argument("--server", required=True, help="the service's address, e.g. http://127.0.0.1:8765")
    submit.add_argument("--token", required=True, help="your token, from your instructor")
    submit.add_argument("--ps", help="its problem set (default: the file name)")
    submit.add_argument("--wait", type=float, default=120, help="seconds to wait for the feedback (default 120)")
    submit.set_defaults(run=cmd_submit)

    progress_command = commands.add_parser("progress", help="every problem set's best score so far, from your checks")
    progress_command.set_defaults(run=cmd_progress)

    demo = commands.add_parser("demo", help="build the demo class and grade it")
    demo.add_argument("--out", default="demo-class", help="where to write it (default: ./demo-class)")
    demo.add_argument("--ps", help="only this problem set")
    demo.add_argument("--seed", type=int, help="one seed for every student (default: one per student)")
    demo.add_argument("--timeout", type=float, help="seconds one cell or test may run")
    demo.add_argument("--strict", action="store_true",
                       help="refuse to grade if any protection of the worker is missing")
    demo.set_defaults(run=cmd_demo)
    return parser


def _skip_the_iri_parsers() -> None:
    """With rfc3987-syntax installed, jsonschema builds some 35 Earley parsers for the "iri"
    formats when it is first imported (through nbformat, which nbgrader imports): over a second
    of a command's start-up on a small machine.  No notebook or gradebook schema uses those
    formats, so this process does without them, as jsonschema does when the package is absent.
    Only in a process of ours, and only before jsonschema's formats are loaded."""
    if "jsonschema._format" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    _skip_the_iri_parsers()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except AutograderError as error:
        print(f"autograder: {printable(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autograder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
