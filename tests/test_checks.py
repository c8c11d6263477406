"""The checks test cells are written with, and the diagnoses they make."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autograder import checks
from autograder.checks import (
    CheckFailure,
    check_close,
    check_decreasing_loss,
    check_dtype,
    check_eigenpair,
    check_finite,
    check_gradient,
    check_jacobian,
    check_orthonormal,
    check_probability_vector,
    check_scalar,
    check_shape,
    check_symmetric_psd,
)
from autograder.diagnoses import diagnose

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 3))
V = RNG.normal(size=5)
P = np.array([0.1, 0.2, 0.3, 0.4])
U = V / np.linalg.norm(V)
SQUARE = RNG.normal(size=(3, 3))


def failure(function, *args, **kwargs) -> CheckFailure:
    with pytest.raises(CheckFailure) as caught:
        function(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------------- diagnoses

# (name the diagnosis must contain, actual, expected, extra keyword arguments)
MISTAKES = [
    ("sign error", -V, V, {}),
    ("twice too large", 2 * V, V, {}),
    ("half as large", V / 2, V, {}),
    ("degrees where radians", V * math.pi / 180, V, {}),
    ("radians converted as if they were degrees", V * 180 / math.pi, V, {}),
    ("dividing by n - 1 where n is asked", V * 10 / 9, V, {"sample_size": 10}),
    ("dividing by n where n - 1 is asked", V * 9 / 10, V, {"sample_size": 10}),
    ("transposed", X.T, X, {}),
    ("transposed", SQUARE.T, SQUARE, {}),
    ("accidental broadcast", V[:, None] - V[None, :] + V, V, {}),
    ("unnormalised distribution", 3 * P, P, {}),
    ("unnormalised vector", 3 * U, U, {}),
    ("log of zero", np.array([0.5, -np.inf]), np.array([0.5, -3.0]), {}),
    ("overflow", np.array([np.nan, 1.0]), np.array([2.0, 1.0]), {}),
    ("the forward difference", 1.1, 1.0, {"known": {"the forward difference: use f(x+h) and f(x-h)": 1.1}}),
]


@pytest.mark.parametrize("name, actual, expected, extra", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_diagnosis_fires_on_the_mistake_it_names(name, actual, expected, extra):
    found = diagnose(actual, expected, **extra)
    assert found is not None and name in str(found), found


@pytest.mark.parametrize("name, actual, expected, extra", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_no_diagnosis_on_a_correct_answer(name, actual, expected, extra):
    assert diagnose(expected, expected, **extra) is None


UNRELATED = [
    (V + 0.3, V),                       # shifted
    (V * RNG.uniform(0.5, 1.5, 5), V),  # scaled unevenly
    (np.sort(V), V),                     # permuted
    (np.zeros(5), V),                    # nothing computed
    (X[:, :2], X),                       # wrong shape, not a transpose
    (np.array([0.25, 0.25, 0.25, 0.25]), P),  # a different distribution
    (1.7, 1.0),                          # a number that is just wrong
]


@pytest.mark.parametrize("actual, expected", UNRELATED)
def test_no_diagnosis_on_unrelated_wrong_answers(actual, expected):
    assert diagnose(actual, expected, sample_size=10,
                    known={"the forward difference: ...": 1.1}) is None


def test_check_close_puts_the_diagnosis_in_the_message_and_the_failure():
    error = failure(check_close, -V, V, what="grad(x)")
    assert "grad(x) is wrong" in str(error) and "sign error" in str(error)
    assert error.diagnosis == "a sign error"
    plain = failure(check_close, V + 1, V, what="grad(x)")
    assert plain.diagnosis is None and "This looks like" not in str(plain)


# ------------------------------------------------------------------------------------ checks

def test_check_close_and_friends_accept_correct_values():
    check_close(V + 1e-12, V)
    check_close(np.float32(1.0), 1.0)
    assert check_scalar(np.float64(2.5)) == 2.5
    check_shape(X, (4, 3))
    check_dtype(X, "f")
    check_finite(X)


@pytest.mark.parametrize("call, phrase", [
    (lambda: check_close(None, 1.0, what="f(x)"), "forget a `return`"),
    (lambda: check_close("1.0", 1.0, what="f(x)"), "expected a number"),
    (lambda: check_close(V[:4], V, what="f(x)"), "shape (4,); expected shape (5,)"),
    (lambda: check_scalar(V, what="f(x)"), "expected a single number"),
    (lambda: check_shape(X, (3, 4), what="f(x)"), "expected shape (3, 4)"),
    (lambda: check_dtype(np.arange(3), "f"), "floating-point"),
    (lambda: check_finite(np.array([1.0, np.inf])), "infinity"),
])
def test_checks_fail_with_a_sentence_for_the_student(call, phrase):
    with pytest.raises(CheckFailure) as caught:
        call()
    assert phrase in str(caught.value)


def quadratic(x):
    return float(x @ SQUARE @ SQUARE.T @ x)


def test_check_gradient_against_finite_differences():
    x = RNG.normal(size=3)
    exact = 2 * SQUARE @ SQUARE.T @ x
    check_gradient(exact, quadratic, x)
    assert "half as large" in str(failure(check_gradient, exact / 2, quadratic, x))
    assert failure(check_gradient, exact + 1, quadratic, x).diagnosis is None


def test_check_jacobian():
    def f(x):
        return np.array([x[0] * x[1], np.sin(x[0])])

    x = np.array([0.3, -1.2])
    exact = np.array([[x[1], x[0]], [np.cos(x[0]), 0.0]])
    check_jacobian(exact, f, x)
    assert "transposed" in str(failure(check_jacobian, exact.T, f, x))


def test_check_eigenpair_is_invariant_to_sign_and_optionally_scale():
    A = SQUARE + SQUARE.T
    values, vectors = np.linalg.eigh(A)
    check_eigenpair(A, values[-1], vectors[:, -1])
    check_eigenpair(A, values[-1], -vectors[:, -1])
    check_eigenpair(A, values[-1], 5 * vectors[:, -1], unit=False)
    assert failure(check_eigenpair, A, values[-1], 5 * vectors[:, -1]).diagnosis == "an unnormalised vector"
    assert "not an eigenpair" in str(failure(check_eigenpair, A, values[0], vectors[:, -1]))
    assert "zero vector" in str(failure(check_eigenpair, A, 0.0, np.zeros(3)))


def test_check_orthonormal():
    Q, _ = np.linalg.qr(X)
    check_orthonormal(Q)
    assert failure(check_orthonormal, 2 * Q).diagnosis == "an unnormalised vector"
    skewed = Q.copy()
    skewed[:, 1] = (Q[:, 0] + Q[:, 1]) / np.sqrt(2)
    assert "not orthogonal" in str(failure(check_orthonormal, skewed))


def test_check_probability_vector():
    check_probability_vector(P)
    check_probability_vector(np.tile(P, (3, 1)), axis=1)
    assert failure(check_probability_vector, 2 * P).diagnosis == "an unnormalised distribution"
    assert "negative" in str(failure(check_probability_vector, np.array([1.2, -0.2])))
    assert "NaN" in str(failure(check_probability_vector, np.array([np.nan, 1.0])))


def test_check_symmetric_psd():
    check_symmetric_psd(np.cov(X.T))
    assert "not symmetric" in str(failure(check_symmetric_psd, SQUARE))
    assert "negative eigenvalue" in str(failure(check_symmetric_psd, -np.eye(3)))
    assert "square" in str(failure(check_symmetric_psd, X))


def test_check_decreasing_loss():
    check_decreasing_loss([5.0, 3.0, 2.0, 1.5])
    noisy = np.exp(-np.arange(200) / 50) + RNG.normal(scale=0.01, size=200)
    check_decreasing_loss(noisy, window=20)
    assert "does not decrease" in str(failure(check_decreasing_loss, [1.0, 2.0, 4.0]))
    assert "goes up at step 2" in str(failure(check_decreasing_loss, [5.0, 3.0, 3.5, 1.0]))


def test_test_rng_is_reproducible_per_seed_and_salt():
    with checks.seeded(7):
        a = checks.test_rng("x").normal(size=3)
        b = checks.test_rng("x").normal(size=3)
        c = checks.test_rng("y").normal(size=3)
    with checks.seeded(8):
        d = checks.test_rng("x").normal(size=3)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)


def test_plot_curves_records_inside_the_grader():
    with checks.collecting_figures() as figures:
        checks.plot_curves("error", [1, 2], {"yours": [3, 4], "reference": [3, 5]}, ylog=True)
    assert figures == [{"title": "error", "x": [1.0, 2.0], "curves": {"yours": [3.0, 4.0], "reference": [3.0, 5.0]},
                        "xlog": False, "ylog": True, "xlabel": "", "ylabel": ""}]


# ------------------------------------------------------------------------- operators and raises

def _named(name):
    """What a test cell holds for a student's function: something with a __name__."""
    import types

    return types.SimpleNamespace(__name__=name)


