"""File operations on trees that someone other than the grader could have written.

Everything under ``submitted/`` was handed in by students, and a worker's scratch directory
was written by student code.  The grader may run as root, so it never resolves a path inside
such a tree the ordinary way: a symbolic link could lead it to the instructor's source notebook
or to ``/etc/shadow``, a hard link could make a root-only file look like a hand-in, a named
pipe could hang it.  Here every step is taken relative to a directory descriptor, with
``O_NOFOLLOW``, and a file is read only when it is a regular file with one link.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Deeper than this, a directory being removed is first moved up to the top of the tree, so
# removal holds a bounded number of descriptors however deep a worker nested its directories.
_MAX_DEPTH = 32
_MAX_PASSES = 50


class UnsafeFile(Exception):
    """A hand-in file the grader refuses to read; ``str(error)`` says why in one sentence."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "directory", "link" or "other"


def open_directory(path: Path, parts: tuple[str, ...] = ()) -> int:
    """A descriptor of the directory ``path/parts[0]/parts[1]/...``.

    ``path`` is the grader's own (an instructor's ``submitted/`` folder); each of ``parts`` is
    opened beneath the previous one without following links.  Raises :class:`UnsafeFile` when
    one of them is a link or not a directory, ``FileNotFoundError`` when it does not exist."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = path
    try:
        for part in parts:
            shown = shown / part
            try:
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(f"{shown} is a link or not a folder, so it was not read.") from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_directory(dir_fd: int) -> list[Entry]:
    """The entries of an open directory, sorted by name, without following any link."""
    entries = []
    with os.scandir(dir_fd) as scan:
        for item in scan:
            if item.is_symlink():
                kind = "link"
            elif item.is_dir(follow_symlinks=False):
                kind = "directory"
            elif item.is_file(follow_symlinks=False):
                kind = "file"
            else:
                kind = "other"
            entries.append(Entry(item.name, kind))
    return sorted(entries, key=lambda entry: entry.name)


def read_file(dir_fd: int, name: str, *, max_bytes: int, shown: str | None = None) -> bytes:
    """The bytes of the regular file ``name`` in the open directory ``dir_fd``.

    Refused, with one sentence, when it is a link (symbolic or hard), not a regular file, or
    larger than ``max_bytes``."""
    shown = shown or name
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(f"{shown} is a symbolic link, not a file, so it was not read; "
                             "hand in the file itself.") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{shown} is not a regular file, so it was not read.")
        if info.st_nlink != 1:
            raise UnsafeFile(f"{shown} is a hard link to another file, so it was not read; "
                             "hand in a copy of your own file.")
        if info.st_size > max_bytes:
            raise UnsafeFile(f"{shown} is {info.st_size / 2**20:.0f} MiB, more than the "
                             f"{max_bytes / 2**20:.0f} MiB a hand-in may be; clear the outputs and hand it in again.")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnsafeFile(f"{shown} is larger than the {max_bytes / 2**20:.0f} MiB a hand-in may be.")
        return b"".join(chunks)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ removal


def remove_tree(path: Path) -> None:
    """Remove the directory ``path`` (the grader's own) and everything a worker wrote in it,
    without following a single link and with a bounded number of open descriptors."""
    try:
        root = os.open(path, _DIRECTORY)
    except FileNotFoundError:
        return
    names = itertools.count()
    try:
        for _ in range(_MAX_PASSES):
            entries = os.listdir(root)
            if not entries:
                break
            for name in entries:
                _remove_entry(root, name, root, names, depth=1)
    finally:
        os.close(root)
    try:
        os.rmdir(path)
    except OSError:
        pass  # something still running wrote into it; the system's temporary-file cleaning will do


def _open_for_removal(dir_fd: int, name: str) -> int:
    try:
        return os.open(name, _DIRECTORY, dir_fd=dir_fd)
    except PermissionError:
        # A directory its owner made unreadable (only possible when the grader is not root and
        # the worker ran as the same user): make it the owner's again, by descriptor.
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
        finally:
            os.close(fd)
        return os.open(name, _DIRECTORY, dir_fd=dir_fd)


def _remove_entry(dir_fd: int, name: str, root: int, names: itertools.count, depth: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)  # a file, a link, a pipe: removing the name follows nothing
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    except PermissionError:
        pass  # a directory, as unlink reports it on some systems
    if depth > _MAX_DEPTH:
        os.rename(name, f".deep-{next(names)}", src_dir_fd=dir_fd, dst_dir_fd=root)
        return  # the next pass over the top of the tree removes it
    try:
        fd = _open_for_removal(dir_fd, name)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return  # replaced meanwhile; the next pass sees what it is now
        raise
    try:
        for entry in os.listdir(fd):
            _remove_entry(fd, entry, root, names, depth + 1)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.ENOENT):
            raise
