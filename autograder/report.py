"""The one result model.  Grading produces a :class:`GradeReport`; renderers only read it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autograder.errors import AutograderError

PASSED, FAILED, ERROR, TIMEOUT = "passed", "failed", "error", "timeout"

# The layout of a report's JSON. Raise it when a field changes meaning or goes away (adding a
# field with a default does not need it); reports without it are version 1.
SCHEMA_VERSION = 1


class ReportFormatError(AutograderError):
    """A report file this version cannot read."""


@dataclass
class TestResult:
    """The outcome of one test cell (one graded exercise)."""

    __test__ = False  # not a pytest class

    id: str
    points: float
    max_points: float
    status: str
    message: str = ""
    diagnosis: str | None = None  # the named mistake, when one explains the failure
    hidden: bool = False  # the failure came from a hidden line of the test cell
    title: str = ""  # what students see: the exercise's heading ("Exercise 4 — The chain rule")
    output: str = ""
    seconds: float = 0.0
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The title when there is one, else the test cell's id."""
        return self.title or self.id


@dataclass
class CellProblem:
    """A cell of the submission that raised, hung or crashed while it ran."""

    cell: str
    message: str


@dataclass
class FinalScore:
    """The score nbgrader's gradebook holds for this hand-in, which ``nbgrader export`` reports:
    the tests' points with any hand grades in formgrader in their place (``raw_score``), less
    the late penalty nbgrader's late-submission plugin gives."""

    raw_score: float
    late_penalty: float = 0.0
    manual_adjustment: float = 0.0  # raw_score minus the tests' points: hand grades in formgrader
    needs_manual_grade: bool = False

    @property
    def score(self) -> float:
        return max(0.0, self.raw_score - self.late_penalty)


@dataclass
class GradeReport:
    """Everything known about grading one notebook."""

    assignment: str
    notebook: str
    student: str | None = None
    status: str = "graded"  # or "error" when the notebook could not be graded at all
    error: str | None = None
    seed: int | None = None
    tests: list[TestResult] = field(default_factory=list)
    cell_problems: list[CellProblem] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = ""
    protections: list[str] = field(default_factory=list)
    missing_protections: dict[str, str] = field(default_factory=dict)
    submitted_at: str | None = None  # nbgrader's timestamp.txt of the hand-in, as written there
    final: FinalScore | None = None  # from the gradebook, when grading wrote one
    notes: list[str] = field(default_factory=list)  # for the student and the grader: how it was graded

    @property
    def score(self) -> float:
        return sum(test.points for test in self.tests)

    @property
    def max_score(self) -> float:
        return sum(test.max_points for test in self.tests)

    @property
    def final_score(self) -> float:
        """The score that counts: the gradebook's (hand grades and late penalty applied) when
        there is one, else the tests' points."""
        return self.final.score if self.final is not None else self.score

    def adjustments(self) -> str:
        """What turns the tests' points into the final score, in words ("" when nothing does)."""
        if self.final is None:
            return ""
        parts = []
        if self.final.manual_adjustment:
            parts.append(f"hand grading {self.final.manual_adjustment:+g}")
        if self.final.late_penalty:
            parts.append(f"late penalty -{self.final.late_penalty:g}")
        return ", ".join(parts)

    @property
    def all_passed(self) -> bool:
        return self.status == "graded" and all(test.status == PASSED for test in self.tests)

    def summary(self) -> GradeReport:
        """A copy without charts and captured output: what a class summary needs, so a batch of
        thousands holds little in memory."""
        tests = [replace(test, figures=[], output="") for test in self.tests]
        return replace(self, tests=tests)

    def to_dict(self) -> dict[str, Any]:
        data = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        data["score"] = self.score
        data["max_score"] = self.max_score
        data["final_score"] = self.final_score
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeReport:
        version = data.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise ReportFormatError(
                f"This report has schema version {version!r}; this autograder reads version {SCHEMA_VERSION}. "
                "Grade again with this version (autograder grade --regrade), or use the version that wrote it.")
        derived = ("score", "max_score", "final_score", "schema_version")
        fields = {key: value for key, value in data.items() if key not in derived}
        if fields.get("final") is not None:
            fields["final"] = FinalScore(**fields["final"])
        fields["tests"] = [TestResult(**test) for test in data.get("tests", [])]
        fields["cell_problems"] = [CellProblem(**problem) for problem in data.get("cell_problems", [])]
        return cls(**fields)

    @classmethod
    def read_json(cls, path: Path) -> GradeReport:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
