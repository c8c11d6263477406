"""``POST /autograder/check``: grade a notebook the student has open (see :mod:`autograder.lab`)."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from traitlets import Bool, Unicode, default
from traitlets.config import Configurable

from autograder import progress
from autograder.batch import MAX_NOTEBOOK_BYTES
from autograder.course import Course, CourseError
from autograder.errors import AutograderError
from autograder.notebook import NotebookError, SourceNotebook, grade_id, parse_notebook
from autograder.settings import Limits

ROUTE = "autograder/check"
VISIBLE_ONLY = ("Only the visible tests were run: the hidden tests are not on this machine, so this is "
                "not your grade. Hand in the notebook to be graded on the hidden tests too.")


@dataclass(frozen=True)
class Tests:
    """The tests a notebook is checked with, and what they are."""

    mode: str  # "hidden" (the course's source) or "visible" (a released copy's visible tests)
    ps: str
    source: SourceNotebook
    limits: Limits


class AutograderLab(Configurable):
    """Settings of the Check button's server half (in ``jupyter_server_config.py``)."""

    installed_course = Bool(True, config=True, help=(
        "Check notebooks against the course this package was installed from when no course is "
        "above the notebook. False: only a course folder above the notebook counts (a machine where "
        "the package was installed from the course folder but students must not use its hidden tests)."))


    service_url = Unicode("", config=True, help=(
        "The course's grading service (`autograder serve`), e.g. https://course.example.edu:8765. "
        "When set, Check submits the notebook there and shows the service's feedback."))
    service_token = Unicode("", config=True, help=(
        "The student's token for the course's grading service. Left empty on a JupyterHub server, "
        "the server's own hub token is sent (for a service run with `autograder serve --hub`)."))

    @default("service_token")
    def _hub_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")


class NoTests(AutograderError):
    """No problem set on this machine has this notebook's tests."""


def find_tests(notebook: Path, data: bytes, *, installed_course: bool = True) -> Tests:
    """The tests for ``notebook`` (its contents ``data``): the course's hidden tests when the
    course is above it (or, with ``installed_course``, is the one this package was installed
    from), else the visible tests of a pristine ``release/<ps>/<ps>.ipynb`` above it.  The
    student's own test cells are never used: they are the student's to edit."""
    try:
        course = Course.find(notebook.parent, installed=installed_course)
    except CourseError:
        course = None
    if course is not None:
        ps = course.problem_set_of(notebook)
        return Tests("hidden", ps, course.source(ps), course.limits())
    ids = {grade_id(cell) for cell in parse_notebook(data, notebook.name).cells} - {None}
    for folder in (notebook.parent, *notebook.parent.parents):
        release = folder / "release"
        if not release.is_dir():
            continue
        for candidate in sorted(release.glob("*/*.ipynb")):
            if candidate.parent.name != candidate.stem:
                continue
            try:
                copy = SourceNotebook.load(candidate)
            except NotebookError:
                continue
            if notebook.stem.startswith(candidate.stem) or ids & copy.answer_ids:
                return Tests("visible", candidate.stem, copy, Limits())
    raise NoTests(f"{notebook.name} is not a notebook of a problem set this machine has, so Check has no tests to "
                  "run; the test cells in the notebook still check your answers when you run them. For Check, open "
                  "the notebook from the course folder (or a folder with the course's release/), or ask your "
                  "instructor for the address of the course's feedback service.")


