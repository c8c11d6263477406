"""One family of errors for everything that stops a command.

``str(error)`` is the sentence the user reads: what is wrong and what to do next.  The CLI
catches :class:`AutograderError` in one place, prints it and exits with status 2; nothing else
reaches the user as a traceback.  (A notebook that cannot be graded is not an error of this
kind: it becomes a report that says why, and the batch goes on.)
"""

from __future__ import annotations


class AutograderError(Exception):
    """A command cannot go on; the message says why in a sentence and what to do next."""


class UsageError(AutograderError):
    """The command line asks for something that cannot be done (a missing file, a wrong option)."""
