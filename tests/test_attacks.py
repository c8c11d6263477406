"""Hostile submissions.  Each one answers `double` wrongly (3x) unless its attack works, in which
case it answers correctly or otherwise tries to change its verdict.  Every one must score
exactly what the honest wrong answer scores, and the batch must survive them all."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from autograder.batch import Submission, grade_batch
from autograder.grading import grade_notebook
from autograder.report import PASSED

from conftest import leaked_worker_processes

WRONG = "\ndef double(x):\n    return 3 * x\n"
IF_LEAKED = "\ndef double(x):\n    return 2 * x if leaked else 3 * x\n"


def attacks(course_dir: Path, grader_pid: int, port: int) -> dict[str, str]:
    source = course_dir / "tiny.ipynb"
    return {
        "patch numpy": ("import numpy as np, numpy.testing\nnp.allclose = lambda *a, **k: True\n"
                        "np.isclose = lambda *a, **k: True\nnp.array_equal = lambda *a, **k: True\n"
                        "np.testing.assert_allclose = lambda *a, **k: None\n" + WRONG),
        "patch builtins": ("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
                           "builtins.AssertionError = type('Quiet', (Exception,), {})\n" + WRONG),
        "patch sys.modules": ("import sys, types\nfake = types.ModuleType('numpy')\n"
                              "fake.allclose = lambda *a, **k: True\nsys.modules['numpy'] = fake\n"
                              "sys.modules['autograder.checks'] = fake\n" + WRONG),
        "IPython input transformer": ("ip = get_ipython()\n"
                                      "ip.input_transformers_cleanup.append(lambda lines: [])\n" + WRONG),
        "read the source notebook": (f"try:\n    leaked = open({str(source)!r}).read()\n"
                                     "except OSError:\n    leaked = None\n" + IF_LEAKED),
        "glob the course tree": ("import glob, os\nleaked = []\n"
                                 f"for pattern in ({str(course_dir)!r} + '/**/*', '../../**/*.ipynb'):\n"
                                 "    for path in glob.glob(pattern, recursive=True):\n"
                                 "        try:\n            leaked.append(open(path, 'rb').read(1))\n"
                                 "        except OSError:\n            pass\n"
                                 f"try:\n    leaked += os.listdir({str(course_dir)!r})\n"
                                 "except OSError:\n    pass\n" + IF_LEAKED),
        "read /proc of the grader": ("leaked = None\nfor name in ('environ', 'cmdline', 'maps'):\n"
                                     f"    try:\n        leaked = open('/proc/{grader_pid}/' + name, 'rb').read()\n"
                                     "    except OSError:\n        pass\n" + IF_LEAKED),
        "write the gradebook": ("leaked = None\ntry:\n"
                                f"    open({str(course_dir / 'gradebook.db')!r}, 'w').write('points = 999')\n"
                                "    leaked = True\nexcept OSError:\n    pass\n" + IF_LEAKED),
        "overwrite another submission": ("leaked = None\ntry:\n"
                                         f"    open({str(course_dir / 'submitted' / 'honest' / 'tiny' / 'tiny.ipynb')!r}, 'w').write('{{}}')\n"
                                         "    leaked = True\nexcept OSError:\n    pass\n" + IF_LEAKED),
        "rigged __eq__": ("class Anything(float):\n    def __eq__(self, other):\n        return True\n"
                          "    __ne__ = lambda self, other: False\n"
                          "def double(x):\n    return Anything(0.0)\n"),
        "ndarray subclass": ("import numpy as np\nclass Agreeable(np.ndarray):\n"
                             "    def __eq__(self, other):\n        return True\n"
                             "    def __sub__(self, other):\n        return np.zeros(self.shape)\n"
                             "def double(x):\n    return (3 * np.asarray(x, dtype=float)).view(Agreeable)\n"),
        "object array": ("import numpy as np\ndef double(x):\n    return np.array([2 * x], dtype=object)\n"),
        "huge array": ("import numpy as np\ndef double(x):\n    return np.zeros(40_000_000)\n"),
        "os._exit": "import os\ndef double(x):\n    os._exit(0)\n",
        "sys.exit": "import sys\ndef double(x):\n    sys.exit(0)\n",
        "kill the parent": ("import os, signal\ndef double(x):\n    for pid in (os.getppid(), -1, "
                            f"{grader_pid}):\n        try:\n            os.kill(pid, signal.SIGKILL)\n"
                            "        except OSError:\n            pass\n    return 3 * x\n"),
        "segfault via ctypes": "import ctypes\ndef double(x):\n    ctypes.string_at(0)\n",
        "loop catching BaseException": ("def double(x):\n    while True:\n        try:\n"
                                        "            while True:\n                pass\n"
                                        "        except BaseException:\n            pass\n"),
        "loop ignoring SIGALRM": ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                  "def double(x):\n    while True:\n        pass\n"),
        "memory bomb": "def double(x):\n    hog = bytearray(10**11)\n    return 3 * x\n",
        "growing memory bomb": ("def double(x):\n    hog = []\n    while True:\n        hog.append(bytearray(10**8))\n"),
        "fork bomb": ("import os\ndef double(x):\n    while True:\n        try:\n            os.fork()\n"
                      "        except OSError:\n            pass\n"),
        "escaping fork": ("import os, time\ndef double(x):\n    if os.fork() == 0:\n        os.setsid()\n"
                          "        while True:\n            time.sleep(1)\n    return 3 * x\n"),
        "thread left running": ("import threading, builtins, numpy as np\ndef meddle():\n"
                                "    while True:\n        np.allclose = lambda *a, **k: True\n"
                                "        builtins.abs = lambda x: 0\n"
                                "threading.Thread(target=meddle, daemon=True).start()\n" + WRONG),
        "print gigabytes": ("import os\ndef double(x):\n    chunk = 'x' * 10**6\n    for _ in range(10**4):\n"
                            "        print(chunk)\n        try:\n            os.write(1, chunk.encode())\n"
                            "        except OSError:\n            pass\n    return 3 * x\n"),
        "socket to loopback": ("import socket\ntry:\n"
                               f"    leaked = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                               "except OSError:\n    leaked = None\n" + IF_LEAKED),
        "hard-coded visible answers": "def double(x):\n    return 6.0 if x == 3.0 else 3 * x\n",
    }


# Attacks on the worker's own channel can only make the student's own result worse.
SELF_HARM = {
    "garbage on every descriptor": ("import threading, os, time\ndef spray():\n    while True:\n"
                                    "        for fd in range(3, 40):\n            try:\n"
                                    "                os.write(fd, b'\\x00garbage')\n"
                                    "            except OSError:\n                pass\n"
                                    "        time.sleep(0.001)\n"
                                    "threading.Thread(target=spray, daemon=True).start()\n"
                                    "def double(x):\n    return 2 * x\n"),
    "forged reply frames": ("import os, struct\nfrom autograder import wire\n"
                            "def double(x):\n    frame = wire.encode({'op': 'reply', 'id': 1, 'ok': True, 'value': 2 * x})\n"
                            "    for fd in range(3, 20):\n        try:\n"
                            "            os.write(fd, struct.pack('<Q', len(frame)) + frame)\n"
                            "        except OSError:\n            pass\n    return 3 * x\n"),
}


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_every_attack_scores_what_the_honest_wrong_answer_scores(tiny, listener):
    course_dir = tiny.folder
    gradebook = course_dir / "gradebook.db"
    gradebook.write_text("the real gradebook")
    submitted = course_dir / "submitted"
    cases = {"honest": WRONG, **attacks(course_dir, os.getpid(), listener), **SELF_HARM}
    students = {}
    for number, (name, code) in enumerate(cases.items()):
        student = "honest" if name == "honest" else f"attack{number:02d}"
        students[student] = name
        folder = submitted / student / "tiny"
        folder.mkdir(parents=True)
        tiny.submission(student, {"double": code}).rename(folder / "tiny.ipynb")
    honest_copy = (submitted / "honest" / "tiny" / "tiny.ipynb").read_bytes()
    solution = submitted / "zz-solution" / "tiny"
    solution.mkdir(parents=True)
    tiny.submission("solution").rename(solution / "tiny.ipynb")

    subs = [Submission(student, "tiny", submitted / student / "tiny") for student in sorted(students)]
    subs.append(Submission("zz-solution", "tiny", solution))
    reports = {report.student: report for report in
               grade_batch(tiny.path, subs, course_dir / "reports", limits=tiny.limits, jobs=2)}

    honest = reports["honest"]
    assert honest.score == 1 and honest.status == "graded"
    for student, name in students.items():
        report = reports[student]
        assert report.status == "graded", f"{name}: {report.error}"
        if name in SELF_HARM:
            assert report.score <= honest.score, f"{name} gained points: {report.tests}"
            continue
        assert report.score == honest.score, f"{name} changed its score: {report.tests}"
        assert report.tests[0].status != PASSED, name
        assert report.tests[1].status == PASSED, f"{name} cost the next exercise: {report.tests[1]}"
    assert reports["zz-solution"].score == 3, "the batch did not survive the attacks"
    assert gradebook.read_text() == "the real gradebook"
    assert (submitted / "honest" / "tiny" / "tiny.ipynb").read_bytes() == honest_copy
    if os.geteuid() == 0:
        assert leaked_worker_processes() == [], "a worker process outlived its submission"


def test_messages_for_attacks_are_sentences_a_student_understands(tiny, listener):
    cases = attacks(tiny.folder, os.getpid(), listener)
    expected = {
        "segfault via ctypes": "SIGSEGV",
        "os._exit": "exited",
        "object array": "cannot be sent",
        "huge array": "larger than",
        "loop catching BaseException": "did not finish within",
        "memory bomb": "MemoryError",
    }
    for name, phrase in expected.items():
        path = tiny.submission(name.replace(" ", "-"), {"double": cases[name]})
        report = grade_notebook(tiny.source, path, limits=tiny.limits)
        assert phrase in report.tests[0].message, (name, report.tests[0].message)


def test_the_report_lists_the_protections_in_force(tiny):
    report = grade_notebook(tiny.source, tiny.submission("solution"), limits=tiny.limits)
    assert "resource limits" in report.protections
    if os.geteuid() == 0:
        assert {"no network", "unprivileged user"} <= set(report.protections)


def test_strict_mode_refuses_a_worker_that_lacks_a_protection():
    from autograder.session import ConfinementMissing, require_protections

    require_protections({}, strict=True)
    require_protections({"no network": "unshare failed"}, strict=False)
    with pytest.raises(ConfinementMissing, match="Refusing to grade in strict mode.*no network"):
        require_protections({"no network": "unshare failed: Operation not permitted"}, strict=True)


def test_strict_mode_grades_where_every_protection_is_in_force(tiny):
    import dataclasses

    from autograder.worker.confine import ALL_PROTECTIONS

    report = grade_notebook(tiny.source, tiny.submission("solution"),
                            limits=dataclasses.replace(tiny.limits, strict=True))
    if set(report.protections) >= set(ALL_PROTECTIONS):
        assert report.status == "graded" and report.score == 3
    else:
        assert report.status == "error" and "strict mode" in report.error
