"""`autograder serve --hub`: the grading service behind a real JupyterHub on loopback.

JupyterHub (dummy authentication) starts its proxy (configurable-http-proxy, from npm) and the
service; the hub's users submit through the proxy with their hub tokens, read their own
feedback and cannot read anyone else's; the instructor group reads the class."""

from __future__ import annotations

import json
import os
import secrets
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

from autograder.catalogue import load_catalogue, mistake_notebook
from autograder.notebook import read_notebook

from conftest import one_set_course

ROOT = Path(__file__).resolve().parent.parent
PS = "ps05_derivatives"
PROXY = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "configurable-http-proxy"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, token: str | None = None, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
            is_json = answer.headers.get_content_type() == "application/json"
            return answer.status, json.loads(text or b"{}") if is_json else {"html": text.decode()}
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text or b"{}")
        except ValueError:
            return error.code, {"message": text.decode("utf-8", "replace")}
    except (urllib.error.URLError, ConnectionError) as error:  # not listening (yet)
        return 0, {"message": str(error)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if not PROXY.exists():
        pytest.fail(f"JupyterHub's proxy is not installed at {PROXY}: `python3 run.py test` installs it (npm).")
    folder = tmp_path_factory.mktemp("hub")
    course = one_set_course(folder, PS)
    port, hub_port, proxy_port, service_port = (free_port() for _ in range(4))
    admin_token = secrets.token_hex(24)
    (folder / "admin_token").write_text(admin_token)
    autograder = Path(sys.executable).parent / "autograder"
    (folder / "jupyterhub_config.py").write_text(f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.JupyterHub.db_url = "sqlite:///{folder / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(folder / 'cookie_secret')!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [
    {{"name": "autograder", "url": "http://127.0.0.1:{service_port}", "cwd": {str(course)!r},
      "command": [{str(autograder)!r}, "serve", "--hub", "--port", "{service_port}", "--jobs", "1"]}},
    {{"name": "setup", "api_token": {admin_token!r}}},
]
c.JupyterHub.load_groups = {{"instructors": {{"users": ["prof"]}}}}
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services"]}},
    {{"name": "setup", "scopes": ["admin:users", "tokens"], "services": ["setup"]}},
]
""")
    process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(folder / "jupyterhub_config.py")],
                               cwd=folder, stdout=subprocess.DEVNULL, stderr=open(folder / "hub.log", "wb"),
                               start_new_session=True, env={**os.environ, "PATH": f"{autograder.parent}:{os.environ['PATH']}"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while call(f"{base}/services/autograder/api/submissions")[0] != 401:  # the service answers, via the proxy
            assert process.poll() is None and time.monotonic() < deadline, (folder / "hub.log").read_text()[-4000:]
            time.sleep(0.3)
        tokens = {}
        for user in ("ada", "bob", "prof"):
            call(f"{base}/hub/api/users/{user}", admin_token, "POST", b"{}")
            status, made = call(f"{base}/hub/api/users/{user}/tokens", admin_token, "POST",
                                json.dumps({"note": "test"}).encode())
            assert status in (200, 201), made
            tokens[user] = made["token"]
        yield base, tokens, course, folder
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_hub_user_submits_through_the_hub_and_only_they_read_the_feedback(hub):
    base, tokens, course, _ = hub
    service = f"{base}/services/autograder"
    release = read_notebook(ROOT / "release" / PS / f"{PS}.ipynb")
    source = read_notebook(ROOT / "source" / PS / f"{PS}.ipynb")
    mistake = load_catalogue(ROOT / "source" / PS / "mistakes.toml")[0]
    status, accepted = call(f"{service}/api/submit/{PS}", tokens["ada"], "POST",
                            nbformat.writes(mistake_notebook(release, source, mistake)).encode())
    assert status == 202, accepted
    deadline = time.monotonic() + 180
    while True:
        status, result = call(f"{service}/api/submissions/{accepted['id']}", tokens["ada"])
        assert status == 200, result
        if result["status"] == "graded":
            break
        assert time.monotonic() < deadline, result
        time.sleep(0.3)
    assert result["student"] == "ada" and result["report"]["score"] < 20
    said = json.dumps(result["report"]["tests"]).lower()
    assert all(phrase.lower() in said for phrase in mistake.feedback)
    # Stored under the hub user's name, where nbgrader looks.
    assert (course / "submitted" / "ada" / PS / f"{PS}.ipynb").is_file()
    # Another hub user cannot read it, nor tell that it exists; no token, or a made-up one, is refused.
    assert call(f"{service}/api/submissions/{accepted['id']}", tokens["bob"])[0] == 404
    assert call(f"{service}/api/submissions/{accepted['id']}/page", tokens["bob"])[0] == 404
    assert [row["id"] for row in call(f"{service}/api/submissions", tokens["bob"])[1]["submissions"]] == []
    assert call(f"{service}/api/submissions/{accepted['id']}")[0] == 401
    assert call(f"{service}/api/submissions", secrets.token_hex(16))[0] == 401
    # The instructor group reads the class.
    status, listed = call(f"{service}/api/submissions", tokens["prof"])
    assert status == 200 and [row["student"] for row in listed["submissions"]] == ["ada"]
    status, page = call(f"{service}/api/submissions/{accepted['id']}/page", tokens["prof"])
    assert status == 200 and "Exercise" in page["html"]


@pytest.mark.slow
def test_a_token_with_only_the_service_scope_works_and_one_without_it_is_refused(hub):
    """What the Check button sends from a hub user's JupyterLab: the server's own token, whose
    scopes the README has the hub grant (`c.Spawner.server_token_scopes`)."""
    base, _, _, folder = hub
    admin = (folder / "admin_token").read_text()
    scoped = {}
    for name, scopes in (("service", ["access:services!service=autograder"]), ("activity", ["users:activity!user"])):
        status, made = call(f"{base}/hub/api/users/ada/tokens", admin, "POST",
                            json.dumps({"note": name, "scopes": scopes}).encode())
        assert status in (200, 201), made
        scoped[name] = made["token"]
    status, listed = call(f"{base}/services/autograder/api/submissions", scoped["service"])
    assert status == 200 and all(row["student"] == "ada" for row in listed["submissions"]), listed
    status, refused = call(f"{base}/services/autograder/api/submissions", scoped["activity"])
    assert status == 403 and "access to this service" in refused["message"], refused
