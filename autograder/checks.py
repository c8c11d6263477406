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

import ast
import contextlib
import functools
import hashlib
import secrets
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, NoReturn

import numpy as np

from autograder.diagnoses import Diagnosis, diagnose

__all__ = [
    "CheckFailure",
    "allow_in_place",
    "check_close",
    "check_close_up_to_sign",
    "check_decreasing_loss",
    "check_dtype",
    "check_eigenpair",
    "check_finite",
    "check_frequency",
    "check_gradient",
    "check_jacobian",
    "check_not_using",
    "check_not_using_operator",
    "check_orthonormal",
    "check_probability_vector",
    "check_raises",
    "check_scalar",
    "check_shape",
    "check_symmetric_psd",
    "plot_curves",
    "test_rng",
]

# The seed of the submission being graded; None outside the autograder.
_grading_seed: ContextVar[int | None] = ContextVar("grading_seed", default=None)
# The student's code cells, by label, while the autograder grades them; None outside it.
_student_cells: ContextVar[dict[str, str] | None] = ContextVar("student_cells", default=None)
# Figures the running test cell asked for; None outside the autograder.
_figures: ContextVar[list[dict[str, Any]] | None] = ContextVar("figures", default=None)
# Whether a student function may change its arguments in place (the test says so).
_in_place_allowed: ContextVar[bool] = ContextVar("in_place_allowed", default=False)


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


@contextlib.contextmanager
def student_code(cells: dict[str, str]) -> Iterator[None]:
    """Within this block, :func:`check_not_using` reads the student's code from ``cells``."""
    token = _student_cells.set(cells)
    try:
        yield
    finally:
        _student_cells.reset(token)


@contextlib.contextmanager
def allow_in_place() -> Iterator[None]:
    """Within this block, student functions may change their arguments in place.

    Outside it, the autograder fails a test whose call of a student function changed an array
    or list it passed in ("changed its argument `x` in place; work on a copy"), since an exercise
    that does not ask for it must leave the caller's data as it was.  In a plain kernel this
    block does nothing.

    Example::

        with allow_in_place():
            shuffle_in_place(values)
    """
    token = _in_place_allowed.set(True)
    try:
        yield
    finally:
        _in_place_allowed.reset(token)


def in_place_allowed() -> bool:
    """Whether the running test allows student functions to change their arguments."""
    return _in_place_allowed.get()


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


# A figure in a report draws what student code returned, so its size is capped: a student
# function that returns ten million points must not make a report of hundreds of megabytes.
MAX_FIGURES_PER_TEST = 4
MAX_CURVES_PER_FIGURE = 6
MAX_POINTS_PER_CURVE = 1_000
_MAX_LABEL_CHARS = 200


def _plotted(values: Any, count: int) -> list[float]:
    """At most ``MAX_POINTS_PER_CURVE`` evenly spaced values of the first ``count``."""
    try:
        array = np.asarray(values, dtype=float).ravel()[:count]
    except (TypeError, ValueError):
        return []
    if array.size > MAX_POINTS_PER_CURVE:
        array = array[np.linspace(0, array.size - 1, MAX_POINTS_PER_CURVE).round().astype(int)]
    return array.tolist()


def plot_curves(title: str, x: Any, curves: Mapping[str, Any], *, xlog: bool = False,
                ylog: bool = False, xlabel: str = "", ylabel: str = "") -> None:
    """Show the student's numbers against the reference as a picture in the feedback.

    Inside the autograder the figure goes into the student's HTML report (at most
    ``MAX_FIGURES_PER_TEST`` figures per test, ``MAX_CURVES_PER_FIGURE`` curves, and
    ``MAX_POINTS_PER_CURVE`` points per curve: longer curves are thinned evenly); in a notebook
    it is drawn with Matplotlib.  Call it before the check it illustrates.

    Example::

        plot_curves("Error against step size", hs, {"yours": errors, "reference": expected},
                    xlog=True, ylog=True, xlabel="h", ylabel="|error|")
    """
    figures = _figures.get()
    if figures is not None:
        if len(figures) >= MAX_FIGURES_PER_TEST:
            return
        xs = np.asarray(x, dtype=float).ravel()
        count = xs.size
        data: dict[str, Any] = {"title": str(title)[:_MAX_LABEL_CHARS], "x": _plotted(xs, count),
                "curves": {str(name)[:_MAX_LABEL_CHARS]: _plotted(y, count)
                           for name, y in list(curves.items())[:MAX_CURVES_PER_FIGURE]},
                "xlog": bool(xlog), "ylog": bool(ylog), "xlabel": str(xlabel)[:_MAX_LABEL_CHARS],
                "ylabel": str(ylabel)[:_MAX_LABEL_CHARS]}
        if count > MAX_POINTS_PER_CURVE:
            data["note"] = f"{MAX_POINTS_PER_CURVE:,} of {count:,} points shown"
        figures.append(data)
        return
    data = {"title": str(title), "x": np.asarray(x, dtype=float).ravel().tolist(),
            "curves": {str(name): np.asarray(y, dtype=float).ravel().tolist() for name, y in curves.items()},
            "xlog": bool(xlog), "ylog": bool(ylog), "xlabel": str(xlabel), "ylabel": str(ylabel)}
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