def test_check_not_using_operator_reads_the_function_and_its_helpers():
    from autograder.checks import check_not_using_operator

    cells = {
        "helpers": "def helper(A, B):\n    return A @ B\n\n\ndef matmul(A, B):\n    return helper(A, B)\n",
        "augmented": "def power(A):\n    C = A\n    C @= A\n    return C\n",
        "clean": "import numpy as np\ncheck = np.eye(2) @ np.eye(2)\n\n\n@staticmethod\ndef loops(A, B):\n"
                 "    return [[sum(a * b for a, b in zip(row, col)) for col in zip(*B)] for row in A]\n",
    }
    with checks.student_code(cells):
        message = str(failure(check_not_using_operator, _named("matmul"), "@"))
        assert "matmul uses the operator @" in message and "separate cell" in message
        assert "uses the operator @" in str(failure(check_not_using_operator, _named("power"), "@"))
        # A decorator is not a matrix product; a product outside the function is the student's check.
        check_not_using_operator(_named("loops"), "@")
        check_not_using_operator(_named("matmul"), "**", "*")
        assert "uses the operator *" in str(failure(check_not_using_operator, _named("loops"), "*"))
    with pytest.raises(ValueError, match="unknown operators"):
        check_not_using_operator(_named("loops"), "@@")


