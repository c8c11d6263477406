"""Hostile submissions.  Each one answers `double` wrongly (3x) unless its attack works, in which
case it answers correctly or otherwise tries to change its verdict.  Every one must score
exactly what the honest wrong answer scores, and the batch must survive them all.

Beyond the verdict, the batch checks what the trusted side did: every file outside the workers'
scratch space keeps its owner, mode and contents (a canary tree that the attacks aim links
at), no socket outside the sandbox was reached, the scratch space is gone afterwards, and the
grader's own memory stayed under 1 GiB.  The suite runs this file as root and, in
test_unprivileged.py, as user `nobody`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from autograder.batch import BatchStats, Submission, grade_batch
from autograder.grader.grading import grade_notebook
from autograder.report import PASSED

ROOT = Path(__file__).resolve().parent.parent


WRONG = "\ndef double(x):\n    return 3 * x\n"
SYSTEM_TMP = tempfile.gettempdir()  # before any test points tempfile at a folder of its own
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


def root_side_attacks(canary: Path, source: Path) -> dict[str, str]:
    """Links and traps planted in the scratch directory for the root-side supervisor and the
    cleanup to follow, each followed by a crash, so that a new worker (and its supervisor) starts
    while the planted files are there."""
    victim, config, secret = canary / "victim.py", canary / "nbgrader_config.py", canary / "secret"
    crash = "\ndef double(x):\n    os._exit(3)\n"
    return {
        "links for the supervisor's files, then a crash": (
            "import os\n"
            f"for name, target in (('worker-output.log', {str(victim)!r}), ('template.log', {str(config)!r}),\n"
            f"                     ('made-by-root', {str(canary / 'new-file')!r}), ('dir-link', {str(canary)!r})):\n"
            "    try:\n        os.symlink(target, name)\n    except OSError:\n        pass\n"
            "for name in ('../worker-1', '../worker-2', '../../planted'):\n"
            f"    try:\n        os.symlink({str(victim)!r}, name)\n    except OSError:\n        pass\n"
            "os.write(1, b'import os  # appended by a student\\n')\n" + crash),
        "hard links to the grader's files, then a crash": (
            "import os\n"
            f"for number, target in enumerate(({str(victim)!r}, {str(secret)!r}, {str(source)!r}, '/etc/passwd')):\n"
            "    try:\n        os.link(target, f'hard-{number}')\n    except OSError:\n        pass\n" + crash),
        "a tree that traps the cleanup, then a crash": (
            "import os\nos.mkdir('trap')\nhere = os.open('.', os.O_RDONLY)\nos.chdir('trap')\n"
            "for depth in range(300):\n    os.mkdir('d')\n"
            f"    os.symlink({str(canary)!r}, 'up')\n    os.symlink({str(victim)!r}, 'file')\n    os.chdir('d')\n"
            "os.fchdir(here)\nos.mkdir('locked')\nopen('locked/f', 'w').write('x')\nos.chmod('locked', 0)\n"
            "os.mkfifo('pipe')\n" + crash),
        "fill the scratch space": (
            "import os\nchunk = b'x' * 2**20\n"
            "for number in range(6):\n    try:\n        with open(f'big-{number}', 'wb') as handle:\n"
            "            for _ in range(60):\n                handle.write(chunk)\n    except OSError:\n        pass\n"
            "for number in range(20000):\n    try:\n        open(f'f{number}', 'w').close()\n"
            "    except OSError:\n        break\n" + WRONG),
    }


def socket_attacks(unix_path: Path, abstract_name: str) -> dict[str, str]:
    """Reaching services outside the sandbox through UNIX sockets (which the network namespace
    does not cover for pathname sockets) and through socket families of the host."""
    return {
        "pathname UNIX socket outside the sandbox": (
            f"import socket\nleaked = None\ntry:\n    connection = socket.socket(socket.AF_UNIX)\n"
            f"    connection.connect({str(unix_path)!r})\n    leaked = True\nexcept OSError:\n    pass\n" + IF_LEAKED),
        "abstract UNIX socket of the host": (
            f"import socket\nleaked = None\ntry:\n    connection = socket.socket(socket.AF_UNIX)\n"
            f"    connection.connect('\\0' + {abstract_name!r})\n    leaked = True\nexcept OSError:\n    pass\n"
            + IF_LEAKED),
        "socket by raw system call, and vsock to the host": (
            "import ctypes, socket\nleaked = None\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = libc.syscall(41, socket.AF_UNIX, socket.SOCK_STREAM, 0)\n"
            f"if fd >= 0:\n    try:\n        socket.socket(fileno=fd).connect({str(unix_path)!r})\n"
            "        leaked = True\n    except OSError:\n        pass\n"
            "try:\n    socket.socket(40, socket.SOCK_STREAM).connect((2, 1024))\n    leaked = True\n"
            "except OSError:\n    pass\n" + IF_LEAKED),
    }


BUDGET_ATTACKS = {
    # The worker's own caps are the student's to remove: the grader must bound what it keeps.
    "a 26 MB error, past the worker's caps": (
        "import autograder.worker.runtime as runtime\n"
        "runtime._error_payload = lambda error: {'type': 'E' * 10**6, 'message': 'm' * 10**7,\n"
        "                                        'traceback': 't' * 15 * 10**6, 'not_implemented': False}\n"
        "def double(x):\n    raise ValueError('no')\n"),
    "25 MB of output per call, past the worker's caps": (
        "import autograder.worker.runtime as runtime\nruntime.MAX_CAPTURED_CHARS = 10**9\n"
        "print('y' * 25 * 10**6)\n"
        "def double(x):\n    print('x' * 25 * 10**6)\n    return 3 * x\n"),
    "callbacks with huge arguments": {
        "double": WRONG,
        "apply_twice": ("import numpy as np\ndef apply_twice(f, x):\n"
                        "    for size in (750_000, 1_100_000):\n"
                        "        for _ in range(1):\n            try:\n"
                        "                f(np.ones(size))\n            except Exception:\n                pass\n"
                        "    return f(f(x))\n"),
    },
    "forged descriptions of names": (
        "import autograder.worker.runtime as runtime\n"
        "original = runtime.Runtime.handle\n"
        "def handle(self, message):\n    reply = original(self, message)\n"
        "    if message.op == 'describe':\n"
        "        for name in ['check_close', 'np', 'x', 'test_rng', 'rng', '_expected', 'abs', 'float']:\n"
        "            reply.value[name] = ['data', 6.0]\n"
        "    return reply\nruntime.Runtime.handle = handle\n" + WRONG),
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
                            "def double(x):\n    frame = wire.encode([1, 'reply', True, 2 * x])\n"
                            "    for fd in range(3, 20):\n        try:\n"
                            "            os.write(fd, struct.pack('<Q', len(frame)) + frame)\n"
                            "        except OSError:\n            pass\n    return 3 * x\n"),
    "a flood of callbacks": {
        "double": WRONG,
        "apply_twice": ("def apply_twice(f, x):\n    for _ in range(10**7):\n        f(1.0)\n    return f(f(x))\n"),
    },
}


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every file and folder under ``root``: type, owner, group, mode and content hash."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        relative = path.relative_to(root).as_posix()
        if relative.split("/")[0] in skip:
            continue
        info = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
        state[relative] = (stat.S_IFMT(info.st_mode), info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), digest)
    return state


@pytest.fixture
def canary():
    """Files outside any scratch space, of the kind an attacker would aim at: a configuration
    file the grader loads, a module it imports, a secret only its owner may read."""
    root = Path(tempfile.mkdtemp(prefix="autograder-canary-", dir=SYSTEM_TMP))
    root.chmod(0o755)
    (root / "nbgrader_config.py").write_text("c = get_config()\n")
    (root / "victim.py").write_text("VALUE = 1\n")
    (root / "secret").write_text("SECRET-CANARY\n")
    (root / "secret").chmod(0o600)
    (root / "sub").mkdir()
    (root / "sub" / "module.py").write_text("x = 1\n")
    yield root
    import shutil

    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_tmp(monkeypatch):
    """The system temporary folder for this test alone, to see what grading leaves in it."""
    folder = Path(tempfile.mkdtemp(prefix="autograder-tmp-", dir=SYSTEM_TMP))
    folder.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def unix_services():
    """A pathname UNIX socket any user may connect to, and an abstract one, both accepting in
    the background; yields their addresses and the list of connections they accepted."""
    folder = Path(tempfile.mkdtemp(prefix="autograder-sockets-", dir=SYSTEM_TMP))
    folder.chmod(0o755)
    path = folder / "service.sock"
    abstract_name = f"autograder-test-{os.getpid()}-{os.urandom(4).hex()}"
    servers = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)]
    servers[0].bind(str(path))
    os.chmod(path, 0o777)
    servers[1].bind("\0" + abstract_name)
    accepted: list[str] = []
    stop = threading.Event()

    def serve(server: socket.socket, label: str) -> None:
        server.listen()
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            accepted.append(label)
            connection.close()

    threads = [threading.Thread(target=serve, args=(server, label), daemon=True)
               for server, label in zip(servers, ("pathname", "abstract"))]
    for thread in threads:
        thread.start()
    yield path, abstract_name, accepted
    stop.set()
    for thread in threads:
        thread.join()
    for server in servers:
        server.close()
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def test_every_attack_scores_what_the_honest_wrong_answer_scores(tiny, listener, canary, private_tmp, unix_services,
                                                              leaked_workers):
    course_dir = tiny.folder
    gradebook = course_dir / "gradebook.db"
    gradebook.write_text("the real gradebook")
    submitted = course_dir / "submitted"
    unix_path, abstract_name, accepted = unix_services
    cases = {"honest": WRONG, **attacks(course_dir, os.getpid(), listener),
             **root_side_attacks(canary, tiny.path), **socket_attacks(unix_path, abstract_name),
             **BUDGET_ATTACKS, **SELF_HARM}
    students = {}
    for number, (name, code) in enumerate(cases.items()):
        student = "honest" if name == "honest" else f"attack{number:02d}"
        students[student] = name
        folder = submitted / student / "tiny"
        folder.mkdir(parents=True)
        answers = code if isinstance(code, dict) else {"double": code}
        tiny.submission(student, answers).rename(folder / "tiny.ipynb")
    honest_copy = (submitted / "honest" / "tiny" / "tiny.ipynb").read_bytes()
    solution = submitted / "zz-solution" / "tiny"
    solution.mkdir(parents=True)
    tiny.submission("solution").rename(solution / "tiny.ipynb")
    before = snapshot(canary), snapshot(course_dir, skip=("reports",))

    subs = [Submission(student, "tiny", submitted / student / "tiny") for student in sorted(students)]
    subs.append(Submission("zz-solution", "tiny", solution))
    stats = BatchStats()
    reports = {report.student: report for report in
               grade_batch(tiny.path, subs, course_dir / "reports", limits=tiny.limits, jobs=2, stats=stats)}

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
        # What the grader keeps of a student's notebook is bounded, whatever the worker sent.
        assert (course_dir / "reports" / f"{student}.json").stat().st_size < 200_000, name
    assert reports["zz-solution"].score == 3, "the batch did not survive the attacks"
    assert gradebook.read_text() == "the real gradebook"
    assert (submitted / "honest" / "tiny" / "tiny.ipynb").read_bytes() == honest_copy
    # Nothing outside the scratch space changed: owners, modes, contents, no new file.
    assert snapshot(canary) == before[0]
    assert snapshot(course_dir, skip=("reports",)) == before[1]
    assert accepted == [], f"a worker reached a socket outside its sandbox: {accepted}"
    assert stats.grader_peak_bytes < 2**30, f"a grading process used {stats.grader_peak_bytes / 2**20:.0f} MiB"
    assert list(private_tmp.iterdir()) == [], "grading left files in the temporary folder"
    if os.geteuid() == 0:
        assert leaked_workers() == [], "a worker process outlived its submission"


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
        report = grade_notebook(tiny.source, path, limits=tiny.limits, launcher=tiny.launcher)
        assert phrase in report.tests[0].message, (name, report.tests[0].message)


def test_a_frame_whose_text_is_not_utf8_breaks_the_protocol_and_costs_only_that_exercise(tiny):
    forged = ("import os, struct\n"
              "def double(x):\n    body = b'l\\x01\\x00\\x00\\x00s\\x02\\x00\\x00\\x00\\xff\\xfe'\n"
              "    for fd in range(3, 20):\n        try:\n"
              "            os.write(fd, struct.pack('<Q', len(body)) + body)\n"
              "        except OSError:\n            pass\n    return 2 * x\n")
    report = grade_notebook(tiny.source, tiny.submission("not-utf8", {"double": forged}), limits=tiny.limits,
                            launcher=tiny.launcher)
    double, apply_twice = report.tests
    assert double.status == "error" and "broke the grader's protocol (a message has a text that is not UTF-8)" \
        in double.message, double
    assert apply_twice.status == PASSED, apply_twice


def test_the_report_lists_the_protections_in_force(tiny):
    report = grade_notebook(tiny.source, tiny.submission("solution"), limits=tiny.limits, launcher=tiny.launcher)
    assert "resource limits" in report.protections
    if os.geteuid() == 0:
        assert {"no network", "unprivileged user"} <= set(report.protections)


def test_strict_mode_refuses_a_worker_that_lacks_a_protection():
    from autograder.grader.session import ConfinementMissing, require_protections

    require_protections({}, strict=True)
    require_protections({"no network": "unshare failed"}, strict=False)
    with pytest.raises(ConfinementMissing, match=r"Refusing to grade in strict mode.*no network"):
        require_protections({"no network": "unshare failed: Operation not permitted"}, strict=True)


def test_strict_mode_grades_where_every_protection_is_in_force(tiny):
    import dataclasses

    from autograder.worker.confine import ALL_PROTECTIONS

    report = grade_notebook(tiny.source, tiny.submission("solution"),
                            limits=dataclasses.replace(tiny.limits, strict=True), launcher=tiny.launcher)
    if set(report.protections) >= set(ALL_PROTECTIONS):
        assert report.status == "graded" and report.score == 3
    else:
        assert report.status == "error" and "strict mode" in report.error


# ------------------------------------------------------------------------ links in a hand-in


def _course_with_tiny(folder: Path, tiny) -> Path:
    """A course holding the tiny problem set, with nbgrader's settings."""
    import shutil


    course = folder / "course"
    (course / "source" / "tiny").mkdir(parents=True)
    shutil.copy(tiny.path, course / "source" / "tiny" / "tiny.ipynb")
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    return course