# A check's known mistakes: "name: hint" -> the value it gives, or a function that returns that mapping.
Mistakes = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def _mistakes(mistakes: Mistakes | None) -> Mapping[str, Any] | None:
    """A check's ``mistakes``: the mapping itself, or what the function that stands for it returns."""
    return mistakes() if callable(mistakes) else mistakes


def check_close(
    actual: Any,
    expected: Any,
    *,
    what: str = "your result",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    hint: str | None = None,
    mistakes: Mistakes | None = None,
    sample_size: int | None = None,
) -> None:
    """``actual`` equals ``expected`` elementwise within ``atol + rtol * |expected|``.

    On failure the message names the mistake that explains the student's numbers, when one
    does (see :mod:`autograder.diagnoses`): a generic one (a factor of 2, a sign, a transpose,
    n versus n - 1 when ``sample_size`` is given, ...) or one of ``mistakes``, which maps
    ``"name: hint"`` to the value that mistake would produce (or is a function of no arguments
    that returns that mapping, called only for a wrong answer: for mistakes that cost more to
    compute than the check).  ``hint``, when given, is appended to every failure message.
    """
    expected_array = np.asarray(expected, dtype=float)
    array = _as_numeric_array(actual, what)
    diagnosis = diagnose(array, expected_array, known=_mistakes(mistakes), rtol=rtol, atol=atol,
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


def check_dtype(actual: Any, kind: str, *, what: str = "your result") -> None:
    """``actual`` is an array of a dtype kind: ``"f"`` float, ``"i"`` integer, ``"b"`` bool."""
    names = {"f": "floating-point numbers", "i": "integers", "b": "booleans", "c": "complex numbers"}
    array = _as_numeric_array(actual, what)
    if array.dtype.kind != kind and not (kind == "i" and array.dtype.kind == "u"):
        raise CheckFailure(
            f"{what} holds {array.dtype} values; expected {names.get(kind, kind)}. "
            + ("Integer division or an integer array can cause this; use floats." if kind == "f" else "")
        )


def _numerical_gradient(f: Any, x: np.ndarray, h: float) -> np.ndarray:
    gradient = np.zeros_like(x, dtype=float)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x, dtype=float)
        step[index] = h
        gradient[index] = (float(f(x + step)) - float(f(x - step))) / (2 * h)
    return gradient


def check_gradient(gradient: Any, f: Any, x: Any, *, what: str = "your gradient", h: float = 1e-6,
                   rtol: float = 1e-4, atol: float = 1e-6, mistakes: Mistakes | None = None) -> None:
    """``gradient`` is the gradient of the scalar function ``f`` at ``x``, compared with central
    differences (so ``f`` must be smooth near ``x``)."""
    point = np.asarray(x, dtype=float)
    reference = _numerical_gradient(f, point, h)
    check_close(gradient, reference, what=what, rtol=rtol, atol=atol, mistakes=mistakes)


