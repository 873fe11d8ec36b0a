"""The working dirs this agent makes: the proof that it made them, and keep_days pruning.

A working dir starts as a staging dir made by `mkdtemp`, an exclusive mkdir, so it
cannot be anybody else's. Its identity (device, inode and, where the file system keeps
one, the inode's random generation number) is read from the new directory at once and
saved in the calculation's record before anything else happens; the later rename to
`<calc_base>/<accept_id>` keeps it. Inode numbers alone are not enough: ext4 hands the
number of a deleted directory to the next one made, so only the generation tells a
same-named directory made later from ours.

Pruning deletes a directory only if the entry found directly in calc_base under the
recorded name is that very directory, checked on a descriptor opened without following
symlinks, and it deletes the contents through descriptors as well, never following a
link. A record without the proof (written by a mint-poll older than the proof, or of a
calculation this agent never made a directory for) keeps its directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from mint_poll.state import CalcRecord, CalcStore, DirIdentity

log = logging.getLogger(__name__)

#: FS_IOC_GETVERSION = _IOR('v', 1, long): the inode's generation number (ext4, xfs, btrfs).
_GET_GENERATION = 0x80000000 | (struct.calcsize("l") << 16) | (ord("v") << 8) | 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NO_PROOF = (
    "its record holds no proof that this agent made the directory (written by an older"
    " mint-poll); delete it by hand if it is yours"
)


def make_private_dir(base: Path, prefix: str) -> tuple[Path, DirIdentity]:
    """A new directory in `base` (mode 0700, a name nobody else can have taken) and the
    identity that proves later that this agent made it. OSError if it cannot be made."""
    made = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    fd = os.open(made, _DIR_FLAGS)
    try:
        return made, _identity(fd)
    finally:
        os.close(fd)


def _identity(fd: int) -> DirIdentity:
    facts = os.fstat(fd)
    try:
        raw = fcntl.ioctl(fd, _GET_GENERATION, bytes(struct.calcsize("l")))
        # the kernel writes an int at the start of the buffer
        generation: Optional[int] = int.from_bytes(raw[:4], sys.byteorder)
    except OSError:
        # tmpfs has none, but it counts inode numbers up instead of reusing them
        generation = None
    return DirIdentity(facts.st_dev, facts.st_ino, generation)


def prune(
    store: CalcStore, keep_days: float, calc_base: Path, now: Optional[float] = None
) -> list[str]:
    """Delete the working dirs of terminal records finished more than keep_days ago.

    Only directories this agent made, still directly in `calc_base` (see the module
    docstring). A directory left alone for good is logged once, with the reason kept in
    the record (`prune_skipped`); the record of a removed one is kept, marked pruned.
    """
    current = time.time() if now is None else now
    removed: list[str] = []
    for record in store.all():
        if not _due(record, keep_days, current):
            continue
        try:
            gone, skipped = _prune_record(record, Path(calc_base))
        except OSError as exc:
            # e.g. a file the command made undeletable: try again at the next prune
            log.warning(
                "cannot prune the working dir of calculation %s: %s",
                record.accept_id,
                exc.strerror or exc,
            )
            continue
        if skipped is not None:
            record.prune_skipped = skipped
            log.warning(
                "not pruning the working dir of calculation %s: %s", record.accept_id, skipped
            )
        else:
            record.pruned = True
        if gone is not None:
            removed.append(gone)
            log.info("pruned %s (calculation %s)", gone, record.accept_id)
        store.save(record)
    return removed


def _due(record: CalcRecord, keep_days: float, now: float) -> bool:
    if not record.terminal or record.pruned or record.prune_skipped:
        return False
    when = _epoch(record.delivered_at or record.finished_at or record.updated_at)
    return when is not None and now - when >= keep_days * 86400


def _prune_record(record: CalcRecord, calc_base: Path) -> tuple[Optional[str], Optional[str]]:
    """(the path removed, or why nothing may be removed); (None, None): nothing is left."""
    proof = record.created_dir
    if proof is None:
        has_dir = any(p and os.path.lexists(p) for p in (record.workdir, record.staging_dir))
        return None, NO_PROOF if has_dir else None
    skipped: Optional[str] = None
    base_fd = os.open(calc_base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Before the rename the directory is the staging dir (a calculation lost mid-fetch).
        for path in dict.fromkeys(p for p in (record.workdir, record.staging_dir) if p):
            if Path(path).parent != calc_base:
                if os.path.lexists(path):
                    skipped = f"{path} is not directly in calc_base {calc_base}"
                continue
            name = Path(path).name
            try:
                found = os.stat(name, dir_fd=base_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(found.st_mode) and _remove_if_ours(base_fd, name, proof):
                return path, None
            skipped = f"{path} is no longer the directory this agent made (replaced, or a symlink)"
    finally:
        os.close(base_fd)
    return None, skipped


def _remove_if_ours(parent_fd: int, name: str, proof: DirIdentity) -> bool:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return False  # replaced since the stat: not ours
        raise
    try:
        if _identity(fd) != proof:
            return False
        _empty(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
    return True


def _empty(top: int) -> None:
    """Delete everything inside the open directory `top`, never following a symlink.

    A loop with one descriptor per level rather than recursion: a deep tree made by the
    command cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[int, str, list[tuple[str, bool]]]] = [(top, "", _entries(top))]
    try:
        while stack:
            fd, name, entries = stack[-1]
            if entries:
                entry, is_dir = entries.pop()
                child = _open_subdir(fd, entry) if is_dir else None
                if child is None:
                    os.unlink(entry, dir_fd=fd)
                else:
                    stack.append((child, entry, []))
                    stack[-1][2].extend(_entries(child))
                continue
            stack.pop()
            if stack:
                os.close(fd)
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _entries(fd: int) -> list[tuple[str, bool]]:
    # A command may leave read-only directories (Go's module cache does); they go anyway.
    with contextlib.suppress(OSError):
        os.fchmod(fd, stat.S_IRWXU)
    with os.scandir(fd) as listing:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]


def _open_subdir(parent_fd: int, name: str) -> Optional[int]:
    """The subdirectory opened without following links; None if it is not (or no longer) one."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return None
        raise


def _epoch(text: str) -> Optional[float]:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
