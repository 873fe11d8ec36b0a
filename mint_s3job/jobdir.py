"""A job's directory on the head node, read and written without following symlinks.

The job script runs in this directory and may replace it, or anything in it, with a
symlink, while the epilog that reads it runs as SlurmUser (often root) and the dispatcher
that writes sbatch's answer into it may run as root too. So every step below the
configured work directory (a site's own path, trusted as configured) opens one component
relative to the directory already opened, with O_NOFOLLOW: a symlink at any level is
refused or skipped, never followed, and a swap after a check changes nothing, because
what is read or uploaded is the file that was opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Optional

from mint_common.errors import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def opened_job_dir(workdir: Path, prefix: str) -> Iterator[Optional[int]]:
    """A descriptor of WORKDIR/PREFIX, None when it does not exist; UnsafePathError when it is
    a symlink or not a directory."""
    base = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(prefix, _DIR_FLAGS, dir_fd=base)
        except FileNotFoundError:
            fd = None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            kind = "a symlink" if os.path.islink(workdir / prefix) else "not a directory"
            raise UnsafePathError(
                f"{workdir / prefix} is {kind}, not the job's directory: nothing is read from it"
            ) from None
    finally:
        os.close(base)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


# Deeper directories are skipped: each level holds a descriptor while it is read.
MAX_DEPTH = 100


def scan(dir_fd: int) -> tuple[dict[str, list[int]], list[str]]:
    """(name -> [size, mtime_ns] of every regular file, names skipped: symlinks, special
    files, directories deeper than MAX_DEPTH), descending only into real directories."""
    files: dict[str, list[int]] = {}
    skipped: list[str] = []
    _scan(dir_fd, "", files, skipped, 1)
    return files, skipped


def _scan(
    dir_fd: int, below: str, files: dict[str, list[int]], skipped: list[str], depth: int
) -> None:
    with os.scandir(dir_fd) as entries:
        listed = list(entries)
    for entry in listed:
        name = below + entry.name
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            files[name] = [info.st_size, info.st_mtime_ns]
        elif stat.S_ISDIR(info.st_mode) and depth >= MAX_DEPTH:
            skipped.append(name + "/")
        elif stat.S_ISDIR(info.st_mode):
            try:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                skipped.append(name + "/")  # replaced by something else since it was listed
                continue
            try:
                _scan(sub, name + "/", files, skipped, depth + 1)
            finally:
                os.close(sub)
        else:
            skipped.append(name)


def open_file(dir_fd: int, name: str) -> BinaryIO:
    """The regular file NAME (relative, `/`-separated) below `dir_fd`, opened for reading with
    no symlink followed on the way; UnsafePathError when any part is not what it must be."""
    parts = PurePosixPath(name).parts
    current = dir_fd
    try:
        for part in parts[:-1]:
            opened = os.open(part, _DIR_FLAGS, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = opened
        # O_NONBLOCK: a FIFO planted after the scan must not block the epilog forever.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, dir_fd=current)
    except OSError as exc:
        raise UnsafePathError(f"{name}: {exc.strerror}; not read") from None
    finally:
        if current != dir_fd:
            os.close(current)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{name}: not a regular file; not read")
    return os.fdopen(fd, "rb")


def write_file(job_dir: Path, name: str, text: str) -> None:
    """Replace JOB_DIR/NAME (one component) with `text`: through a new file renamed over it,
    so a symlink planted at either level is refused (the directory) or replaced (the file),
    never written through. Raises OSError."""
    dir_fd = os.open(job_dir, _DIR_FLAGS)
    try:
        temp = f".{name}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(temp, flags, 0o644, dir_fd=dir_fd), "wb") as handle:
            handle.write(text.encode("utf-8"))
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
