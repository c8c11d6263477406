"""The wire codec carries plain data only, and decodes hostile bytes into data or an error."""

import pickle
import struct
from typing import Any

import numpy as np
import pytest

from autograder import wire


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**63 + 5, -(2**70), 3.25, float("inf"), complex(1, -2),
    "héllo", b"\x00\xff", [1, [2.5, "x"]], (1, (2, None)), {"a": 1, (1, 2): [3.0]},
])
def test_plain_values_round_trip(value):
    assert wire.decode(wire.encode(value)) == value
    assert type(wire.decode(wire.encode(value))) is type(value)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "uint8", "bool", "complex128", "<U5"])
def test_arrays_round_trip_with_dtype_and_shape(dtype):
    array = np.arange(12).reshape(3, 4).astype(dtype)
    decoded = wire.decode(wire.encode(array))
    assert decoded.dtype == array.dtype and decoded.shape == (3, 4)
    assert np.array_equal(decoded, array)
    assert decoded.flags.writeable


def test_zero_dimensional_arrays_keep_their_shape():
    decoded = wire.decode(wire.encode(np.array(2.5)))
    assert isinstance(decoded, np.ndarray) and decoded.shape == () and decoded == 2.5
    assert np.shape(wire.decode(wire.encode(np.float64(1.0)))) == ()


def test_numpy_scalars_stay_numpy_scalars():
    for scalar in (np.float64(1.5), np.int32(-3), np.complex64(1j)):
        decoded = wire.decode(wire.encode(scalar))
        assert decoded == scalar and decoded.dtype == np.asarray(scalar).dtype
    assert wire.decode(wire.encode(np.bool_(True))) is True


def test_non_contiguous_and_subclass_arrays_travel_as_plain_data():
    class Rigged(np.ndarray):
        def __eq__(self, other):
            return True

    base = np.arange(6.0).reshape(2, 3)
    rigged = base.T.view(Rigged)
    decoded = wire.decode(wire.encode(rigged))
    assert type(decoded) is np.ndarray
    assert np.array_equal(decoded, base.T)


@pytest.mark.parametrize("value", [
    np.array([object()], dtype=object),
    object(),
    iter([1, 2]),
    {1, 2},
    np.zeros(2, dtype=[("a", "f8")]),
])
def test_everything_else_is_refused_with_a_sentence(value):
    with pytest.raises(wire.WireError) as error:
        wire.encode(value)
    assert "cannot be sent" in str(error.value)


def test_subclasses_of_builtins_are_refused():
    class RiggedFloat(float):
        def __eq__(self, other):
            return True

    with pytest.raises(wire.WireError):
        wire.encode(RiggedFloat(1.0))


def test_pickle_bytes_are_not_unpickled():
    payload = pickle.dumps({"x": 1})
    with pytest.raises(wire.WireError):
        wire.decode(payload)


@pytest.mark.parametrize("data", [
    b"", b"Z", b"i\x00", b"l\xff\xff\xff\xff", b"s\x10\x00\x00\x00abc", b"NN",
    b"a\x03<f8\x01" + struct.pack("<QQ", 10, 8) + b"\x00" * 8,     # shape says 10, bytes say 1
    b"a\x03|O8\x01" + struct.pack("<QQ", 1, 8) + b"\x00" * 8,      # object dtype
    b"I\x03\x00\x00\x00abc",                                        # malformed integer
    # Numbers and texts in a list are read in place, with the same checks:
    b"l\x02\x00\x00\x00f" + struct.pack("<d", 1.0) + b"f\x00\x00",   # the second float cut short
    b"t\x01\x00\x00\x00i\x00",                                      # an int cut short
    b"l\x01\x00\x00\x00s\x05\x00\x00\x00ab",                       # a text cut short
    b"l\x01\x00\x00\x00s\x02\x00\x00\x00\xff\xfe",                   # a text that is not UTF-8
    b"l\x01\x00\x00\x00" * (wire.MAX_DEPTH + 1) + b"f" + struct.pack("<d", 1.0),  # a float too deep
    b"l\x01\x00\x00\x00" * (wire.MAX_DEPTH + 1) + b"s\x00\x00\x00\x00",       # a text too deep
    b"l" + struct.pack("<I", wire.MAX_ITEMS + 1) + (b"i" + struct.pack("<q", 7)) * (wire.MAX_ITEMS + 1),
])
def test_malformed_bytes_raise_wire_error(data):
    with pytest.raises(wire.WireError):
        wire.decode(data)


def test_lists_of_numbers_and_texts_decode_as_they_were():
    values = [[1.5, -2, "x", "", 2**63 - 1, -(2**63), None, [0.25, "é"], (3, 4.0)], (1, "two", 3.0)]
    for value in values:
        assert wire.decode(wire.encode(value)) == value
        assert type(wire.decode(wire.encode(value))) is type(value)
    nested: Any = 1.0
    for _ in range(wire.MAX_DEPTH):
        nested = [nested]
    assert wire.decode(wire.encode(nested)) == nested  # the deepest a float may be


