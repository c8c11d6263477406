"""Confining a worker process with the kernel's own mechanisms, before any student code runs.

Applied in the freshly forked worker, in this order:

1. (before the worker is forked, by its supervisor) new network, PID and mount namespaces: no
   network interface but a loopback that is down; the worker as pid 1, so that killing it kills
   every process it started, even one that left its process group; and a scratch directory that
   is a fresh, size-limited tmpfs mounted in that private mount namespace, so that nothing the
   worker writes is ever on the grader's filesystem, where a process running as root could be
   tricked into following a link the worker made;
2. resource limits: CPU seconds, address space, processes, open files, file size, no core dumps;
3. Landlock: read-only access to the Python installation and system libraries, read-write access
   to the worker's scratch directory, nothing else (so not the course's source/, solutions/,
   gradebook or other students' submissions); no TCP; no signals to processes outside the
   worker (so it cannot kill the grader);
4. when running as root: an unprivileged uid of its own, with no supplementary groups
   (dropped before Landlock is applied); otherwise the capabilities the user namespace gave;
5. a seccomp filter that refuses to create sockets (pathname UNIX sockets, which Landlock does
   not cover, would otherwise reach services outside the sandbox), io_uring and pidfd_getfd.

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

from autograder.wire.messages import WorkerSettings

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18

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
SCRATCH = "private scratch space"
SOCKETS = "cannot open sockets"
ALL_PROTECTIONS = (RLIMITS, NETWORK, PROCESSES, FILESYSTEM, SIGNALS, UNPRIVILEGED, SCRATCH, SOCKETS)

# Each worker's uid, as root: unique among live workers, since pids are (pid_max is below 2**22).
WORKER_UID_BASE = 100_000
# The worker's scratch tmpfs: what one submission may write, all files together.
SCRATCH_BYTES = 256 * 1024**2
SCRATCH_FILES = 10_000


@dataclass
class Applied:
    in_force: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    private_mounts: bool = False


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


def _set_rlimits(settings: WorkerSettings) -> None:
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


def _map_own_ids() -> None:
    """In a new user namespace, map this process's uid and gid to themselves, so the files it
    and its children create belong to the user running the grader (unmapped, creating a file
    fails)."""
    uid, gid = os.geteuid(), os.getegid()
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def enter_namespaces() -> Applied:
    """Give this process new mount and network namespaces, and its next child a new PID
    namespace (a user namespace too when not root, which is what grants the right to make the
    others).  ``Applied.private_mounts`` says whether the mount namespace is this process's own."""
    applied = Applied()
    libc = _libc()
    user = _CLONE_NEWUSER if os.geteuid() != 0 else 0
    attempts = [
        (_CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWNS, [NETWORK, PROCESSES]),
        (_CLONE_NEWNET | _CLONE_NEWNS, [NETWORK]),
        (_CLONE_NEWNET, [NETWORK]),
    ]
    problem = ""
    for flags, protections in attempts:
        if libc.unshare(flags | user) == 0:
            if user:
                try:
                    _map_own_ids()
                except OSError as error:
                    problem = f"the user namespace's ids could not be mapped: {error}"
                    break
            applied.in_force += protections
            applied.private_mounts = bool(flags & _CLONE_NEWNS)
            for name in (NETWORK, PROCESSES):
                if name not in protections:
                    applied.missing[name] = problem
            return applied
        problem = problem or f"unshare failed: {_errno_text()}"
    applied.missing[NETWORK] = applied.missing[PROCESSES] = problem
    return applied


def _mount_private_tmpfs(path: str, owner: int | None) -> str | None:
    """Mount a fresh tmpfs on ``path`` in this process's private mount namespace; returns why
    not, or None when it is mounted."""
    libc = _libc()
    # Mounts made here must not propagate back to the grader's namespace.
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return f"the mount namespace could not be made private: {_errno_text()}"
    options = f"size={SCRATCH_BYTES},nr_inodes={SCRATCH_FILES},mode=0700"
    if owner is not None:
        options += f",uid={owner},gid={owner}"
    if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()) != 0:
        return f"a tmpfs could not be mounted: {_errno_text()}"
    return None


def make_scratch(parent: str, name: str, owner: int | None, applied: Applied) -> int:
    """Create the worker's scratch directory ``parent/name`` and return a descriptor of it.

    ``parent`` is the grader's own directory (no worker can write in it) and ``name`` is new,
    so the path cannot lead anywhere else.  In a private mount namespace the directory is a
    fresh tmpfs, limited in size and number of files, that vanishes with the namespace: what the
    worker writes never reaches the grader's filesystem.  Elsewhere it is a plain directory,
    which the grader later removes without following links.
    """
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        problem = "no private mount namespace" if not applied.private_mounts else \
            _mount_private_tmpfs(os.path.join(parent, name), owner)
        if problem is None:
            applied.in_force.append(SCRATCH)
        else:
            applied.missing[SCRATCH] = problem
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        if owner is not None:
            os.fchown(fd, owner, owner)
        return fd
    finally:
        os.close(parent_fd)


