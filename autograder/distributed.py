"""Grading a class on a Dask cluster: ``autograder grade PS --scheduler ADDRESS``.

The same work as :func:`autograder.batch.grade_batch`, spread over the workers of a running
``dask.distributed`` cluster.  Each Dask task grades one submission with the same confined
engine as the local pool (:func:`~autograder.batch.grade_submission` with a
:class:`~autograder.grader.launcher.Launcher`), so a student's report does not depend on where it
was graded.  Workers need this package installed, and nothing else from this machine: a task
receives the notebook's bytes and the source notebook's bytes, and returns the report as
plain data.  Tasks depend on nothing, so Dask spreads them over the workers, and a worker
that dies concerns only the notebooks it had been given: Dask runs them again on another
worker, and a notebook whose workers die ``distributed.scheduler.allowed-failures`` + 1
times gets an error report.

Every Dask worker process keeps its launchers (one per task it runs at once: one with
``--nthreads 1``, which is what grading wants) and the source notebooks it has loaded (by
content hash) in a worker plugin, so a worker template starts once per process, not once per
submission, and stops with the worker.

Dask is imported only inside functions: the CLI imports this module, and
:class:`ClusterError` must be usable where Dask is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import autograder
from autograder.batch import (
    GRADER_FAULT,
    HandIn,
    Submission,
    grade_class,
    grade_hand_in,
    grader_fault,
    not_graded_submission,
)
from autograder.errors import AutograderError
from autograder.grader.launcher import Launcher
from autograder.notebook import SourceNotebook
from autograder.report import GradeReport
from autograder.settings import Limits

INSTALL = "pip install 'mathgrader[cluster]'"
CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler
WORKER_TIMEOUT = 60.0  # seconds to wait for a first worker, once the tasks are submitted
RETRIES = 1  # for a task that raised outside the grading itself (a worker's disk, say)


class ClusterError(AutograderError):
    """The cluster cannot be used; ``str(error)`` says why in one or two sentences."""


# ---------------------------------------------------------------------------------------------
# The worker's side: runs inside a Dask worker process.

PLUGIN_NAME = "autograder"
_MAX_SOURCES = 8


class GradingState:
    """What a Dask worker process keeps between tasks: warm launchers (one per task running at
    once) and the source notebooks it has loaded.  It lives in the worker's plugin
    (:func:`_grading_plugin`), so it goes away with the worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[Launcher] = []
        self.launchers: list[Launcher] = []
        self.sources: dict[str, SourceNotebook] = {}
        self.graded: deque[dict[str, Any]] = deque(maxlen=1_000)

    @contextlib.contextmanager
    def borrowed_launcher(self) -> Iterator[Launcher]:
        """A warm launcher no other task is using; kept for the next task."""
        with self.lock:
            if self.idle:
                launcher = self.idle.pop()
            else:
                launcher = Launcher()
                launcher.start()
                self.launchers.append(launcher)
        try:
            yield launcher
        finally:
            with self.lock:
                if launcher in self.launchers:
                    self.idle.append(launcher)

    def source_notebook(self, name: str, data: bytes) -> SourceNotebook:
        """The source notebook ``name`` with content ``data``, loaded once per process."""
        key = hashlib.sha256(name.encode() + b"\0" + data).hexdigest()
        with self.lock:
            cached = self.sources.get(key)
        if cached is not None:
            return cached
        folder = Path(tempfile.mkdtemp(prefix="autograder-source-"))
        try:
            path = folder / f"{name}.ipynb"  # SourceNotebook takes the problem set's name from the file's
            path.write_bytes(data)
            source = SourceNotebook.load(path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        with self.lock:
            if len(self.sources) >= _MAX_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            self.sources[key] = source
        return source

    def close(self) -> None:
        with self.lock:
            launchers = list(self.launchers)
            self.launchers.clear()
            self.idle.clear()
        for launcher in launchers:
            with contextlib.suppress(Exception):
                launcher.__exit__()  # stops the template (and its workers), removes its home


def _grading_plugin() -> Any:
    """A Dask worker plugin that holds a :class:`GradingState` and closes it with the worker."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class GradingPlugin(WorkerPlugin):
        name = PLUGIN_NAME

        def setup(self, worker: Any) -> None:
            self.state = GradingState()

        def teardown(self, worker: Any) -> None:
            self.state.close()

    return GradingPlugin()


def _state() -> GradingState:
    from distributed import get_worker

    state = getattr(get_worker().plugins.get(PLUGIN_NAME), "state", None)
    if not isinstance(state, GradingState):
        raise RuntimeError("this Dask worker has no grading plugin; start grading with DaskCluster")
    return state


def grade_on_worker(source: tuple[str, bytes], hand_in: HandIn, student: str, ps: str, limits: Limits,
                    seed: int | None) -> dict[str, Any]:
    """The Dask task: grade one hand-in, given as bytes (read by the client without following
    links), in this worker process."""
    started = time.monotonic()
    state = _state()
    source_notebook = state.source_notebook(*source)
    submission = Submission(student, ps, Path(student) / ps)
    try:
        with state.borrowed_launcher() as launcher:
            report = grade_hand_in(source_notebook, submission, hand_in, limits=limits, launcher=launcher, seed=seed)
    except Exception as error:  # noqa: BLE001 - one submission never stops the batch
        report = grader_fault(source_notebook, submission, error)
    state.graded.append({"student": student, "ps": ps, "status": report.status, "score": report.score,
                         "pid": os.getpid(), "host": socket.gethostname(),
                         "seconds": round(time.monotonic() - started, 3)})
    return report.to_dict()


def worker_version() -> str:
    """The autograder version of this worker process (checked before a batch)."""
    return autograder.__version__


def worker_facts(dask_worker: Any) -> dict[str, Any]:
    """What a worker process runs and has done: its autograder version, pid and host, how many
    launchers it started, and the submissions it graded (``client.run(worker_facts)``)."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    state = plugin.state if plugin is not None else GradingState()
    with state.lock:
        return {"autograder": autograder.__version__, "pid": os.getpid(), "host": socket.gethostname(),
                "launchers": len(state.launchers), "graded": list(state.graded)}


# ---------------------------------------------------------------------------------------------
# The client's side: runs in the ``autograder grade`` process.

def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``, or a :class:`ClusterError` within seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(f"Grading on a Dask cluster needs dask.distributed, which is not installed here. "
                           f"Install it with: {INSTALL}") from None
    # Ask the address who it is before making a Client: a Client that fails to start (a
    # malformed address, a server that is not Dask) hangs for seconds when it is collected.
    try:
        identity = asyncio.run(asyncio.wait_for(_identity(address), CONNECT_TIMEOUT + 1))
    except ValueError as error:
        raise ClusterError(f"{address} is not a Dask scheduler address ({error}); "
                           "give one like tcp://10.0.0.5:8786.") from None
    except (OSError, asyncio.TimeoutError):
        raise ClusterError(f"Could not connect to a Dask scheduler at {address} within {CONNECT_TIMEOUT:g} "
                           "seconds. Check the address, and that the scheduler is running and "
                           "reachable from this machine.") from None
    except Exception as error:  # noqa: BLE001 - whatever answered, it does not speak Dask
        raise ClusterError(f"Something answers at {address}, but not like a Dask scheduler "
                           f"({type(error).__name__}: {str(error)[:200]}).") from None
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise ClusterError(f"{address} is a Dask {kind or 'server'}, not a scheduler; give the scheduler's "
                           "address (the one `dask worker` connects to).")
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as error:  # noqa: BLE001 - it answered a moment ago
        raise ClusterError(f"Could not connect to the Dask scheduler at {address}: "
                           f"{type(error).__name__}: {error}") from None


async def _identity(address: str) -> Any:
    from distributed.core import rpc
    from distributed.security import Security

    connection_args = Security().get_connection_args("client")  # TLS settings from Dask's config
    async with rpc(address, timeout=CONNECT_TIMEOUT, connection_args=connection_args) as scheduler:
        return await scheduler.identity()


def _check_workers(client: Any, address: str) -> None:
    """Every worker must run this autograder, so that every student is graded alike."""
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
    except Exception:  # noqa: BLE001 - distributed raises TimeoutError here
        raise ClusterError(f"The Dask scheduler at {address} has no workers (waited {WORKER_TIMEOUT:g} seconds). "
                           f"Start some with: dask worker {address}") from None
    versions = client.run(worker_version, on_error="return")
    unable = {worker: version for worker, version in versions.items() if not isinstance(version, str)}
    if unable:
        worker, error = next(iter(unable.items()))
        raise ClusterError(f"{len(unable)} Dask worker(s) of {address} cannot run the autograder "
                           f"(for example {worker}: {type(error).__name__}: {error}). "
                           f"Install it on every worker: {INSTALL}")
    other = {worker: version for worker, version in versions.items() if version != autograder.__version__}
    if other:
        worker, version = next(iter(other.items()))
        raise ClusterError(f"{len(other)} Dask worker(s) of {address} run autograder {version} "
                           f"(for example {worker}) where this machine runs {autograder.__version__}; "
                           "install the same version everywhere so that every student is graded alike.")


def _task_failure(future: Any) -> str:
    """Why a task ended without a report, for the student's report."""
    from distributed import KilledWorker

    if future.cancelled():
        return ("The cluster cancelled the grading of this notebook (its scheduler may have restarted "
                "or lost this grader), so it was not graded.")
    error = future.exception()
    if isinstance(error, KilledWorker):
        attempts = int(error.allowed_failures) + 1 if isinstance(error.allowed_failures, int) else 1
        last = getattr(error.last_worker, "address", error.last_worker)
        logging.getLogger("autograder").error("a cluster worker died grading a notebook (%d attempts, the last on %s)",
                                              attempts, last)
        return (f"The cluster worker grading this notebook died while grading it ({attempts} attempt"
                f"{'' if attempts == 1 else 's'}), so it was not graded. Grading it again is safe.")
    logging.getLogger("autograder").error("grading a notebook on the cluster failed: %s: %s", type(error).__name__, error)
    return GRADER_FAULT


class DaskCluster:
    """Graders on the workers of a running Dask cluster (:class:`autograder.batch.Executor`).

    Hand-ins are read here, without following links, and sent as bytes with the source notebook,
    so workers need no shared disk; one that cannot be read is reported here without a task."""

    def __init__(self, address: str) -> None:
        self.address = address

    def results(self, source_path: Path, submissions: list[Submission], *, limits: Limits,
                seed: int | None) -> Iterator[tuple[int, GradeReport]]:
        source = SourceNotebook.load(source_path)
        remote: dict[int, HandIn] = {}
        local: dict[int, str] = {}
        for index, submission in enumerate(submissions):
            hand_in = submission.read()
            if isinstance(hand_in, HandIn):
                remote[index] = hand_in
            else:
                local[index] = hand_in
        client = _connect(self.address) if remote else None
        for index, reason in local.items():
            yield index, grade_hand_in(source, submissions[index], reason, limits=limits, launcher=None, seed=seed)
        if client is None:
            return
        futures: dict[Any, int] = {}
        try:
            from distributed import as_completed

            client.register_plugin(_grading_plugin(), name=PLUGIN_NAME)
            # Every task carries the source's bytes rather than depending on one task that holds
            # them: Dask places a task near its dependencies, which would put the class on one
            # worker at first (and one dying worker would take many notebooks with it).
            source_file = (source.name, source_path.read_bytes())
            run = uuid.uuid4().hex[:8]
            for index, hand_in in remote.items():
                submission = submissions[index]
                future = client.submit(grade_on_worker, source_file, hand_in, submission.student,
                                       submission.ps, limits, seed, retries=RETRIES, pure=False,
                                       key=f"autograder-grade-{submission.ps}-{submission.student}-{run}")
                futures[future] = index
            # Submitted first, so that an adaptive cluster sees work and starts workers.
            _check_workers(client, self.address)
            for future in as_completed(list(futures), loop=client.loop):
                index = futures[future]
                try:
                    if future.status == "finished":
                        report = GradeReport.from_dict(future.result())
                    else:
                        report = not_graded_submission(source, submissions[index], _task_failure(future))
                except Exception as error:  # noqa: BLE001 - one submission never stops the batch
                    report = grader_fault(source, submissions[index], f"the cluster's result could not be read: {error}")
                future.release()
                yield index, report
        finally:
            # Normally nothing is left; after Ctrl-C or an error, nothing more is graded for us.
            pending = [future for future in futures if not future.done()]
            if pending:
                with contextlib.suppress(Exception):
                    client.cancel(pending)
            with contextlib.suppress(Exception):
                client.close(timeout=10)


class ClusterGrader:
    """One submission at a time on a Dask cluster, for the grading service (``autograder serve
    --scheduler``): one client for the service's lifetime, made when the first submission comes."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Connect and check the workers now (a :class:`ClusterError` says what is wrong)."""
        with self._lock:
            if self._client is None:
                client = _connect(self.address)
                try:
                    client.register_plugin(_grading_plugin(), name=PLUGIN_NAME)
                    _check_workers(client, self.address)
                except BaseException:
                    with contextlib.suppress(Exception):
                        client.close(timeout=10)
                    raise
                self._client = client

    def grade(self, source_path: Path, hand_in: HandIn, *, student: str, ps: str, limits: Limits,
              seed: int | None) -> GradeReport:
        self.connect()
        source = SourceNotebook.load(source_path)
        future = self._client.submit(grade_on_worker, (source.name, source_path.read_bytes()), hand_in, student, ps,
                                     limits, seed, retries=RETRIES, pure=False,
                                     key=f"autograder-grade-{ps}-{student}-{uuid.uuid4().hex[:8]}")
        try:
            with contextlib.suppress(Exception):  # a failed task is read from its status below
                future.result()
            if future.status == "finished":
                return GradeReport.from_dict(future.result())
            return not_graded_submission(source, Submission(student, ps, Path(student) / ps), _task_failure(future))
        finally:
            future.release()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close(timeout=10)
                self._client = None


def grade_batch_on_cluster(address: str, source_path: Path, submissions: list[Submission], reports: Path, *,
                           limits: Limits, seed: int | None = None,
                           progress: Callable[[int, int, GradeReport], None] | None = None) -> list[GradeReport]:
    """:func:`autograder.batch.grade_class` on the Dask cluster whose scheduler is at ``address``.

    Raises :class:`ClusterError` when the cluster cannot be used at all (Dask missing, scheduler
    unreachable, no workers, workers without this autograder)."""
    return grade_class(source_path, submissions, reports, executor=DaskCluster(address), limits=limits, seed=seed,
                       progress=progress)
