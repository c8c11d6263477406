"""Time from pressing Check to feedback, against nbgrader's Validate button, on this machine.

    python bench/bench_check.py [--ps ps05_derivatives] [--runs 5]

Starts a Jupyter server with the Check button's server half on loopback (as JupyterLab does),
posts the solution notebook to it as the button does (the first check is cold: the grader's warm
template starts; the next ones are warm), and runs ``nbgrader validate`` on the same notebook
(what the Validate button runs: the visible tests only, in a fresh kernel) and the terminal's
``autograder check``.  Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from autograder.catalogue import solution_answers, with_answers  # noqa: E402
from autograder.notebook import read_notebook  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ps", default="ps05_derivatives")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ps = args.ps
    with tempfile.TemporaryDirectory(prefix="bench-check-") as scratch:
        course = Path(scratch)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "source" / ps, course / "source" / ps)
        source = read_notebook(ROOT / "source" / ps / f"{ps}.ipynb")
        release = read_notebook(ROOT / "release" / ps / f"{ps}.ipynb")
        import nbformat

        notebook = course / f"{ps}.ipynb"
        nbformat.write(with_answers(release, solution_answers(source)), notebook)

        port, token = free_port(), secrets.token_hex(16)
        server = subprocess.Popen(
            [str(BIN / "python"), "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}", "--allow-root",
             "--ServerApp.jpserver_extensions={'autograder.lab': True}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def post(route: str, body: bytes | None = None) -> dict:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/{route}", data=body,
                                             method="POST" if body is not None else "GET",
                                             headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(request, timeout=300) as answer:
                return json.loads(answer.read() or b"{}")

        try:
            while True:
                try:
                    post("api/status")
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None:
                        sys.exit("the Jupyter server did not start")
                    time.sleep(0.1)
            checks = []
            for _ in range(1 + args.runs):
                started = time.perf_counter()
                result = post("autograder/check", json.dumps({"path": notebook.name}).encode())
                checks.append(time.perf_counter() - started)
                assert result["report"]["score"] == result["report"]["max_score"], result["report"]["score"]
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)
        validate = [timed([str(BIN / "nbgrader"), "validate", str(notebook)], course) for _ in range(args.runs)]
        terminal = [timed([str(BIN / "autograder"), "--course", str(course), "check", str(notebook)], course)
                    for _ in range(args.runs)]

    cold, warm = checks[0], statistics.median(checks[1:])
    print(f"{ps}, solution notebook, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print(f"{'':44}{'seconds':>10}")
    print(f"{'Check button, first check (cold)':44}{cold:>10.2f}")
    print(f"{'Check button, next checks (warm, median)':44}{warm:>10.2f}")
    print(f"{'autograder check in a terminal (median)':44}{statistics.median(terminal):>10.2f}")
    print(f"{'nbgrader validate (median; visible tests only)':44}{statistics.median(validate):>10.2f}")
    print(f"\nwarm Check, hidden tests included, is {statistics.median(validate) / warm:.1f}x faster than "
          "nbgrader's Validate")


if __name__ == "__main__":
    main()
