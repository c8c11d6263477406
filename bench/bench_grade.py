"""Grade the same class with `nbgrader autograde` and `autograder grade`, side by side.

    python bench/bench_grade.py                 # 100 submissions of ps05_derivatives
    python bench/bench_grade.py --n 40 --ps ps05_derivatives --jobs 2
    python bench/bench_grade.py --n 2000 --competitor-n 100   # a large class

Builds N honest submissions (the solution, the untouched release and every catalogued mistake,
in rotation) in a scratch nbgrader course, times both graders on them, checks that they give
every student the same score, reports throughput and the peak memory of the whole process tree,
and times `autograder check NOTEBOOK` from a cold start.  With --competitor-n M, nbgrader
grades only the first M students (at about 2 s a notebook, 2,000 would take over an hour); the
ratio is then of throughputs, notebooks per second.  Both graders write the gradebook.
Run it from the activated environment (`python3 run.py shell`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.integrations.autograde import write_plain_nbgrader_config
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed


def build_class(course: Path, ps: str, n: int, *, plain_nbgrader: bool = False) -> list[str]:
    course.mkdir(parents=True, exist_ok=True)
    if plain_nbgrader:  # the competitor: nbgrader's own autograde, not ours behind its button
        write_plain_nbgrader_config(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    else:
        shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "source" / ps, course / "source" / ps)
    run([str(BIN / "nbgrader"), "generate_assignment", ps, "--force"], course)
    source = read_notebook(course / "source" / ps / f"{ps}.ipynb")
    release = read_notebook(course / "release" / ps / f"{ps}.ipynb")
    variants = [with_answers(release, solution_answers(source)), release]
    variants += [mistake_notebook(release, source, m) for m in load_catalogue(course / "source" / ps / "mistakes.toml")]
    students = [f"student{i:04d}" for i in range(n)]
    for index, student in enumerate(students):
        target = course / "submitted" / student / ps / f"{ps}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(variants[index % len(variants)], target)
    roster = course / "students.csv"
    roster.write_text("id\n" + "\n".join(students) + "\n")
    run([str(BIN / "nbgrader"), "db", "student", "import", str(roster)], course)
    return students


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_memory(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``command``; return (seconds, peak total RSS in MiB of it and all its descendants,
    what it printed on stderr)."""
    with tempfile.TemporaryFile() as log:  # a pipe nobody reads would fill up and stall the command
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
        peak = 0
        while process.poll() is None:
            peak = max(peak, sum(rss_kib(pid) for pid in descendants(process.pid)))
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        log.seek(0)
        printed = log.read().decode(errors="replace")
        if process.returncode not in (0, 1, 3):
            sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{printed[-3000:]}")
    return elapsed, peak / 1024, printed


def warm_recheck(course: Path, ps: str, notebook: Path, runs: int = 5) -> list[float]:
    """Seconds to grade ``notebook`` again in a process that has graded it once (a warm worker
    template, the problem set loaded): what Check in JupyterLab and the service pay per press."""
    from autograder.grader.grading import grade_notebook
    from autograder.grader.launcher import Launcher, share_a_core
    from autograder.notebook import SourceNotebook

    source = SourceNotebook.load(course / "source" / ps / f"{ps}.ipynb")
    data = notebook.read_bytes()
    times = []
    with Launcher() as launcher:
        launcher.start()
        share_a_core(-1, launcher)  # as the JupyterLab extension's checking thread does
        grade_notebook(source, data, notebook_name=notebook.name, seed=0, launcher=launcher)
        for run_number in range(runs):
            started = time.perf_counter()
            grade_notebook(source, data, notebook_name=notebook.name, seed=run_number + 1, launcher=launcher)
            times.append(time.perf_counter() - started)
    return times


