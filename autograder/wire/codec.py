"""The codec for *plain data*, the only kind of value that crosses between grader and worker.

None, bools, ints, floats, complex numbers, strings, bytes, NumPy arrays and scalars of
numeric, bool or string dtype, and lists, tuples and dicts of these.  Nothing else can be
encoded, and decoding never builds anything else: no pickle, no object arrays, no user
classes, so bytes from a hostile worker can only ever become data.  :class:`Handle` is a
reference to a callable that stays on the side that owns it.

Every size is capped; a violation raises :class:`WireError` with a sentence that says what
was wrong.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# One message either way: enough for any array a problem set asks for (a 2,000 x 2,000 matrix
# of floats), small enough that the trusted side's memory stays bounded whatever arrives.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 32
MAX_ITEMS = 1_000_000
MAX_INT_DIGITS = 4000
_ALLOWED_KINDS = "biufcUS"

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
# The one-byte tags, as ``bytes[i]`` gives them.
(_TAG_NONE, _TAG_TRUE, _TAG_FALSE, _TAG_INT, _TAG_BIG_INT, _TAG_FLOAT, _TAG_COMPLEX, _TAG_TEXT, _TAG_BYTES,
 _TAG_LIST, _TAG_TUPLE, _TAG_DICT, _TAG_ARRAY, _TAG_SCALAR, _TAG_HANDLE) = b"NTFiIfcsbltdagh"


class WireError(Exception):
    """Data that cannot cross the boundary, or a malformed message."""


class PeerGone(Exception):
    """The other side closed the connection or stopped answering in time."""


class DeadlineExceeded(PeerGone):
    """The other side did not answer before the deadline."""


@dataclass(frozen=True)
class Handle:
    """A reference to a callable owned by the other side of the channel."""

    id: int


# ----------------------------------------------------------------------------- encoding


def describe_type(value: Any) -> str:
    """A short, student-readable name for the type of ``value``."""
    if isinstance(value, np.ndarray):
        return f"a NumPy array of dtype {value.dtype}"
    article = "an" if type(value).__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {type(value).__name__}"


_TAGGED_F64 = struct.Struct("<cd")
_TAGGED_I64 = struct.Struct("<cq")
_TAGGED_U32 = struct.Struct("<cI")
_TAGGED_U64 = struct.Struct("<cQ")
_TAGGED_C128 = struct.Struct("<cdd")


class _Encoder:
    # On the path of every call and callback: one method call per value, and the size and item
    # caps checked where they can grow (texts, bytes, arrays, containers), not on every number.
    def __init__(self, register_callable: Callable[[Callable[..., Any]], int] | None) -> None:
        self._out = bytearray()
        self._register = register_callable
        self._items = 1  # the top-level value

    def encode(self, value: Any, depth: int = 0) -> None:
        out = self._out
        kind = type(value)
        if kind is float:
            out += _TAGGED_F64.pack(b"f", value)
        elif kind is str:
            raw = value.encode("utf-8", "surrogatepass")
            out += _TAGGED_U32.pack(b"s", len(raw))
            out += raw
            self._check_size()
        elif value is None:
            out += b"N"
        elif kind is bool or kind is np.bool_:
            out += b"T" if value else b"F"
        elif kind is list or kind is tuple or kind is dict:
            self._container(value, kind, depth)
        elif isinstance(value, np.generic):
            self._array(np.asarray(value), b"g")
        elif kind is int:
            if -(2**63) <= value < 2**63:
                out += _TAGGED_I64.pack(b"i", value)
            else:
                digits = str(value)
                if len(digits) > MAX_INT_DIGITS:
                    raise WireError(f"an integer has more than {MAX_INT_DIGITS} digits")
                out += _TAGGED_U32.pack(b"I", len(digits))
                out += digits.encode("ascii")
        elif kind is complex:
            out += _TAGGED_C128.pack(b"c", value.real, value.imag)
        elif kind is bytes:
            out += _TAGGED_U32.pack(b"b", len(value))
            out += value
            self._check_size()
        elif isinstance(value, np.ndarray):
            self._array(value, b"a")
        elif kind is Handle:
            out += _TAGGED_U64.pack(b"h", value.id)
        elif callable(value) and self._register is not None:
            out += _TAGGED_U64.pack(b"h", self._register(value))
        else:
            raise WireError(
                f"{describe_type(value)} cannot be sent; only numbers, strings, "
                "NumPy arrays and lists, tuples or dicts of these can"
            )

    def _container(self, value: Any, kind: type, depth: int) -> None:
        if depth > MAX_DEPTH or (value and depth >= MAX_DEPTH):  # the container, or its items, too deep
            raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep")
        count = len(value)
        self._items += 2 * count if kind is dict else count
        if self._items > MAX_ITEMS:
            raise WireError(f"the value has more than {MAX_ITEMS} items")
        encode, inner, out = self.encode, depth + 1, self._out
        if kind is dict:
            out += _TAGGED_U32.pack(b"d", count)
            for key, item in value.items():
                encode(key, inner)
                encode(item, inner)
        else:
            out += _TAGGED_U32.pack(b"l" if kind is list else b"t", count)
            for item in value:
                # The commonest items, written here (as encode would).
                item_kind = type(item)
                if item_kind is float:
                    out += _TAGGED_F64.pack(b"f", item)
                elif item_kind is int and -(2**63) <= item < 2**63:
                    out += _TAGGED_I64.pack(b"i", item)
                else:
                    encode(item, inner)
        if count:
            self._check_size()

    def _check_size(self) -> None:
        if len(self._out) > MAX_MESSAGE_BYTES:
            raise WireError(f"the value is larger than {MAX_MESSAGE_BYTES // 2**20} MiB")

    def _array(self, array: np.ndarray, tag: bytes) -> None:
        # A subclass of ndarray travels as its plain data; its methods stay behind.
        array = array.view(np.ndarray)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
        if array.dtype.kind not in _ALLOWED_KINDS or array.dtype.fields is not None:
            raise WireError(
                f"a NumPy array of dtype {array.dtype} cannot be sent; use numbers"
            )
        if array.nbytes > MAX_MESSAGE_BYTES:
            raise WireError(f"an array is larger than {MAX_MESSAGE_BYTES // 2**20} MiB")
        dtype = array.dtype.str.encode("ascii")
        out = self._out
        out += tag + _U8.pack(len(dtype)) + dtype + _U8.pack(array.ndim)
        for dim in array.shape:
            out += _U64.pack(dim)
        out += _U64.pack(array.nbytes)
        out += array.tobytes()
        self._check_size()

    def result(self) -> bytes:
        return bytes(self._out)


def encode(value: Any, register_callable: Callable[[Callable[..., Any]], int] | None = None) -> bytes:
    """Encode plain data; callables become handles when ``register_callable`` is given."""
    encoder = _Encoder(register_callable)
    encoder.encode(value)
    return encoder.result()


_DTYPES: dict[bytes, np.dtype] = {}  # dtype names already checked, and their dtypes


class _Decoder:
    # Every read is bounds-checked; numbers, the commonest values, are read in place, since this
    # is on the path of every call.
    def __init__(self, data: bytes, make_remote: Callable[[Handle], Any] | None) -> None:
        self._data = bytes(data)
        self._end = len(self._data)
        self._pos = 0
        self._make_remote = make_remote
        self._items = 0

    def _take(self, n: int) -> bytes:
        start = self._pos
        end = start + n
        if n < 0 or end > self._end:
            raise WireError("a message ended early")
        self._pos = end
        return self._data[start:end]

    def _unpack(self, fmt: struct.Struct) -> Any:
        start = self._pos
        end = start + fmt.size
        if end > self._end:
            raise WireError("a message ended early")
        self._pos = end
        return fmt.unpack_from(self._data, start)

    def decode(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WireError("a message is nested too deeply")
        self._items += 1
        if self._items > MAX_ITEMS:
            raise WireError("a message has too many items")
        pos = self._pos
        if pos >= self._end:
            raise WireError("a message ended early")
        tag = self._data[pos]  # one byte, as an int
        if tag == _TAG_FLOAT or tag == _TAG_INT:  # the commonest values: read in place
            if pos + 9 > self._end:
                raise WireError("a message ended early")
            self._pos = pos + 9
            return (_F64 if tag == _TAG_FLOAT else _I64).unpack_from(self._data, pos + 1)[0]
        self._pos = pos + 1
        if tag == _TAG_TEXT:
            return self._text()
        if tag == _TAG_NONE:
            return None
        if tag == _TAG_TRUE:
            return True
        if tag == _TAG_FALSE:
            return False
        if tag == _TAG_LIST or tag == _TAG_TUPLE:
            (count,) = self._unpack(_U32)
            items = self._items_of(count, depth + 1)
            return items if tag == _TAG_LIST else tuple(items)
        if tag == _TAG_DICT:
            (count,) = self._unpack(_U32)
            result = {}
            for _ in range(count):
                key = self.decode(depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise WireError("a message has a dict key that is not hashable") from None
                result[key] = self.decode(depth + 1)
            return result
        if tag == _TAG_BIG_INT:
            digits = self._text()
            if len(digits) > MAX_INT_DIGITS or not digits.lstrip("-").isdigit():
                raise WireError("a message has a malformed integer")
            return int(digits)
        if tag == _TAG_COMPLEX:
            real, imag = self._unpack(_C128)
            return complex(real, imag)
        if tag == _TAG_BYTES:
            (length,) = self._unpack(_U32)
            return self._take(length)
        if tag == _TAG_ARRAY or tag == _TAG_SCALAR:
            array = self._array()
            return array[()] if tag == _TAG_SCALAR else array
        if tag == _TAG_HANDLE:
            handle = Handle(self._unpack(_U64)[0])
            return self._make_remote(handle) if self._make_remote else handle
        raise WireError(f"a message has an unknown tag {bytes([tag])!r}")

    def _items_of(self, count: int, depth: int) -> list[Any]:
        """The ``count`` items of a list or tuple at ``depth``: numbers and texts, the commonest,
        read here (with the checks decode makes), anything else by decode."""
        decode = self.decode
        if depth > MAX_DEPTH:  # decode raises for the first item
            return [decode(depth) for _ in range(count)]
        items: list[Any] = []
        data, end, append = self._data, self._end, items.append
        for _ in range(count):
            pos = self._pos
            tag = data[pos] if pos < end else -1
            if tag != _TAG_FLOAT and tag != _TAG_INT and tag != _TAG_TEXT:
                append(decode(depth))
                continue
            self._items += 1
            if self._items > MAX_ITEMS:
                raise WireError("a message has too many items")
            if tag == _TAG_TEXT:
                self._pos = pos + 1
                append(self._text())
            elif pos + 9 > end:
                raise WireError("a message ended early")
            else:
                self._pos = pos + 9
                append((_F64 if tag == _TAG_FLOAT else _I64).unpack_from(data, pos + 1)[0])
        return items

    def _text(self) -> str:
        (length,) = self._unpack(_U32)
        try:
            return str(self._take(length), "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise WireError("a message has a text that is not UTF-8") from None

    def _array(self) -> np.ndarray:
        (dtype_len,) = self._unpack(_U8)
        name = self._take(dtype_len)
        dtype = _DTYPES.get(name)
        if dtype is None:
            try:
                dtype = np.dtype(name.decode("ascii"))
            except (TypeError, ValueError, UnicodeDecodeError):
                raise WireError("a message has an array of unknown dtype") from None
            if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.hasobject:
                raise WireError(f"a message has an array of forbidden dtype {dtype}")
            if len(_DTYPES) < 64:  # the few every problem set uses; a flood of odd ones is not kept
                _DTYPES[name] = dtype
        (ndim,) = self._unpack(_U8)
        if ndim > 32:
            raise WireError("a message has an array with too many dimensions")
        shape = tuple(self._unpack(_U64)[0] for _ in range(ndim))
        (nbytes,) = self._unpack(_U64)
        if nbytes > MAX_MESSAGE_BYTES or math.prod(shape) * dtype.itemsize != nbytes:
            raise WireError("a message has an array whose size does not match its shape")
        start = self._pos
        if start + nbytes > self._end:
            raise WireError("a message ended early")
        self._pos = start + nbytes
        return np.frombuffer(memoryview(self._data)[start:start + nbytes], dtype=dtype).reshape(shape).copy()

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise WireError("a message has trailing bytes")


def decode(data: bytes, make_remote: Callable[[Handle], Any] | None = None) -> Any:
    """Decode bytes made by :func:`encode`; handles become ``make_remote(handle)``."""
    decoder = _Decoder(data, make_remote)
    value = decoder.decode()
    decoder.finish()
    return value