def test_a_callbacks_counted_size_is_at_most_sixteen_times_its_encoded_size():
    """The grader counts the data a callback's arguments hold only when the message is large
    enough to hold too much: sound only if the count never exceeds 16 bytes per encoded byte."""
    from autograder.grader.session import _payload_bytes

    values = [[None] * 1000, [True, False] * 500, [[]] * 1000, [""] * 1000, [()] * 1000, {i: None for i in range(500)},
              {"": None}, [1.0] * 1000, [7] * 1000, [np.float64(1.0)] * 100, [1j] * 100, [b""] * 100,
              [np.zeros(0)] * 100, np.zeros(1000), [10**30] * 100, [[None] * 10] * 100, [{}] * 100]
    for value in values:
        assert _payload_bytes(value) <= 16 * len(wire.encode(value)), value


def test_depth_and_integer_size_are_capped():
    nested: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        nested = [nested]
    with pytest.raises(wire.WireError):
        wire.encode(nested)
    with pytest.raises(wire.WireError):
        wire.encode(10 ** (wire.MAX_INT_DIGITS + 10))


def test_callables_become_handles_only_when_registered():
    with pytest.raises(wire.WireError):
        wire.encode(lambda x: x)
    table = []
    encoded = wire.encode([len], lambda function: table.append(function) or len(table))
    assert wire.decode(encoded) == [wire.Handle(1)]
    assert table == [len]


# ------------------------------------------------------------------------------- messages


def test_every_message_crosses_the_wire_and_comes_back_the_same():
    from autograder.wire import messages

    samples = [
        messages.Hello(), messages.Exec("x = 1", "cell"), messages.Describe(["f", "g"]),
        messages.Call("f", [1, np.arange(3.0)], {"h": 0.1}), messages.Call(3, [], {}), messages.Shutdown(),
        messages.Callback(2, [1.5], {}), messages.Reply(ok=True, value={"a": [1, 2]}, stdout="hi", modified=["x"]),
        messages.Reply.failure("ValueError", "no", traceback="  in cell f", not_implemented=True),
        messages.Spawn(messages.WorkerSettings("/tmp/area", "worker-0", ["/usr"], cpu_seconds=5)),
        messages.Status(12), messages.StopWorkers(), messages.TemplateReply(pid=7), messages.TemplateReply(exit=-9),
    ]
    assert set(messages.MESSAGES) >= {sample.op for sample in samples}
    for sample in samples:
        back = messages.parse(wire.decode(wire.encode(sample.to_wire())))
        assert type(back) is type(sample)
        assert repr(back) == repr(sample)


def test_a_message_is_its_op_and_fields_without_trailing_defaults():
    from autograder.wire import messages

    assert messages.Reply(ok=True, value=3.0).to_wire() == ["reply", True, 3.0]
    assert messages.Reply(ok=True).to_wire() == ["reply", True]
    # A value equal to the default but of another type is sent: it would come back as the default.
    assert messages.TemplateReply(exit=0).to_wire() == ["template", False, None, 0]
    assert messages.Notice("output-cut", 0).to_wire() == ["notice", "output-cut"]
    failure = messages.Reply.failure("ValueError", "no")
    assert failure.to_wire() == ["reply", False, None, ["error", "ValueError", "no"]]
    assert messages.parse(failure.to_wire()) == failure


@pytest.mark.parametrize("data, problem", [
    (["exec", 3, "x"], "holds int where str belongs"),
    (["exec", "x"], "lacks a field"),
    (["call", 1.5, [], {}], "none of"),
    (["reply", "yes"], "holds str where bool belongs"),
    (["reply", False, None, ["error", 1]], "holds int where str belongs"),
    (["reply", False, None, ["hello"]], "holds list where ErrorInfo belongs"),
    (["describe", ["a", 2]], "holds int where str belongs"),
    (["spawn", ["settings", "/tmp", "w", [], "1"]], "holds str"),
    (["status", 1, 2], "more than 1 fields"),
    (["rm -rf"], "unknown message"),
    ({"op": "exec", "source": "x", "label": "y"}, "not a list"),
    ([], "not a list"),
])
def test_a_malformed_message_is_a_wire_error_with_a_sentence(data, problem):
    from autograder.wire import messages

    with pytest.raises(wire.WireError, match=problem):
        messages.parse(data)


# ------------------------------------------------------------------------------- the channel


@pytest.mark.parametrize("chatter", [False, True], ids=["a silent peer", "a peer that only sends notices"])
def test_a_request_gives_up_at_its_deadline(chatter):
    """The grader's deadline holds whether the worker sends nothing or keeps sending messages
    that are not the reply; and a request does not give up before it."""
    import socket
    import threading
    import time

    from autograder.wire import Channel, DeadlineExceeded, messages

    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def peer() -> None:
        peer_channel = Channel(theirs)
        give_up = time.monotonic() + 5  # then hang up: a request that ignored its deadline fails, not hangs
        while not stop.wait(0.01) and time.monotonic() < give_up:
            if chatter:
                peer_channel.notify(messages.Notice("output-cut", 1))
        theirs.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        channel = Channel(ours)
        for wait in (0.3, 0.2):  # a second deadline, shorter, on the same socket
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                channel.request(messages.Hello(), started + wait)
            elapsed = time.monotonic() - started
            assert wait <= elapsed < wait + 1.0, elapsed
    finally:
        stop.set()
        thread.join()
        ours.close()
        theirs.close()