def check_jacobian(jacobian: Any, f: Any, x: Any, *, what: str = "your Jacobian", h: float = 1e-6,
                   rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """``jacobian[i, j]`` is the derivative of output i of ``f`` with respect to input j at ``x``."""
    point = np.asarray(x, dtype=float).ravel()
    outputs = np.asarray(f(point), dtype=float).ravel()
    reference = np.zeros((outputs.size, point.size))
    for j in range(point.size):
        step = np.zeros_like(point)
        step[j] = h
        reference[:, j] = (np.asarray(f(point + step), float).ravel() - np.asarray(f(point - step), float).ravel()) / (2 * h)
    check_close(jacobian, reference, what=what, rtol=rtol, atol=atol)


def check_eigenpair(matrix: Any, value: Any, vector: Any, *, what: str = "your eigenpair",
                    rtol: float = 1e-6, atol: float = 1e-8, unit: bool = True) -> None:
    """``matrix @ vector == value * vector``; the vector's sign (and, with ``unit=False``, its
    length) is free, as for any eigenvector."""
    A = np.asarray(matrix, dtype=float)
    lam = check_scalar(value, what=f"the eigenvalue of {what}")
    v = _as_numeric_array(vector, f"the eigenvector of {what}").astype(float).ravel()
    if v.shape != (A.shape[0],):
        raise CheckFailure(f"the eigenvector of {what} has shape {v.shape}; expected ({A.shape[0]},).")
    length = float(np.linalg.norm(v))
    if length < 1e-12:
        raise CheckFailure(f"the eigenvector of {what} is the zero vector; eigenvectors are non-zero by definition.")
    if unit and not np.isclose(length, 1.0, rtol=1e-6):
        raise CheckFailure(f"the eigenvector of {what} has length {length:.6g}; expected a unit vector.",
                           diagnosis="an unnormalised vector")
    residual = float(np.linalg.norm(A @ v - lam * v))
    scale = max(float(np.linalg.norm(A)) * length, 1.0)
    if residual > atol + rtol * scale:
        raise CheckFailure(
            f"{what} is not an eigenpair: |A v - lambda v| = {residual:.3g} (lambda = {lam:.6g}). "
            "Check that the vector has converged and that the eigenvalue belongs to it."
        )


def check_orthonormal(matrix: Any, *, what: str = "your matrix", atol: float = 1e-8) -> None:
    """The columns of ``matrix`` are orthonormal: ``Q.T @ Q`` is the identity."""
    Q = _as_numeric_array(matrix, what).astype(float)
    if Q.ndim != 2:
        raise CheckFailure(f"{what} has shape {Q.shape}; expected a 2-D array.")
    gram = Q.T @ Q
    norms = np.sqrt(np.abs(np.diag(gram)))
    if not np.allclose(norms, 1.0, atol=atol * 10):
        raise CheckFailure(f"the columns of {what} have lengths {np.round(norms, 6)}; expected length 1 each.",
                           diagnosis="an unnormalised vector")
    off = gram - np.diag(np.diag(gram))
    if np.max(np.abs(off), initial=0) > atol * 10:
        i, j = np.unravel_index(np.argmax(np.abs(off)), off.shape)
        raise CheckFailure(f"columns {i} and {j} of {what} are not orthogonal (their dot product is {off[i, j]:.3g}).")


def check_probability_vector(actual: Any, *, what: str = "your distribution", atol: float = 1e-8,
                             axis: int | None = None) -> None:
    """Entries are probabilities (in [0, 1]) that sum to one (along ``axis``, when given)."""
    p = _as_numeric_array(actual, what).astype(float)
    check_finite(p, what=what)
    if np.any(p < -atol):
        raise CheckFailure(f"{what} has a negative entry ({p.min():.6g}); probabilities are never negative.")
    totals = p.sum(axis=axis) if axis is not None else p.sum()
    if not np.allclose(totals, 1.0, atol=max(atol, 1e-9) * max(p.size, 1)):
        shown = _describe(np.asarray(totals))
        raise CheckFailure(f"{what} sums to {shown}; probabilities must sum to one. Divide by the total.",
                           diagnosis="an unnormalised distribution")


def check_symmetric_psd(actual: Any, *, what: str = "your matrix", atol: float = 1e-8) -> None:
    """``actual`` is square, symmetric and positive semi-definite (like a covariance matrix)."""
    M = _as_numeric_array(actual, what).astype(float)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise CheckFailure(f"{what} has shape {M.shape}; expected a square matrix.")
    if not np.allclose(M, M.T, atol=atol * 10, rtol=1e-8):
        raise CheckFailure(f"{what} is not symmetric. A covariance matrix equals its transpose; "
                           "check the order of the product (X.T @ X, not X @ X.T with the wrong shapes).")
    smallest = float(np.linalg.eigvalsh(M).min())
    if smallest < -atol * max(1.0, float(np.abs(M).max())) * 10:
        raise CheckFailure(f"{what} has a negative eigenvalue ({smallest:.3g}), so it is not positive "
                           "semi-definite. Check the centring and the signs.")


def check_decreasing_loss(losses: Any, *, what: str = "your loss curve", window: int = 1,
                          min_decrease: float = 0.0) -> None:
    """The loss decreases overall, and on average over each ``window`` steps (for noisy SGD
    curves use ``window`` > 1)."""
    curve = _as_numeric_array(losses, what).astype(float).ravel()
    if curve.size < 2:
        raise CheckFailure(f"{what} has {curve.size} value(s); expected one loss per step.")
    check_finite(curve, what=what)
    if window > 1 and curve.size >= 2 * window:
        means = np.convolve(curve, np.ones(window) / window, mode="valid")[::window]
    else:
        means = curve
    if not means[-1] < means[0] - min_decrease:
        raise CheckFailure(f"{what} does not decrease: it starts at {curve[0]:.6g} and ends at {curve[-1]:.6g}. "
                           "Check the sign of the update (step against the gradient) and the learning rate.")
    rises = np.flatnonzero(np.diff(means) > 1e-12 * np.abs(means[:-1]).max())
    if window == 1 and rises.size:
        step = int(rises[0])
        raise CheckFailure(f"{what} goes up at step {step + 1} ({means[step]:.6g} -> {means[step + 1]:.6g}). "
                           "With a small enough learning rate, gradient descent never increases the loss.")


def _source_of(function: Any) -> str:
    """The code of a student's function and of what it uses: every top-level statement, in any
    of the student's cells, that binds the function's name or a name it mentions (definitions,
    later redefinitions, assignments, imports), followed transitively."""
    cells = _student_cells.get()
    name = getattr(function, "__name__", "")
    if cells is None:
        import inspect

        try:
            return inspect.getsource(function)
        except (OSError, TypeError):
            return ""
    binders = _binders(tuple(cells.values()))
    wanted, seen, chosen = [name], set(), []
    while wanted:
        current = wanted.pop()
        if current in seen:
            continue
        seen.add(current)
        for segment in binders.get(current, ()):
            if segment not in chosen:
                chosen.append(segment)
                wanted += _names_in(segment)
    return "\n\n".join(chosen)


# A test cell reads the same student cells for each function it checks, and a notebook's test
# cells check several: what the cells bind is worked out once per notebook, not once per check.
@functools.lru_cache(maxsize=8)
def _binders(sources: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """For each name bound at the top level of the cells ``sources``, the statements that bind it."""
    from autograder.notebook import top_level_names

    binders: dict[str, list[str]] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            segment = ast.get_source_segment(source, node) or ""
            for bound in top_level_names(segment):
                binders.setdefault(bound, []).append(segment)
    return {name: tuple(segments) for name, segments in binders.items()}


@functools.lru_cache(maxsize=256)
def _names_in(segment: str) -> tuple[str, ...]:
    return tuple(node.id for node in ast.walk(ast.parse(segment)) if isinstance(node, ast.Name))


def _dotted(node: ast.AST) -> str:
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            parts.append(node.args[1].value)
            node = node.args[0]
        else:
            break
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> dict[str, str]:
    """What names stand for: ``import numpy.linalg as la`` makes ``la`` mean ``numpy.linalg``,
    ``solve = np.linalg.solve`` makes ``solve`` mean ``np.linalg.solve``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _dotted(node.value)
            if value and value != node.targets[0].id:
                aliases[node.targets[0].id] = value
    return aliases


def _expand(path: str, aliases: dict[str, str]) -> str:
    for _ in range(8):  # aliases of aliases, a few levels deep
        head, _, rest = path.partition(".")
        if head not in aliases:
            break
        path = aliases[head] + (f".{rest}" if rest else "")
    return path


@functools.lru_cache(maxsize=64)
def _used_paths(source: str) -> frozenset[str]:
    """The dotted names ``source`` uses, aliases expanded (nothing when it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    aliases = _aliases(tree)
    # The student's own functions (their bodies are read here too): calling a helper named like
    # the library routine, such as their own `dot` from an earlier exercise, is not a use of it.
    own = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Call, ast.Name)):
            dotted = _dotted(node)
            if dotted and not (dotted in own and dotted not in aliases):
                used.add(_expand(dotted, aliases))
        elif isinstance(node, ast.ImportFrom) and node.module:
            used |= {f"{node.module}.{alias.name}" for alias in node.names}
    return frozenset(used)


def check_not_using(function: Any, *forbidden: str, what: str | None = None) -> None:
    """The student's ``function`` (and the helpers it calls) does not use any of ``forbidden``,
    given as dotted names such as ``"linalg.eig"`` or ``"linalg.eigh"``.

    This reads the student's code (following import and assignment aliases, ``getattr`` with a
    constant name, and redefinitions in later cells), so it catches the uses a student makes when
    they reach for the library function; it is a hint, not a guard.  A test that forbids a
    library routine must also check behaviour the routine cannot fake (the iterate after exactly
    ``num_iter`` steps, an intermediate result it does not expose, the number of calls of a
    function the test passes in).

    Example::

        check_not_using(power_iteration, "linalg.eig", "linalg.eigh")
    """
    name = getattr(function, "__name__", "your function")
    used = _used_paths(_source_of(function))
    for banned in forbidden:
        if any(path == banned or path.endswith("." + banned) for path in used):
            raise CheckFailure(
                f"{what or name} uses {banned}. This exercise asks you to implement it yourself; "
                f"{banned} is fine for checking your answer in a separate cell, not inside {name}."
            )


_BINARY_OPERATORS: dict[str, type[ast.operator]] = {
    "@": ast.MatMult, "*": ast.Mult, "/": ast.Div, "//": ast.FloorDiv, "%": ast.Mod, "**": ast.Pow,
    "+": ast.Add, "-": ast.Sub,
}


def check_not_using_operator(function: Any, *operators: str, what: str | None = None) -> None:
    """The student's ``function`` (and the helpers it calls) does not use any of the binary
    ``operators``, given as symbols such as ``"@"`` (also as ``@=``).

    The operator counterpart of :func:`check_not_using`, which sees only names: ``A @ B`` is the
    shortcut a student reaches for when an exercise asks for a matrix product with loops.  It reads
    the student's code, so it is a teaching aid, not a security boundary.

    Example::

        check_not_using(matmul, "dot", "matmul", "einsum")
        check_not_using_operator(matmul, "@")
    """
    unknown = [symbol for symbol in operators if symbol not in _BINARY_OPERATORS]
    if unknown:
        raise ValueError(f"unknown operators {unknown}; known: {sorted(_BINARY_OPERATORS)}")
    name = getattr(function, "__name__", "your function")
    try:
        # Dedented: in a kernel, a function defined inside another one comes indented.
        tree = ast.parse(textwrap.dedent(_source_of(function)))
    except SyntaxError:
        return
    used = {type(node.op) for node in ast.walk(tree) if isinstance(node, (ast.BinOp, ast.AugAssign))}
    for symbol in operators:
        if _BINARY_OPERATORS[symbol] in used:
            raise CheckFailure(
                f"{what or name} uses the operator {symbol}. This exercise asks you to compute it yourself; "
                f"{symbol} is fine for checking your answer in a separate cell, not inside {name}."
            )

def _subclass_names(kind: type[BaseException]) -> set[str]:
    names, pending = set(), [kind]
    while pending:
        current = pending.pop()
        names.add(current.__name__)
        pending += current.__subclasses__()
    return names


def check_raises(expected: type[BaseException] | str, function: Any, *args: Any, what: str | None = None,
                 hint: str | None = None, **kwargs: Any) -> None:
    """``function(*args, **kwargs)`` raises ``expected`` (a class such as ``ValueError``, or its
    name), or a subclass of it.

    A student's function runs in the worker, and its exception reaches the test by the name of its
    type, so the type is matched by name (with the names of its subclasses), in the grader and in a
    plain kernel alike.  An exercise not answered yet is reported as such.  ``hint`` is appended to
    the failure message.

    Example::

        check_raises(ValueError, angle, np.zeros(3), np.ones(3),
                     what="angle(np.zeros(3), np.ones(3))", hint="The angle with a zero vector is undefined.")
    """
    name = getattr(function, "__name__", "your function")
    wanted = expected if isinstance(expected, str) else expected.__name__
    accepted = {wanted} if isinstance(expected, str) else _subclass_names(expected)
    call = what or f"{name}(...)"
    try:
        value = function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - which exception it was is the point of the check
        if type(error).__name__ == "StudentError":
            raised, message, unanswered = str(getattr(error, "type", "")), str(getattr(error, "message", "")), \
                bool(getattr(error, "not_implemented", False))
        else:
            raised, message, unanswered = type(error).__name__, str(error), isinstance(error, NotImplementedError)
        if unanswered and wanted != "NotImplementedError":
            raise CheckFailure(f"{name} is not implemented yet: it still raises NotImplementedError.") from None
        if raised in accepted:
            return
        detail = f" ({message[:200]})" if message else ""
        _fail(f"{call} raised {raised}{detail}; expected {wanted}.", None, hint)
    _fail(f"{call} returned {_describe(value)}; expected it to raise {wanted}.", None, hint)
def check_close_up_to_sign(actual: Any, expected: Any, *, vectors: str = "rows", what: str = "your vectors",
                           rtol: float = 1e-6, atol: float = 1e-9, hint: str | None = None,
                           mistakes: Mistakes | None = None) -> None:
    """``actual`` equals ``expected`` up to the sign of each vector, as eigenvectors, singular
    vectors and principal components are only determined up to sign.

    The vectors are the rows (``vectors="rows"``) or the columns (``vectors="columns"``) of a
    2-D array, or a whole 1-D array.  Each vector of ``actual``, and of each value in
    ``mistakes``, is flipped where that makes it point the way the matching vector of
    ``expected`` (of ``actual``, for a mistake) points; then :func:`check_close` compares, with
    its diagnoses.  Tied eigenvalues leave more freedom than a sign: compare such vectors as a
    subspace (their projector) instead.

    Example::

        check_close_up_to_sign(np.array([[-0.6, -0.8], [0.8, -0.6]]), [[0.6, 0.8], [0.8, -0.6]],
                               what="the principal components")   # passes
    """
    if vectors not in ("rows", "columns"):
        raise ValueError(f"vectors must be 'rows' or 'columns', not {vectors!r}")
    reference = np.asarray(expected, dtype=float)
    array = _as_numeric_array(actual, what)

    def pointing_like(value: np.ndarray, direction: np.ndarray) -> np.ndarray:
        if value.shape != direction.shape or value.ndim not in (1, 2) or value.dtype.kind not in "biuf":
            return value
        value = value.astype(float)
        with np.errstate(invalid="ignore", over="ignore"):
            if value.ndim == 1:
                return -value if float(np.sum(value * direction)) < 0 else value
            axis = 1 if vectors == "rows" else 0
            dots = np.sum(value * direction, axis=axis, keepdims=True)
        return value * np.where(dots < 0, -1.0, 1.0)

    aligned = pointing_like(array, reference)

    def known() -> dict[str, Any]:
        aligned_mistakes = {}
        for name, value in (_mistakes(mistakes) or {}).items():
            candidate = np.asarray(value)
            aligned_mistakes[name] = pointing_like(candidate, aligned) if candidate.dtype.kind in "biuf" else candidate
        return aligned_mistakes

    check_close(aligned, reference, what=what, rtol=rtol, atol=atol, hint=hint, mistakes=known)
def _binomial_tails(count: int, trials: int, probability: float) -> tuple[float, float]:
    """``P(X <= count)`` and ``P(X >= count)`` for ``X ~ Binomial(trials, probability)``."""
    if probability <= 0.0:
        return 1.0, float(count <= 0)
    if probability >= 1.0:
        return float(count >= trials), 1.0
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, trials + 1)))])
    k = np.arange(trials + 1)
    log_pmf = (log_factorial[trials] - log_factorial[k] - log_factorial[trials - k]
               + k * np.log(probability) + (trials - k) * np.log1p(-probability))
    pmf = np.exp(log_pmf)
    return float(min(1.0, pmf[:count + 1].sum())), float(min(1.0, pmf[count:].sum()))


