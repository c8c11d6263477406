"""The Check button: JupyterLab on loopback with the extension, its server half asked as the lab
extension asks it and attacked with requests a browser would never send, and the button itself
pressed in headless Chromium."""

from __future__ import annotations

import json
import os
import secrets
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
PS = "ps05_derivatives"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.token = free_port(), secrets.token_hex(16)
        # JupyterLab (with the lab extension, and its app reachable from the page for the test).
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--LabApp.expose_app_in_browser=True",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                   "--ServerApp.jpserver_extensions={'autograder.lab': True}", "--allow-root",
                   # This package is installed from the course folder: only a course above a
                   # notebook counts here, as on a student's machine.
                   "--AutograderLab.installed_course=False"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True, env={**os.environ, "JUPYTER_NO_CONFIG": "1"})
        deadline = time.monotonic() + 60
        while True:
            try:
                self.request("GET", "api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {self.process.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)

    def request(self, method: str, route: str, body: bytes | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{route}", data=body, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def check(self, path: str) -> tuple[int, dict]:
        return self.request("POST", "autograder/check", json.dumps({"path": path}).encode())

    def stop(self) -> list[str]:
        """Stop the server as a terminal's Ctrl-C would; the processes of its group still
        there after a few seconds (its warm template or workers would be leaks)."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while True:
            rows = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
            left = [row for row in rows.splitlines() if row.split()[1:2] == [str(self.process.pid)]]
            if not left or time.monotonic() > deadline:
                if left:
                    os.killpg(self.process.pid, signal.SIGKILL)
                return left
            time.sleep(0.2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A self-learner's course folder (hidden tests on the machine) and a student's folder with
    only the released notebook, served by one Jupyter server."""
    root = tmp_path_factory.mktemp("lab")
    course = one_set_course(root, PS)
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    nbformat.write(with_answers(release, solution_answers(source)), course / "solved.ipynb")
    nbformat.write(mistake_notebook(release, source, mistake), course / f"{PS}.ipynb")
    class_folder = root / "student"
    shutil.copytree(ROOT / "release" / PS, class_folder / "release" / PS)
    (class_folder / "work").mkdir()
    nbformat.write(mistake_notebook(release, source, mistake), class_folder / "work" / f"{PS}.ipynb")
    # The student "fixes" the failing visible test by emptying it: the check must not care.
    edited = mistake_notebook(release, source, mistake)
    for cell in edited.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            cell.source = "pass"
    nbformat.write(edited, class_folder / "work" / "edited.ipynb")
    nbformat.write(release, course / "untouched.ipynb")
    # A notebook downloaded on its own: no course, no release/ above it.
    (root / "downloads").mkdir()
    nbformat.write(mistake_notebook(release, source, mistake), root / "downloads" / f"{PS}.ipynb")
    (root / "garbage.ipynb").write_text("{ not a notebook")
    server = Server(root)
    yield server, mistake
    assert server.stop() == [], "the server left processes behind"


def test_a_self_learner_gets_the_hidden_tests_verdict_and_the_named_mistake(lab):
    server, mistake = lab
    status, solved = server.check("course/solved.ipynb")
    assert status == 200, solved
    assert solved["mode"] == "hidden" and solved["hidden_tests_run"] and solved["problem_set"] == PS
    [mine] = [row for row in solved["progress"] if row["ps"] == PS]
    assert mine["best"] == 20 and mine["checks"] >= 1
    report = solved["report"]
    assert report["score"] == report["max_score"] == 20
    assert "Exercise" in solved["page"]
    status, wrong = server.check(f"course/{PS}.ipynb")
    assert status == 200 and wrong["report"]["score"] < 20
    said = " ".join(f"{test['message']} {test.get('diagnosis') or ''}" for test in wrong["report"]["tests"]).lower()
    assert mistake.feedback and all(phrase.lower() in said for phrase in mistake.feedback), said
    # What a student reads carries no hidden-test code or server path.
    text = json.dumps(wrong)
    assert str(ROOT) not in text and "test_rng(" not in text


def test_with_only_the_release_the_visible_tests_run_and_it_says_so(lab):
    server, _ = lab
    status, result = server.check(f"student/work/{PS}.ipynb")
    assert status == 200, result
    assert result["mode"] == "visible" and result["hidden_tests_run"] is False
    assert "hidden tests were not run" in result["report"]["notes"][0].lower() or \
        "hidden tests are not on this machine" in result["report"]["notes"][0]
    assert result["report"]["score"] < 20
    # Emptied visible tests change nothing: the tests come from the released copy.
    status, edited = server.check("student/work/edited.ipynb")
    assert status == 200 and edited["report"]["score"] == result["report"]["score"]


def test_hostile_requests_get_a_sentence_and_the_server_lives_on(lab):
    server, _ = lab
    bad_json = server.request("POST", "autograder/check", b"{not json")
    assert bad_json[0] == 400 and "JSON" in bad_json[1]["message"]
    assert server.check("../etc/passwd.ipynb")[0] == 400
    assert server.request("POST", "autograder/check", json.dumps({"path": 7}).encode())[0] == 400
    missing = server.check("course/nothing.ipynb")
    assert missing[0] == 404 and "nothing.ipynb" in missing[1]["message"]
    garbage = server.check("garbage.ipynb")
    assert garbage[0] in (400, 422) and "Traceback" not in json.dumps(garbage[1])
    alone = server.check(f"downloads/{PS}.ipynb")
    assert alone[0] in (400, 404, 422) and "no tests to run" in alone[1]["message"], alone
    assert "test cells in the notebook still check your answers" in alone[1]["message"]
    assert server.check("course/solved.ipynb")[0] == 200  # still serving
    # Without the token: refused.
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/autograder/check", method="POST",
                                     data=json.dumps({"path": "course/solved.ipynb"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code in (401, 403)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.fail("Chromium is needed for the browser tests; `python3 run.py test` installs it.")
    return found


SHOTS = ROOT / "build" / "screenshots"


def open_notebook(page, server: Server, path: str) -> None:
    page.goto(f"http://127.0.0.1:{server.port}/lab/tree/{path}?token={server.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("""path => { const app = window.jupyterapp; const widget = app && app.shell.currentWidget;
        return widget && widget.context && widget.context.path === path && widget.context.isReady; }""",
                           arg=path, timeout=60_000)


def set_answer(page, grade_id: str, code: str) -> None:
    """Type an answer the way an edit reaches the notebook's model, without saving."""
    found = page.evaluate("""([id, code]) => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        for (const cell of notebook.widgets) {
            const meta = cell.model.getMetadata('nbgrader');
            if (meta && meta.grade_id === id) { cell.model.sharedModel.setSource(code); return true; }
        }
        return false;
    }""", [grade_id, code])
    assert found, grade_id


def test_pressing_check_in_the_browser_grades_what_is_on_screen(lab):
    from playwright.sync_api import sync_playwright

    from autograder.catalogue import load_catalogue as catalogue

    server, _ = lab
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    answers = solution_answers(source)
    wrong = next(m for m in catalogue(ROOT / "source" / PS / "mistakes.toml") if m.cell == "central_difference")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            # A self-learner's release notebook in the course folder: one exercise right, one wrong,
            # neither saved when Check is pressed.
            open_notebook(page, server, "course/untouched.ipynb")
            set_answer(page, "forward_difference", answers["forward_difference"])
            set_answer(page, "central_difference", wrong.code)
            page.locator(".jp-AutograderCheckButton:visible").click()
            page.wait_for_selector(".jp-AutograderPanel-test", timeout=120_000)
            panel = page.inner_text("#autograder-feedback")
            page.screenshot(path=str(SHOTS / "lab-check-hidden.png"))
            items = page.query_selector_all(".jp-AutograderPanel-test")
            by_id = {item.get_attribute("data-test-id"): item.inner_text() for item in items}
            scores = {item.get_attribute("data-test-id"): item.query_selector(".jp-AutograderPanel-points").inner_text()
                      for item in items}
            got, out_of = scores["test_forward_difference"].split(" / ")
            assert got == out_of, scores
            assert scores["test_central_difference"].split(" / ")[0] == "0", scores
            central = [by_id["test_central_difference"]]
            said = " ".join(central).lower()
            assert all(phrase.lower() in said for phrase in wrong.feedback), said
            assert "hidden tests (seed" in panel
            # The learner's progress, with this set's best so far.
            best = page.inner_text(f".jp-AutograderPanel-progress tr[data-ps='{PS}'] .jp-AutograderPanel-best")
            assert best.endswith("/ 20") and best != "not checked yet", best
            # Clicking an exercise selects its cell.
            page.click(".jp-AutograderPanel-test[data-test-id='test_central_difference'] button")
            active = page.evaluate("""() => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                return nb.widgets[nb.activeCellIndex].model.getMetadata('nbgrader').grade_id; }""")
            assert "central" in active
            # The edits were saved before grading: the file holds them.
            saved = read_notebook(server.root / "course" / "untouched.ipynb")
            assert any(cell.source == wrong.code for cell in saved.cells)

            # A student with only the release: the panel says the hidden tests were not run.
            open_notebook(page, server, f"student/work/{PS}.ipynb")
            page.locator(".jp-AutograderCheckButton:visible").click()
            page.wait_for_selector(".jp-AutograderPanel-visibleOnly", timeout=120_000)
            page.screenshot(path=str(SHOTS / "lab-check-visible-only.png"))
            assert "hidden tests are not on this machine" in page.inner_text("#autograder-feedback")
        finally:
            browser.close()
