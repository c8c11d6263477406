"""The course directory: where problem sets, releases and submissions live.

The layout is nbgrader's: ``source/<ps>/<ps>.ipynb`` (instructor), ``release/<ps>/``
(students), ``submitted/<student>/<ps>/`` (hand-ins), plus ``solutions/<ps>/`` for
self-learners.  Engine settings live in ``nbgrader_config.py`` under ``c.Autograder``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder.errors import AutograderError
from autograder.settings import Limits, load_limits

if TYPE_CHECKING:
    from autograder.notebook import SourceNotebook

CONFIG_FILE = "nbgrader_config.py"


class CourseError(AutograderError):
    """A course, problem set or file that cannot be found; the message says what to do."""


@dataclass(frozen=True)
class Course:
    root: Path

    @classmethod
    def find(cls, start: Path | None = None, *, installed: bool = True) -> Course:
        """The course containing ``start`` (default: the working directory), or (unless
        ``installed`` is false) the one this package was installed from."""
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / CONFIG_FILE).is_file() and (candidate / "source").is_dir():
                return cls(candidate)
        packaged = Path(__file__).resolve().parent.parent
        if installed and (packaged / CONFIG_FILE).is_file() and (packaged / "source").is_dir():
            return cls(packaged)
        raise CourseError(
            f"No course found: no folder above {here} has {CONFIG_FILE} and source/. "
            "Run the command inside the course folder, or pass --course FOLDER."
        )

    # Problem sets -----------------------------------------------------------------------
    def problem_sets(self) -> list[str]:
        source = self.root / "source"
        return sorted(
            entry.name for entry in source.iterdir()
            if entry.is_dir() and (entry / f"{entry.name}.ipynb").is_file()
        )

    def check_problem_set(self, name: str) -> str:
        known = self.problem_sets()
        if name in known:
            return name
        # Accept a unique prefix such as "ps05".
        matches = [ps for ps in known if ps.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" Did you mean {hint[0]}?" if hint else ""
        raise CourseError(
            f"There is no problem set {name!r}.{suggestion} Known problem sets: {', '.join(known) or 'none'}."
        )

    def source_notebook(self, ps: str) -> Path:
        return self.root / "source" / ps / f"{ps}.ipynb"

    def source(self, ps: str) -> SourceNotebook:
        """The instructor notebook of ``ps``, checked to be safe to grade with (its test cells
        read nothing a student could rebind)."""
        from autograder.grader.grading import unsafe_test_names
        from autograder.notebook import NotebookError, SourceNotebook

        try:
            source = SourceNotebook.load(self.source_notebook(ps))
        except NotebookError as error:
            raise CourseError(f"The course's own notebook of {ps} cannot be read: {error}") from None
        problems = unsafe_test_names(source)
        if problems:
            raise CourseError(" ".join(problems[:3]) + (f" ({len(problems) - 3} more)" if len(problems) > 3 else ""))
        return source

    def release_notebook(self, ps: str) -> Path:
        return self.root / "release" / ps / f"{ps}.ipynb"

    def solution_notebook(self, ps: str) -> Path:
        return self.root / "solutions" / ps / f"{ps}.ipynb"

    def catalogue(self, ps: str) -> Path:
        return self.root / "source" / ps / "mistakes.toml"

    def alternatives(self, ps: str) -> Path:
        return self.root / "source" / ps / "alternatives.toml"

    def audit_records(self, ps: str) -> Path:
        """``audit.toml``: the surviving mutants the instructor has explained."""
        return self.root / "source" / ps / "audit.toml"

    def problem_set_of(self, notebook: Path) -> str:
        """Which problem set a notebook belongs to: from its file name, else from its answer cells."""
        from autograder.notebook import NotebookError, SourceNotebook, grade_id, read_notebook

        known = self.problem_sets()
        if len(known) == 1:
            return known[0]
        stem = notebook.stem
        for ps in known:
            if stem == ps or stem.startswith(ps):
                return ps
        try:
            ids = {grade_id(cell) for cell in read_notebook(notebook).cells} - {None}
        except NotebookError as error:
            # A damaged file is a damaged file, whatever its name: say so, not "which set?".
            raise CourseError(str(error)) from None
        matches = [ps for ps in known if ids & SourceNotebook.load(self.source_notebook(ps)).answer_ids]
        if len(matches) == 1:
            return matches[0]
        raise CourseError(
            f"Cannot tell which problem set {notebook.name} belongs to. "
            f"Pass it with --ps (one of: {', '.join(known)})."
        )

    # Configuration ----------------------------------------------------------------------
    def config(self) -> Config:
        path = self.root / CONFIG_FILE
        if not path.is_file():
            return Config()
        try:
            return PyFileConfigLoader(CONFIG_FILE, path=str(self.root)).load_config()
        except Exception as error:  # noqa: BLE001 - the instructor's file, reported as one sentence
            raise CourseError(f"{path} could not be loaded: {type(error).__name__}: {error}. "
                              "Fix the line it names.") from None

    def limits(self) -> Limits:
        """The engine's limits from ``c.Autograder`` (a misspelt or mistyped setting is a
        :class:`~autograder.settings.SettingsError`)."""
        return load_limits(self.config())