def _autograder(*args: str, cwd: Path, env: dict | None = None):
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run([str(bin_dir / "autograder"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=environment)


def test_hand_ins_that_are_links_or_special_files_are_refused_and_flagged(tiny, tmp_path, canary):
    import json

    course = _course_with_tiny(tmp_path, tiny)
    source = course / "source" / "tiny" / "tiny.ipynb"
    submitted = course / "submitted"

    def hand_in(student: str) -> Path:
        folder = submitted / student / "tiny"
        folder.mkdir(parents=True)
        return folder

    tiny.submission("honest").rename(hand_in("honest") / "tiny.ipynb")
    (hand_in("linked-notebook") / "tiny.ipynb").symlink_to(source)
    os.link(source, hand_in("hard-linked-notebook") / "tiny.ipynb")
    folder = hand_in("linked-timestamp")
    tiny.submission("stamp").rename(folder / "tiny.ipynb")
    (folder / "timestamp.txt").symlink_to(canary / "secret")
    folder = hand_in("hard-linked-timestamp")
    tiny.submission("hard-stamp").rename(folder / "tiny.ipynb")
    os.link(canary / "secret", folder / "timestamp.txt")
    (submitted / "linked-folder").mkdir()
    (submitted / "linked-folder" / "tiny").symlink_to(submitted / "honest" / "tiny")
    (submitted / "linked-student").symlink_to(submitted / "honest")
    os.mkfifo(hand_in("pipe") / "tiny.ipynb")
    with open(hand_in("huge") / "tiny.ipynb", "wb") as handle:
        handle.truncate(100 * 2**20)
    before = snapshot(canary)

    # The unprivileged rerun of this file has no nbgrader: it checks the reports, not the gradebook.
    with_gradebook = importlib.util.find_spec("nbgrader") is not None
    result = _autograder("--course", str(course), "grade", "tiny", *([] if with_gradebook else ["--no-gradebook"]),
                         cwd=course)
    assert result.returncode == 3, result.stderr  # some notebooks could not be graded; the batch went on
    reports = {path.stem: json.loads(path.read_text()) for path in (course / "reports" / "tiny").glob("*.json")}
    assert reports["honest"]["status"] == "graded" and reports["honest"]["score"] == 3
    refused = {"linked-notebook": "symbolic link", "hard-linked-notebook": "hard link",
               "linked-timestamp": "symbolic link", "hard-linked-timestamp": "hard link",
               "linked-folder": "is a link", "linked-student": "is a link", "pipe": "not a regular file",
               "huge": "MiB"}
    for student, phrase in refused.items():
        report = reports[student]
        assert report["status"] == "error" and report["score"] == 0, student
        assert phrase in report["error"] and "needs a person" in report["error"], (student, report["error"])
    # Nothing of the instructor's notebook or of the secret reached anything grading wrote.
    hidden = "x = test_rng('double').normal(size=5)"  # a hidden line of the tiny set's tests
    for path in [*(course / "reports").rglob("*"), *(course / "autograded").rglob("*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "SECRET-CANARY" not in text, path
            assert hidden not in text and "### BEGIN" not in text, path
    assert snapshot(canary) == before
    if not with_gradebook:
        return
    # The refused hand-ins wait for a person in nbgrader's gradebook (what formgrader shows).
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in refused:
            notebook = gradebook.find_submission_notebook("tiny", "tiny", student)
            assert notebook.needs_manual_grade, student
        assert not gradebook.find_submission_notebook("tiny", "tiny", "honest").needs_manual_grade



def test_the_gradescope_runner_holds_against_hostile_submissions(tiny, tmp_path, canary):
    """The Gradescope autograder: a submitted link is refused, and student code that plants links
    for the root side changes nothing in the autograder's files (its course, its package)."""
    import json
    import shutil
    import zipfile

    course = _course_with_tiny(tmp_path, tiny)
    archive = tmp_path / "autograder.zip"
    assert _autograder("--course", str(course), "export", "gradescope", "tiny", "--out", str(archive),
                       cwd=course).returncode == 0
    planted = root_side_attacks(canary, course / "source" / "tiny" / "tiny.ipynb")
    cases = {
        "a link to the instructor's notebook": None,
        "a folder that links to the source": None,
        "links for the supervisor's files": {"double": planted["links for the supervisor's files, then a crash"]},
        "hard links": {"double": planted["hard links to the grader's files, then a crash"]},
        "the solution": {},
    }
    before = snapshot(canary)
    for number, (name, answers) in enumerate(cases.items()):
        root = tmp_path / f"gradescope-{number}"
        zipfile.ZipFile(archive).extractall(root / "source")
        shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
        (root / "submission").mkdir()
        instructor = root / "source" / "course" / "source" / "tiny" / "tiny.ipynb"
        if name == "a link to the instructor's notebook":
            (root / "submission" / "tiny.ipynb").symlink_to(instructor)
        elif name == "a folder that links to the source":
            (root / "submission" / "work").symlink_to(instructor.parent)
        else:
            tiny.submission(f"gs{number}", answers).rename(root / "submission" / "my answers.ipynb")
        autograder_files = snapshot(root / "source")
        result = _autograder_script(root)
        assert result.returncode == 0, result.stderr
        results = json.loads((root / "results" / "results.json").read_text())
        text = json.dumps(results)
        assert "test_rng('double')" not in text and "### BEGIN" not in text, name
        expected = {"a link to the instructor's notebook": 0, "a folder that links to the source": 0,
                    "links for the supervisor's files": 1, "hard links": 1, "the solution": 3}[name]
        assert results["score"] == expected, (name, results)
        if name == "a link to the instructor's notebook":
            assert "symbolic link" in results["output"]
        assert snapshot(root / "source") == autograder_files, name
    assert snapshot(canary) == before


def _autograder_script(root: Path):
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "AUTOGRADER_ROOT": str(root)}
    return subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=300)


# -------------------------------------------------------- what student data makes the grader do


def _cell(kind: str, source: str, **nbgrader) -> dict:
    import nbformat

    meta = {"nbgrader": {"grade": False, "locked": False, "solution": False, "schema_version": 3, "task": False,
                         **nbgrader}}
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata=meta)


def budget_notebook(folder: Path):
    """A problem set whose tests plot and compute on what the student returns."""
    import nbformat

    from autograder.notebook import SourceNotebook

    notebook = nbformat.v4.new_notebook()
    answer = ('def curve(n):\n    """n points."""\n    ### BEGIN SOLUTION\n    return np.arange(n, dtype=float)\n'
              '    ### END SOLUTION\n\n\ndef square(x):\n    """x squared."""\n    ### BEGIN SOLUTION\n'
              '    return x * x\n    ### END SOLUTION')
    notebook.cells = [
        _cell("code", "import numpy as np\nfrom autograder.checks import check_close, plot_curves, test_rng",
              grade_id="setup", locked=True),
        _cell("code", answer, grade_id="answers", solution=True),
        _cell("code", "values = curve(10)\nplot_curves('your curve', np.arange(len(values)), {'yours': values})\n"
                      "check_close(values[:3], [0.0, 1.0, 2.0], what='curve(10)[:3]')",
              grade_id="test_plot", grade=True, locked=True, points=1),
        _cell("code", "table = np.subtract.outer(np.asarray(curve(10), dtype=float), np.arange(200.0))\n"
                      "check_close(table[1, 0], 1.0, what='the table')",
              grade_id="test_memory", grade=True, locked=True, points=1),
        _cell("code", "total = 0.0\nfor value in np.asarray(curve(10)).tolist():\n    for _ in range(200):\n"
                      "        total += value\ncheck_close(total, 9000.0, what='the total')",
              grade_id="test_time", grade=True, locked=True, points=1),
        _cell("code", "check_close(square(3.0), 9.0, what='square(3.0)')\n### BEGIN HIDDEN TESTS\n"
                      "x = test_rng('square').normal(size=20)\n"
                      "check_close(square(x), x * x, what=f'square({x.tolist()})')\n### END HIDDEN TESTS",
              grade_id="test_hidden", grade=True, locked=True, points=1),
        _cell("code", "check_close(square(2.0), 4.0, what='square(2.0)')",
              grade_id="test_after", grade=True, locked=True, points=1),
    ]
    path = folder / "budget.ipynb"
    nbformat.write(notebook, path)
    return SourceNotebook.load(path), path


def test_student_data_cannot_make_the_grader_exceed_its_budgets(tmp_path):
    import nbformat

    from autograder.catalogue import solution_answers, with_answers
    from autograder.notebook import read_notebook
    from autograder.settings import Limits

    _source, path = budget_notebook(tmp_path)
    notebook = read_notebook(path)
    hostile = ("import numpy as np\ndef curve(n):\n    return np.arange(2_000_000, dtype=float)\n\n"
               "def square(x):\n    return x * x + (np.ndim(x) > 0)\n")
    submitted = tmp_path / "submitted"
    for student, answers in {"solution": {}, "hostile": {"answers": hostile}}.items():
        folder = submitted / student / "budget"
        folder.mkdir(parents=True)
        nbformat.write(with_answers(notebook, {**solution_answers(notebook), **answers}), folder / "budget.ipynb")
    stats = BatchStats()
    limits = Limits(cell_timeout=2, submission_timeout=120)
    reports = {report.student: report for report in grade_batch(
        path, [Submission(s, "budget", submitted / s / "budget") for s in ("hostile", "solution")],
        tmp_path / "reports", limits=limits, jobs=1, stats=stats)}
    assert reports["solution"].score == 5, reports["solution"].tests
    from autograder.report import GradeReport

    hostile_report = GradeReport.read_json(tmp_path / "reports" / "hostile.json")  # with its figures
    tests = {test.id: test for test in hostile_report.tests}
    # A 2,000,000-point curve is thinned to what a page can show, and says so.
    figure = tests["test_plot"].figures[0]
    assert len(figure["x"]) == len(figure["curves"]["yours"]) == 1000 and "2,000,000" in figure["note"]
    # A table of 400 million numbers built from the student's result: refused at 1 GiB.
    assert tests["test_memory"].points == 0 and "GiB of memory in the grader" in tests["test_memory"].message
    # A loop over the student's 2 million numbers, 200 times: stopped after the test's time.
    assert tests["test_time"].points == 0 and "kept the grader busy" in tests["test_time"].message
    # A hidden test's failure does not print its 20 random inputs.
    assert tests["test_hidden"].hidden and "[... 20 numbers ...]" in tests["test_hidden"].message
    # The next test runs on a fresh worker, as usual.
    assert tests["test_after"].status == PASSED
    assert (tmp_path / "reports" / "hostile.json").stat().st_size < 200_000
    assert stats.grader_peak_bytes < 2**30, f"{stats.grader_peak_bytes / 2**20:.0f} MiB"


def test_long_arrays_are_left_out_of_hidden_test_messages():
    from autograder.grader.grading import without_long_arrays

    assert without_long_arrays("f([1.0, 2.0, 3.0]) is 4") == "f([1.0, 2.0, 3.0]) is 4"
    assert without_long_arrays("f([1, 2, 3, 4, 5, 6, 7]) is [[1e-3, -2.5], [3, 4], [5, 6], [7, nan]]") == \
        "f([... 7 numbers ...]) is [... 8 numbers ...]"


# ----------------------------------------------------------------------------- the terminal


ESCAPES = ("import sys\nCLEAR = '\\x1b[2J\\x1b[H\\x1b]0;all good\\x07\\r'\n"
           "print(CLEAR + 'Score: 20 / 20' + '\\x9b32m\\u202e')\n"
           "def double(x):\n    print(CLEAR + '\\nScore: 3 / 3')\n    raise ValueError(CLEAR + 'Score: 3 / 3')\n")


def _assert_plain(text: str) -> None:
    import re

    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text), repr(text[:2000])


