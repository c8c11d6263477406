"""The grader's side of one submission's worker process.

:class:`WorkerSession` starts the worker, runs cells in it, and calls student functions on
behalf of test cells through :class:`StudentFunction` proxies.  Every request carries a
deadline; a worker that misses one, crashes or breaks the protocol is killed (its whole
process group), and the next request starts a fresh worker and replays the cells that had
run cleanly, so one bad exercise costs only that exercise.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autograder import stages, wire
from autograder.checks import in_place_allowed
from autograder.grader.launcher import Launcher
from autograder.settings import Limits, seconds
from autograder.wire import messages

# What the grader keeps of text that comes from the worker (it could be a hostile worker writing
# to its socket directly, so the worker's own caps count for nothing here).
MAX_ERROR_TYPE_CHARS = 100
MAX_ERROR_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 4_000
MAX_OUTPUT_CHARS = 20_000
# Arguments of one call from student code into a function the test passed in.
MAX_CALLBACK_ARGUMENT_BYTES = 8 * 1024 * 1024


def bounded(value: Any, limit: int) -> str:
    """``value`` as text of at most about ``limit`` characters (text from the worker)."""
    text = value if isinstance(value, str) else ("" if value is None else str(value)[: limit + 1])
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} more characters cut]"


def _bounded_error(error: messages.ErrorInfo | None) -> messages.ErrorInfo:
    """An error description from the worker, with every field of bounded size."""
    if error is None:
        return messages.ErrorInfo("Exception")
    return messages.ErrorInfo(bounded(error.type or "Exception", MAX_ERROR_TYPE_CHARS),
                              bounded(error.message, MAX_ERROR_MESSAGE_CHARS),
                              bounded(error.traceback, MAX_TRACEBACK_CHARS), error.not_implemented)


def _payload_bytes(value: Any) -> int:
    """Roughly how many bytes of data ``value`` holds (arrays by their buffers)."""
    if type(value) is float:
        return 8
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (list, tuple)):
        return sum(_payload_bytes(item) for item in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(_payload_bytes(key) + _payload_bytes(item) for key, item in value.items())
    if isinstance(value, (str, bytes)):
        return len(value)
    return 8


class WorkerFailure(Exception):
    """The worker died, hung or misbehaved; ``str(failure)`` explains it to the student."""


class WorkerTimedOut(WorkerFailure):
    """The worker did not answer in time (and was killed).  ``printed`` is how many characters
    the code had printed by then when that was past the capture limit (0 otherwise)."""

    def __init__(self, message: str, printed: int = 0) -> None:
        super().__init__(message)
        self.printed = printed

    @property
    def advice(self) -> str:
        """What to look for, for the student."""
        if self.printed:
            return (f"By then it had printed more than {self.printed:,} characters, and printing that much "
                    "takes time: print less (for example every 1000th step), or nothing.")
        return "Look for a loop that never ends."


class ConfinementMissing(WorkerFailure):
    """Strict mode, and the worker lacks a protection."""


def require_protections(missing: dict[str, str], strict: bool) -> None:
    """In strict mode, refuse a worker that lacks any protection."""
    if strict and missing:
        reasons = "; ".join(f"{name} ({why})" for name, why in sorted(missing.items()))
        raise ConfinementMissing(
            f"Refusing to grade in strict mode: this machine cannot provide {reasons}. "
            "Grade on a machine that has them, or without --strict."
        )


class InputModified(AssertionError):
    """A student function changed an argument in place where the test did not allow it."""

    def __init__(self, function: str, names: list[str]) -> None:
        quoted = ", ".join(f"`{name}`" for name in names)
        example = names[0] if not names[0].startswith("argument") else "x"
        super().__init__(
            f"{function} changed its argument{'s' if len(names) > 1 else ''} {quoted} in place; work on a copy "
            f"(for example `{example} = np.array({example}, dtype=float)`) so that the caller's data stays as it was.")


class StudentError(Exception):
    """A student function raised while a test called it."""

    def __init__(self, function: str, payload: messages.ErrorInfo | None) -> None:
        error = _bounded_error(payload)
        self.function = function
        self.type = error.type
        self.message = error.message
        self.student_traceback = error.traceback
        self.not_implemented = error.not_implemented
        super().__init__(f"{function} raised {self.type}: {self.message}")


@dataclass
class CellOutcome:
    """What happened when a cell ran in the worker."""

    ok: bool
    error: messages.ErrorInfo | None = None
    failure: str | None = None  # the worker died or hung
    stdout: str = ""
    stderr: str = ""


class WorkerProcess:
    """One confined worker, forked by the launcher's template, and the channel to it."""

    def __init__(self, launcher: Launcher, scratch_area: Path, name: str, limits: Limits,
                 serve: Callable[[messages.Message], messages.Reply],
                 make_remote: Callable[[wire.Handle], Any], deadline: float) -> None:
        self._launcher = launcher
        self.pid, self._socket = launcher.spawn(scratch_area, name, limits)
        self.channel = wire.Channel(self._socket)
        self.channel.serve = serve
        self.channel.make_remote = make_remote
        self.channel.notice = self._notice
        self._printed = 0
        # Asked before any student code runs in this worker, so the answer is the worker's own.
        hello = self.request(messages.Hello(), max(deadline, time.monotonic() + 10)).value
        hello = hello if isinstance(hello, dict) else {}
        self.protections: list[str] = [str(name) for name in hello.get("in_force", [])]
        missing = hello.get("missing")
        self.missing: dict[str, str] = {str(k): str(v) for k, v in missing.items()} if isinstance(missing, dict) else {}

    def request(self, message: messages.Message, deadline: float) -> messages.Reply:
        self._printed = 0
        started = time.perf_counter()
        try:
            return self.channel.request(message, deadline)
        except wire.DeadlineExceeded:
            self.kill()
            raise WorkerTimedOut("timed out", self._printed) from None
        except (wire.PeerGone, wire.WireError, OSError) as problem:
            notice = self._death_notice(problem)  # before the kill, which would mask how it ended
            self.kill()
            raise WorkerFailure(notice) from None
        finally:
            stages.add(f"(within the above) waiting for the worker: {type(message).__name__}",
                       time.perf_counter() - started)

    def _notice(self, notice: messages.Notice) -> None:
        if notice.kind == "output-cut":
            self._printed = max(self._printed, notice.chars)

    def _death_notice(self, problem: Exception) -> str:
        code = self._launcher.exit_code(self.pid)
        if code is None:
            return f"The Python process running your code broke the grader's protocol ({problem})."
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = {"SIGKILL": " It may have used more memory or CPU time than allowed.",
                    "SIGSEGV": " Your code crashed the interpreter (a segmentation fault)."}.get(name, "")
            return f"The Python process running your code was killed by signal {name}.{hint}"
        return f"The Python process running your code exited (exit code {code})."

    def kill(self) -> None:
        self._launcher.kill(self.pid)
        self._socket.close()

    def close(self) -> None:
        try:
            self.channel.request(messages.Shutdown(), time.monotonic() + 2)
        except Exception:  # noqa: BLE001 - it is being stopped either way
            self.kill()
            return
        # It is leaving on its own; make sure (SIGTERM to its supervisor) without waiting.
        self._launcher.kill(self.pid, wait=False)
        self._socket.close()