class Checker:
    """Grades one notebook at a time on a warm worker template kept for the server's lifetime."""

    def __init__(self, *, installed_course: bool = True, service_url: str = "", service_token: str = "") -> None:
        self.installed_course = installed_course
        self.service_url, self.service_token = service_url, service_token
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autograder-check")
        self._launcher: Any = None
        self._lock = threading.Lock()

    def _warm_launcher(self) -> Any:
        from autograder.grader.launcher import Launcher, share_a_core

        if self._launcher is None:
            self._launcher = Launcher()
            self._launcher.__enter__()
            self._launcher.start()
            # This thread grades, and only it: it and the template's workers share a core.
            share_a_core(-1, self._launcher)
        return self._launcher

    def check(self, notebook: Path, data: bytes) -> dict[str, Any]:
        from autograder.grader.grading import grade_notebook
        from autograder.html import student_page

        if self.service_url:
            return self._check_with_service(notebook, data)
        with self._lock:
            tests = find_tests(notebook, data, installed_course=self.installed_course)
            report = grade_notebook(tests.source, data, notebook_name=notebook.name, seed=secrets.randbits(31),
                                    limits=tests.limits, launcher=self._warm_launcher())
        progress.remember(tests.ps, report, hidden_tests=tests.mode == "hidden")
        if tests.mode == "visible":
            report.notes.insert(0, VISIBLE_ONLY)
        return {
            "progress": [asdict(entry) for entry in progress.overview(self._problem_sets(notebook))],
            "mode": tests.mode,
            "hidden_tests_run": tests.mode == "hidden",
            "problem_set": tests.ps,
            "report": report.to_dict(),
            "page": student_page(report),
        }

    def _check_with_service(self, notebook: Path, data: bytes) -> dict[str, Any]:
        """Submit to the course's service (which has the hidden tests) and wait for its feedback."""
        from autograder.service import ServiceClient

        try:
            ps = find_tests(notebook, data, installed_course=self.installed_course).ps
        except (NoTests, NotebookError, CourseError):
            ps = notebook.stem
        client = ServiceClient(self.service_url, self.service_token)
        accepted = client.submit(ps, data)
        status = client.wait(accepted, 300)
        if status.get("status") != "graded" or not isinstance(status.get("report"), dict):
            raise AutograderError("The course's service has your submission queued; press Check again in a minute.")
        from autograder.report import GradeReport

        report = GradeReport.from_dict(status["report"])
        progress.remember(ps, report, hidden_tests=True)
        return {
            "progress": [asdict(entry) for entry in progress.overview(self._problem_sets(notebook))],
            "mode": "service",
            "hidden_tests_run": True,
            "problem_set": ps,
            "report": status["report"],
            "page": client.page(accepted["id"]),
        }

    def _problem_sets(self, notebook: Path) -> list[str]:
        try:
            return Course.find(notebook.parent, installed=self.installed_course).problem_sets()
        except CourseError:
            return []

    async def check_async(self, notebook: Path, data: bytes) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.check, notebook, data)

    def close(self) -> None:
        if self._launcher is not None:
            self._launcher.__exit__(None, None, None)
            self._launcher = None
        self._executor.shutdown(wait=False)


def setup_handlers(serverapp: Any) -> None:
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import ensure_async, url_path_join
    from tornado import web

    settings = AutograderLab(config=serverapp.config)
    checker = Checker(installed_course=settings.installed_course, service_url=settings.service_url,
                      service_token=settings.service_token)

    class CheckHandler(APIHandler):
        @web.authenticated
        async def post(self) -> None:
            try:
                body = json.loads(self.request.body or b"null")
            except ValueError:
                return self._refuse(400, "The request is not JSON.")
            path = body.get("path") if isinstance(body, dict) else None
            if not isinstance(path, str) or not path.endswith(".ipynb") or len(path) > 4096:
                return self._refuse(400, "Say which notebook to check: {\"path\": \"folder/notebook.ipynb\"}.")
            if any(part == ".." for part in PurePosixPath(path).parts):
                return self._refuse(400, "The path of the notebook may not go up a folder.")
            manager = self.contents_manager
            try:
                model = await ensure_async(manager.get(path, content=True, type="notebook"))
            except web.HTTPError as error:
                if error.status_code == 404:
                    return self._refuse(404, f"There is no notebook {path}.")
                return self._refuse(400, f"{PurePosixPath(path).name} could not be read as a notebook.")
            except Exception:  # noqa: BLE001 - a file the contents manager cannot read as a notebook
                return self._refuse(400, f"{PurePosixPath(path).name} could not be read as a notebook.")
            import nbformat

            data = nbformat.writes(model["content"]).encode("utf-8")
            if len(data) > MAX_NOTEBOOK_BYTES:
                return self._refuse(413, "The notebook is too large to check.")
            root = Path(getattr(manager, "root_dir", "") or serverapp.root_dir).resolve()
            notebook = (root / path).resolve()
            if root != notebook and root not in notebook.parents:
                return self._refuse(400, "The notebook is outside the folder this server shows.")
            try:
                result = await checker.check_async(notebook, data)
            except (AutograderError, NotebookError) as problem:
                return self._refuse(422, str(problem))
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(result))

        def _refuse(self, status: int, message: str) -> None:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": message}))

    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, ROUTE), CheckHandler)])
    atexit.register(checker.close)  # the warm template and its workers go with the server
