"""Naming the mathematical mistake behind a wrong answer.

A diagnosis is a claim about the student's numbers, so it is made only when a known mistake
reproduces them: ``actual`` matches ``expected`` transformed the way the mistake transforms it
(a factor, a sign, a transpose, degrees for radians, ...), or matches an alternative answer the
test computed for a specific mistake (the forward difference, the derivative without its inner
factor, ...).  When nothing fits, there is no diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Diagnosis:
    """A named mistake and a sentence that teaches what to change."""

    name: str
    hint: str

    def __str__(self) -> str:
        return f"This looks like {self.name}: {self.hint}"


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    if a.shape != b.shape:
        return False
    with np.errstate(all="ignore"):
        return bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b))
                    and np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))


def _as_float(value: Any) -> np.ndarray | None:
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - not numeric, nothing to diagnose
        return None
    if array.dtype.kind not in "biuf":
        return None
    return array.astype(float)


def _significant(expected: np.ndarray, atol: float) -> bool:
    """A transformation can only be told apart from the truth where the truth is not ~0."""
    return bool(np.any(np.abs(expected) > max(atol, 1e-12) * 10))


_FACTORS: tuple[tuple[float, str, str], ...] = (
    (2.0, "a result twice too large",
     "your answer is exactly 2 times the correct one. Look for a factor of 2 you added or "
     "forgot to divide by (for example 2h where h belongs, or a derivative of x**2 taken twice)."),
    (0.5, "a result half as large as it should be",
     "your answer is exactly half the correct one. Look for a missing factor of 2 "
     "(the 2 in 2h of a central difference, or in the derivative of x**2)."),
    (math.pi / 180, "degrees where radians are needed",
     "your answer is the correct one times pi/180. NumPy's trigonometric functions take radians; "
     "convert with np.deg2rad or not at all."),
    (180 / math.pi, "radians converted as if they were degrees",
     "your answer is the correct one times 180/pi. The input is already in radians."),
)


def _generic(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float,
             sample_size: int | None) -> Diagnosis | None:
    if actual.shape == expected.shape and _significant(expected, atol):
        if _close(actual, -expected, rtol, atol):
            return Diagnosis("a sign error", "your answer has the right size but the opposite sign. "
                                             "Check the sign of each term (and of every step or update).")
        for factor, name, hint in _FACTORS:
            if _close(actual, factor * expected, rtol, atol):
                return Diagnosis(name, hint)
        if sample_size and sample_size > 1:
            n = sample_size
            if _close(actual, expected * n / (n - 1), rtol, atol):
                return Diagnosis("dividing by n - 1 where n is asked",
                                 f"your answer is the correct one times n/(n-1) with n = {n}. "
                                 "This estimate divides by n (the maximum-likelihood, biased version).")
            if _close(actual, expected * (n - 1) / n, rtol, atol):
                return Diagnosis("dividing by n where n - 1 is asked",
                                 f"your answer is the correct one times (n-1)/n with n = {n}. "
                                 "The unbiased estimate divides by n - 1.")
    if actual.ndim == 2 and actual.shape == expected.shape[::-1] and _close(actual.T, expected, rtol, atol):
        return Diagnosis("a transposed result", "your answer is the transpose of the correct one. "
                                                "Check the order of a matrix product and which axis is which.")
    if (actual.ndim == 2 and expected.ndim == 2 and actual.shape == expected.shape
            and actual.shape[0] == actual.shape[1] and not _close(expected, expected.T, rtol, atol)
            and _close(actual.T, expected, rtol, atol)):
        return Diagnosis("a transposed result", "your answer is the transpose of the correct one. "
                                                "Check the order of a matrix product and which axis is which.")
    if actual.shape != expected.shape and actual.size == expected.size ** 2 and actual.ndim == 2 \
            and expected.ndim == 1:
        return Diagnosis("an accidental broadcast", f"your answer has shape {actual.shape} where "
                         f"{expected.shape} is expected: an array of shape (n,) combined with one of "
                         "shape (n, 1) broadcasts to (n, n). Keep both operands one-dimensional.")
    if actual.shape == expected.shape and actual.ndim >= 1 and _significant(expected, atol):
        with np.errstate(all="ignore"):
            ratio = actual / np.where(expected == 0, np.nan, expected)
        finite = ratio[np.isfinite(ratio)]
        if finite.size and np.allclose(finite, finite[0], rtol=rtol * 10) and abs(finite[0] - 1) > 10 * rtol \
                and finite[0] > 0:
            if np.isclose(np.sum(expected), 1.0) and np.all(expected >= 0):
                return Diagnosis("an unnormalised distribution",
                                 f"your answer is proportional to the correct one but sums to "
                                 f"{np.sum(actual):.6g}. Divide by the sum so the probabilities add up to one.")
            if np.isclose(np.linalg.norm(expected), 1.0):
                return Diagnosis("an unnormalised vector",
                                 f"your answer points the right way but has length {np.linalg.norm(actual):.6g}. "
                                 "Divide by its norm to make it a unit vector.")
    if actual.shape == expected.shape and np.all(np.isfinite(expected)) and not np.all(np.isfinite(actual)):
        if np.any(np.isneginf(actual)):
            return Diagnosis("a log of zero", "your answer contains -inf where the correct one is finite: "
                                              "somewhere a log is taken of 0. Guard it, or work in log space.")
        return Diagnosis("an overflow", "your answer contains inf or NaN where the correct one is finite: "
                                        "an exp (or a power) overflowed. Rewrite it in a stable form, for "
                                        "example subtract the maximum before exp (log-sum-exp).")
    return None


def diagnose(
    actual: Any,
    expected: Any,
    *,
    known: Mapping[str, Any] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    sample_size: int | None = None,
) -> Diagnosis | None:
    """The mistake that explains ``actual``, or None.

    ``known`` maps a description of a specific mistake ("the forward difference (f(x+h) - f(x))/h
    instead of the central one") to the value that mistake produces; it is checked first.
    """
    actual_array = _as_float(actual)
    if actual_array is None:
        return None
    for description, value in (known or {}).items():
        candidate = _as_float(value)
        if candidate is not None and _close(actual_array, candidate, rtol, atol):
            name, _, hint = description.partition(": ")
            return Diagnosis(name, hint or "compare your formula with the one in the explanation.")
    expected_array = _as_float(expected)
    if expected_array is None:
        return None
    return _generic(actual_array, expected_array, rtol, atol, sample_size)

