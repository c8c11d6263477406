"""`autograder serve`: a class submits over HTTP on loopback and reads its own feedback; the
service stores before it acknowledges, refuses bad requests with a sentence, limits how often,
and after SIGKILL grades every accepted submission exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.notebook import read_notebook

from conftest import one_set_course

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PS = "ps05_derivatives"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "autograder"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


class Service:
    def __init__(self, course: Path, limit: int = 3) -> None:
        self.course, self.port = course, free_port()
        self.process = subprocess.Popen(
            [str(BIN / "autograder"), "serve", "--port", str(self.port), "--limit", str(limit)], cwd=course,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.process.stdout.readline()  # printed once it listens
        assert "Serving" in line, line + self.process.stderr.read()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, route: str, token: str | None = None, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + route, data=body, method=method,
                                         headers={**({"Authorization": f"token {token}"} if token else {}),
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def graded(self, sid: str, token: str, patience: float = 120) -> dict:
        deadline = time.monotonic() + patience
        while True:
            status, answer = self.call("GET", f"/api/submissions/{sid}", token)
            assert status == 200, answer
            if answer["status"] == "graded" or time.monotonic() > deadline:
                return answer
            time.sleep(0.2)

    def kill(self, how: int = signal.SIGTERM) -> None:
        os.killpg(self.process.pid, how)
        self.process.wait(timeout=30)


@pytest.fixture
def course(tmp_path):
    course = one_set_course(tmp_path, PS)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    nbformat.write(with_answers(release, solution_answers(source)), tmp_path / f"{PS}.ipynb")
    nbformat.write(mistake_notebook(release, source, mistake), tmp_path / "wrong.ipynb")
    issued = cli("tokens", "--student", "ada", "--student", "bob", "--instructor", cwd=course)
    assert issued.returncode == 0, issued.stderr
    tokens = dict(line.split("\t") for line in issued.stdout.splitlines())
    return course, tokens, mistake


def test_a_student_submits_and_reads_only_their_own_feedback(course):
    folder, tokens, mistake = course
    service = Service(folder)
    try:
        # The terminal client: submit, wait, print the feedback.
        submitted = cli("submit", str(folder.parent / f"{PS}.ipynb"), "--server", service.url, "--token", tokens["ada"],
                        cwd=folder.parent)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "20/20" in submitted.stdout.replace(" ", "") or "20 / 20" in submitted.stdout
        # Over HTTP: bob's wrong answer, named.
        status, accepted = service.call("POST", f"/api/submit/{PS}", tokens["bob"],
                                        (folder.parent / "wrong.ipynb").read_bytes())
        assert status == 202, accepted
        # Stored before it was acknowledged: in the history and where nbgrader looks.
        assert (folder / "service" / "submissions" / accepted["id"] / "notebook.ipynb").is_file()
        assert (folder / "submitted" / "bob" / PS / f"{PS}.ipynb").is_file()
        assert (folder / "submitted" / "bob" / PS / "timestamp.txt").read_text().strip().endswith("UTC")
        result = service.graded(accepted["id"], tokens["bob"])
        assert result["status"] == "graded" and result["report"]["score"] < 20
        said = json.dumps(result["report"]["tests"]).lower()
        assert all(phrase.lower() in said for phrase in mistake.feedback)
        # In nbgrader's gradebook, as `autograder grade` would have recorded it.
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
            assert gradebook.find_submission(PS, "bob").score == pytest.approx(result["report"]["score"])
            assert gradebook.find_submission(PS, "ada").score == 20
        assert result["report"]["final_score"] == pytest.approx(result["report"]["score"])
        # Ada cannot read Bob's; the instructor can; nobody without a token can.
        assert service.call("GET", f"/api/submissions/{accepted['id']}", tokens["ada"])[0] == 404
        assert service.call("GET", f"/api/submissions/{accepted['id']}", tokens["(instructor)"])[0] == 200
        assert service.call("GET", f"/api/submissions/{accepted['id']}")[0] == 401
        assert service.call("GET", f"/api/submissions/{accepted['id']}", "forged")[0] == 401
        mine = service.call("GET", "/api/submissions", tokens["ada"])[1]["submissions"]
        assert {row["student"] for row in mine} == {"ada"}
        # The page holds no hidden-test code and no server path.
        request = urllib.request.Request(f"{service.url}/api/submissions/{accepted['id']}/page",
                                         headers={"Authorization": f"token {tokens['bob']}"})
        page = urllib.request.urlopen(request, timeout=30).read().decode()
        assert "Exercise" in page and str(folder) not in page and "test_rng(" not in page
    finally:
        service.kill()


def test_bad_requests_get_a_sentence_and_write_nothing(course):
    folder, tokens, _ = course
    service = Service(folder, limit=2)
    good = (folder.parent / f"{PS}.ipynb").read_bytes()
    try:
        cases = {
            "not a notebook": (f"/api/submit/{PS}", tokens["ada"], b"{ not json", 400),
            "no such set": ("/api/submit/ps99_nothing", tokens["ada"], good, 404),
            "path characters": ("/api/submit/..%2F..%2Fetc", tokens["ada"], good, 404),
            "no token": (f"/api/submit/{PS}", None, good, 401),
            "instructor submits": (f"/api/submit/{PS}", tokens["(instructor)"], good, 403),
        }
        for name, (route, token, body, expected) in cases.items():
            status, answer = service.call("POST", route, token, body)
            assert status == expected, (name, status, answer)
            assert answer["message"] and "Traceback" not in answer["message"], name
        # 200 MB announced: refused before it is read.
        status, answer = service.call("POST", f"/api/submit/{PS}", tokens["ada"], b"x" * 10,
                                      headers={"Content-Length": str(200 * 2**20)})
        assert status == 413 or status == 400, answer
        assert not (folder / "submitted").exists()
        assert list((folder / "service" / "submissions").iterdir()) == []
        # The limit: the third within the hour is refused with the time of the next one.
        for _ in range(2):
            assert service.call("POST", f"/api/submit/{PS}", tokens["ada"], good)[0] == 202
        status, answer = service.call("POST", f"/api/submit/{PS}", tokens["ada"], good)
        assert status == 429 and "next submission is accepted from" in answer["message"]
        assert service.call("POST", f"/api/submit/{PS}", tokens["bob"], good)[0] == 202  # others are not limited
        assert service.call("GET", "/api/nothing", tokens["ada"])[0] == 404
    finally:
        service.kill()


def test_killed_with_work_queued_it_grades_every_accepted_submission_once(course):
    folder, tokens, _ = course
    service = Service(folder, limit=50)
    good = (folder.parent / f"{PS}.ipynb").read_bytes()
    accepted = [service.call("POST", f"/api/submit/{PS}", tokens["ada" if n % 2 else "bob"], good)[1]["id"]
                for n in range(6)]
    service.kill(signal.SIGKILL)  # with most of them still queued
    submissions = folder / "service" / "submissions"
    assert sorted(entry.name for entry in submissions.iterdir()) == sorted(accepted)
    again = Service(folder, limit=50)
    try:
        for n, sid in enumerate(accepted):
            assert again.graded(sid, tokens["ada" if n % 2 else "bob"])["status"] == "graded"
        assert all((submissions / sid / "report.json").is_file() for sid in accepted)
        assert sorted(entry.name for entry in submissions.iterdir()) == sorted(accepted)  # nothing twice
    finally:
        again.kill()


def test_the_check_button_submits_to_the_service_when_one_is_configured(course, tmp_path):
    """A student's JupyterLab with no course on the machine, pointed at the class's service."""
    import secrets

    folder, tokens, _ = course
    service = Service(folder)
    work = tmp_path / "student"
    work.mkdir()
    shutil.copy(folder.parent / f"{PS}.ipynb", work / f"{PS}.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.jpserver_extensions={'autograder.lab': True}", "--AutograderLab.installed_course=False",
         f"--AutograderLab.service_url={service.url}", f"--AutograderLab.service_token={tokens['ada']}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/autograder/check", method="POST",
                                                 data=json.dumps({"path": f"{PS}.ipynb"}).encode(),
                                                 headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=300) as answer:
                    result = json.loads(answer.read())
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and lab.poll() is None, "the Jupyter server did not start"
                time.sleep(0.2)
        assert result["mode"] == "service" and result["hidden_tests_run"]
        assert result["report"]["score"] == result["report"]["max_score"] == 20
        assert "Exercise" in result["page"]
        # The service has it, in Ada's name.
        mine = service.call("GET", "/api/submissions", tokens["ada"])[1]["submissions"]
        assert [row["student"] for row in mine] == ["ada"]
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
        service.kill()


def _graded_in_process(service, sid: str, patience: float = 180) -> dict:
    deadline = time.monotonic() + patience
    while (report := service.store.result(sid)) is None:
        assert time.monotonic() < deadline, f"submission {sid} was not graded"
        time.sleep(0.1)
    return report


def test_under_the_best_policy_a_worse_resubmission_keeps_the_best_grade(course):
    from nbgrader.api import Gradebook

    from autograder.course import Course
    from autograder.service import Service as Grading

    folder, tokens, _ = course
    solved, wrong = (folder.parent / f"{PS}.ipynb").read_bytes(), (folder.parent / "wrong.ipynb").read_bytes()
    service = Grading(Course(folder), jobs=1, policy="best")
    try:
        first = service.submit(tokens["ada"], PS, solved)
        assert _graded_in_process(service, first.id)["score"] == 20
        second = service.submit(tokens["ada"], PS, wrong)
        assert _graded_in_process(service, second.id)["score"] < 20  # the student still sees this feedback
        with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
            assert gradebook.find_submission(PS, "ada").score == pytest.approx(20)
        # nbgrader's copy is the notebook the gradebook holds, with its time.
        assert (folder / "submitted" / "ada" / PS / f"{PS}.ipynb").read_bytes() == solved
        assert (folder / "submitted" / "ada" / PS / "timestamp.txt").read_text().strip() == first.submitted_at
        # Both stay in the history.
        assert {meta.id for meta in service.store.all()} == {first.id, second.id}
    finally:
        service.close()
    # After a restart the service still knows which one the gradebook holds.
    service = Grading(Course(folder), jobs=1, policy="best")
    try:
        third = service.submit(tokens["ada"], PS, wrong)
        _graded_in_process(service, third.id)
        with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
            assert gradebook.find_submission(PS, "ada").score == pytest.approx(20)
    finally:
        service.close()


def test_a_cooldown_refuses_a_quick_resubmission_with_the_time_it_opens(course):
    from autograder.course import Course
    from autograder.service import Service as Grading
    from autograder.service import ServiceError

    folder, tokens, _ = course
    wrong = (folder.parent / "wrong.ipynb").read_bytes()
    service = Grading(Course(folder), jobs=1, cooldown=600, gradebook=False)
    try:
        service.submit(tokens["ada"], PS, wrong)
        with pytest.raises(ServiceError) as refused:
            service.submit(tokens["ada"], PS, wrong)
        assert refused.value.status == 429 and 590 <= refused.value.retry_after <= 600
        assert "one submission every 600 seconds" in str(refused.value) and "UTC" in str(refused.value)
        service.submit(tokens["bob"], PS, wrong)  # another student is not held up
    finally:
        service.close()
    assert cli("serve", "--cooldown", "-1", cwd=folder).returncode == 2


def test_an_issued_token_never_reads_as_an_option(tmp_path, monkeypatch):
    """A token that started with "-" would make `autograder submit --token TOKEN` fail with a
    usage error (argparse reads it as an option): such a draw is thrown away."""
    from autograder import service
    from autograder.course import Course

    drawn = iter(["-looks-like-an-option", "a-usable-token"])
    monkeypatch.setattr(service.secrets, "token_urlsafe", lambda size: next(drawn))
    issued = service.Tokens(Course(tmp_path)).issue(["ada"])
    assert issued == {"ada": "a-usable-token"}
    assert service.Tokens(Course(tmp_path)).who("a-usable-token")[0] == "ada"


def test_a_result_that_cannot_be_saved_stops_neither_the_grader_nor_the_next_submission(course, monkeypatch):
    """A full disk when one result is saved (and again when the fault is saved instead) is
    logged; the grader thread goes on with the next submission, and the first is graded again
    when the service restarts."""
    from autograder.course import Course
    from autograder.service import Service as Grading

    folder, tokens, _ = course
    solved = (folder.parent / f"{PS}.ipynb").read_bytes()
    service = Grading(Course(folder), jobs=1)  # one grader thread: were it to end, nothing more is graded
    try:
        save = service.store.save_result

        def disk_full(sid, report, page):
            if service.store.metas[sid].student == "ada":  # ada's results cannot be saved
                raise OSError(28, "No space left on device")
            return save(sid, report, page)

        monkeypatch.setattr(service.store, "save_result", disk_full)
        first = service.submit(tokens["ada"], PS, solved)
        second = service.submit(tokens["bob"], PS, solved)
        assert _graded_in_process(service, second.id, patience=120)["score"] == 20
        assert service.store.result(first.id) is None
        assert first.id in service.store.pending()
    finally:
        service.close()
    monkeypatch.undo()
    service = Grading(Course(folder), jobs=1)
    try:
        assert _graded_in_process(service, first.id, patience=120)["score"] == 20
    finally:
        service.close()