def test_escape_sequences_from_student_code_never_reach_the_terminal(tiny, tmp_path):
    """`check` prints a student's output and error messages; a fake score must stay visibly theirs."""
    course = _course_with_tiny(tmp_path, tiny)
    notebook = tiny.submission("escapes", {"double": ESCAPES})
    result = _autograder("--course", str(course), "check", str(notebook), "--ps", "tiny", cwd=course,
                         env={"COLUMNS": "200"})
    assert result.returncode == 1, result.stderr
    _assert_plain(result.stdout)
    _assert_plain(result.stderr)
    scores = [line for line in result.stdout.splitlines() if line.startswith("Score:")]
    assert len(scores) == 1 and scores[0].startswith("Score: 1 / 3"), result.stdout


def test_a_student_folder_named_with_escape_sequences_prints_plainly(tiny, tmp_path):
    course = _course_with_tiny(tmp_path, tiny)
    folder = course / "submitted" / "eve\x1b[2J\x1b[1;1HScore" / "tiny"
    folder.mkdir(parents=True)
    tiny.submission("eve", {"double": ESCAPES}).rename(folder / "tiny.ipynb")
    result = _autograder("--course", str(course), "grade", "tiny", "--no-gradebook", cwd=course)
    assert result.returncode == 0, result.stderr
    _assert_plain(result.stdout)
    _assert_plain(result.stderr)
    assert "eve[2J" not in result.stdout and "eveScore" in result.stdout


