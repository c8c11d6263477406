"""Framed, typed request/response over a connected stream socket, in both directions.

:meth:`Channel.request` sends a :class:`~autograder.wire.messages.Message` and waits for the
:class:`~autograder.wire.messages.Reply` with the same id; while it waits it serves requests
from the peer with :attr:`Channel.serve` (a callback during a call), so calls may nest in both
directions.  Callables inside arguments or results travel as handles; the owner keeps them in
a table for the lifetime of the channel.  Every received message is parsed and checked
(:func:`~autograder.wire.messages.parse`) before anyone acts on it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from autograder.wire.codec import MAX_MESSAGE_BYTES, DeadlineExceeded, Handle, PeerGone, WireError, decode, encode
from autograder.wire.messages import ErrorInfo, Message, Notice, Reply, parse

_LENGTH = struct.Struct("<Q")
_READ_SIZE = 1 << 16
_TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO
_DEADLINE_SLACK = 0.01  # seconds a receive may wait past its deadline


class Channel:
    """One end of the connection between the grader and a worker."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._next_id = 1
        self._buffer = bytearray()
        self._callables: dict[int, Callable[..., Any]] = {}
        self._callable_ids: dict[int, int] = {}
        self.make_remote: Callable[[Handle], Any] | None = None
        self.serve: Callable[[Message], Reply] | None = None
        self.notice: Callable[[Notice], None] | None = None
        self.received_bytes = 0  # the size of the last message received
        self._timeout, self._timeout_deadline = 0.0, -1.0  # the receive timeout set, and for which deadline

    # Handles ------------------------------------------------------------------------
    def register_callable(self, function: Callable[..., Any]) -> int:
        key = id(function)
        if key in self._callable_ids:
            return self._callable_ids[key]
        handle_id = len(self._callables) + 1
        self._callables[handle_id] = function
        self._callable_ids[key] = handle_id
        return handle_id

    def local_callable(self, handle_id: int) -> Callable[..., Any]:
        try:
            return self._callables[handle_id]
        except KeyError:
            raise WireError(f"no function with handle {handle_id}") from None

    # Framing ------------------------------------------------------------------------
    def send(self, message: Message, message_id: int) -> None:
        # A frame is [id, op, field, ...]: the message's id, then the message.
        payload = encode([message_id, *message.to_wire()], self.register_callable)
        self._sock.sendall(_LENGTH.pack(len(payload)) + payload)

    def answer(self, reply: Reply, message_id: int) -> None:
        """Send ``reply`` to request ``message_id``.  A value that cannot cross the wire (an
        object, a generator, too large) goes as an ``UnsendableResult`` error instead, with what
        was printed meanwhile: encoding once here is cheaper than checking before."""
        try:
            self.send(reply, message_id)
        except WireError as problem:
            self.send(Reply(ok=False, error=ErrorInfo("UnsendableResult", str(problem)), stdout=reply.stdout,
                            stderr=reply.stderr, modified=reply.modified), message_id)

    def _fill(self, n: int, deadline: float | None) -> bytearray:
        # Reads go through a buffer: one recv usually brings a whole small message (its length
        # and its body), and whatever it brings beyond that stays for the next message.
        buffer = self._buffer
        while len(buffer) < n:
            if deadline is not None:
                self._wait_at_most_until(deadline)
            try:
                chunk = self._sock.recv(min(max(n - len(buffer), _READ_SIZE), 1 << 20))
            except BlockingIOError as error:  # with a deadline: the receive timeout (SO_RCVTIMEO) ran out
                if deadline is None:
                    raise PeerGone(str(error)) from None
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("no answer before the deadline") from None
                continue
            except (ConnectionError, OSError) as error:
                raise PeerGone(str(error)) from None
            if not chunk:
                raise PeerGone("the connection was closed")
            buffer += chunk
        return buffer

    def _wait_at_most_until(self, deadline: float) -> None:
        """Make a blocking receive give up at ``deadline`` (at most _DEADLINE_SLACK later).

        The socket's own receive timeout does it, with no select() before each receive (a
        system call on every message); it is set again only for another deadline or once the
        one set would end more than the slack after this deadline."""
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            raise DeadlineExceeded("no answer before the deadline")
        if deadline != self._timeout_deadline or now + self._timeout > deadline + _DEADLINE_SLACK:
            whole = int(remaining)
            micro = max(int((remaining - whole) * 1e6), 1 if whole == 0 else 0)  # (0 would mean never)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, micro))
            self._timeout, self._timeout_deadline = remaining, deadline

    def receive(self, deadline: float | None = None) -> tuple[Message, int]:
        """The next message from the peer, checked, and its id."""
        (length,) = _LENGTH.unpack_from(self._fill(_LENGTH.size, deadline))
        if length > MAX_MESSAGE_BYTES + 4096:
            raise WireError("a message is larger than the limit")
        end = _LENGTH.size + length
        buffer = self._fill(end, deadline)
        body = bytes(buffer[_LENGTH.size:end])
        del buffer[:end]
        self.received_bytes = length
        data = decode(body, self.make_remote)
        if type(data) is not list or len(data) < 2 or type(data[0]) is not int:
            raise WireError("a message has no id")
        return parse(data[1:]), data[0]

    # Calls --------------------------------------------------------------------------
    def notify(self, message: Notice) -> None:
        """Send a one-way notice to the peer, which is waiting for a reply."""
        self.send(message, self._next_id)
        self._next_id += 1

    def request(self, message: Message, deadline: float | None = None) -> Reply:
        """Send ``message`` and return the peer's reply, serving nested requests meanwhile."""
        request_id = self._next_id
        self._next_id += 1
        self.send(message, request_id)
        while True:
            incoming, incoming_id = self.receive(deadline)
            if isinstance(incoming, Reply):
                if incoming_id != request_id:
                    raise WireError("a reply does not match the request")
                return incoming
            if isinstance(incoming, Notice):  # one-way: no answer
                if self.notice is not None:
                    self.notice(incoming)
                continue
            if self.serve is None:
                raise WireError(f"unexpected request {incoming.op!r}")
            self.answer(self.serve(incoming), incoming_id)
