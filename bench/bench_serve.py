"""A class submitting to `autograder serve` before a deadline, against `nbgrader autograde`.

    python bench/bench_serve.py [--students 300] [--within 60] [--ps ps05_derivatives]

Starts the service on loopback in a scratch course, has N simulated students submit one notebook
each (the solution, the release and catalogued mistakes in rotation) at random moments within
``--within`` seconds, and waits until every submission is graded.  Prints how many were accepted
and graded (each exactly once), the throughput, the median and 95th-percentile time from
submission to feedback, and how long ``nbgrader autograde`` takes to grade the same notebooks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_grade import build_class  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, token: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--within", type=float, default=60.0)
    parser.add_argument("--ps", default="ps05_derivatives")
    args = parser.parse_args()
    ps = args.ps
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        # The notebooks: the same class the grading benchmark builds, for nbgrader too.
        theirs, ours = Path(scratch) / "nbgrader", Path(scratch) / "service"
        theirs.mkdir()
        ours.mkdir()
        students = build_class(theirs, ps, args.students, plain_nbgrader=True)
        shutil.copy(ROOT / "nbgrader_config.py", ours)
        shutil.copytree(ROOT / "source" / ps, ours / "source" / ps)
        notebooks = {student: (theirs / "submitted" / student / ps / f"{ps}.ipynb").read_bytes() for student in students}
        issued = subprocess.run([str(BIN / "autograder"), "tokens", *[f"--student={s}" for s in students]], cwd=ours,
                                capture_output=True, text=True, check=True).stdout
        tokens = dict(line.split("\t") for line in issued.splitlines())

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        service = subprocess.Popen([str(BIN / "autograder"), "serve", "--port", str(port), "--limit", "1000"],
                                   cwd=ours, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                   start_new_session=True)
        assert "Serving" in service.stdout.readline()
        accepted: dict[str, tuple[str, float]] = {}
        refused: list[str] = []
        lock = threading.Lock()
        rng = random.Random(1)
        moments = sorted(rng.uniform(0, args.within) for _ in students)
        started = time.monotonic()

        def student_submits(student: str, at: float) -> None:
            time.sleep(max(0.0, started + at - time.monotonic()))
            try:
                answer = call(f"{base}/api/submit/{ps}", tokens[student], notebooks[student])
                with lock:
                    accepted[student] = (answer["id"], time.monotonic())
            except (urllib.error.URLError, OSError, ValueError) as error:
                with lock:
                    refused.append(f"{student}: {error}")

        threads = [threading.Thread(target=student_submits, args=(student, at)) for student, at in zip(students, moments)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        feedback_seconds: dict[str, float] = {}
        while len(feedback_seconds) < len(accepted):
            for student, (sid, sent) in accepted.items():
                if student not in feedback_seconds:
                    if call(f"{base}/api/submissions/{sid}", tokens[student])["status"] == "graded":
                        feedback_seconds[student] = time.monotonic() - sent
            time.sleep(0.2)
        total = time.monotonic() - started
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=60)
        stored = list((ours / "service" / "submissions").iterdir())
        reports = [entry for entry in stored if (entry / "report.json").is_file()]
        # Time to feedback as the service saw it: from the moment it received a submission to the
        # moment its report was on disk (the polling above only waits for the last one).
        times = sorted((entry / "report.json").stat().st_mtime
                       - json.loads((entry / "meta.json").read_text())["received"] for entry in reports)

        nbgrader_started = time.monotonic()
        subprocess.run([str(BIN / "nbgrader"), "autograde", ps, "--force"], cwd=theirs, capture_output=True, check=False)
        nbgrader_seconds = time.monotonic() - nbgrader_started

    print(f"{args.students} students submitting {ps} within {args.within:g} s, {os.cpu_count()} cores\n")
    print(f"accepted {len(accepted)}, refused {len(refused)}, stored {len(stored)}, graded {len(reports)} "
          f"(each once: {'yes' if len(reports) == len(stored) == len(accepted) else 'NO'})")
    print(f"all feedback given {total:.1f} s after the first student could submit "
          f"({len(accepted) / total:.1f} submissions/s)")
    print(f"time from submission to feedback: median {statistics.median(times):.2f} s, "
          f"95th percentile {times[int(0.95 * (len(times) - 1))]:.2f} s")
    print(f"nbgrader autograde on the same {args.students} notebooks: {nbgrader_seconds:.1f} s "
          f"({args.students / nbgrader_seconds:.2f} notebooks/s)")
    if refused or len(reports) != len(accepted):
        sys.exit(1)


if __name__ == "__main__":
    main()
