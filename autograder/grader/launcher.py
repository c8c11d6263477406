"""Starting confined workers from a warm template (the grader's side).

One :class:`Launcher` per grading process starts ``autograder.worker.template`` once and asks
it for a fresh worker per submission.  The worker is confined to a scratch directory, the
Python installation and the autograder package: the course's source, solutions, gradebook
and submissions are not readable from it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autograder import wire
from autograder.safefs import remove_tree
from autograder.settings import Limits
from autograder.wire import messages

PACKAGE_DIR = Path(wire.__file__).resolve().parent.parent  # the autograder package
_SYSTEM_READABLE = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc", "/dev/urandom", "/dev/zero",
                    "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu")


class LaunchError(Exception):
    pass


def share_a_core(number: int = -1, launcher: Launcher | None = None) -> None:
    """Run the calling thread, the processes it starts from now on and ``launcher``'s template
    (so the workers it forks) on one core: the ``number``-th of those this process may use,
    round robin.

    A grader and its worker take turns (each call or callback waits for the other), so they
    never need two cores at once; on one core each turn is a switch between two processes, on
    two it is also a wake-up across cores, which costs several times more (measured: a round
    trip of about 10 us on one core, 35 us across two).  A batch runs one grading process per
    core."""
    one_blas_thread()
    try:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return
        chosen = {cores[number % len(cores)]}
        os.sched_setaffinity(0, chosen)
        if launcher is not None and launcher.template_pid is not None:
            os.sched_setaffinity(launcher.template_pid, chosen)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: the scheduler decides


def one_blas_thread() -> None:
    """Let NumPy's linear algebra in this process use one thread.  A grader computes expected
    values with it (solving, decomposing); with a thread per core in every grading process, the
    threads spin against each other (measured on the linear-systems set: 78 s for its test batch
    instead of 13 s).  Workers start with one thread already (their environment says so)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an installation without it: slower, not wrong
        return
    threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def scratch_area() -> Iterator[Path]:
    """A directory of the grader's own for one submission's workers.

    Each worker's scratch directory is a new entry in it, made by the worker's supervisor.  The
    area is traversable but not readable or writable by workers, so no worker can rename, link
    or plant anything in it; afterwards it is removed without following any link a worker made.
    """
    path = Path(tempfile.mkdtemp(prefix="autograder-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        remove_tree(path)


def readable_paths() -> list[str]:
    """What a worker may read: system libraries, the Python installation, this package."""
    paths = {*(_SYSTEM_READABLE), sys.prefix, sys.base_prefix, sys.exec_prefix, str(PACKAGE_DIR)}
    return sorted(paths)


def base_environment(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        HOME=str(home), TMPDIR=str(home), MPLBACKEND="Agg", MPLCONFIGDIR=str(home),
        PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


class Launcher:
    """The warm worker template, started on first use and restarted if it dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._forked: int | None = None  # the pid of a template forked from a shared one
        self._control: socket.socket | None = None
        self._ready = False
        self._home = tempfile.TemporaryDirectory(prefix="autograder-template-")

    def start(self) -> None:
        """Start the template now, without waiting for it (it warms up while the caller works)."""
        if self._control is not None and (self._forked is not None or
                                          (self._process is not None and self._process.poll() is None)):
            return
        self._discard()
        self._spawn_template()

    @property
    def template_pid(self) -> int | None:
        return self._forked if self._forked is not None else (self._process.pid if self._process else None)

    def fork_from(self, shared: socket.socket) -> None:
        """Use a template forked from the shared one whose control socket is ``shared`` (see
        :class:`SharedTemplate`; the caller holds its lock)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(shared, [wire.encode(messages.ForkTemplate().to_wire())], [theirs.fileno()])
        finally:
            theirs.close()
        while True:  # the shared template said "ready" once, to whichever process read first
            ready, _, _ = select.select([shared], [], [], 120)
            data = shared.recv(1 << 16) if ready else b""
            if not data:
                ours.close()
                raise LaunchError("the shared worker template stopped answering")
            reply = messages.parse(wire.decode(data))
            if isinstance(reply, messages.TemplateReply) and not reply.ready:
                break
        if not reply.pid:
            ours.close()
            raise LaunchError(f"the shared worker template could not fork: {reply.refused or reply}")
        self._discard()
        self._control, self._forked, self._ready = ours, reply.pid, False

    def warm(self) -> None:
        """Start the template and wait until it is ready to fork workers."""
        self.start()
        self._wait_until_ready()

    def _spawn_template(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        home = Path(self._home.name)
        with open(home / "template.log", "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-m", "autograder.worker.template", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=home, env=base_environment(home), start_new_session=True,
            )
        theirs.close()
        self._control = ours
        self._ready = False

    def _wait_until_ready(self) -> None:
        if not self._ready:
            if not self._receive(timeout=120).ready:
                raise LaunchError("the worker template did not start")
            self._ready = True

    def _receive(self, timeout: float) -> messages.TemplateReply:
        assert self._control is not None
        ready, _, _ = select.select([self._control], [], [], timeout)
        data = self._control.recv(1 << 16) if ready else b""
        if not data:
            log = Path(self._home.name) / "template.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self._discard()
            raise LaunchError(f"the worker template stopped answering. {detail}".strip())
        reply = messages.parse(wire.decode(data))
        if not isinstance(reply, messages.TemplateReply):
            raise LaunchError(f"the worker template answered with {reply.op}")
        return reply

    def _ask(self, request: messages.Message, fds: list[int] | None = None) -> messages.TemplateReply:
        self.start()
        self._wait_until_ready()
        assert self._control is not None
        socket.send_fds(self._control, [wire.encode(request.to_wire())], fds or [])
        return self._receive(timeout=60)

    def spawn(self, scratch_area: Path, name: str, limits: Limits) -> tuple[int, socket.socket]:
        """A new confined worker whose scratch directory is ``scratch_area/name`` (made by its
        supervisor; ``name`` must be new), within ``limits``; returns its pid and a socket to it."""
        ours, theirs = socket.socketpair()
        settings = messages.WorkerSettings(
            scratch_parent=str(scratch_area), scratch_name=name, readable=readable_paths(),
            cpu_seconds=int(limits.submission_timeout) + 5, memory_bytes=limits.memory_bytes,
            max_processes=limits.max_processes)
        try:
            reply = self._ask(messages.Spawn(settings), [theirs.fileno()])
        finally:
            theirs.close()
        if reply.pid is None or reply.pid <= 0:
            ours.close()
            raise LaunchError(f"the worker template could not start a worker: {reply.refused or reply}")
        return reply.pid, ours

    def exit_code(self, pid: int, wait: float = 2.0) -> int | None:
        """How worker ``pid`` ended (negative: killed by that signal), if it has."""
        deadline = time.monotonic() + wait
        while True:
            code = self._ask(messages.Status(pid)).exit
            if code is not None or time.monotonic() >= deadline:
                return code
            time.sleep(0.02)

    def kill(self, pid: int, wait: bool = True) -> None:
        """Kill worker ``pid``: its supervisor kills the worker, and with it its PID namespace."""
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        if not wait:
            return
        deadline = time.monotonic() + 2
        while self.exit_code(pid, wait=0) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Stop the template; it stops and reaps any worker still running first."""
        if self._control is not None and (self._forked is not None or
                                          (self._process is not None and self._process.poll() is None)):
            try:
                socket.send_fds(self._control, [wire.encode(messages.StopWorkers().to_wire())], [])
                self._receive(timeout=10)
            except (OSError, LaunchError, wire.WireError):
                pass
        self._discard()

    def _discard(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._forked is not None:  # not our child: its own process group, killed; its parent reaps it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._forked, signal.SIGKILL)
            self._forked = None
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._process.wait()
            self._process = None

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
        self._home.cleanup()


class SharedTemplate:
    """One warm template for the grading processes a batch forks: each asks it, in turn, for a
    template of its own (a fork of the warm one), so a batch imports NumPy and Matplotlib once,
    not once per process.  Make it before forking; in each grading process, :meth:`launcher`."""

    def __init__(self, lock: Any) -> None:
        self._launcher = Launcher()
        self._launcher.start()
        self._lock = lock  # a multiprocessing lock: one request at a time on the shared socket

    def launcher(self) -> Launcher:
        """In a grading process: a launcher with a template of its own, forked from the shared
        one (a fresh template if that fails)."""
        launcher = Launcher()
        control = self._launcher._control
        if control is not None:
            try:
                with self._lock:
                    launcher.fork_from(control)
                with contextlib.suppress(OSError, TypeError):  # its workers run where this process runs
                    os.sched_setaffinity(launcher.template_pid, os.sched_getaffinity(0))  # type: ignore[arg-type]
            except (OSError, LaunchError, wire.WireError):
                pass  # its first request starts a template of its own
            finally:
                control.close()  # this process's copy; the shared template is the parent's
        return launcher

    def close(self) -> None:
        self._launcher.close()

    def __enter__(self) -> SharedTemplate:
        return self

    def __exit__(self, *_: object) -> None:
        self._launcher.__exit__()
