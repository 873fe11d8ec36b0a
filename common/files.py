"""Files that survive crashes and paths that cannot escape.

- `atomic_write` / `atomic_writer`: temp file in the same directory, fsync,
  rename, fsync the directory; readers see the old file or the new one, never half.
- `JsonState`: a JSON state file built on that.
- `safe_join`: join an untrusted relative name to a base directory, refusing
  absolute names, `..`, control characters and symlinks that lead outside.
- `SingleInstanceLock`: a non-blocking `flock` whose loser gets exit 75.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Optional, Union

from mint_common.errors import CantCreateError, InputError, LockHeld, UnsafePathError

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(directory: PathLike) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: PathLike, *, mode: int = 0o600, binary: bool = True, encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Write to a temp file next to `path`; on success it replaces `path` atomically.

    On an exception the temp file is removed and `path` is left as it was.
    """
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise CantCreateError(f"cannot create a file in {target.parent}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        handle: IO[Any] = (
            os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline="")
        )
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write(path: PathLike, data: Union[bytes, str], *, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically (str is written as UTF-8)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, mode=mode) as handle:
        handle.write(payload)


class JsonState:
    """A JSON document on disk, replaced atomically on every save.

    A file that exists but is not valid JSON is reported (exit 65) and left
    untouched: nothing is ever overwritten because it could not be read.
    """

    def __init__(self, path: PathLike, *, mode: int = 0o600) -> None:
        self.path = Path(path)
        self.mode = mode

    def exists(self) -> bool:
        return self.path.exists()

    def load(self, default: Any = None) -> Any:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"state file {self.path} is not valid JSON (line {exc.lineno}, column {exc.colno}):"
                f" {exc.msg}; it was left as it is",
                hint="move it aside to start afresh, or repair it",
            ) from exc

    def save(self, document: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True, default=str)
        atomic_write(self.path, text + "\n", mode=self.mode)


def _has_control_chars(name: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)


def check_relative_name(relative: str) -> PurePosixPath:
    """Validate an untrusted relative name (from a server, an object key, an archive)."""
    if not relative or relative.strip() == "":
        raise UnsafePathError("refusing an empty file name")
    if _has_control_chars(relative):
        raise UnsafePathError(f"refusing file name {relative!r}: it contains control characters")
    if relative.startswith("/"):
        raise UnsafePathError(f"refusing absolute file name {relative!r}")
    pure = PurePosixPath(relative)
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"refusing file name {relative!r}: it contains '..'")
    if pure.parts in ((), (".",)):
        raise UnsafePathError(f"refusing file name {relative!r}: it names the directory itself")
    return pure


def safe_join(base: PathLike, relative: str) -> Path:
    """Join `relative` to `base`, guaranteeing the result stays inside `base`.

    Refuses absolute names, any `..` component, control characters, and names
    whose existing part resolves (through symlinks) to somewhere outside base.
    """
    pure = check_relative_name(relative)
    base_path = Path(base)
    candidate = base_path.joinpath(*pure.parts)
    real_base = os.path.realpath(base_path)
    real_candidate = os.path.realpath(candidate)
    if os.path.commonpath([real_base, real_candidate]) != real_base:
        raise UnsafePathError(
            f"refusing file name {relative!r}: it leads outside {base_path} through a symlink"
        )
    return candidate


class SingleInstanceLock:
    """`with SingleInstanceLock(path):` or raise LockHeld naming the file and the holder's pid.

    The lock belongs to the open file description, so it is released when the
    process dies, however it dies. The file itself is left in place on purpose:
    unlinking it would let two processes lock two different files.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CantCreateError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(str(self.path), holder) from None
            raise CantCreateError(f"cannot lock {self.path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SingleInstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
