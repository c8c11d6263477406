"""A batch survives interruption: killed halfway and run again, every submission is graded once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import solution_answers, with_answers
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
AUTOGRADER = Path(sys.executable).parent / "autograder"


def _descendants(root: int) -> list[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.split():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found += children.get(pid, [])
        todo += children.get(pid, [])
    return found


def test_a_batch_killed_halfway_finishes_on_the_next_run(tmp_path, leaked_workers):
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    answers = solution_answers(source)
    slow = {**answers, "newton_1d": answers["newton_1d"] + "\nimport time\ntime.sleep(1.5)\n"}
    submitted = tmp_path / "submitted"
    students = [f"s{i:02d}" for i in range(12)]
    for student in students:
        target = submitted / student / PS / f"{PS}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(with_answers(release, slow), target)
    reports = tmp_path / "reports"
    command = [str(AUTOGRADER), "grade", PS, "--submitted", str(submitted), "--reports", str(reports),
               "--jobs", "2"]

    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(reports.glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    started_by_first = _descendants(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {path.stem for path in reports.glob("*.json")}
    assert 3 <= len(before) < len(students), "the batch was not interrupted halfway"

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    graded_again = [line for line in second.stderr.splitlines() if line.startswith("[")]
    assert len(graded_again) == len(students) - len(before)
    assert f"{len(before)} of {len(students)} submissions already have a report" in second.stderr
    for student in students:
        report = json.loads((reports / f"{student}.json").read_text())
        assert report["status"] == "graded" and report["score"] == report["max_score"]
    assert "12 submissions" in second.stdout

    time.sleep(1)
    alive = [pid for pid in started_by_first if Path(f"/proc/{pid}").exists()]
    assert not alive, "processes of the killed batch (grading processes, templates) outlived it"
    if os.geteuid() == 0:
        assert not leaked_workers(), "the killed batch left workers running"


def test_regrade_grades_everything_again(tmp_path):
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    target = tmp_path / "submitted" / "ada" / PS / f"{PS}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(with_answers(release, solution_answers(source)), target)
    command = [str(AUTOGRADER), "grade", PS, "--submitted", str(tmp_path / "submitted"),
               "--reports", str(tmp_path / "reports")]
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "1 of 1 submissions already have a report" in again.stderr
    # A newer hand-in is graded again without asking.
    os.utime(target, (time.time() + 5, time.time() + 5))
    newer = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "already have a report" not in newer.stderr
    forced = subprocess.run([*command, "--regrade"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "[1/1] ada" in forced.stderr
    # A damaged report, or one from another version of the report format, is graded again.
    report = tmp_path / "reports" / "ada.json"
    for damaged in ("{\"assignment\": ", json.dumps({**json.loads(report.read_text()), "schema_version": 99})):
        report.write_text(damaged)
        os.utime(report, (time.time() + 10, time.time() + 10))
        repaired = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert repaired.returncode == 0 and "[1/1] ada" in repaired.stderr, repaired.stderr
        assert json.loads(report.read_text())["schema_version"] == 1
    shutil.rmtree(tmp_path / "reports")


def test_a_hand_in_with_several_notebooks_is_graded_on_the_one_with_the_work(tiny):
    """The untouched ps.ipynb beside the real work in ps-Copy1.ipynb is not a silent zero."""
    from autograder.batch import Submission, grade_hand_in

    stubs = {"double": 'def double(x):\n    """Twice x."""\n    raise NotImplementedError()',
             "apply_twice": 'def apply_twice(f, x):\n    """f(f(x))."""\n    raise NotImplementedError()'}
    folder = tiny.folder / "submitted" / "ada" / "tiny"
    folder.mkdir(parents=True)
    shutil.move(tiny.submission("untouched", stubs), folder / "tiny.ipynb")
    shutil.move(tiny.submission("work"), folder / "tiny-Copy1.ipynb")
    submission = Submission("ada", "tiny", folder)
    hand_in = submission.read()
    assert not isinstance(hand_in, str) and hand_in.notebook_name == "tiny.ipynb"
    report = grade_hand_in(tiny.source, submission, hand_in, limits=tiny.limits, launcher=None)
    assert report.status == "graded" and report.score == report.max_score == 3
    [note] = report.notes
    assert "tiny.ipynb (0/3)" in note and "tiny-Copy1.ipynb (3/3)" in note
    assert "tiny-Copy1.ipynb was graded" in note and "flagged for a person" in note
    # The same seed whichever notebook is graded, so copies do not buy more draws of the inputs.
    again = grade_hand_in(tiny.source, submission, submission.read(), limits=tiny.limits, launcher=None)
    assert again.seed == report.seed

    # When the named notebook holds the most points, it is the one graded.
    shutil.move(tiny.submission("half", {"apply_twice": stubs["apply_twice"]}), folder / "tiny-Copy1.ipynb")
    shutil.move(tiny.submission("all"), folder / "tiny.ipynb")
    report = grade_hand_in(tiny.source, submission, submission.read(), limits=tiny.limits, launcher=None)
    assert report.score == 3 and "tiny.ipynb was graded" in report.notes[0]


def test_when_the_grader_itself_fails_the_student_reads_no_server_detail(tiny, monkeypatch, capfd):
    """A fault of the grader (here an error naming a server path) is a not-graded report that
    says it is not a verdict on the work; the detail goes to the instructor's terminal."""
    import autograder.batch as batch
    from autograder.html import student_page

    secret = "/srv/course-7f3a/instructor/hidden_tests.db"

    def broken(*args, **kwargs):
        raise OSError(2, "No such file or directory", secret)

    folder = tiny.folder / "submitted" / "ada" / "tiny"
    folder.mkdir(parents=True)
    shutil.move(tiny.submission("work"), folder / "tiny.ipynb")
    monkeypatch.setattr(batch, "grade_submission", broken)  # the grading processes are forked from here
    # As in the terminal (pytest's own log capture would keep the grading process's record).
    terminal = logging.StreamHandler(sys.stderr)
    logging.getLogger("autograder").addHandler(terminal)
    monkeypatch.setattr(logging.getLogger("autograder"), "propagate", False)
    [report] = batch.grade_batch(tiny.path, [batch.Submission("ada", "tiny", folder)], tiny.folder / "reports",
                                 limits=tiny.limits, jobs=1)
    assert report.status != "graded"
    written = (tiny.folder / "reports" / "ada.json").read_text() + student_page(report)
    assert batch.GRADER_FAULT in written
    assert secret not in written and "OSError" not in written and "Traceback" not in written
    logging.getLogger("autograder").removeHandler(terminal)
    assert secret in capfd.readouterr().err  # the instructor is told what happened