def test_check_not_using_allows_the_students_own_helper_of_the_same_name():
    from autograder.checks import check_not_using

    cells = {
        "dot": "import numpy as np\n\n\ndef dot(x, y):\n    return sum(a * b for a, b in zip(x, y))\n",
        "matmul": "def matmul(A, B):\n    return [[dot(row, col) for col in zip(*B)] for row in A]\n",
        "alias": "import numpy as np\nd = np.dot\n\n\ndef matmul3(A, B):\n    return d(A, B)\n",
    }
    with checks.student_code(cells):
        check_not_using(_named("matmul"), "dot")  # their own dot, from an earlier exercise
        assert "matmul3 uses dot" in str(failure(check_not_using, _named("matmul3"), "dot"))
    # A helper of the same name that calls the library is read like any helper.
    cheat = {**cells, "dot": "import numpy as np\n\n\ndef dot(x, y):\n    return np.dot(x, y)\n"}
    with checks.student_code(cheat):
        assert "matmul uses dot" in str(failure(check_not_using, _named("matmul"), "dot"))


def test_check_not_using_operator_reads_a_kernels_function_outside_the_grader():
    from autograder.checks import check_not_using_operator

    def product(A, B):
        return A @ B

    def loop(A, B):
        return A * B

    assert "uses the operator @" in str(failure(check_not_using_operator, product, "@"))
    check_not_using_operator(loop, "@")


def test_check_raises_accepts_the_exception_or_a_students_report_of_it():
    from autograder.checks import check_raises
    from autograder.grader.session import StudentError
    from autograder.wire.messages import ErrorInfo

    def refuses(x):
        raise ValueError("no")

    def student_refuses(x):
        raise StudentError("f", ErrorInfo("ValueError", "no"))

    def student_is_lost(x):
        raise StudentError("f", ErrorInfo("ZeroDivisionError", "division by zero"))

    def unanswered(x):
        raise StudentError("f", ErrorInfo("NotImplementedError", not_implemented=True))

    check_raises(ValueError, refuses, 1)
    check_raises("ValueError", student_refuses, 1)
    check_raises(ArithmeticError, student_is_lost, 1)  # a subclass of the kind asked for
    with pytest.raises(CheckFailure, match=r"raised ZeroDivisionError \(division by zero\); expected ValueError\. Mind"):
        check_raises(ValueError, student_is_lost, 1, what="f(1)", hint="Mind the zero.")
    with pytest.raises(CheckFailure, match="returned 1; expected it to raise ValueError"):
        check_raises(ValueError, lambda x: x, 1)
    with pytest.raises(CheckFailure, match="is not implemented yet"):
        check_raises(ValueError, unanswered, 1)