class StudentFunction:
    """Stands in, inside a test cell, for a function the student defined."""

    def __init__(self, session: WorkerSession, target: str | int, name: str) -> None:
        self._session = session
        self._target = target
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<your function {self.__name__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._target, self.__name__, args, kwargs)


@dataclass
class WorkerSession:
    """Runs one submission's code in a worker, restarting it after a crash or a hang.

    ``scratch_area`` is a directory of the grader's own (:func:`~autograder.grader.launcher.scratch_area`);
    every worker, the first and each replacement, gets a fresh scratch directory in it."""

    scratch_area: Path
    launcher: Launcher
    limits: Limits = field(default_factory=Limits)
    # Filled in as the submission runs:
    protections: list[str] = field(default_factory=list, init=False)
    missing_protections: dict[str, str] = field(default_factory=dict, init=False)
    output: list[str] = field(default_factory=list, init=False)  # what student code printed in this cell
    _worker: WorkerProcess | None = field(default=None, init=False, repr=False)
    _replay: list[tuple[str, str]] = field(default_factory=list, init=False, repr=False)
    _failure: WorkerFailure | None = field(default=None, init=False, repr=False)
    _deadline: float = field(default=0.0, init=False, repr=False)
    _started: float = field(default_factory=time.monotonic, init=False, repr=False)
    _workers_started: int = field(default=0, init=False, repr=False)

    # Cells ------------------------------------------------------------------------------
    def begin_cell(self) -> None:
        """Start the clock for one cell; a worker lost in an earlier cell is replaced."""
        self._failure = None
        self.output.clear()
        submission_left = self._started + self.limits.submission_timeout - time.monotonic()
        self._deadline = time.monotonic() + max(0.0, min(self.limits.cell_timeout, submission_left))

    def start(self) -> None:
        """Start the worker now (it would start with the first cell), to check its protections."""
        self.begin_cell()
        self._ensure_worker()

    @property
    def deadline(self) -> float:
        """When the current cell's time is up (``time.monotonic()`` clock)."""
        return self._deadline

    def discard_worker(self) -> None:
        """Kill the current worker; the next cell starts a fresh one and replays the cells."""
        if self._worker is not None:
            self._worker.kill()
            self._worker = None

    @property
    def out_of_time(self) -> bool:
        return time.monotonic() >= self._started + self.limits.submission_timeout

    def run_cell(self, source: str, label: str) -> CellOutcome:
        self.begin_cell()
        try:
            reply = self._request(messages.Exec(source, label))
        except WorkerFailure as failure:
            return CellOutcome(ok=False, failure=self._explain(failure, f"cell {label}"))
        outcome = CellOutcome(ok=reply.ok, error=None if reply.ok else _bounded_error(reply.error),
                              stdout=bounded(reply.stdout, MAX_OUTPUT_CHARS),
                              stderr=bounded(reply.stderr, MAX_OUTPUT_CHARS))
        if outcome.ok:
            self._replay.append((source, label))
        return outcome

    def describe(self, names: list[str]) -> dict[str, list[Any]]:
        value = self._request(messages.Describe(names)).value
        return value if isinstance(value, dict) else {}

    def call(self, target: str | int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            reply = self._request(messages.Call(target, list(args), dict(kwargs)))
        except wire.WireError as problem:
            raise TypeError(f"the test could not pass its arguments to {name}: {problem}") from None
        self._collect_output(reply)
        if reply.ok:
            if reply.modified and not in_place_allowed():
                raise InputModified(name, [bounded(item, 40) for item in reply.modified[:5]])
            return reply.value
        raise StudentError(name, reply.error)

    @property
    def failure(self) -> WorkerFailure | None:
        """The worker failure during the current cell, if any."""
        return self._failure

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    # Internals ----------------------------------------------------------------------------
    def _collect_output(self, reply: messages.Reply) -> None:
        room = MAX_OUTPUT_CHARS - sum(len(text) for text in self.output)
        for text in (reply.stdout, reply.stderr):
            if text and room > 0:
                self.output.append(text[:room])
                room -= len(text)

    def _explain(self, failure: WorkerFailure, where: str) -> str:
        if isinstance(failure, WorkerTimedOut):
            if self.out_of_time:
                return (f"Your notebook used up its total time limit of {seconds(self.limits.submission_timeout)} "
                        f"in {where}.")
            return f"{where} did not finish within {seconds(self.limits.cell_timeout)}. {failure.advice}"
        return f"{failure} (in {where})"

    def _request(self, message: messages.Message) -> messages.Reply:
        if self._failure is not None:
            raise self._failure
        try:
            worker = self._ensure_worker()
            return worker.request(message, self._deadline)
        except WorkerFailure as failure:
            self._worker = None
            self._failure = failure
            raise

    def _ensure_worker(self) -> WorkerProcess:
        if self._worker is None:
            name = f"worker-{self._workers_started}"
            self._workers_started += 1
            worker = WorkerProcess(self.launcher, self.scratch_area, name, self.limits, self._serve_callback,
                                   self._remote_function, self._deadline)
            self._worker = worker
            self.protections, self.missing_protections = worker.protections, worker.missing
            try:
                require_protections(worker.missing, self.limits.strict)
            except ConfinementMissing:
                worker.close()
                self._worker = None
                raise
            # Rebuild the namespace: cells that ran cleanly run again, in order.
            for source, label in self._replay:
                worker.request(messages.Exec(source, label), self._deadline)
        return self._worker

    def _remote_function(self, handle: wire.Handle) -> StudentFunction:
        return StudentFunction(self, handle.id, "the function your code returned")

    def _serve_callback(self, message: messages.Message) -> messages.Reply:
        if not isinstance(message, messages.Callback) or self._worker is None:
            return messages.Reply.failure("ProtocolError", "unexpected request")
        # Counted only when the message could hold that much: what _payload_bytes counts is at
        # most 16 times the encoded size (None, one byte, counts 8, and 8 more as a list's item).
        size = 0
        if 16 * self._worker.channel.received_bytes > MAX_CALLBACK_ARGUMENT_BYTES:
            size = _payload_bytes(message.args) + _payload_bytes(message.kwargs)
        if size > MAX_CALLBACK_ARGUMENT_BYTES:
            return messages.Reply.failure("ValueError", (
                f"the function the test passed in was called with {size / 2**20:.0f} MiB of arguments; "
                f"it accepts at most {MAX_CALLBACK_ARGUMENT_BYTES // 2**20} MiB"))
        try:
            function = self._worker.channel.local_callable(message.handle)
            # A value that cannot be sent is found out when the reply is encoded (Channel.answer).
            return messages.Reply(ok=True, value=function(*message.args, **message.kwargs))
        except Exception as error:  # noqa: BLE001 - the student's call of the test's function failed
            return messages.Reply.failure(type(error).__name__, str(error)[:500])
