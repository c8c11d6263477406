"""The engine's settings: ``c.Autograder`` in the course's ``nbgrader_config.py``.

:class:`Autograder` is a traitlets ``Configurable``, as nbgrader's own settings are, so every
setting has a type, a default and a help text (the instructors' table of settings is made from
them, see :func:`settings_table`).  :func:`load_limits` reads the section strictly: a misspelt
name or a value of the wrong type is one sentence (:class:`SettingsError`), not a setting
silently ignored.  :class:`Limits` is what the rest of the engine uses.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Float, Int, TraitError
from traitlets.config import Config, Configurable

from autograder.errors import AutograderError


class SettingsError(AutograderError):
    """``c.Autograder`` holds a name or a value the engine cannot use."""


class Autograder(Configurable):
    """The autograder engine's settings (all optional; these are the defaults)."""

    cell_timeout = Float(30.0, help="Seconds one cell, or one test cell's calls into student code, may run.").tag(
        config=True)
    submission_timeout = Float(600.0, help="Seconds for a whole notebook (also the worker's CPU-time limit).").tag(
        config=True)
    strict = Bool(False, help="Refuse to grade when any protection of the worker is missing on this machine.").tag(
        config=True)
    memory_mib = Int(4096, help="Address space a worker may use, in MiB.").tag(config=True)
    max_processes = Int(64, help="Processes and threads a worker may run at once.").tag(config=True)


@dataclass(frozen=True)
class Limits:
    """Limits on one submission's worker (from :class:`Autograder`, or the command line)."""

    cell_timeout: float = Autograder.cell_timeout.default_value
    submission_timeout: float = Autograder.submission_timeout.default_value
    strict: bool = Autograder.strict.default_value  # refuse to grade when a protection is missing
    memory_bytes: int = Autograder.memory_mib.default_value * 1024**2
    max_processes: int = Autograder.max_processes.default_value


def seconds(value: float) -> str:
    """``1 second``, ``2.5 seconds``."""
    return f"{value:g} second" + ("" if value == 1 else "s")


def load_limits(config: Config) -> Limits:
    """The limits ``config`` (a course's loaded ``nbgrader_config.py``) sets under ``c.Autograder``."""
    section: Any = config.get("Autograder", {})
    known = sorted(Autograder.class_trait_names(config=True))
    for name in section:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean c.Autograder.{close[0]}?" if close else ""
            raise SettingsError(f"nbgrader_config.py sets c.Autograder.{name}, which is not a setting of the "
                                f"autograder.{hint} The settings are: {', '.join(known)}.")
    try:
        settings = Autograder(config=config)
    except TraitError as error:
        name = next((name for name in section if name in str(error)), "")
        trait = Autograder.class_traits().get(name)
        kind = type(trait).__name__.lower() if trait is not None else "value"
        raise SettingsError(f"nbgrader_config.py sets c.Autograder.{name} to {section.get(name)!r}, which is not "
                            f"a {kind}: {trait.help if trait is not None else error}") from None
    if settings.cell_timeout <= 0 or settings.submission_timeout <= 0 or settings.memory_mib < 256:
        raise SettingsError("nbgrader_config.py sets a time limit that is not positive, or a worker memory below "
                            "256 MiB, under c.Autograder; the grader could not run a notebook with it.")
    return Limits(cell_timeout=settings.cell_timeout, submission_timeout=settings.submission_timeout,
                  strict=settings.strict, memory_bytes=settings.memory_mib * 1024**2,
                  max_processes=settings.max_processes)


def settings_table() -> str:
    """The table of settings for the instructors' guide, from the help texts."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, trait in Autograder.class_traits(config=True).items():
        rows.append(f"| `c.Autograder.{name}` | {trait.default_value!r} | {trait.help} |")
    return "\n".join(rows)
