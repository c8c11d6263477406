"""``autograder serve``: hidden-test feedback for a class before the deadline.

Students submit a notebook over HTTP with a token the instructor issued (``autograder tokens``);
the service stores it durably, **then** acknowledges it, grades it on this machine with the
confined engine, and lets the student (and only that student, or an instructor) read the
report and the feedback page.  Hidden tests, solutions and other students' work never leave
the server.

On disk, under the course folder::

    service/tokens.json                      who is who (SHA-256 of each token, never a token)
    service/submissions/<id>/notebook.ipynb  every submission, kept (the history)
    service/submissions/<id>/meta.json       student, problem set, time, seed
    service/submissions/<id>/report.json     the result, once graded (written atomically)
    submitted/<student>/<ps>/<ps>.ipynb      the latest submission, with nbgrader's timestamp.txt

A submission directory appears by one rename after its files are synced, so a crash leaves a
submission either whole or absent; one without ``report.json`` is graded when the service
starts again, so every accepted submission is graded, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.batch import MAX_NOTEBOOK_BYTES, TIMESTAMP_FILE, HandIn, default_jobs
from autograder.course import Course
from autograder.errors import AutograderError
from autograder.notebook import NotebookError, parse_notebook

SERVICE_DIR = "service"
CLUSTER_JOBS = 8  # submissions in flight on a Dask cluster unless --jobs says otherwise
POLICIES = ("latest", "best")  # which graded submission the gradebook holds
TOKENS_FILE = "tokens.json"
STUDENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SUBMISSION_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")


class ServiceError(AutograderError):
    """A request the service refuses, with the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_synced(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    _write_synced(temporary, data)
    os.replace(temporary, path)
    _sync_directory(path.parent)


# ------------------------------------------------------------------------------ tokens


def new_token() -> str:
    """A random token (24 bytes, URL-safe) that does not start with "-": one that did would read
    as an option to the command line (`autograder submit --token -x...` fails)."""
    while True:
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


class Tokens:
    """Who may submit (students) and who may read everything (instructors)."""

    def __init__(self, course: Course) -> None:
        self.path = course.root / SERVICE_DIR / TOKENS_FILE

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"students": {}, "instructors": []}
        except (OSError, ValueError) as error:
            raise AutograderError(f"{self.path} cannot be read ({error}); issue the tokens again.") from None
        return {"students": dict(data.get("students", {})), "instructors": list(data.get("instructors", []))}

    def issue(self, students: list[str], *, instructor: bool = False) -> dict[str, str]:
        """A new token for each student (replacing an old one), or one instructor token."""
        data = self._load()
        issued = {}
        for student in students:
            if not STUDENT_NAME.fullmatch(student):
                raise AutograderError(f"{student!r} is not a student id the service accepts (letters, digits, . _ @ -).")
            data["students"] = {digest: who for digest, who in data["students"].items() if who != student}
            token = new_token()
            data["students"][_digest(token)] = student
            issued[student] = token
        if instructor:
            token = new_token()
            data["instructors"].append(_digest(token))
            issued["(instructor)"] = token
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _replace_synced(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        os.chmod(self.path, 0o600)
        return issued

    def who(self, token: str | None) -> tuple[str | None, bool]:
        """(student, is_instructor) for a token; ServiceError 401 for an unknown one."""
        if not token:
            raise ServiceError(401, "Send your token: Authorization: token <your token>.")
        data = self._load()
        digest = _digest(token)
        if digest in data["instructors"]:
            return None, True
        student = data["students"].get(digest)
        if student is None:
            raise ServiceError(401, "This token is not valid (it may have been replaced): ask your instructor for yours.")
        return student, False


class HubUsers:
    """Who is who when JupyterHub runs the service (``autograder serve --hub``): the hub says whose
    a token is.  Hub admins and members of the instructor group read the class's submissions;
    everyone else with access to the service submits as themselves."""

    def __init__(self, instructor_group: str = "instructors") -> None:
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            raise AutograderError("--hub needs to run as a JupyterHub service: JUPYTERHUB_API_TOKEN is not set. "
                                  "Register `autograder serve --hub` in c.JupyterHub.services (see the README).")
        try:
            from jupyterhub.services.auth import HubAuth
        except ImportError:
            raise AutograderError("--hub needs JupyterHub's Python package: pip install jupyterhub") from None
        self.auth = HubAuth(cache_max_age=60)
        self.group = instructor_group

    def who(self, token: str | None) -> tuple[str | None, bool]:
        if not token:
            raise ServiceError(401, "Send your JupyterHub token: Authorization: token <token>.")
        try:
            model = self.auth.user_for_token(token, sync=True)
        except Exception as error:  # noqa: BLE001 - the hub is down or answered nonsense
            logging.getLogger("autograder").warning("the hub could not say whose a token is: %s", error)
            raise ServiceError(503, "The hub could not be asked who you are; try again in a minute.",
                               retry_after=60) from None
        if not model or model.get("kind", "user") != "user":
            raise ServiceError(401, "The hub does not know this token (it may have expired): log in to the hub again.")
        if self.auth.access_scopes and not self.auth.check_scopes(self.auth.access_scopes, model):
            raise ServiceError(403, "The hub does not give you access to this service: ask your instructor.")
        if model.get("admin") or self.group in (model.get("groups") or []):
            return None, True
        name = str(model.get("name", ""))
        if not STUDENT_NAME.fullmatch(name):
            raise ServiceError(403, "Your hub user name is not one the gradebook can hold (letters, digits, . _ @ -).")
        return name, False


# -------------------------------------------------------------------------- submissions


@dataclass
class Meta:
    id: str
    student: str
    ps: str
    submitted_at: str  # as nbgrader writes timestamp.txt
    received: float
    seed: int


class RecordedFile:
    """Which submission of each student and problem set the gradebook holds (the "best" policy),
    kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._data = {}

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        return value if isinstance(value, dict) and isinstance(value.get("score"), (int, float)) else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        self._data[key] = value
        _replace_synced(self.path, json.dumps(self._data, indent=1).encode("utf-8"))


class Store:
    """Submissions on disk; the queue of those not graded yet."""

    def __init__(self, course: Course) -> None:
        self.course = course
        self.folder = course.root / SERVICE_DIR / "submissions"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.metas: dict[str, Meta] = {}
        for entry in sorted(self.folder.iterdir()):
            meta = self._read_meta(entry)
            if meta is not None:
                self.metas[meta.id] = meta

    def _read_meta(self, entry: Path) -> Meta | None:
        if not SUBMISSION_ID.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            return None
        try:
            return Meta(**json.loads((entry / "meta.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def pending(self) -> list[str]:
        return [sid for sid in sorted(self.metas) if not (self.folder / sid / "report.json").is_file()]

    def all(self) -> list[Meta]:
        with self._lock:
            return list(self.metas.values())

    def recent(self, student: str, ps: str, since: float) -> list[Meta]:
        return [meta for meta in self.all() if meta.student == student and meta.ps == ps and meta.received >= since]

    def accept(self, student: str, ps: str, data: bytes, *, mirror: bool = True) -> Meta:
        """Store a submission durably; return it once it is on disk."""
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        meta = Meta(id=f"{stamp}-{secrets.token_hex(6)}", student=student, ps=ps,
                    submitted_at=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d} UTC",
                    received=now, seed=secrets.randbits(31))
        incoming = self.folder / f".incoming-{meta.id}"
        incoming.mkdir()
        _write_synced(incoming / "notebook.ipynb", data)
        _write_synced(incoming / "meta.json", json.dumps(meta.__dict__).encode())
        _sync_directory(incoming)
        os.rename(incoming, self.folder / meta.id)
        _sync_directory(self.folder)
        with self._lock:
            self.metas[meta.id] = meta
        if mirror:
            self.mirror_to_nbgrader(meta, data)
        return meta

    def mirror_to_nbgrader(self, meta: Meta, data: bytes) -> None:
        """A submission where nbgrader (and ``autograder grade``) expect it: the latest, or
        under the "best" policy the best so far."""
        target = self.course.root / "submitted" / meta.student / meta.ps
        target.mkdir(parents=True, exist_ok=True)
        _replace_synced(target / f"{meta.ps}.ipynb", data)
        _replace_synced(target / TIMESTAMP_FILE, (meta.submitted_at + "\n").encode())

    def notebook(self, sid: str) -> bytes:
        return (self.folder / sid / "notebook.ipynb").read_bytes()

    def save_result(self, sid: str, report: dict[str, Any], page: str) -> None:
        _replace_synced(self.folder / sid / "page.html", page.encode("utf-8"))
        _replace_synced(self.folder / sid / "report.json", json.dumps(report).encode("utf-8"))

    def result(self, sid: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / sid / "report.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def page(self, sid: str) -> str | None:
        try:
            return (self.folder / sid / "page.html").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None


# ------------------------------------------------------------------------------ service


class Service:
    """Accepts, stores, queues and grades submissions; answers questions about them."""

    def __init__(self, course: Course, *, limit_per_hour: int = 10, gradebook: bool = True,
                 jobs: int | None = None, cooldown: float = 0.0, policy: str = "latest",
                 users: Tokens | HubUsers | None = None, scheduler: str | None = None) -> None:
        if policy not in POLICIES:
            raise ServiceError(400, f"The grade policy is one of {', '.join(POLICIES)}, not {policy!r}.")
        self.course = course
        self.gradebook = gradebook
        self.cooldown, self.policy = max(0.0, float(cooldown)), policy
        self._recorded = RecordedFile(course.root / SERVICE_DIR / "recorded.json")
        self._writers: dict[str, Any] = {}
        self.tokens = users or Tokens(course)
        self.store = Store(course)
        self.limit_per_hour = limit_per_hour
        self.problem_sets = set(course.problem_sets())
        self._cluster: Any = None
        if scheduler:  # graded on a Dask cluster; checked before the service opens
            from autograder.distributed import ClusterGrader

            self._cluster = ClusterGrader(scheduler)
            self._cluster.connect()
        self._queue: queue.Queue[str | None] = queue.Queue()
        for sid in self.store.pending():  # accepted before a crash: graded now
            self._queue.put(sid)
        self._submit_lock = threading.Lock()
        self._record_lock = threading.Lock()  # one gradebook session, written by one grader at a time
        self._graders = [threading.Thread(target=self._grade_forever, name=f"autograder-service-grader-{n}",
                                          daemon=True)
                         for n in range(max(1, jobs or (CLUSTER_JOBS if scheduler else default_jobs())))]
        for grader in self._graders:
            grader.start()

    # Requests --------------------------------------------------------------------------
    def submit(self, token: str | None, ps: str, data: bytes) -> Meta:
        student, _ = self.tokens.who(token)
        if student is None:
            raise ServiceError(403, "An instructor token reads submissions; students submit with their own.")
        if ps not in self.problem_sets:
            raise ServiceError(404, f"There is no problem set {ps[:80]!r}: one of {', '.join(sorted(self.problem_sets))}.")
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise ServiceError(413, f"The notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB.")
        try:
            parse_notebook(data, f"{ps}.ipynb")
        except NotebookError as error:
            raise ServiceError(400, str(error)) from None
        with self._submit_lock:  # the limit is checked and the submission stored as one step
            now = time.time()
            recent = sorted(meta.received for meta in self.store.recent(student, ps, now - 3600))
            if len(recent) >= self.limit_per_hour:
                wait = recent[-self.limit_per_hour] + 3600 - now
                at = time.strftime("%H:%M UTC", time.gmtime(now + wait))
                raise ServiceError(429, f"You have submitted {ps} {len(recent)} times in the last hour (the limit is "
                                        f"{self.limit_per_hour}); your next submission is accepted from {at}.",
                                   retry_after=wait)
            if self.cooldown and recent and now - recent[-1] < self.cooldown:
                wait = recent[-1] + self.cooldown - now
                at = time.strftime("%H:%M:%S UTC", time.gmtime(now + wait))
                raise ServiceError(429, f"You submitted {ps} {now - recent[-1]:.0f} seconds ago, and this course "
                                        f"allows one submission every {self.cooldown:g} seconds; your next "
                                        f"submission is accepted from {at}.", retry_after=wait)
            # Under "best", the nbgrader copy follows the submission the gradebook holds (after grading).
            meta = self.store.accept(student, ps, data, mirror=self.policy == "latest")
        self._queue.put(meta.id)
        return meta

    def status(self, token: str | None, sid: str) -> dict[str, Any]:
        meta = self._visible(token, sid)
        report = self.store.result(sid)
        return {"id": sid, "problem_set": meta.ps, "student": meta.student, "submitted_at": meta.submitted_at,
                "status": "graded" if report is not None else "queued", "report": report}

    def page(self, token: str | None, sid: str) -> str:
        self._visible(token, sid)
        page = self.store.page(sid)
        if page is None:
            raise ServiceError(404, "This submission is not graded yet.")
        return page

    def mine(self, token: str | None) -> list[dict[str, Any]]:
        student, instructor = self.tokens.who(token)
        return [{"id": meta.id, "problem_set": meta.ps, "student": meta.student, "submitted_at": meta.submitted_at,
                 "status": "graded" if self.store.result(meta.id) is not None else "queued"}
                for meta in sorted(self.store.all(), key=lambda m: m.id)
                if instructor or meta.student == student]

    def _visible(self, token: str | None, sid: str) -> Meta:
        student, instructor = self.tokens.who(token)
        meta = self.store.metas.get(sid) if SUBMISSION_ID.fullmatch(sid) else None
        if meta is None or not (instructor or meta.student == student):
            raise ServiceError(404, "There is no such submission of yours.")  # others' are not even named
        return meta

    # Grading ---------------------------------------------------------------------------
    def _grade_forever(self) -> None:
        """A grader thread: grades what is queued until told to stop.  Nothing that goes wrong
        with one submission, or with saving it, ends the thread (the others would wait forever);
        a submission whose result could not be saved is graded again when the service restarts."""
        from autograder.grader.launcher import Launcher, share_a_core

        log = logging.getLogger("autograder")
        with contextlib.nullcontext(None) if self._cluster else Launcher() as launcher:
            if launcher is not None:  # this thread and its workers on a core of their own
                try:
                    launcher.start()
                    share_a_core(self._graders.index(threading.current_thread()), launcher)
                except Exception:  # noqa: BLE001 - grading starts the template again, or says why not
                    log.exception("the grader's worker template did not start; it is started again per submission")
            while (sid := self._queue.get()) is not None:
                try:
                    self._grade_one(sid, launcher)
                except Exception:  # noqa: BLE001 - one submission never stops the service
                    log.exception("grading submission %s failed", sid)
                    self._save_fault(sid)

    def _grade_one(self, sid: str, launcher: Any) -> None:
        from autograder.grader.grading import grade_notebook
        from autograder.html import student_page

        meta = self.store.metas[sid]
        if self._cluster is not None:
            hand_in = HandIn(f"{meta.ps}.ipynb", self.store.notebook(sid), meta.submitted_at)
            report = self._cluster.grade(self.course.source_notebook(meta.ps), hand_in,
                                         student=meta.student, ps=meta.ps, limits=self.course.limits(),
                                         seed=meta.seed)
        else:
            report = grade_notebook(self.course.source(meta.ps), self.store.notebook(sid),
                                    notebook_name=f"{meta.ps}.ipynb", student=meta.student,
                                    seed=meta.seed, limits=self.course.limits(), launcher=launcher)
        report.submitted_at = meta.submitted_at
        with self._record_lock:
            if self._counts(meta, report):
                self._record(meta, report)  # sets the final score (late penalty, hand grades)
        self.store.save_result(sid, report.to_dict(), student_page(report))

    def _save_fault(self, sid: str) -> None:
        from autograder.batch import GRADER_FAULT
        from autograder.grader.grading import not_graded
        from autograder.html import student_page

        try:
            meta = self.store.metas[sid]
            report = not_graded(self.course.source(meta.ps), GRADER_FAULT, notebook=f"{meta.ps}.ipynb",
                                student=meta.student, seed=meta.seed)
            self.store.save_result(sid, report.to_dict(), student_page(report))
        except Exception:  # noqa: BLE001 - even the problem set cannot be read: say so plainly
            try:
                self.store.save_result(sid, {"status": "error", "error": GRADER_FAULT, "tests": []}, "")
            except Exception:  # noqa: BLE001 - nor can anything be saved (a full disk): the log says it
                logging.getLogger("autograder").exception("the result of submission %s could not be saved", sid)

    def _counts(self, meta: Meta, report: Any) -> bool:
        """Whether this graded submission becomes the one the gradebook holds: always under
        "latest"; under "best", when its score beats every earlier one (a tie keeps the earlier)."""
        if self.policy == "latest":
            return True
        key = f"{meta.student}/{meta.ps}"
        held = self._recorded.get(key)
        if held is not None and held["score"] >= report.score:
            return False
        self.store.mirror_to_nbgrader(meta, self.store.notebook(meta.id))
        self._recorded.set(key, {"id": meta.id, "score": report.score})
        return True

    def _record(self, meta: Meta, report: Any) -> None:
        """The latest graded submission in nbgrader's gradebook (as `autograder grade` records it),
        so formgrader and `nbgrader export` show it; a gradebook that cannot be written is a
        warning in the log, and the student still gets the feedback."""
        if not self.gradebook:
            return
        from autograder.batch import Submission
        from autograder.integrations.gradebook import GradebookError, GradebookTarget, GradebookWriter

        try:
            writer = self._writers.get(meta.ps)
            if writer is None:
                target = GradebookTarget.for_course(self.course, self.course.root / "submitted", None)
                writer = self._writers[meta.ps] = GradebookWriter(self.course, meta.ps, target).__enter__()
            writer.record(report, Submission(meta.student, meta.ps, self.course.root / "submitted" / meta.student / meta.ps))
            for warning in writer.warnings:
                logging.getLogger("autograder").warning("gradebook: %s", warning)
            writer.warnings.clear()
        except GradebookError as error:
            logging.getLogger("autograder").warning("submission %s not recorded in the gradebook: %s", meta.id, error)

    def close(self) -> None:
        for _ in self._graders:
            self._queue.put(None)
        for grader in self._graders:
            grader.join(timeout=30)
        for writer in self._writers.values():
            writer.__exit__(None, None, None)
        if self._cluster is not None:
            self._cluster.close()


# ---------------------------------------------------------------------------------- HTTP


def make_app(service: Service, prefix: str = "/") -> Any:
    """The service's routes (tornado), under ``prefix`` (JupyterHub's /services/<name>/)."""
    import tornado.web
    from tornado.ioloop import IOLoop

    class Base(tornado.web.RequestHandler):
        def token(self) -> str | None:
            header = self.request.headers.get("Authorization", "")
            return header[6:].strip() if header[:6].lower() == "token " else None

        def answer(self, status: int, payload: Any) -> None:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(payload))

        def refuse(self, error: ServiceError) -> None:
            if error.retry_after is not None:
                self.set_header("Retry-After", str(max(1, int(error.retry_after))))
            self.answer(error.status, {"message": str(error)})

        def write_error(self, status_code: int, **kwargs: Any) -> None:  # anything unforeseen: a sentence
            self.answer(status_code, {"message": "The service could not answer this request."})

        async def run(self, function: Any, *args: Any) -> Any:
            return await IOLoop.current().run_in_executor(None, function, *args)

    @tornado.web.stream_request_body
    class Submit(Base):
        def prepare(self) -> None:
            self._body = bytearray()
            self._too_large = False
            length = self.request.headers.get("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_NOTEBOOK_BYTES):
                self._too_large = True
                self.refuse(ServiceError(413, f"The notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB."))

        def data_received(self, chunk: bytes) -> None:
            if self._too_large:
                return
            self._body += chunk
            if len(self._body) > MAX_NOTEBOOK_BYTES:
                self._too_large = True
                self._body = bytearray()
                self.refuse(ServiceError(413, f"The notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB."))

        async def post(self, ps: str) -> None:
            if self._too_large:
                return
            try:
                meta = await self.run(service.submit, self.token(), ps, bytes(self._body))
            except ServiceError as error:
                return self.refuse(error)
            self.answer(202, {"id": meta.id, "status": "queued", "submitted_at": meta.submitted_at,
                              "poll": f"/api/submissions/{meta.id}"})

    class One(Base):
        async def get(self, sid: str) -> None:
            try:
                self.answer(200, await self.run(service.status, self.token(), sid))
            except ServiceError as error:
                self.refuse(error)

    class Page(Base):
        async def get(self, sid: str) -> None:
            try:
                page = await self.run(service.page, self.token(), sid)
            except ServiceError as error:
                return self.refuse(error)
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
            self.finish(page)

    class Mine(Base):
        async def get(self) -> None:
            try:
                self.answer(200, {"submissions": await self.run(service.mine, self.token())})
            except ServiceError as error:
                self.refuse(error)

    class Missing(Base):
        def prepare(self) -> None:
            self.answer(404, {"message": "No such page: the service answers under /api/submissions."})

    base = re.escape(prefix.rstrip("/"))
    return tornado.web.Application([
        (base + r"/api/submissions", Mine),
        (base + r"/api/submissions/([^/]{1,120})", One),
        (base + r"/api/submissions/([^/]{1,120})/page", Page),
        (base + r"/api/submit/([^/]{1,120})", Submit),
        (r".*", Missing),
    ])


def serve(course: Course, *, host: str = "127.0.0.1", port: int = 8765, limit_per_hour: int = 10,
          gradebook: bool = True, jobs: int | None = None, cooldown: float = 0.0, policy: str = "latest",
          hub: bool = False, instructor_group: str = "instructors", scheduler: str | None = None,
          ready: Any = None) -> None:
    """Run the service until interrupted (SIGINT or SIGTERM)."""
    import asyncio
    import signal

    import tornado.httpserver

    # As a JupyterHub service: the hub vouches for users, and the proxy passes /services/<name>/.
    users = HubUsers(instructor_group) if hub else None
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") if hub else "/"
    service = Service(course, limit_per_hour=limit_per_hour, gradebook=gradebook, jobs=jobs, cooldown=cooldown,
                      policy=policy, users=users, scheduler=scheduler)

    async def main() -> None:
        server = tornado.httpserver.HTTPServer(make_app(service, prefix), max_body_size=MAX_NOTEBOOK_BYTES + 2**20)
        server.listen(port, address=host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        print(f"Serving {course.root} on http://{host}:{port}{prefix.rstrip('/')}/api/submissions (Ctrl-C stops)",
              flush=True)
        if ready is not None:
            ready()
        await stop.wait()
        server.stop()

    try:
        asyncio.run(main())
    finally:
        service.close()


# ------------------------------------------------------------------------------- client


class ServiceClient:
    """Talks to a running service as a student (`autograder submit`, the Check button)."""

    def __init__(self, base: str, token: str, timeout: float = 60) -> None:
        self.base, self.token, self.timeout = base.rstrip("/"), token, timeout

    def _open(self, method: str, route: str, body: bytes | None = None) -> bytes:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base + route, data=body, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("message", "")
            except ValueError:
                message = ""
            raise AutograderError(message or f"The course's service answered HTTP {error.code}.") from None
        except (urllib.error.URLError, OSError) as error:
            raise AutograderError(f"The course's service at {self.base} could not be reached ({error}).") from None

    def call(self, method: str, route: str, body: bytes | None = None) -> dict[str, Any]:
        try:
            answer = json.loads(self._open(method, route, body))
        except ValueError:
            raise AutograderError(f"The course's service at {self.base} did not answer in JSON.") from None
        if not isinstance(answer, dict):
            raise AutograderError(f"The course's service at {self.base} answered something else than expected.")
        return answer

    def submit(self, ps: str, data: bytes) -> dict[str, Any]:
        return self.call("POST", f"/api/submit/{ps}", data)

    def wait(self, accepted: dict[str, Any], seconds: float) -> dict[str, Any]:
        """The submission's status once graded, or when ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            status = self.call("GET", f"/api/submissions/{accepted['id']}")
            if status.get("status") == "graded" or time.monotonic() > deadline:
                return status
            time.sleep(0.3)

    def page(self, sid: str) -> str:
        return self._open("GET", f"/api/submissions/{sid}/page").decode("utf-8", "replace")