def test_check_close_up_to_sign_frees_the_sign_of_each_vector_only():
    from autograder.checks import check_close_up_to_sign

    expected = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    check_close_up_to_sign(expected * [[-1.0], [1.0]], expected)
    check_close_up_to_sign(expected.T * [-1.0, 1.0], expected.T, vectors="columns")
    check_close_up_to_sign(-U, U)
    # One sign for the whole matrix is not enough, and rows are not columns.
    assert failure(check_close_up_to_sign, expected * [[1.0], [-1.0]] + 0.1, expected)
    assert failure(check_close_up_to_sign, SQUARE * [-1.0, 1.0, 1.0], SQUARE, vectors="rows")
    check_close_up_to_sign(SQUARE * [-1.0, 1.0, 1.0], SQUARE, vectors="columns")
    assert failure(check_close_up_to_sign, expected[::-1], expected)
    assert "shape" in str(failure(check_close_up_to_sign, expected.T, expected))
    # A mistake is recognised whatever the signs of its vectors and of the student's.
    swapped = expected[::-1]
    message = str(failure(check_close_up_to_sign, -swapped, expected,
                          mistakes={"the rows in the wrong order: sort them": swapped}))
    assert "rows in the wrong order" in message
    with pytest.raises(ValueError):
        check_close_up_to_sign(expected, expected, vectors="diagonals")
def test_check_frequency_accepts_exactly_the_counts_outside_both_tails():
    from scipy import stats

    trials, probability, false_failure = 400, 0.05, 1e-6
    accepted = []
    for count in range(trials + 1):
        try:
            checks.check_frequency(count, trials, probability, false_failure=false_failure)
            accepted.append(count)
        except CheckFailure:
            pass
    # The acceptance region is one interval whose ends lie just inside the binomial tails.
    low, high = accepted[0], accepted[-1]
    assert accepted == list(range(low, high + 1))
    assert stats.binom.cdf(low, trials, probability) > false_failure / 2 >= stats.binom.cdf(low - 1, trials, probability)
    assert stats.binom.sf(high - 1, trials, probability) > false_failure / 2 >= stats.binom.sf(high, trials, probability)
    assert (low, high) == (3, 44)  # 20 expected; beyond these, below 5e-7 on each side


def test_check_frequency_with_bounds_names_the_mistake():
    checks.check_frequency(150, 1000, (0.12, 0.18))
    checks.check_frequency(0, 10, 0.0)
    checks.check_frequency(10, 10, 1.0)
    message = str(failure(checks.check_frequency, 260, 1000, (0.12, 0.18), what="the false-positive rate",
                          mistakes={"independent looks: the looks share data.": 0.26}))
    assert "260 of 1000" in message and "between 12% and 18%" in message
    assert "This looks like independent looks" in message
    assert "This looks like" not in str(failure(checks.check_frequency, 900, 1000, 0.5, mistakes={"m: h": 0.1}))
    assert "whole number" in str(failure(checks.check_frequency, 12.5, 100, 0.1))
    assert "whole number" in str(failure(checks.check_frequency, 101, 100, 0.1))


def test_check_frequency_names_the_mistake_that_fits_best():
    mistakes = {"looking only at the end: ...": 0.05, "a one-sided test: ...": 0.0962}
    # 150 of 2000 is plausible under both rates (100 and 192 expected), and less far in the tail of 0.0962.
    assert "one-sided" in str(failure(checks.check_frequency, 150, 2000, 0.1934, mistakes=mistakes))
    assert "only at the end" in str(failure(checks.check_frequency, 105, 2000, 0.1934, mistakes=mistakes))


def test_mistakes_given_as_a_function_are_computed_only_for_a_wrong_answer():
    from autograder.checks import check_close_up_to_sign

    calls = []

    def mistakes(value):
        def compute():
            calls.append(value)
            return {"the forward difference: use f(x+h) and f(x-h)": value}
        return compute

    checks.check_close(1.0, 1.0, mistakes=mistakes(2.0))
    check_close_up_to_sign(-np.eye(2), np.eye(2), mistakes=mistakes(np.ones((2, 2))))
    checks.check_frequency(50, 100, 0.5, mistakes=mistakes(0.9))
    assert calls == []
    assert "forward difference" in str(failure(checks.check_close, 2.0, 1.0, mistakes=mistakes(2.0)))
    swapped = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert "forward difference" in str(failure(check_close_up_to_sign, -swapped, np.eye(2), mistakes=mistakes(swapped)))
    assert "forward difference" in str(failure(checks.check_frequency, 90, 100, 0.5, mistakes=mistakes(0.9)))
    assert len(calls) == 3
