"""Confining a worker process with the kernel's own mechanisms, before any student code runs.

Applied in the freshly forked worker, in this order:

1. (before the worker is forked, by its supervisor) new network and PID namespaces: no network
   interface but a loopback that is down, and the worker as pid 1, so that killing it kills
   every process it started, even one that left its process group;
2. resource limits: CPU seconds, address space, processes, open files, file size, no core dumps;
3. Landlock: read-only access to the Python installation and system libraries, read-write access
   to the worker's scratch directory, nothing else (so not the course's source/, solutions/,
   gradebook or other students' submissions); no TCP; no signals to processes outside the
   worker (so it cannot kill the grader);
4. when running as root: an unprivileged uid of its own, with no supplementary groups
   (dropped before Landlock is applied).

Each step reports whether it is in force.  A mechanism the kernel lacks is reported as missing;
the grader decides whether to go on (the default) or refuse (strict mode).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import resource
import stat
import sys
from dataclasses import dataclass, field
from typing import Any

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000

# Landlock filesystem rights, by the ABI version that introduced them.
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# Protections, by the names reports use.
RLIMITS = "resource limits"
NETWORK = "no network"
PROCESSES = "processes contained"
FILESYSTEM = "filesystem confined"
SIGNALS = "cannot signal the grader"
UNPRIVILEGED = "unprivileged user"
ALL_PROTECTIONS = (RLIMITS, NETWORK, PROCESSES, FILESYSTEM, SIGNALS, UNPRIVILEGED)


@dataclass
class Confinement:
    """What to confine a worker to.  Sent by the grader as plain data."""

    scratch: str
    readable: list[str] = field(default_factory=list)
    cpu_seconds: int = 600
    memory_bytes: int = 4 * 1024**3
    max_processes: int = 64
    max_open_files: int = 256
    max_file_bytes: int = 64 * 1024**2
    uid: int | None = None


@dataclass
class Applied:
    in_force: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when it has none."""
    result = _libc().syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                             ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(result), 0)


def _set_rlimits(settings: Confinement) -> None:
    limits = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: settings.cpu_seconds,
        resource.RLIMIT_AS: settings.memory_bytes,
        resource.RLIMIT_NOFILE: settings.max_open_files,
        resource.RLIMIT_FSIZE: settings.max_file_bytes,
        resource.RLIMIT_NPROC: settings.max_processes,
    }
    for which, value in limits.items():
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


_CLONE_NEWUSER, _CLONE_NEWPID = 0x10000000, 0x20000000


def enter_namespaces() -> Applied:
    """Give this process's next child new network and PID namespaces (a user namespace too
    when not root, which is what grants the right to make the others)."""
    applied = Applied()
    libc = _libc()
    flags = _CLONE_NEWNET | _CLONE_NEWPID
    if os.geteuid() != 0:
        flags |= _CLONE_NEWUSER
    if libc.unshare(flags) == 0:
        applied.in_force += [NETWORK, PROCESSES]
        return applied
    problem = f"unshare failed: {_errno_text()}"
    if libc.unshare(flags & ~_CLONE_NEWPID) == 0:
        applied.in_force.append(NETWORK)
        applied.missing[PROCESSES] = problem
    else:
        applied.missing[NETWORK] = applied.missing[PROCESSES] = problem
    return applied


def _landlock_ruleset(settings: Confinement, abi: int) -> int:
    """Build the Landlock ruleset (as the current user, who can still open every allowed path);
    :func:`_enforce_landlock` applies it."""
    libc = _libc()
    handled_fs = _FS_ABI1
    if abi >= 2:
        handled_fs |= _FS_REFER
    if abi >= 3:
        handled_fs |= _FS_TRUNCATE
    if abi >= 5:
        handled_fs |= _FS_IOCTL_DEV
    attr = _RulesetAttr(handled_fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(f"landlock_create_ruleset failed: {_errno_text()}")
    read_only = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    rules = [(path, read_only) for path in settings.readable]
    rules += [(settings.scratch, handled_fs), ("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE)]
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this machine
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _FILE_RIGHTS
                rule = _PathBeneathAttr(access & handled_fs, fd)
                if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(f"landlock_add_rule({path}) failed: {_errno_text()}")
            finally:
                os.close(fd)
    except OSError:
        os.close(ruleset)
        raise
    return ruleset


def _enforce_landlock(ruleset: int) -> None:
    libc = _libc()
    try:
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(f"prctl(NO_NEW_PRIVS) failed: {_errno_text()}")
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(f"landlock_restrict_self failed: {_errno_text()}")
    finally:
        os.close(ruleset)


def _traversable_by_others(path: str) -> bool:
    """Whether a user with no special rights can reach ``path`` (every directory above is o+x)."""
    current = os.path.abspath(path)
    while True:
        try:
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def _reach_python_through_descriptors() -> None:
    """Keep the Python installation importable after the uid drop, even where it lives under a
    directory other users cannot enter (such as /root).

    A descriptor opened now, as root, reaches it through /proc/self/fd/N, which skips the
    permission checks on the directories above it; Landlock still limits what can be read.
    """
    for prefix in sorted({sys.base_prefix, sys.prefix}, key=len, reverse=True):
        if _traversable_by_others(prefix):
            continue
        fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
        alias = f"/proc/self/fd/{fd}"

        def moved(entry: Any, prefix: str = prefix, alias: str = alias) -> Any:
            if isinstance(entry, str) and (entry == prefix or entry.startswith(prefix + os.sep)):
                return alias + entry[len(prefix):]
            return entry

        sys.path[:] = [moved(entry) for entry in sys.path]
        for module in list(sys.modules.values()):
            search = getattr(module, "__path__", None)
            if isinstance(search, list):
                search[:] = [moved(entry) for entry in search]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def _drop_privileges(uid: int, scratch: str) -> None:
    for root, dirs, files in os.walk(scratch):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            os.chown(name, uid, uid)
    _reach_python_through_descriptors()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def confine(settings: Confinement, applied: Applied) -> Applied:
    """Apply the remaining protections to the current process (the worker itself)."""
    try:
        _set_rlimits(settings)
        applied.in_force.append(RLIMITS)
    except (OSError, ValueError) as error:
        applied.missing[RLIMITS] = str(error)

    abi = landlock_abi()
    ruleset = None
    if abi:
        try:
            ruleset = _landlock_ruleset(settings, abi)
        except OSError as error:
            applied.missing[FILESYSTEM] = str(error)

    if os.geteuid() == 0:
        # A uid of its own: RLIMIT_NPROC then counts this worker's processes only, and the
        # grader's files and /proc entries are out of reach by ordinary permissions too.
        uid = settings.uid if settings.uid is not None else 100_000
        try:
            _drop_privileges(uid, settings.scratch)
            applied.in_force.append(UNPRIVILEGED)
        except OSError as error:
            applied.missing[UNPRIVILEGED] = str(error)
    else:
        applied.in_force.append(UNPRIVILEGED)

    if abi == 0:
        applied.missing[FILESYSTEM] = "this kernel has no Landlock"
        applied.missing[SIGNALS] = "this kernel has no Landlock"
    elif ruleset is not None:
        try:
            _enforce_landlock(ruleset)
            applied.in_force.append(FILESYSTEM)
            if abi >= 6:
                applied.in_force.append(SIGNALS)
        except OSError as error:
            applied.missing[FILESYSTEM] = str(error)
    if abi and SIGNALS not in applied.in_force:
        applied.missing.setdefault(SIGNALS, f"Landlock ABI {abi} cannot scope signals (needs 6)")

    return applied