def test_timings_say_where_the_time_went(tmp_path):
    """``grade --timings``: the parent's stages and the grading processes' (summed), each a real
    measurement: the graders' stages fit in their wall time, and grading took some of it."""
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    for student in ("ada", "bob", "cy"):
        target = tmp_path / "submitted" / student / PS / f"{PS}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(with_answers(release, solution_answers(source)), target)
    result = subprocess.run([str(AUTOGRADER), "grade", PS, "--submitted", str(tmp_path / "submitted"),
                             "--reports", str(tmp_path / "reports"), "--jobs", "2", "--timings"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stderr[result.stderr.index("where the time went"):]
    header = text.splitlines()[0]
    assert header.startswith("where the time went (3 notebooks,") and "2 grading processes" in header
    wall = float(header.split(" s wall")[0].rsplit(" ", 1)[1])
    parent_part, grader_part = text.split("grading processes (summed over 2")
    def rows(part: str) -> dict[str, float]:
        found = {}
        for line in part.splitlines():
            fields = line.rsplit(None, 2)
            if len(fields) == 3 and fields[1].replace(".", "", 1).isdigit():
                found[fields[0].strip()] = float(fields[1])
        return found
    parent, graders = rows(parent_part), rows(grader_part)
    for stage in ("gradebook rows", "autograded notebooks", "write reports and pages", "wait for the graders",
                  "start-up: interpreter, imports, course"):
        assert stage in parent, (stage, parent_part)
    for stage in ("test cells", "student cells", "start a worker (fork, confine)", "start: the warm worker template",
                  "(within the above) waiting for the worker: Call"):
        assert stage in graders, (stage, grader_part)
    assert sum(parent.values()) <= wall * 1.05 + 0.05
    own = sum(seconds for stage, seconds in graders.items() if not stage.startswith("(within"))
    assert 0 < graders["test cells"] < own <= 2 * wall * 1.05 + 0.05
    assert graders["(within the above) waiting for the worker: Call"] < graders["test cells"]


def _template_of_a_grading_process(shared, results) -> None:
    from autograder.grader.launcher import scratch_area
    from autograder.grader.session import WorkerSession
    from autograder.settings import Limits

    launcher = shared.launcher()
    with launcher, scratch_area() as area:
        session = WorkerSession(area, launcher, Limits())
        session.start()
        outcome = session.run_cell("import numpy as np\nx = float(np.sqrt(2.0))", "cell")
        parent = int(Path(f"/proc/{launcher.template_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        results.put((launcher.template_pid, parent, outcome.ok, sorted(session.protections)))
        session.close()


def test_grading_processes_fork_their_templates_from_one_shared_template():
    """A batch's grading processes do not each start a template (a second of imports): each
    forks one from the shared warm template, and its workers are as confined as any."""
    import multiprocessing

    from autograder.grader.launcher import Launcher, SharedTemplate, scratch_area
    from autograder.grader.session import WorkerSession
    from autograder.settings import Limits

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    with SharedTemplate(context.Lock()) as shared:
        processes = [context.Process(target=_template_of_a_grading_process, args=(shared, results))
                     for _ in range(2)]
        for process in processes:
            process.start()
        found = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        shared_pid = shared._launcher.template_pid
    with Launcher() as alone, scratch_area() as area:  # a template of its own, for comparison
        session = WorkerSession(area, alone, Limits())
        session.start()
        expected = sorted(session.protections)
        session.close()
    pids = {pid for pid, _, _, _ in found}
    assert len(pids) == 2 and shared_pid not in pids
    for _pid, parent, ok, protections in found:
        assert parent == shared_pid, "the grading process started a template of its own"
        assert ok and protections == expected
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
               for pid in pids), "a forked template outlived its grading process"


def _blas_threads_after_sharing_a_core(results) -> None:
    from threadpoolctl import threadpool_info

    from autograder.grader.launcher import share_a_core

    share_a_core(0)
    results.put(([entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"],
                 sorted(os.sched_getaffinity(0))))


def test_a_grading_process_keeps_to_one_core_and_one_blas_thread():
    """A grading process runs on one core with its workers, and the linear algebra it computes
    expected values with uses one thread there (more would spin against each other)."""
    import multiprocessing

    import numpy as np  # noqa: F401 - loads the BLAS library whose threads are counted
    from threadpoolctl import threadpool_info

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to choose between")
    assert any(entry["num_threads"] > 1 for entry in threadpool_info() if entry["user_api"] == "blas")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=_blas_threads_after_sharing_a_core, args=(results,))
    process.start()
    threads, affinity = results.get(timeout=60)
    process.join(timeout=30)
    assert threads and set(threads) == {1}
    assert affinity == [cores[0]]
