"""Assertions that test cells are written with.

Every check raises :class:`CheckFailure` (an ``AssertionError``) whose message is written for
the student: what was computed, what was expected, and what to look at next.  The checks are
plain NumPy code, so a test cell that uses them runs the same inside a Jupyter kernel (plain
``nbgrader autograde``) and in the autograder's trusted test runner.

Hidden tests draw their inputs from :func:`test_rng`.  Inside the autograder the generator is
seeded from the submission's recorded seed, so a failure can be reproduced with ``--seed``;
in a plain kernel it is seeded afresh on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from contextvars import ContextVar
from typing import Any, Iterator, Mapping, NoReturn

import numpy as np

from autograder.diagnoses import Diagnosis, diagnose

__all__ = [
    "CheckFailure",
    "plot_curves",
    "check_close",
    "check_shape",
    "check_finite",
    "check_scalar",
    "test_rng",
]

# The seed of the submission being graded; None outside the autograder.
_grading_seed: ContextVar[int | None] = ContextVar("grading_seed", default=None)
# Figures the running test cell asked for; None outside the autograder.
_figures: ContextVar[list[dict[str, Any]] | None] = ContextVar("figures", default=None)


class CheckFailure(AssertionError):
    """A failed check: ``str(failure)`` is the message for the student."""

    def __init__(self, message: str, *, diagnosis: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnosis = diagnosis


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Within this block, :func:`test_rng` derives its generators from ``seed``."""
    token = _grading_seed.set(seed)
    try:
        yield
    finally:
        _grading_seed.reset(token)


def test_rng(salt: str) -> np.random.Generator:
    """A random generator for a hidden test's inputs.

    ``salt`` names the test (use the exercise's name) so that each test cell draws its own
    stream whatever order the cells run in.
    """
    seed = _grading_seed.get()
    if seed is None:
        seed = secrets.randbits(63)
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@contextlib.contextmanager
def collecting_figures() -> Iterator[list[dict[str, Any]]]:
    """Within this block, :func:`plot_curves` records its figures into the yielded list."""
    figures: list[dict[str, Any]] = []
    token = _figures.set(figures)
    try:
        yield figures
    finally:
        _figures.reset(token)


def plot_curves(title: str, x: Any, curves: Mapping[str, Any], *, xlog: bool = False,
                ylog: bool = False, xlabel: str = "", ylabel: str = "") -> None:
    """Show the student's numbers against the reference as a picture in the feedback.

    Inside the autograder the figure goes into the student's HTML report; in a notebook it
    is drawn with Matplotlib.  Call it before the check it illustrates.
    """
    figures = _figures.get()
    data = {"title": str(title), "x": np.asarray(x, dtype=float).ravel().tolist(),
            "curves": {str(name): np.asarray(y, dtype=float).ravel().tolist() for name, y in curves.items()},
            "xlog": bool(xlog), "ylog": bool(ylog), "xlabel": str(xlabel), "ylabel": str(ylabel)}
    if figures is not None:
        figures.append(data)
        return
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the course
        return
    _, axes = plt.subplots(figsize=(5, 3.2))
    for name, values in data["curves"].items():
        axes.plot(data["x"], values, marker="o", markersize=3, label=name)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale="log" if xlog else "linear",
             yscale="log" if ylog else "linear")
    axes.legend()
    plt.show()


# pytest would otherwise try to collect test_rng when a test module imports it.
test_rng.__test__ = False  # type: ignore[attr-defined]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size <= 6:
            return np.array2string(value, precision=6, separator=", ")
        return f"an array of shape {value.shape}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.8g}"
    return repr(value)


def _as_numeric_array(value: Any, what: str) -> np.ndarray:
    if value is None:
        raise CheckFailure(
            f"{what} returned None. Did you forget a `return` statement?"
        )
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - any failure means the value is not numeric
        array = None
    if array is None or array.dtype.kind not in "biufc":
        raise CheckFailure(
            f"{what} returned {type(value).__name__} {_describe(value)}; expected a number "
            "or an array of numbers."
        )
    return array


def check_scalar(actual: Any, *, what: str = "your result") -> float:
    """``actual`` is a single real number; returns it as a float."""
    array = _as_numeric_array(actual, what)
    if array.shape != ():
        raise CheckFailure(
            f"{what} returned an array of shape {array.shape}; expected a single number."
        )
    if array.dtype.kind == "c":
        raise CheckFailure(f"{what} returned a complex number; expected a real number.")
    return float(array)


def check_shape(actual: Any, shape: tuple[int, ...], *, what: str = "your result") -> None:
    """``actual`` is an array of exactly ``shape``."""
    array = _as_numeric_array(actual, what)
    if array.shape != tuple(shape):
        raise CheckFailure(
            f"{what} has shape {array.shape}; expected shape {tuple(shape)}."
        )


def check_finite(actual: Any, *, what: str = "your result") -> None:
    """``actual`` contains no NaN or infinity."""
    array = _as_numeric_array(actual, what)
    if not np.all(np.isfinite(array)):
        bad = "NaN" if np.any(np.isnan(array)) else "infinity"
        raise CheckFailure(
            f"{what} contains {bad}. Look for a division by zero, a log of zero or an "
            "overflowing exp."
        )


def check_close(
    actual: Any,
    expected: Any,
    *,
    what: str = "your result",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    hint: str | None = None,
    mistakes: Mapping[str, Any] | None = None,
    sample_size: int | None = None,
) -> None:
    """``actual`` equals ``expected`` elementwise within ``atol + rtol * |expected|``.

    On failure the message names the mistake that explains the student's numbers, when one
    does (see :mod:`autograder.diagnoses`): a generic one (a factor of 2, a sign, a transpose,
    n versus n - 1 when ``sample_size`` is given, ...) or one of ``mistakes``, which maps
    ``"name: hint"`` to the value that mistake would produce.  ``hint``, when given, is appended
    to every failure message.
    """
    expected_array = np.asarray(expected, dtype=float)
    array = _as_numeric_array(actual, what)
    diagnosis = diagnose(array, expected_array, known=mistakes, rtol=rtol, atol=atol,
                         sample_size=sample_size) if not _close_enough(array, expected_array, rtol, atol) else None
    if array.shape != expected_array.shape:
        _fail(f"{what} has shape {array.shape}; expected shape {expected_array.shape}.", diagnosis, hint)
    if array.dtype.kind == "c" and expected_array.dtype.kind != "c":
        raise CheckFailure(f"{what} is complex; expected real numbers.")
    array = array.astype(float)
    ok = _elementwise_ok(array, expected_array, rtol, atol)
    if np.all(ok):
        return
    if array.shape == ():
        message = f"{what} is {_describe(array)}; expected {_describe(expected_array)}."
    else:
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        message = (
            f"{what} is wrong at {np.count_nonzero(~ok)} of {array.size} entries; "
            f"at index {index} it is {_describe(array[index])}, "
            f"expected {_describe(expected_array[index])}."
        )
    _fail(message, diagnosis, hint)


def _elementwise_ok(array: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(array - expected) <= atol + rtol * np.abs(expected)
    return ok & (np.isfinite(array) == np.isfinite(expected))


def _close_enough(array: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    if array.shape != expected.shape or array.dtype.kind == "c":
        return False
    return bool(np.all(_elementwise_ok(array.astype(float), expected, rtol, atol)))


def _fail(message: str, diagnosis: Diagnosis | None, hint: str | None) -> NoReturn:
    if diagnosis is not None:
        message = f"{message} {diagnosis}"
    if hint:
        message = f"{message} {hint}"
    raise CheckFailure(message, diagnosis=diagnosis.name if diagnosis else None)
