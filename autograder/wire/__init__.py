"""The wire between the trusted grader and the untrusted worker: the only code both sides share.

* :mod:`~autograder.wire.codec`: plain data to bytes and back (no pickle, no objects), and
  :class:`Handle`, a reference to a callable that stays with its owner;
* :mod:`~autograder.wire.messages`: every message the two sides send, one dataclass each,
  checked field by field on receipt;
* :mod:`~autograder.wire.channel`: framed request/response over a socket, re-entrant so that
  a call may trigger callbacks the other way before it returns.
"""

from autograder.wire.channel import Channel
from autograder.wire.codec import (MAX_DEPTH, MAX_INT_DIGITS, MAX_ITEMS, MAX_MESSAGE_BYTES, DeadlineExceeded, Handle,
                                   PeerGone, WireError, decode, describe_type, encode)

__all__ = ["Channel", "DeadlineExceeded", "Handle", "MAX_DEPTH", "MAX_INT_DIGITS", "MAX_ITEMS", "MAX_MESSAGE_BYTES",
           "PeerGone", "WireError", "decode", "describe_type", "encode"]
