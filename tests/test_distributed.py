"""``autograder grade --scheduler``: a class graded on a real Dask cluster (a scheduler and two
worker processes on loopback) gets the same reports as on the local pool, and the cluster's
failures (a worker that dies, Ctrl-C, an unreachable scheduler) end the way they should."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from distributed import Client

import autograder.distributed
from autograder.batch import find_submissions
from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.distributed import ClusterError, grade_batch_on_cluster, worker_facts
from autograder.notebook import read_notebook
from autograder.settings import Limits

from conftest import one_set_course

ROOT = Path(__file__).resolve().parent.parent


PS = "ps05_derivatives"
BIN = Path(sys.executable).parent
AUTOGRADER, DASK = BIN / "autograder", BIN / "dask"
GRADE_KEY = "autograder-grade-"  # the prefix of the grading tasks' keys


# --- processes ------------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line)."""
    rows = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True).stdout
    table = {}
    for row in rows.splitlines():
        parts = row.split(None, 3)
        if len(parts) >= 3:
            table[int(parts[0])] = (int(parts[1]), parts[2], parts[3] if len(parts) == 4 else "")
    return table


def _descendants(root: int) -> list[int]:
    table = _process_table()
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        found += children
        todo += children
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may be slow to reap what it inherits)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class Cluster:
    def __init__(self, address: str, client: Client, folder: Path) -> None:
        self.address, self.client, self.folder = address, client, folder

    def ready(self) -> None:
        """Both worker processes are connected (again, after a test killed one)."""
        self.client.wait_for_workers(2, timeout=60)
        _wait_until(lambda: len(self.client.run(os.getpid)) == 2, 60, "two workers answering")

    def worker_pids(self) -> dict[str, int]:
        return self.client.run(os.getpid)

    def graded_on_workers(self, students: set[str]) -> dict[str, list[int]]:
        """For each of ``students``, the pids of the worker processes that graded them."""
        where: dict[str, list[int]] = {}
        for facts in self.client.run(worker_facts).values():
            for record in facts["graded"]:
                if record["student"] in students:
                    where.setdefault(record["student"], []).append(record["pid"])
        return where

    def executing(self) -> dict[str, list[str]]:
        """The keys of the tasks each worker is running."""
        return self.client.run(lambda dask_worker: [str(task.key) for task in dask_worker.state.executing])

    def grading_keys(self) -> list[str]:
        """The grading tasks the scheduler still knows about."""
        return self.client.run_on_scheduler(
            lambda dask_scheduler: [str(key) for key in dask_scheduler.tasks if GRADE_KEY in str(key)])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, leaked_workers):
    """A Dask scheduler and one ``dask worker`` with two worker processes, all on 127.0.0.1.

    The scheduler gives up on a task as soon as a worker dies under it (allowed-failures 0;
    Dask's default, 3, would run it again elsewhere), so that the test of a dying worker
    sees the error report that the batch makes for such a task."""
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with open(folder / "scheduler.log", "wb") as scheduler_log, open(folder / "workers.log", "wb") as workers_log:
        scheduler = subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file),
             "--no-dashboard"], stdout=scheduler_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        workers = subprocess.Popen(
            [str(DASK), "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(folder / "workers")],
            stdout=workers_log, stderr=subprocess.STDOUT, start_new_session=True)
    client = None
    spawned: set[int] = set()
    homes: set[str] = set()
    try:
        _wait_until(lambda: scheduler_file.is_file() and scheduler.poll() is None and workers.poll() is None
                    and json.loads(scheduler_file.read_text() or "{}").get("address"), 60, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        client = Client(address, timeout=30, set_as_default=False)
        found = Cluster(address, client, folder)
        found.ready()
        yield found
        spawned = set(_descendants(workers.pid))
        table = _process_table()
        homes = {os.readlink(f"/proc/{pid}/cwd") for pid in spawned if "autograder.worker.template" in table[pid][2]}
    finally:
        if client is not None:
            client.close()
        for process in (workers, scheduler):  # in this order: workers whose scheduler
            process.terminate()                # goes first linger until their nanny kills them
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    # The worker processes, their templates and the templates' workers all ended with the cluster.
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = {pid: _process_table().get(pid) for pid in spawned if _running(pid)}
    assert not survivors, f"processes of the Dask workers outlived them: {survivors}"
    # Each worker process closed its launcher as it exited, which removes the template's home.
    assert not [home for home in homes if Path(home).exists()], homes
    if os.geteuid() == 0:
        assert not leaked_workers(), "the cluster left confined workers running"


# --- a class --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def notebooks():
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    return source, release, solution_answers(source)


def _slow(notebooks, seconds: float):
    """The solution, with an answer cell that sleeps first (the grading takes that long)."""
    _, release, answers = notebooks
    return with_answers(release, {**answers, "newton_1d": f"import time\ntime.sleep({seconds})\n"
                                                          + answers["newton_1d"]})


def _write_class(folder: Path, students: dict) -> Path:
    """``students``: a notebook, a string (written as the file's text) or None (no notebook)."""
    submitted = folder / "submitted"
    for student, notebook in students.items():
        target = submitted / student / PS / f"{PS}.ipynb"
        target.parent.mkdir(parents=True)
        if isinstance(notebook, str):
            target.write_text(notebook)
        elif notebook is not None:
            nbformat.write(notebook, target)
    return submitted


def _grade(submitted: Path, reports: Path, *options: str, **popen) -> subprocess.Popen:
    command = [str(AUTOGRADER), "grade", PS, "--submitted", str(submitted), "--reports", str(reports),
               "--no-gradebook", *options]  # the gradebook is the same code either way (tests/test_gradebook.py)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def _comparable(report: dict) -> dict:
    """A report without its timings: everything else must not depend on where it was graded."""
    report = {key: value for key, value in report.items() if key != "seconds"}
    report["tests"] = [{key: value for key, value in test.items() if key != "seconds"} for test in report["tests"]]
    return report


# --- tests ----------------------------------------------------------------------------------

def test_the_cluster_and_the_local_pool_grade_a_class_alike(cluster, notebooks, tmp_path):
    source, release, answers = notebooks
    mistakes, cells = [], set()
    for mistake in load_catalogue(ROOT / "source" / PS / "mistakes.toml"):
        if mistake.cell not in cells:  # three mistakes in three different exercises
            mistakes.append(mistake)
            cells.add(mistake.cell)
        if len(mistakes) == 3:
            break
    students = {
        "solution": with_answers(release, answers),
        "stub": release,
        **{f"mistake-{mistake.id}": mistake_notebook(release, source, mistake) for mistake in mistakes},
        "loop": with_answers(release, {**answers, "newton_1d": answers["newton_1d"] + "\nwhile True:\n    pass\n"}),
        "corrupt": '{"cells": [ {"cell_type": "code", ',
        "no-notebook": None,
    }
    submitted = _write_class(tmp_path, students)
    on_cluster = _grade(submitted, tmp_path / "R1", "--timeout", "2", "--scheduler", cluster.address)
    code, output = _finish(on_cluster)
    assert code == 3, output  # everything graded, except the two notebooks that cannot be
    assert f"[{len(students)}/{len(students)}]" in output, output
    local = _grade(submitted, tmp_path / "R2", "--timeout", "2", "--jobs", "2")
    local_code, local_output = _finish(local)
    assert local_code == 3, local_output

    reports = {}
    for student in students:
        remote = json.loads((tmp_path / "R1" / f"{student}.json").read_text())
        here = json.loads((tmp_path / "R2" / f"{student}.json").read_text())
        assert _comparable(remote) == _comparable(here), student
        assert (tmp_path / "R1" / f"{student}.html").is_file()
        reports[student] = remote
    assert (tmp_path / "R1" / "index.html").is_file()

    # Not a trivial agreement: full marks, none, partial marks, and two kinds of error.
    full = reports["solution"]
    assert full["status"] == "graded" and full["score"] == full["max_score"] > 0
    assert full["protections"], "the notebook was graded without its confinement"
    assert reports["stub"]["status"] == "graded" and reports["stub"]["score"] == 0
    for mistake in mistakes:
        report = reports[f"mistake-{mistake.id}"]
        assert report["status"] == "graded" and 0 < report["score"] < report["max_score"]
        lost = {test["id"] for test in report["tests"] if test["points"] < test["max_points"]}
        assert set(mistake.loses) <= lost, (mistake.id, lost)  # what it must lose, and perhaps more
    loop = reports["loop"]  # its worker was stopped by the time limit, from inside a Dask worker
    assert loop["status"] == "graded" and 0 < loop["score"] < loop["max_score"]
    assert any("did not finish within 2 seconds" in problem["message"] for problem in loop["cell_problems"])
    assert reports["corrupt"]["status"] == "error" and "not valid JSON" in reports["corrupt"]["error"]
    assert reports["no-notebook"]["status"] == "error" and "No notebook" in reports["no-notebook"]["error"]

    # The notebooks were graded on the cluster: each once, by the Dask worker processes (both
    # of them), each of which started one worker template for all its notebooks; the missing
    # notebook was reported without the cluster.
    pids = cluster.worker_pids()
    where = cluster.graded_on_workers(set(students))
    assert sorted(where) == sorted(set(students) - {"no-notebook"})
    assert all(len(graded_by) == 1 and graded_by[0] in pids.values() for graded_by in where.values()), where
    assert len({graded_by[0] for graded_by in where.values()}) == 2, where
    facts = cluster.client.run(worker_facts)
    assert all(fact["launchers"] == 1 for fact in facts.values() if fact["graded"]), facts
    table = _process_table()
    for pid in pids.values():
        assert any("autograder.worker.template" in args for ppid, _, args in table.values() if ppid == pid)


def test_the_grading_service_grades_on_the_cluster(cluster, notebooks, tmp_path):
    """`autograder serve --scheduler`: submissions are graded by the cluster's workers, each at
    the seed the service recorded for it."""
    from autograder.course import Course
    from autograder.service import Service, Tokens

    cluster.ready()
    source, release, answers = notebooks
    course = one_set_course(tmp_path, PS)
    tokens = Tokens(Course(course)).issue(["ada", "bob"])
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    service = Service(Course(course), scheduler=cluster.address, jobs=2, gradebook=False)
    try:
        right = service.submit(tokens["ada"], PS, nbformat.writes(with_answers(release, answers)).encode())
        wrong = service.submit(tokens["bob"], PS, nbformat.writes(mistake_notebook(release, source, mistake)).encode())
        reports = {meta.student: _wait_until(lambda meta=meta: service.store.result(meta.id), 180, "a graded submission")
                   for meta in (right, wrong)}
    finally:
        service.close()
    assert reports["ada"]["score"] == reports["ada"]["max_score"] == 20 and reports["ada"]["seed"] == right.seed
    assert reports["bob"]["score"] < 20 and reports["bob"]["seed"] == wrong.seed
    said = json.dumps(reports["bob"]["tests"]).lower()
    assert all(phrase.lower() in said for phrase in mistake.feedback)
    assert set(cluster.graded_on_workers({"ada", "bob"})) == {"ada", "bob"}  # by the cluster's workers


def test_an_address_that_is_not_a_scheduler_is_a_usage_error(cluster, notebooks, tmp_path):
    submitted = _write_class(tmp_path, {"ada": with_answers(notebooks[1], notebooks[2])})
    worker = next(iter(cluster.worker_pids()))
    code, output = _finish(_grade(submitted, tmp_path / "reports", "--scheduler", worker))
    assert code == 2, output
    assert f"autograder: {worker} is a Dask Worker, not a scheduler" in output
    assert not list((tmp_path / "reports").glob("*.json"))


def test_ctrl_c_cancels_what_is_left_on_the_cluster(cluster, notebooks, tmp_path):
    cluster.ready()
    # Slow enough that Ctrl-C comes with work left even on a loaded machine (the first report
    # may be seen seconds late).
    students = {f"interrupted-{n}": _slow(notebooks, 4) for n in range(6)}
    submitted = _write_class(tmp_path, students)
    grading = _grade(submitted, tmp_path / "reports", "--scheduler", cluster.address)
    _wait_until(lambda: list((tmp_path / "reports").glob("*.json")), 60, "a first report")
    grading.send_signal(signal.SIGINT)
    code, output = _finish(grading, timeout=30)
    assert code == 130, output
    assert len(list((tmp_path / "reports").glob("*.json"))) < len(students)
    # The scheduler forgets the rest, and what had not started never runs: once the workers
    # have finished what they were running, fewer notebooks were graded than handed in.
    _wait_until(lambda: not cluster.grading_keys(), 20, "the scheduler to forget the cancelled tasks")
    _wait_until(lambda: not any(cluster.executing().values()), 30, "the workers to finish their tasks")
    graded = cluster.graded_on_workers(set(students))
    assert len(graded) < len(students), graded


def test_a_worker_that_dies_costs_only_the_notebooks_it_was_grading(cluster, notebooks, tmp_path, leaked_workers):
    cluster.ready()
    students = {"doomed": _slow(notebooks, 6), **{f"fine-{n}": with_answers(notebooks[1], notebooks[2])
                                                   for n in range(4)}}
    submitted = _write_class(tmp_path, students)
    grading = _grade(submitted, tmp_path / "reports", "--scheduler", cluster.address)

    def executing_doomed() -> str | None:
        running = cluster.executing()
        return next((worker for worker, keys in running.items() if any("-doomed-" in key for key in keys)), None)

    worker = _wait_until(executing_doomed, 60, "the doomed notebook to be graded")
    pid = cluster.worker_pids()[worker]
    # Its template and the confined worker grading the notebook: wait until they are there.
    inside = _wait_until(lambda: _descendants(pid) if len(_descendants(pid)) >= 3 else None, 20,
                         "the doomed notebook's worker")
    # What the scheduler has given that worker; work stealing moves tasks away from a busy
    # worker, never onto it, so nothing else can be lost with it.
    given = {key for key in cluster.client.processing()[worker]}
    table = _process_table()
    homes = [os.readlink(f"/proc/{child}/cwd") for child in inside if "autograder.worker.template" in table[child][2]]
    os.kill(pid, signal.SIGKILL)
    code, output = _finish(grading)
    assert code == 3, output

    reports = {student: json.loads((tmp_path / "reports" / f"{student}.json").read_text()) for student in students}
    doomed = reports["doomed"]
    assert doomed["status"] == "error" and "died while grading it" in doomed["error"], doomed["error"]
    assert all(test["points"] == 0 for test in doomed["tests"])
    for student, report in reports.items():
        if report["status"] == "graded":
            assert report["score"] == report["max_score"] > 0
        else:
            assert "died while grading it" in report["error"], report["error"]
            assert any(f"-{student}-" in key for key in given), (student, given)
    assert any(report["status"] == "graded" for report in reports.values())

    # What the dead worker had started (its worker template, the confined worker) ended with it.
    _wait_until(lambda: not any(_running(child) for child in inside), 10, "the dead worker's processes to end")
    for home in homes:  # a killed process cannot clean up after itself
        shutil.rmtree(home, ignore_errors=True)
    if os.geteuid() == 0:
        assert not leaked_workers()
    cluster.ready()  # the nanny started a new worker process in its place


def test_a_scheduler_without_workers_is_a_cluster_error(notebooks, tmp_path, monkeypatch):
    scheduler_file = tmp_path / "scheduler.json"
    with open(tmp_path / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file),
             "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = _wait_until(lambda: scheduler_file.is_file() and json.loads(
            scheduler_file.read_text() or "{}").get("address"), 60, "the scheduler")
        submitted = _write_class(tmp_path, {"ada": with_answers(notebooks[1], notebooks[2])})
        monkeypatch.setattr(autograder.distributed, "WORKER_TIMEOUT", 1.0)
        with pytest.raises(ClusterError, match=f"The Dask scheduler at {address} has no workers"):
            grade_batch_on_cluster(address, ROOT / "source" / PS / f"{PS}.ipynb", find_submissions(submitted, PS),
                                   tmp_path / "reports", limits=Limits())
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def test_an_unreachable_scheduler_is_a_usage_error_within_seconds(notebooks, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    submitted = _write_class(tmp_path, {"ada": with_answers(notebooks[1], notebooks[2])})
    started = time.monotonic()
    code, output = _finish(_grade(submitted, tmp_path / "reports", "--scheduler", address))
    elapsed = time.monotonic() - started
    assert code == 2, output
    assert f"autograder: Could not connect to a Dask scheduler at {address}" in output
    assert "Traceback" not in output
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not list((tmp_path / "reports").glob("*.json"))


def test_without_dask_the_cluster_option_says_how_to_install_it(notebooks, tmp_path):
    submitted = _write_class(tmp_path, {"ada": with_answers(notebooks[1], notebooks[2])})
    script = f"""
import sys
from pathlib import Path
sys.modules["dask"] = sys.modules["distributed"] = None  # as if they were not installed
import autograder.cli  # imports nothing of Dask
from autograder.batch import find_submissions
from autograder.distributed import ClusterError, grade_batch_on_cluster
from autograder.settings import Limits
try:
    grade_batch_on_cluster("tcp://127.0.0.1:8786", Path({str(ROOT / "source" / PS / f"{PS}.ipynb")!r}),
                           find_submissions(Path({str(submitted)!r}), {PS!r}), Path({str(tmp_path / "r")!r}),
                           limits=Limits())
except ClusterError as error:
    print("ClusterError:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ClusterError:" in result.stdout and "pip install 'mathgrader[cluster]'" in result.stdout, result.stdout
