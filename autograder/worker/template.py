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
import gc
import importlib
import os
import signal
import socket
import sys

from autograder import wire
from autograder.wire import messages
from autograder.worker import confine

_MAX_CONTROL_MESSAGE = 1 << 16
_MAX_REMEMBERED_EXITS = 4096
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_STUDENT_IMPORTS = ("autograder.checks",)


def _warm_up() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - imported for its side effect: loaded once, shared by forks
    import numpy  # noqa: F401
    from IPython.core.inputtransformer2 import TransformerManager

    TransformerManager().transform_cell("x = 1\n")
    import autograder.worker.runtime  # noqa: F401 - every worker runs it: imported once, here

    # What every problem set's setup cell imports besides NumPy and Matplotlib: the course's
    # checks, the library students have in their own notebooks (a worker that imported it itself
    # spent 14 ms of its ~50 on it).  The worker's own code does not use it: it is warmed up here
    # for student cells, like NumPy, by name.
    for name in _STUDENT_IMPORTS:
        importlib.import_module(name)


def _run_child(connection: int, settings: messages.WorkerSettings) -> None:
    """In the forked child: supervise one confined worker serving ``connection``.

    This process enters new namespaces, makes the worker's scratch directory (a fresh tmpfs in
    its private mount namespace, where the kernel allows) and forks the worker, which becomes
    pid 1 of its PID namespace; it then only waits.  It never opens, changes or removes anything
    inside the scratch directory: that is the worker's.  SIGTERM (from the grader) makes it kill
    the worker, which makes the kernel kill everything the worker started.  It leaves with the
    worker's status.
    """
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    namespaces = confine.enter_namespaces()
    # As root, a uid of the worker's own, unique among live workers (pids are).
    uid = confine.WORKER_UID_BASE + os.getpid() if os.geteuid() == 0 else None
    parent, name = settings.scratch_parent, settings.scratch_name
    scratch_fd = confine.make_scratch(parent, name, uid, namespaces)
    os.fchdir(scratch_fd)
    scratch = os.path.join(parent, name)
    os.environ.update(HOME=scratch, TMPDIR=scratch, MPLCONFIGDIR=scratch)
    worker = os.fork()
    if worker == 0:
        _become_worker(connection, settings, namespaces, uid, scratch_fd)
        return
    os.close(connection)
    os.close(scratch_fd)

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


def _become_worker(connection: int, settings: messages.WorkerSettings, namespaces: confine.Applied,
                   uid: int | None, scratch_fd: int) -> None:
    from autograder.worker.runtime import serve_forever

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    applied = confine.confine(settings, scratch_fd=scratch_fd, uid=uid, applied=namespaces)
    os.close(scratch_fd)
    # What student code writes to its descriptors 1 and 2 goes nowhere: printed output reaches
    # the grader through the channel, capped; the template's log stays the template's.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
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

    def answer(self, reply: messages.TemplateReply) -> None:
        self.control.send(wire.encode(reply.to_wire()))

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
            try:
                request = messages.parse(wire.decode(data))
            except wire.WireError as problem:
                request = None
                refusal = str(problem)
            if isinstance(request, messages.Spawn) and len(fds) == 1:
                self.answer(messages.TemplateReply(pid=self.spawn(fds[0], request.settings)))
            elif isinstance(request, messages.ForkTemplate) and len(fds) == 1:
                self.answer(messages.TemplateReply(pid=self.fork_template(fds[0])))
            elif isinstance(request, messages.StopWorkers):
                self.shutdown()
                self.answer(messages.TemplateReply(stopped=True))
                return
            elif isinstance(request, messages.Status):
                self.answer(messages.TemplateReply(exit=self.exits.get(request.pid)))
            else:
                for fd in fds:
                    os.close(fd)
                self.answer(messages.TemplateReply(refused=refusal if request is None else f"unexpected {request.op}"))

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

    def fork_template(self, control: int) -> int:
        """A template of its own for another grading process, serving ``control``: a fork of
        this warm one, ready at once.  It leaves when that process closes its end."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setsid()  # a group of its own: stopping this template does not stop it
                self.control.close()
                ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # not inherited
                template = _Template(socket.socket(fileno=control))
                template.answer(messages.TemplateReply(ready=True))
                template.serve()
            except BaseException:  # noqa: BLE001 - the child must never return into this template
                import traceback

                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        os.close(control)
        self.running.add(pid)  # stopped with this template's workers
        return pid

    def spawn(self, connection: int, settings: messages.WorkerSettings) -> int:
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
    confine.prepare_template()
    # What the warm-up allocated stays as it is: the collector never visits it again, so a
    # worker's collections do not write to (and so copy) the pages it shares with the template.
    gc.collect()
    gc.freeze()
    template = _Template(socket.socket(fileno=control_fd))
    template.answer(messages.TemplateReply(ready=True))
    template.serve()


if __name__ == "__main__":
    main(int(sys.argv[1]))
