"""Runs student cells and answers calls from the grader.

The grader sends four kinds of request over the channel:

``exec``      run one cell's source in the submission's namespace (IPython syntax);
``describe``  say, for some names, whether each is a function, plain data (with its value),
              missing, or something that cannot cross the boundary;
``call``      call a function of the student's (by name, or by handle when a student function
              returned a function) with plain-data arguments, and return its plain-data result;
``hello``     report the protections the worker runs under;
``shutdown``  stop.

Functions the grader passes as arguments arrive as :class:`InstructorFunction` objects; calling
one sends a ``callback`` request back to the grader, which runs the instructor's function.
"""

from __future__ import annotations

import builtins
import inspect
import io
import linecache
import os
import socket
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from autograder import wire
from autograder.wire import messages

MAX_CAPTURED_CHARS = 20_000
_CELL_PREFIX = "<cell "

# Line magics that only affect display or timing: the grader runs them as no-ops (or, for
# %time/%timeit, runs the statement once).
_HARMLESS_LINE_MAGICS = {"matplotlib", "config", "load_ext", "autoreload", "precision",
                         "pylab", "aimport", "reload_ext", "who", "whos", "pinfo", "pinfo2"}
_STATEMENT_MAGICS = {"time", "timeit", "prun", "capture"}


class GradingRefused(Exception):
    """Something a notebook may do interactively but the grader will not run."""


class _CappedText(io.TextIOBase):
    """A text stream that keeps at most ``MAX_CAPTURED_CHARS`` characters."""

    def __init__(self, on_cut: Callable[[], None] | None = None) -> None:
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False
        self._on_cut = on_cut

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = MAX_CAPTURED_CHARS - self._size
        was_truncated = self.truncated
        if room <= 0:
            self.truncated = True
        else:
            kept = text[:room]
            self._parts.append(kept)
            self._size += len(kept)
            self.truncated |= len(kept) < len(text)
        if self.truncated and not was_truncated and self._on_cut is not None:
            self._on_cut()  # the grader learns it now, in case the flood never ends
        return len(text)

    def getvalue(self) -> str:
        value = "".join(self._parts)
        if self.truncated:
            value += f"\n[output cut after {MAX_CAPTURED_CHARS:,} characters]\n"
        return value