def _landlock_ruleset(settings: WorkerSettings, scratch_fd: int, abi: int) -> int:
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
    rules: list[tuple[str | int, int]] = [(path, read_only) for path in settings.readable]
    rules += [(scratch_fd, handled_fs), ("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE)]
    try:
        for where, access in rules:
            if isinstance(where, int):
                fd = os.dup(where)
            else:
                try:
                    fd = os.open(where, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # not on this machine
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _FILE_RIGHTS
                rule = _PathBeneathAttr(access & handled_fs, fd)
                if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH,
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(f"landlock_add_rule({where}) failed: {_errno_text()}")
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


_python_reachable = False


def prepare_template() -> None:
    """In the template, once: what every worker forked from it would otherwise do itself
    (rewriting the import paths of every loaded module costs milliseconds per worker)."""
    global _python_reachable
    if os.geteuid() == 0 and not _python_reachable:
        _reach_python_through_descriptors()
        _python_reachable = True


def _drop_privileges(uid: int) -> None:
    # The scratch directory was made for this uid by the supervisor; nothing else is chowned.
    if not _python_reachable:
        _reach_python_through_descriptors()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Give up the capabilities a new user namespace grants (the grader is not root, so the
    worker keeps the grader's uid and must not keep them)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _libc().capset(ctypes.byref(header), data) != 0:
        raise OSError(f"capset failed: {_errno_text()}")


# seccomp: refuse socket(), io_uring_setup() and pidfd_getfd(), and any system call of another
# architecture (x32, or i386 through int 0x80, whose socketcall would bypass the rule).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED_SYSCALLS = {"x86_64": (41, 425, 438), "aarch64": (198, 425, 438)}
_X32_SYSCALL_BIT = 0x40000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO, _EACCES = 0x7FFF0000, 0x00050000, 13


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _socket_filter(machine: str) -> list[tuple[int, int, int, int]]:
    denied = _DENIED_SYSCALLS[machine]
    checks = [(_BPF_JGE_K, _X32_SYSCALL_BIT)] if machine == "x86_64" else []
    checks += [(_BPF_JEQ_K, number) for number in denied]
    allow = 4 + len(checks)  # index of RET ALLOW; RET DENY follows it
    program = [(_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
               (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
               (_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EACCES),
               (_BPF_LD_W_ABS, 0, 0, 0)]  # seccomp_data.nr
    for index, (code, value) in enumerate(checks, start=4):
        program.append((code, allow + 1 - (index + 1), 0, value))
    program += [(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW), (_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EACCES)]
    return program


def _deny_sockets() -> None:
    machine = os.uname().machine
    if machine not in _AUDIT_ARCH:
        raise OSError(f"no seccomp filter for the {machine} architecture")
    program = _socket_filter(machine)
    filters = (_SockFilter * len(program))(*[_SockFilter(*instruction) for instruction in program])
    fprog = _SockFprog(len(program), filters)
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(f"prctl(NO_NEW_PRIVS) failed: {_errno_text()}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(f"seccomp failed: {_errno_text()}")


def confine(settings: WorkerSettings, *, scratch_fd: int, uid: int | None, applied: Applied) -> Applied:
    """Apply the remaining protections to the current process (the worker itself), confined to
    the scratch directory open as ``scratch_fd``, as ``uid`` when running as root."""
    try:
        _set_rlimits(settings)
        applied.in_force.append(RLIMITS)
    except (OSError, ValueError) as error:
        applied.missing[RLIMITS] = str(error)

    abi = landlock_abi()
    ruleset = None
    if abi:
        try:
            ruleset = _landlock_ruleset(settings, scratch_fd, abi)
        except OSError as error:
            applied.missing[FILESYSTEM] = str(error)

    if os.geteuid() == 0:
        # A uid of its own: RLIMIT_NPROC then counts this worker's processes only, and the
        # grader's files and /proc entries are out of reach by ordinary permissions too.
        try:
            _drop_privileges(uid if uid is not None else WORKER_UID_BASE)
            applied.in_force.append(UNPRIVILEGED)
        except OSError as error:
            applied.missing[UNPRIVILEGED] = str(error)
    else:
        try:
            _drop_capabilities()
            applied.in_force.append(UNPRIVILEGED)
        except OSError as error:
            applied.missing[UNPRIVILEGED] = str(error)

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

    try:
        _deny_sockets()
        applied.in_force.append(SOCKETS)
    except OSError as error:
        applied.missing[SOCKETS] = str(error)
    return applied