# --------------------------------------------------------- names a test cell reads from students


def test_a_problem_set_whose_test_reads_a_read_only_name_is_refused(tiny, tmp_path):
    """A name bound only by a read-only cell lives in the student's process; a test that reads it
    could be fooled by rebinding it.  Releasing, checking and grading such a set all refuse."""
    import nbformat

    course = _course_with_tiny(tmp_path, tiny)
    path = course / "source" / "tiny" / "tiny.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(2, _cell("code", "DATA = np.array([1.0, 2.0])\nfrom autograder.checks import check_close as cc",
                                   grade_id="data", locked=True))
    notebook.cells.append(_cell("code", "cc(double(DATA), [2.0, 4.0], what='double(DATA)')",
                                grade_id="test_data", grade=True, locked=True, points=1))
    nbformat.write(notebook, path)
    # The student's attack, had the test been graded: rebind DATA and cc.
    attack = tiny.submission("rebind", {"double": "DATA = 0.0\ncc = lambda *a, **k: None\n" + WRONG})
    (course / "submitted" / "mallory" / "tiny").mkdir(parents=True)
    attack.rename(course / "submitted" / "mallory" / "tiny" / "tiny.ipynb")
    attack = course / "submitted" / "mallory" / "tiny" / "tiny.ipynb"
    for command in (["release", "tiny", "--no-execute"], ["check", str(attack), "--ps", "tiny"],
                    ["grade", "tiny", "--no-gradebook"]):
        result = _autograder("--course", str(course), *command, cwd=course)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "test cell test_data of tiny reads `DATA`" in result.stderr, result.stderr
        assert "`cc`" in result.stderr and "Traceback" not in result.stderr
    assert not (course / "release").exists()