class GradingShell:
    """Stands in for ``get_ipython()`` in code that IPython's transformer rewrote."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self._namespace = namespace

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> Any:
        if name in _HARMLESS_LINE_MAGICS:
            return None
        if name in _STATEMENT_MAGICS:
            exec(compile(line, "<magic>", "exec"), self._namespace)  # noqa: S102 - student code, in the worker
            return None
        raise GradingRefused(
            f"The magic %{name} does not run in the grader. Remove it from your answer cells."
        )

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        if name in _STATEMENT_MAGICS:
            exec(compile(cell, "<magic>", "exec"), self._namespace)  # noqa: S102
            return None
        raise GradingRefused(
            f"The cell magic %%{name} does not run in the grader. Remove it from your answer cells."
        )

    def system(self, command: str) -> None:
        raise GradingRefused(
            "Shell commands (lines starting with !) are not run by the grader. "
            "Remove them from your answer cells."
        )

    getoutput = system

    def __getattr__(self, name: str) -> Any:
        raise GradingRefused(f"get_ipython().{name} is not available in the grader.")


def _display(*objects: Any, **_: Any) -> None:
    for item in objects:
        print(repr(item))


def _student_traceback(error: BaseException) -> str:
    """The traceback of ``error``, keeping only frames in the student's notebook cells."""
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename.startswith(_CELL_PREFIX)
    ]
    lines = []
    for frame in frames[-6:]:
        cell = frame.filename[len(_CELL_PREFIX):-1]
        lines.append(f"  in cell {cell}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    return "\n".join(lines)


def _error_payload(error: BaseException) -> messages.ErrorInfo:
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a student exception whose __str__ fails
        message = ""
    return messages.ErrorInfo(type(error).__name__, message[:2000], _student_traceback(error),
                              isinstance(error, NotImplementedError))


class InstructorFunction:
    """A function owned by the grader; calling it asks the grader to run it."""

    def __init__(self, runtime: Runtime, handle: wire.Handle) -> None:
        self._runtime = runtime
        self._handle = handle

    def __repr__(self) -> str:
        return f"<function given by the test #{self._handle.id}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._runtime.callback(self._handle, args, kwargs)


_ERROR_TYPES = {
    name: getattr(builtins, name)
    for name in ("ValueError", "TypeError", "ZeroDivisionError", "OverflowError",
                 "FloatingPointError", "IndexError", "KeyError", "ArithmeticError")
}


class Runtime:
    """The namespace of one submission and the handlers for the grader's requests."""

    def __init__(self, channel: wire.Channel, protections: dict[str, Any] | None = None) -> None:
        self.channel = channel
        self.protections = protections or {"in_force": [], "missing": {}}
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.namespace["get_ipython"] = lambda: GradingShell(self.namespace)
        self.namespace["display"] = _display
        self._transformer: Any = None

    # Requests -------------------------------------------------------------------------
    def handle(self, message: messages.Message) -> messages.Reply:
        if isinstance(message, messages.Exec):
            return self._captured(lambda: self._exec(message.source, message.label))
        if isinstance(message, messages.Call):
            return self._captured(lambda: self._call(message.target, message.args, message.kwargs))
        if isinstance(message, messages.Describe):
            return messages.Reply(ok=True, value={name: self._describe(name) for name in message.names})
        if isinstance(message, messages.Hello):
            return messages.Reply(ok=True, value={**self.protections, "uid": os.getuid()})
        if isinstance(message, messages.Shutdown):
            return messages.Reply(ok=True)
        return messages.Reply.failure("ProtocolError", f"unexpected request {message.op!r}")

    def _captured(self, action: Callable[[], Any]) -> messages.Reply:
        stdout, stderr = _CappedText(self._output_cut), _CappedText(self._output_cut)
        self._modified: list[str] = []
        value, error = None, None
        # As contextlib.redirect_stdout does, without its objects: this is on every call's path.
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = stdout, stderr
        try:
            value = action()
        except BaseException as failure:  # noqa: BLE001 - report every student failure
            if isinstance(failure, SystemExit):
                failure = RuntimeError(f"the code called exit({failure.code!r})")
            error = _error_payload(failure)
        finally:
            sys.stdout, sys.stderr = saved
        # A value that cannot be sent is found out when the reply is encoded (Channel.answer).
        return messages.Reply(ok=error is None, value=value, error=error, stdout=stdout.getvalue(),
                              stderr=stderr.getvalue(), modified=self._modified)

    def _output_cut(self) -> None:
        try:
            self.channel.notify(messages.Notice("output-cut", MAX_CAPTURED_CHARS))
        except (OSError, wire.WireError):
            pass  # the grader is gone; nothing to tell

    def _exec(self, source: str, label: str) -> None:
        filename = f"{_CELL_PREFIX}{label}>"
        compiled = _plain_python(source, filename)
        if compiled is None:  # IPython syntax (a magic, !shell, obj?, a prompt): transform it first
            if self._transformer is None:
                from IPython.core.inputtransformer2 import TransformerManager

                self._transformer = TransformerManager()
            source = self._transformer.transform_cell(source)
            compiled = compile(source, filename, "exec")
        # Register the source so tracebacks can quote the student's own lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compiled, self.namespace)  # noqa: S102 - student code, in the worker
        return None

    def _lookup(self, target: Any) -> Callable[..., Any]:
        if type(target) is int:
            return self.channel.local_callable(target)
        if target not in self.namespace:
            raise NameError(f"name {target!r} is not defined")
        value = self.namespace[target]
        if not callable(value):
            raise TypeError(f"{target!r} is {wire.describe_type(value)}, not a function")
        return value

    def _call(self, target: Any, args: Any, kwargs: Any) -> Any:
        function = self._lookup(target)
        before = {key: _fingerprint(value) for key, value in _arguments(args, kwargs)}
        value = function(*args, **kwargs)
        changed = [key for key, argument in _arguments(args, kwargs) if _fingerprint(argument) != before[key]]
        if changed:
            self._modified = _parameter_names(function, changed, len(args))
        return value

    def _describe(self, name: str) -> list[Any]:
        if name not in self.namespace:
            return ["missing"]
        value = self.namespace[name]
        if isinstance(value, types.ModuleType):
            return ["module"]
        if callable(value):
            return ["function"]
        try:
            wire.encode(value)
        except wire.WireError:
            return ["unsupported", wire.describe_type(value)]
        return ["data", value]

    # Callbacks --------------------------------------------------------------------------
    def callback(self, handle: wire.Handle, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            reply = self.channel.request(messages.Callback(handle.id, list(args), dict(kwargs)))
        except wire.WireError as problem:
            raise TypeError(
                f"The function the test passed in takes numbers or arrays; {problem}."
            ) from None
        if reply.ok:
            return reply.value
        error = reply.error or messages.ErrorInfo("RuntimeError", "the test's function failed")
        raise _ERROR_TYPES.get(error.type, RuntimeError)(error.message)


def _plain_python(source: str, filename: str) -> types.CodeType | None:
    """``source`` compiled, when it is plain Python that IPython's transformer would leave as it
    is (most cells: transforming costs several times what compiling does); else None.  IPython's
    escapes (``%magic``, ``!cmd``, ``x = !cmd``, ``obj?``, ``/f x``) are syntax errors to Python;
    what is not (pasted prompts such as ``In [1]: x = 1``, an indented first line, leading blank
    lines, which IPython drops, and so shifts the line numbers) goes the transformer's way, by the
    transformer's own tests."""
    if not source or source[0] in " \t\r\n\f":
        return None
    try:
        from IPython.core.inputtransformer2 import classic_prompt, ipython_prompt

        first, *rest = source.splitlines(keepends=True)[:2]
        for prompts in (classic_prompt, ipython_prompt):
            if prompts.initial_re.match(first) or (rest and prompts.prompt_re.match(rest[0])):
                return None
    except (ImportError, AttributeError):  # another IPython: let its transformer decide every cell
        return None
    try:
        return compile(source, filename, "exec")
    except (SyntaxError, ValueError):
        return None


def _arguments(args: Any, kwargs: Any) -> list[tuple[Any, Any]]:
    return [*enumerate(args), *kwargs.items()]


def _fingerprint(value: Any) -> Any:
    """What a caller could see of an argument: its data, not its identity."""
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_fingerprint(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((repr(key), _fingerprint(item)) for key, item in value.items()))
    return repr(value) if isinstance(value, (int, float, complex, str, bytes, bool, type(None))) else None


def _parameter_names(function: Callable[..., Any], changed: list[Any], positional: int) -> list[str]:
    """The names of the parameters that received the changed arguments (positions as numbers
    when the signature cannot be read)."""
    try:
        names = [parameter.name for parameter in inspect.signature(function).parameters.values()]
    except (TypeError, ValueError):
        names = []
    return [str(key) if isinstance(key, str) else (names[key] if key < len(names) else f"argument {key + 1}")
            for key in changed]


def _keep_builtins() -> None:
    """Student code can replace builtins in its own process (``builtins.isinstance = ...``);
    the worker's own modules, those that speak the protocol, keep the ones they started with
    (a module's globals come before the builtins), so that the worker still answers the grader
    and only the student's own code sees the replacements."""
    from autograder.wire import channel, codec

    originals = {name: value for name, value in vars(builtins).items() if not name.startswith("__")}
    for module in (sys.modules[__name__], channel, codec, messages):
        for name, value in originals.items():
            module.__dict__.setdefault(name, value)


def serve_forever(fd: int, protections: dict[str, Any] | None = None) -> None:
    """Serve the grader's requests on the connected socket ``fd`` until told to stop."""
    channel = wire.Channel(socket.socket(fileno=fd))
    runtime = Runtime(channel, protections)
    channel.make_remote = lambda handle: InstructorFunction(runtime, handle)
    channel.serve = runtime.handle
    while True:
        try:
            message, message_id = channel.receive()
        except wire.PeerGone:
            return
        channel.answer(runtime.handle(message), message_id)
        if isinstance(message, messages.Shutdown):
            sys.stdout.flush()
            return


# Once, at import: before any student code runs (the template imports this module, and every
# worker it forks inherits the protocol modules' globals as they are).
_keep_builtins()