def nbgrader_scores(course: Path, ps: str, students: list[str]) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {student: gradebook.find_submission(ps, student).score for student in students}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="submissions (default 100)")
    parser.add_argument("--ps", default="ps05_derivatives")
    parser.add_argument("--jobs", type=int, default=None, help="autograder --jobs (default: one per core)")
    parser.add_argument("--competitor-n", type=int, default=None,
                        help="submissions nbgrader grades: the first M of the N (default: all N)")
    parser.add_argument("--memory", action="store_true", help="also compare peak memory for N and 4N submissions")
    args = parser.parse_args()
    competitor_n = min(args.competitor_n or args.n, args.n)

    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        theirs_course, course = Path(scratch) / "nbgrader", Path(scratch) / "autograder"
        theirs_course.mkdir()
        course.mkdir()
        compared = build_class(theirs_course, args.ps, competitor_n, plain_nbgrader=True)
        students = build_class(course, args.ps, args.n)  # the first M are the same notebooks
        print(f"{args.n} submissions of {args.ps} ({competitor_n} for nbgrader), {os.cpu_count()} cores, "
              f"Python {sys.version.split()[0]}")

        nbgrader_seconds, nbgrader_mib, _ = peak_memory(
            [str(BIN / "nbgrader"), "autograde", args.ps, "--force"], theirs_course)
        theirs = nbgrader_scores(theirs_course, args.ps, compared)

        command = [str(BIN / "autograder"), "--course", str(course), "grade", args.ps,
                   "--reports", str(course / "reports"), "--timings"]
        if args.jobs:
            command += ["--jobs", str(args.jobs)]
        ours_seconds, ours_mib, printed = peak_memory(command, course)
        breakdown = printed[printed.find("where the time went"):].rstrip()
        ours = {student: json.loads((course / "reports" / f"{student}.json").read_text())["score"]
                for student in students}

        disagreements = {s: (theirs[s], ours[s]) for s in compared if abs(theirs[s] - ours[s]) > 1e-9}
        notebook = course / "submitted" / students[0] / args.ps / f"{args.ps}.ipynb"
        check = [run([str(BIN / "autograder"), "--course", str(course), "check", str(notebook)], course)
                 for _ in range(5)]
        warm = warm_recheck(course, args.ps, notebook)

    print()
    print(f"{'grader':<22}{'notebooks':>10}{'total s':>10}{'s/notebook':>12}{'notebooks/s':>13}{'peak MiB':>10}")
    rows = (("nbgrader autograde", competitor_n, nbgrader_seconds, nbgrader_mib),
            ("autograder grade", args.n, ours_seconds, ours_mib))
    for name, n, seconds, mib in rows:
        print(f"{name:<22}{n:>10}{seconds:>10.2f}{seconds / n:>12.4f}{n / seconds:>13.1f}{mib:>10.0f}")
    ratio = (args.n / ours_seconds) / (competitor_n / nbgrader_seconds)
    print(f"\nthroughput ratio (autograder / nbgrader, notebooks per second): {ratio:.1f}x")
    print(f"identical scores on honest submissions: {'yes' if not disagreements else 'NO'} "
          f"({competitor_n - len(disagreements)}/{competitor_n} agree)")
    for student, (a, b) in list(disagreements.items())[:10]:
        print(f"  {student}: nbgrader {a}, autograder {b}")
    print(f"autograder check, cold CLI, end to end: median {statistics.median(check):.2f} s "
          f"(min {min(check):.2f}, max {max(check):.2f}, 5 runs)")
    print(f"the same notebook checked again by a running process (warm template): median "
          f"{statistics.median(warm):.3f} s (min {min(warm):.3f}, max {max(warm):.3f}, {len(warm)} runs)")
    print(f"\nautograder grade, {breakdown}")
    if args.memory:
        print("\npeak memory of `autograder grade` and all its processes (memory should stay flat):")
        for n in (args.n, 4 * args.n):
            with tempfile.TemporaryDirectory(prefix="bench-mem-") as scratch:
                course = Path(scratch)
                build_class(course, args.ps, n)
                seconds, mib, _ = peak_memory([str(BIN / "autograder"), "--course", str(course), "grade", args.ps,
                                            "--reports", str(course / "reports")], course)
            print(f"  {n:>5} submissions: {seconds:6.1f} s, peak {mib:6.0f} MiB")
    if disagreements:
        sys.exit(1)


if __name__ == "__main__":
    main()