def _plausible(count: int, trials: int, probability: Any, false_failure: float) -> bool:
    low, high = (probability, probability) if np.ndim(probability) == 0 else probability
    return (_binomial_tails(count, trials, float(low))[0] > false_failure / 2
            and _binomial_tails(count, trials, float(high))[1] > false_failure / 2)


def check_frequency(count: Any, trials: int, probability: Any, *, what: str = "your count",
                    false_failure: float = 1e-6, mistakes: Mistakes | None = None,
                    hint: str | None = None) -> None:
    """``count`` successes in ``trials`` independent trials is plausible when each trial succeeds
    with ``probability``: a number, or a pair ``(low, high)`` when only bounds are known.

    The check fails only in the tails of the binomial distribution: when ``P(X <= count) <=
    false_failure / 2`` under ``low``, or ``P(X >= count) <= false_failure / 2`` under ``high``.
    So a correct simulation, whose success probability lies in ``[low, high]``, fails with
    probability at most ``false_failure``, whatever the number of trials.  ``mistakes`` maps
    ``"name: hint"`` to the probability (or pair) a mistake would give; the message names the
    mistake under which ``count`` is plausible and least far in a tail.  For example, 61 null data sets in 1000
    rejected at level 0.05 is plausible, 100 is not, and the message names a mistake whose
    level is 0.1::

        check_frequency(61, 1000, 0.05, what="the number of rejections")
        check_frequency(100, 1000, 0.05, what="the number of rejections",
                        mistakes={"a one-sided test: ...": 0.1})  # raises CheckFailure
    """
    value = check_scalar(count, what=what)
    trials = int(trials)
    if value != round(value) or not 0 <= value <= trials:
        raise CheckFailure(f"{what} is {_describe(value)}; expected a whole number between 0 and {trials}.")
    number = int(round(value))  # noqa: RUF046 - a numpy float rounds to a numpy float
    if _plausible(number, trials, probability, false_failure):
        return
    low, high = (probability, probability) if np.ndim(probability) == 0 else probability
    expected = (f"about {100 * float(low):.3g}%" if low == high
                else f"between {100 * float(low):.3g}% and {100 * float(high):.3g}%")
    message = (f"{what} is {number} of {trials} ({100 * number / trials:.3g}%); the correct procedure gives "
               f"{expected}, and a count this far off happens by chance with probability below {false_failure:g}.")
    diagnosis, best = None, -np.inf
    for description, alternative in (_mistakes(mistakes) or {}).items():
        if not _plausible(number, trials, alternative, false_failure):
            continue
        # Among the plausible mistakes, the one under which this count is most likely.
        a_low, a_high = (alternative, alternative) if np.ndim(alternative) == 0 else alternative
        rate = min(max(number / trials, float(a_low)), float(a_high))
        likelihood = _binomial_tails(number, trials, rate)
        score = min(likelihood)  # P(X <= count) and P(X >= count): the smaller is the tail it sits in
        if score > best:
            name, _, advice = description.partition(": ")
            diagnosis, best = Diagnosis(name, advice or "compare your procedure with the one in the explanation."), score
    _fail(message, diagnosis, hint)