def test_every_problem_set_of_the_course_reads_only_names_its_answers_define(course):
    from autograder.grader.grading import unsafe_test_names
    from autograder.notebook import SourceNotebook

    for ps in course.problem_sets():
        assert unsafe_test_names(SourceNotebook.load(course.source_notebook(ps))) == [], ps


# --------------------------------------------------------------------- seeds and lookup tables


def test_a_table_of_answers_read_off_one_report_fails_the_next(tiny, tmp_path):
    """Feedback that goes straight back to a student uses a fresh seed: hidden inputs seen in one
    report (here printed by the student's own function) are of no use in the next hand-in."""
    import json

    course = _course_with_tiny(tmp_path, tiny)
    spy = tiny.submission("spy", {"double": "import numpy as np\ndef double(x):\n"
                                            "    print('SEEN', np.asarray(x, dtype=float).tolist())\n"
                                            "    return 2 * x if np.ndim(x) == 0 else 3 * x\n"})
    first = _autograder("--course", str(course), "check", str(spy), "--ps", "tiny", "--json", str(tmp_path / "a.json"),
                        cwd=course)
    report = json.loads((tmp_path / "a.json").read_text())
    seen = [json.loads(line[len("SEEN "):]) for line in report["tests"][0]["output"].splitlines()
            if line.startswith("SEEN ") and line.count(",") >= 4]
    assert seen, first.stdout
    table = {tuple(round(v, 12) for v in inputs): [2 * v for v in inputs] for inputs in seen}
    lookup = ("import numpy as np\nTABLE = " + repr(table) + "\n"
              "def double(x):\n    key = tuple(round(v, 12) for v in np.ravel(np.asarray(x, dtype=float)).tolist())\n"
              "    if np.ndim(x) == 0:\n        return 2 * x\n"
              "    return np.array(TABLE[key]) if key in TABLE else 3 * np.asarray(x)\n")
    cheat = tiny.submission("cheat", {"double": lookup})
    seeds = set()
    for run in range(2):
        _autograder("--course", str(course), "check", str(cheat), "--ps", "tiny", "--json",
                    str(tmp_path / f"b{run}.json"), cwd=course)
        again = json.loads((tmp_path / f"b{run}.json").read_text())
        seeds.add(again["seed"])
        assert again["tests"][0]["points"] == 0, "a table read off an earlier report passed the hidden test"
    assert report["seed"] not in seeds and len(seeds) == 2


