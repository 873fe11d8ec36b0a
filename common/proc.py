"""Subprocesses the way the tools need them: argument lists, timeouts, own process group.

Every "a command ran" in the tools is a `CommandResult` (or, for a command on a
remote host, an object with the same field names): `return_code`, `stdout`,
`stderr`, `ok`, `failed`, `tail()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Callable, Optional

from mint_common.errors import InputError, UnavailableError

CHUNK = 64 * 1024
KILLED_GRACE = 5.0


class _Reader(threading.Thread):
    """Reads one pipe to its end, keeping at most `limit` bytes (the head, or with `tail`
    the last ones); past the head's limit it calls `overflow` and stops reading."""

    def __init__(
        self,
        stream: IO[bytes],
        limit: Optional[int],
        *,
        tail: bool,
        overflow: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.limit = limit
        self.tail = tail
        self.on_overflow = overflow
        self.overflowed = False
        self.data = bytearray()

    def run(self) -> None:
        with self.stream:
            while chunk := os.read(self.stream.fileno(), CHUNK):
                self.data += chunk
                if self.limit is None or len(self.data) <= self.limit:
                    continue
                if self.tail:
                    del self.data[: len(self.data) - self.limit]
                    continue
                self.overflowed = True
                if self.on_overflow is not None:
                    self.on_overflow()
                return


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind; a non-zero status is not an error by itself."""

    argv: tuple[str, ...]
    return_code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.return_code == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""

    def tail(self, lines: int = 1, *, stream: str = "stderr") -> str:
        """The last `lines` non-blank lines of stderr (or stdout), joined with " | "."""
        text = self.stderr if stream == "stderr" else self.stdout
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) if lines > 0 else ""

    def describe(self) -> str:
        """`PROGRAM exited with status N: last stderr line` (or stdout if stderr is empty)."""
        last = self.tail() or self.tail(stream="stdout")
        return f"{self.program} exited with status {self.return_code}" + (
            f": {last}" if last else ""
        )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _feed(stream: IO[bytes], data: bytes) -> None:
    # A command that exits without reading its input closes the pipe: not our error.
    with contextlib.suppress(OSError), stream:
        stream.write(data)


def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    input_text: Optional[str] = None,
    max_output: Optional[int] = None,
    cwd: Optional[str] = None,
) -> CommandResult:
    """Run a short command and capture its output; it is not an error for it to exit non-zero.

    Output is decoded as UTF-8 with undecodable bytes replaced: what a broken or hostile
    program prints must not crash its reader. With `max_output`, a command that prints more
    than that many bytes on stdout is killed (its process group) and InputError is raised
    before more is read, and only the last `max_output` bytes of its stderr are kept.
    A missing program or a timeout raises UnavailableError naming the command.
    """
    process = _start(argv, env=env, with_stdin=input_text is not None, cwd=cwd)
    assert process.stdout is not None and process.stderr is not None
    readers = (
        _Reader(process.stdout, max_output, tail=False, overflow=lambda: _kill_group(process)),
        _Reader(process.stderr, max_output, tail=True),
    )
    threads: list[threading.Thread] = list(readers)
    if process.stdin is not None:
        data = (input_text or "").encode("utf-8")
        threads.append(threading.Thread(target=_feed, args=(process.stdin, data), daemon=True))
    for thread in threads:
        thread.start()
    returncode = _wait_for_answer(process, threads, argv, timeout)
    out, err = readers
    if out.overflowed:
        raise InputError(f"{argv[0]} printed more than {max_output} bytes; output refused")
    return CommandResult(tuple(argv), returncode, _text(out.data), _text(err.data))


def _start(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]],
    with_stdin: bool,
    cwd: Optional[str],
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session; UnavailableError naming what is missing."""
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if with_stdin else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        if cwd is not None and not os.path.isdir(cwd):
            raise UnavailableError(f"cannot run {argv[0]}: no directory {cwd}") from None
        raise UnavailableError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise UnavailableError(f"command not executable: {argv[0]}") from None
    except OSError as exc:
        raise UnavailableError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def _wait_for_answer(
    process: subprocess.Popen[bytes],
    threads: Sequence[threading.Thread],
    argv: Sequence[str],
    timeout: float,
) -> int:
    """The exit status once the command ended and its pipes were read; kill it at `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        returncode = process.wait(timeout=timeout)
        for thread in threads:
            # A grandchild that keeps the pipes open holds the command's answer hostage.
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            raise subprocess.TimeoutExpired(list(argv), timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.wait()
        for thread in threads:
            # A daemon that left the process group may hold the pipes open for ever.
            thread.join(KILLED_GRACE)
        raise UnavailableError(f"{argv[0]} did not answer within {timeout:g} s") from None
    return returncode


def _text(data: bytearray) -> str:
    """Bytes as text mode would read them (universal newlines), never failing on bad UTF-8."""
    text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def kill_process_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds; return the status."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            status = process.poll()
            if status is not None:
                return status
            time.sleep(0.05)
    return process.wait()
