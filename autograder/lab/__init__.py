"""Check from JupyterLab: the server half of the lab extension.

The lab extension's **Check** button saves the notebook and posts its path to
``POST /autograder/check``; this extension reads the notebook through Jupyter's contents manager
(what was saved, as the student sees it), grades it with the confined engine and answers with
the report.  Which tests run is said in the answer's ``mode``:

* ``hidden``: the course (its ``source/`` with the hidden tests) is on this machine, as for a
  self-learner working in the course folder: the same grading as ``autograder check``;
* ``visible``: only the released notebook's visible tests are known (a ``release/<ps>/`` copy
  above the notebook): they are taken from that copy, never from the student's notebook, and
  the answer says that the hidden tests were not run.

One warm worker template is kept for the server's lifetime, so a second check starts no Python.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "autograder.lab"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "autograder-lab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from autograder.lab.handlers import setup_handlers

    setup_handlers(serverapp)