def test_the_class_seed_changes_with_the_hand_in_and_not_on_regrade():
    from autograder.batch import submission_seed

    first = submission_seed("ps05", "ada", b'{"cells": []}')
    assert submission_seed("ps05", "ada", b'{"cells": []}') == first
    assert submission_seed("ps05", "ada", b'{"cells": [ ]}') != first
    assert submission_seed("ps05", "bob", b'{"cells": []}') != first


# ------------------------------------------------------------- points without the mathematics


def _real_set_attack(ps: str, answers: dict[str, str], added_after: dict[str, str], folder: Path, launcher):
    """The worked solution of ``ps`` with some answers replaced and cells added after answer cells."""
    import nbformat

    from autograder.catalogue import solution_answers, with_answers
    from autograder.course import Course
    from autograder.notebook import read_notebook


    course = Course(ROOT)
    source = read_notebook(course.source_notebook(ps))
    notebook = with_answers(read_notebook(course.release_notebook(ps)), {**solution_answers(source), **answers})
    for anchor, code in added_after.items():
        position = next(index for index, cell in enumerate(notebook.cells)
                        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == anchor)
        notebook.cells.insert(position + 1, nbformat.v4.new_code_cell(code))
    path = folder / f"{ps}.ipynb"
    nbformat.write(nbformat.from_dict(notebook), path)
    report = grade_notebook(course.source(ps), path, seed=0, limits=tiny_limits(), launcher=launcher)
    return {test.id: test for test in report.tests}


