"""Every message the grader, the worker template and the worker send each other.

One dataclass per kind of message, defined here once and used by both sides.  A message
crosses the wire as a list of plain data, ``[op, field, ...]``: the ``op`` names its kind, the
fields follow in the order they are declared.  :func:`parse` turns such a list back into the
dataclass and checks every field's type on the way, so a malformed message from a hostile
worker is a :class:`~autograder.wire.codec.WireError`, never a ``KeyError`` or a wrong type
deep inside the receiver.

========================  =======================  ==============================================
message                   from -> to               meaning
========================  =======================  ==============================================
:class:`Hello`            grader -> worker         say which protections are in force
:class:`Exec`             grader -> worker         run one cell's source
:class:`Describe`         grader -> worker         what are these names: function, data, missing?
:class:`Call`             grader -> worker         call a student function
:class:`Shutdown`         grader -> worker         stop
:class:`Callback`         worker -> grader         call a function the test passed in (during a Call)
:class:`Reply`            either way               the answer to one request, matched by ``id``
:class:`Spawn`            grader -> template       fork a confined worker for this socket
:class:`Status`           grader -> template       how did this worker end?
:class:`StopWorkers`      grader -> template       stop every worker and leave
:class:`TemplateReply`    template -> grader       the answer to one control request
========================  =======================  ==============================================
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union

from autograder.wire.codec import WireError


@dataclass(frozen=True)
class Message:
    """A message: its fields, and the ``op`` that names its kind on the wire."""

    op: ClassVar[str] = ""

    def to_wire(self) -> list[Any]:
        """``[op, field, ...]`` in the order the fields are declared, without the trailing ones
        that hold their defaults (a reply that only says ``ok`` and a value is four items)."""
        names, defaults, _ = _shape(type(self))
        data: list[Any] = [self.op]
        for name in names:
            value = getattr(self, name)
            data.append(value.to_wire() if isinstance(value, Message) else value)
        while len(data) > 1 and _is_default(data[-1], defaults[len(data) - 2]):
            data.pop()
        return data


_NO_DEFAULT = object()


class _Shape(typing.NamedTuple):
    """A message class's fields in declaration order: names, defaults and type checkers."""

    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    checks: tuple[Callable[[Any], Any], ...]


_SHAPES: dict[str, _Shape] = {}


def _shape(kind: type[Message]) -> _Shape:
    """Made once per class: resolving the annotations costs more than a message."""
    shape = _SHAPES.get(kind.op)
    if shape is None:
        items, hints = fields(kind), typing.get_type_hints(kind)
        shape = _SHAPES[kind.op] = _Shape(
            tuple(item.name for item in items),
            tuple(item.default if item.default is not MISSING
                  else item.default_factory() if item.default_factory is not MISSING else _NO_DEFAULT
                  for item in items),
            tuple(_checker(hints[item.name]) for item in items))
    return shape


def _is_default(value: Any, default: Any) -> bool:
    # The type first: 0.0 is not sent as the default 0, and an array is never compared element-wise.
    return default is not _NO_DEFAULT and type(value) is type(default) and value == default


# --------------------------------------------------------------------- grader <-> worker


@dataclass(frozen=True)
class ErrorInfo(Message):
    """An exception, described for the other side (the student's, or the test function's)."""

    op: ClassVar[str] = "error"
    type: str
    message: str = ""
    traceback: str = ""
    not_implemented: bool = False


@dataclass(frozen=True)
class Hello(Message):
    op: ClassVar[str] = "hello"


@dataclass(frozen=True)
class Exec(Message):
    op: ClassVar[str] = "exec"
    source: str
    label: str


@dataclass(frozen=True)
class Describe(Message):
    op: ClassVar[str] = "describe"
    names: list[str]


@dataclass(frozen=True)
class Call(Message):
    op: ClassVar[str] = "call"
    target: str | int  # a name in the student's namespace, or a handle it returned
    args: list[Any]
    kwargs: dict[str, Any]

    def to_wire(self) -> list[Any]:  # on every call's path: no field has a default
        return ["call", self.target, self.args, self.kwargs]


@dataclass(frozen=True)
class Shutdown(Message):
    op: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class Callback(Message):
    op: ClassVar[str] = "callback"
    handle: int
    args: list[Any]
    kwargs: dict[str, Any]

    def to_wire(self) -> list[Any]:  # on every callback's path: no field has a default
        return ["callback", self.handle, self.args, self.kwargs]


@dataclass(frozen=True)
class Reply(Message):
    """The answer to one request.  ``value`` is the result when ``ok``; ``error`` says what
    went wrong otherwise.  ``stdout``/``stderr`` are what the code printed meanwhile, and
    ``modified`` names the arguments a call changed in place."""

    op: ClassVar[str] = "reply"
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None
    stdout: str = ""
    stderr: str = ""
    modified: list[str] = field(default_factory=list)

    @classmethod
    def failure(cls, kind: str, message: str, **extra: Any) -> Reply:
        return cls(ok=False, error=ErrorInfo(kind, message, **extra))

    def to_wire(self) -> list[Any]:
        # Most replies are an ok and a value: built directly (the same list the general way makes).
        if self.error is None and self.stdout == "" and self.stderr == "" and self.modified == [] \
                and type(self.ok) is bool:
            return ["reply", self.ok] if self.value is None else ["reply", self.ok, self.value]
        return super().to_wire()


@dataclass(frozen=True)
class Notice(Message):
    """Worker to grader, with no answer: what the grader should know even if the worker is
    killed before its reply.  ``output-cut``: the code printed more than ``chars`` characters."""

    op: ClassVar[str] = "notice"
    kind: str
    chars: int = 0


