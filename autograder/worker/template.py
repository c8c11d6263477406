"""The warm worker template: ``python -m autograder.worker.template FD``.

It imports what student code needs (NumPy, Matplotlib with the Agg backend, IPython's input
transformer) once, then waits on its control socket.  For each ``spawn`` request, which
carries a connected socket for the new worker, it forks: the child confines itself and serves
that socket; the template answers with the child's pid.  Forking a warm process costs
milliseconds where starting an interpreter and importing NumPy costs a large fraction of a
second.  The template never runs student code and never sees tests or solutions.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from typing import Any

from autograder import wire
from autograder.worker import confine

_MAX_CONTROL_MESSAGE = 1 << 16
_MAX_REMEMBERED_EXITS = 4096
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1


def _warm_up() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - imported for its side effect: loaded once, shared by forks
    import numpy  # noqa: F401
    from IPython.core.inputtransformer2 import TransformerManager

    TransformerManager().transform_cell("x = 1\n")


def _run_child(connection: int, settings: dict[str, Any]) -> None:
    """In the forked child: supervise one confined worker serving ``connection``.

    This process enters new namespaces and forks the worker, which becomes pid 1 of its PID
    namespace; it then only waits.  SIGTERM (from the grader) makes it kill the worker, which
    makes the kernel kill everything the worker started.  It leaves with the worker's status.
    """
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    scratch = str(settings["scratch"])
    os.chdir(scratch)
    log = os.open(os.path.join(scratch, "worker-output.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update({key: str(value) for key, value in settings.get("environment", {}).items()})
    namespaces = confine.enter_namespaces()
    # A uid of the worker's own (when running as root), unique among live workers.
    uid = 100_000 + os.getpid() % 50_000
    worker = os.fork()
    if worker == 0:
        _become_worker(connection, settings, namespaces, uid)
        return
    os.close(connection)

    def stop(*_: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(worker, 0)
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    _, status = os.waitpid(worker, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker is gone; report how it ended
    if os.WIFSIGNALED(status):
        # Die the same way, so the grader can tell the student what happened.
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _become_worker(connection: int, settings: dict[str, Any], namespaces: confine.Applied, uid: int) -> None:
    from autograder.worker.runtime import serve_forever

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    applied = confine.confine(confine.Confinement(
        scratch=str(settings["scratch"]),
        readable=[str(path) for path in settings.get("readable", [])],
        cpu_seconds=int(settings.get("cpu_seconds", 600)),
        memory_bytes=int(settings.get("memory_bytes", 4 * 1024**3)),
        max_processes=int(settings.get("max_processes", 64)),
        max_open_files=int(settings.get("max_open_files", 256)),
        max_file_bytes=int(settings.get("max_file_bytes", 64 * 1024**2)),
        uid=uid,
    ), namespaces)
    serve_forever(connection, protections={"in_force": applied.in_force, "missing": applied.missing})


class _Template:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.exits: dict[int, int] = {}
        self.running: set[int] = set()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exits[pid] = os.waitstatus_to_exitcode(status)
            self.running.discard(pid)
            if len(self.exits) > _MAX_REMEMBERED_EXITS:
                self.exits.pop(next(iter(self.exits)))

    def answer(self, message: dict[str, Any]) -> None:
        self.control.send(wire.encode(message))

    def serve(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self.control, _MAX_CONTROL_MESSAGE, 1)
            except OSError:
                self.shutdown()
                return
            if not data:  # the grader is gone: stop its workers too
                self.shutdown()
                return
            self.reap()
            request = wire.decode(data)
            op = request.get("op") if isinstance(request, dict) else None
            if op == "spawn" and len(fds) == 1:
                self.answer({"pid": self.spawn(fds[0], request.get("settings") or {})})
            elif op == "shutdown":
                self.shutdown()
                self.answer({"stopped": True})
                return
            elif op == "status":
                self.answer({"exit": self.exits.get(request.get("pid"))})
            else:
                for fd in fds:
                    os.close(fd)
                self.answer({"error": f"unknown request {op!r}"})

    def shutdown(self) -> None:
        """Stop every worker still running and reap them all."""
        try:
            while True:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
        except ChildProcessError:
            return
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)

    def spawn(self, connection: int, settings: dict[str, Any]) -> int:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self.control.close()
                _run_child(connection, settings)
            except BaseException:  # noqa: BLE001 - the child must never return into the template
                import traceback

                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        os.close(connection)
        self.running.add(pid)
        return pid


def main(control_fd: int) -> None:
    # Orphans of a worker (a fork that outlived it) become this process's children, so that
    # they can be reaped instead of lingering as zombies.
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _warm_up()
    template = _Template(socket.socket(fileno=control_fd))
    template.answer({"ready": True})
    template.serve()


if __name__ == "__main__":
    main(int(sys.argv[1]))