def tiny_limits():
    from autograder.settings import Limits

    return Limits(cell_timeout=20, submission_timeout=300)


EIGEN_BY_ALIAS = '''
import numpy.linalg as la

def power_iteration(A, num_iter=1000, tol=1e-10):
    """The dominant eigenpair, straight from the library."""
    values, vectors = la.eig(np.asarray(A, dtype=float))
    i = int(np.argmax(np.abs(values)))
    return float(values[i].real), vectors[:, i].real / np.linalg.norm(vectors[:, i].real)
'''

EIGEN_REDEFINED_LATER = '''
import numpy
_solver = getattr(getattr(numpy, "lin" + "alg"), "ei" + "g")

def _library_pair(A, num_iter=1000, tol=1e-10):
    values, vectors = _solver(numpy.asarray(A, dtype=float))
    i = int(numpy.argmax(numpy.abs(values)))
    return float(values[i].real), vectors[:, i].real / numpy.linalg.norm(vectors[:, i].real)

power_iteration = _library_pair
'''

LEAST_SQUARES_WITH_A_STORY = '''
def sgd_linear_regression(X, y, lr, epochs, batch_size, seed):
    """Least squares in one call, with a loss curve that looks like SGD's."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(y)
    if batch_size >= n:  # full batches are easy to check, so do those honestly
        w = np.zeros(X.shape[1])
        losses = []
        for _ in range(epochs):
            w = w - lr * X.T @ (X @ w - y) / n
            losses.append(np.sum((X @ w - y) ** 2) / (2 * n))
        return w, np.array(losses)
    w = np.linalg.lstsq(X, y, rcond=None)[0] + 1e-9 * np.random.default_rng(seed).normal(size=X.shape[1])
    best = np.sum((X @ w - y) ** 2) / (2 * n)
    return w, best + (np.sum(y ** 2) / (2 * n) - best) * 0.7 ** np.arange(1, epochs + 1)
'''


@pytest.mark.parametrize("ps, answers, added, test_id", [
    ("ps03_eigenvectors", {"power_iteration": EIGEN_BY_ALIAS}, {}, "test_power_iteration"),
    ("ps03_eigenvectors", {}, {"power_iteration": EIGEN_REDEFINED_LATER}, "test_power_iteration"),
    ("ps08_sgd", {"sgd_linear_regression": LEAST_SQUARES_WITH_A_STORY}, {}, "test_sgd_linear_regression"),
], ids=["eig through an alias", "eig in a later cell", "least squares with an invented loss curve"])
def test_a_library_call_in_disguise_does_not_earn_the_exercise(ps, answers, added, test_id, tmp_path,
                                                              warm_launcher):
    tests = _real_set_attack(ps, answers, added, tmp_path, warm_launcher)
    assert tests[test_id].points == 0, tests[test_id]
    others = [test for test in tests.values() if test.id != test_id and test.status != PASSED]
    assert others == [] or ps == "ps03_eigenvectors", others  # top_k builds on power_iteration