# ------------------------------------------------------------------ in a student's Jupyter kernel

PASSED_LINE = ("✓ The visible checks in this cell passed. Hidden tests on other inputs run when you press "
               "Check or hand the notebook in.")


def _calls_a_check(source: str) -> bool:
    """Whether a cell tests something: it calls a check (ours, or a helper such as ``_check_kind``
    that a test cell defines) or asserts."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = _dotted(node.func).rpartition(".")[2]
            if name in _CHECK_NAMES or name.lstrip("_").startswith("check_"):
                return True
    return False


_CHECK_NAMES = frozenset(name for name in __all__ if name.startswith("check_"))


def _failure_lines(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    """A failed check in a kernel: the sentence for the student, not a traceback through this module."""
    lines = [f"\x1b[31m✗ {value}\x1b[0m"]
    diagnosis = getattr(value, "diagnosis", None)
    if diagnosis and diagnosis not in str(value):
        lines.append(f"Likely mistake: {diagnosis}")
    # IPython leaves showing it to the handler; shown as an error, so the cell still fails.
    shell._showtraceback(etype, value, lines)
    return lines


def _after_cell(result: Any) -> None:
    info = getattr(result, "info", None)
    if getattr(result, "success", False) and info is not None and _calls_a_check(info.raw_cell or ""):
        print(PASSED_LINE)


def install_kernel_feedback() -> bool:
    """In a Jupyter kernel (not in the autograder): a test cell that passes prints one line, and
    a failed check shows its sentence without a traceback.  Returns whether it was installed."""
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython.core.interactiveshell import InteractiveShell

    if not InteractiveShell.initialized():
        return False
    shell = InteractiveShell.instance()
    if id(shell) in _feedback_installed:
        return True
    shell.set_custom_exc((CheckFailure,), _failure_lines)
    shell.events.register("post_run_cell", _after_cell)
    _feedback_installed.add(id(shell))
    return True


_feedback_installed: set[int] = set()


install_kernel_feedback()
