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
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from autograder.batch import BatchStats, Submission, grade_batch
from autograder.grading import grade_notebook
from autograder.report import PASSED

from conftest import leaked_worker_processes

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
                        "    for size in (750_000, 4_000_000):\n"
                        "        for _ in range(4):\n            try:\n"
                        "                f(np.ones(size))\n            except Exception:\n                pass\n"
                        "    return f(f(x))\n"),
    },
    "forged descriptions of names": (
        "import autograder.worker.runtime as runtime\n"
        "original = runtime.Runtime.handle\n"
        "def handle(self, message):\n    reply = original(self, message)\n"
        "    if message.get('op') == 'describe':\n"
        "        for name in ['check_close', 'np', 'x', 'test_rng', 'rng', '_expected', 'abs', 'float']:\n"
        "            reply['value'][name] = ['data', 6.0]\n"
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
                            "def double(x):\n    frame = wire.encode({'op': 'reply', 'id': 1, 'ok': True, 'value': 2 * x})\n"
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


def test_every_attack_scores_what_the_honest_wrong_answer_scores(tiny, listener, canary, private_tmp, unix_services):
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