# ------------------------------------------------------------------- grader <-> template


@dataclass(frozen=True)
class WorkerSettings(Message):
    """What a worker is confined to (the defaults are the engine's)."""

    op: ClassVar[str] = "settings"
    scratch_parent: str
    scratch_name: str
    readable: list[str] = field(default_factory=list)
    cpu_seconds: int = 600
    memory_bytes: int = 4 * 1024**3
    max_processes: int = 64
    max_open_files: int = 256
    max_file_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class Spawn(Message):
    op: ClassVar[str] = "spawn"
    settings: WorkerSettings


@dataclass(frozen=True)
class Status(Message):
    op: ClassVar[str] = "status"
    pid: int


@dataclass(frozen=True)
class StopWorkers(Message):
    op: ClassVar[str] = "stop"


@dataclass(frozen=True)
class ForkTemplate(Message):
    """Fork a template of its own for another grading process, which sends the control socket
    (as a descriptor) it will use; the reply's ``pid`` is the new template's."""

    op: ClassVar[str] = "fork-template"


@dataclass(frozen=True)
class TemplateReply(Message):
    """``ready`` after start-up; ``pid`` of a spawned worker; ``exit`` of one that ended (None:
    still running, negative: killed by that signal); ``stopped``; or ``refused`` with why."""

    op: ClassVar[str] = "template"
    ready: bool = False
    pid: int | None = None
    exit: int | None = None
    stopped: bool = False
    refused: str = ""


MESSAGES: dict[str, type[Message]] = {kind.op: kind for kind in (
    ErrorInfo, Hello, Exec, Describe, Call, Shutdown, Callback, Reply, Notice, WorkerSettings, Spawn, Status,
    StopWorkers, ForkTemplate, TemplateReply)}


# ------------------------------------------------------------------------------- parsing


def _wrong(value: Any, annotation: Any) -> WireError:
    return WireError(f"a message field holds {type(value).__name__} where {getattr(annotation, '__name__', annotation)} "
                     "belongs")


def _anything(value: Any) -> Any:
    return value


@functools.cache
def _checker(annotation: Any) -> Callable[[Any], Any]:
    """A function that returns a value of the type ``annotation`` says (parsing nested messages)
    or raises WireError; made once per annotation, since checking is on every message's path."""
    if annotation is Any:
        return _anything
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:  # Union[a, b] and a | b
        options = [(option, _checker(option)) for option in typing.get_args(annotation)]
        optional = any(option is type(None) for option, _ in options)

        def one_of(value: Any) -> Any:
            if value is None and optional:  # the common case, without trying the other options first
                return None
            problems = []
            for option, check in options:
                try:
                    return check(value)
                except WireError as problem:
                    if option is not type(None):
                        problems.append(problem)
            if len(problems) == 1:  # an optional field: say what is wrong with the value given
                raise problems[0]
            raise WireError(f"a message field holds {type(value).__name__}, which is none of {annotation}")
        return one_of
    if isinstance(annotation, type) and issubclass(annotation, Message):
        kind = annotation

        def message(value: Any) -> Any:
            if type(value) is list and value and value[0] == kind.op:
                return _build(kind, value)
            raise _wrong(value, annotation)
        return message
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        check_item = _checker(item_type)

        def list_of(value: Any) -> Any:
            if type(value) is list:
                # Decoded data is a fresh list: items of any type are kept as they are.
                return value if check_item is _anything else [check_item(item) for item in value]
            raise _wrong(value, annotation)
        return list_of
    if origin is dict:
        check_key, check_value = (_checker(kind) for kind in typing.get_args(annotation))

        def dict_of(value: Any) -> Any:
            if type(value) is dict:
                if check_value is _anything:  # (arguments by name: only the names need checking)
                    for key in value:
                        check_key(key)
                    return value
                return {check_key(key): check_value(item) for key, item in value.items()}
            raise _wrong(value, annotation)
        return dict_of
    if annotation is float:
        def number(value: Any) -> Any:
            if type(value) in (int, float):
                return float(value)
            raise _wrong(value, annotation)
        return number
    exact = annotation  # None, bool, int, str: the type itself, never a subclass

    def plain(value: Any) -> Any:
        if type(value) is exact:
            return value
        raise _wrong(value, annotation)
    return plain


def _conforms(value: Any, annotation: Any) -> Any:
    """``value`` if it has the type ``annotation`` says (parsing nested messages); else WireError."""
    return _checker(annotation)(value)


def parse(data: Any) -> Message:
    """The message ``data`` (a decoded ``[op, field, ...]`` list) stands for, with every field checked."""
    if type(data) is not list or not data or type(data[0]) is not str:
        raise WireError("a message is not a list that starts with its op")
    kind = MESSAGES.get(data[0])
    if kind is None:
        raise WireError(f"unknown message {data[0]!r:.40}")
    return _build(kind, data)


def _build(kind: type[Message], data: list[Any]) -> Message:
    checks = _shape(kind).checks
    if len(data) - 1 > len(checks):
        raise WireError(f"a {kind.op} message has more than {len(checks)} fields")
    values = [check(value) for check, value in zip(checks, data[1:])]
    try:
        return kind(*values)
    except TypeError:
        raise WireError(f"a {kind.op} message lacks a field") from None


# Every shape made now, at import: a worker imports this before any student code runs, and
# making one later would call typing's functions, which student code can break in its process.
for _kind in MESSAGES.values():
    _shape(_kind)
del _kind
