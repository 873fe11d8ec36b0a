"""Run one calculation's command in its working directory.

Standard output and standard error go straight to files (never through
memory); the command gets its own process group so a timeout or a stop can
kill everything it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mint_common.proc import kill_process_group

log = logging.getLogger(__name__)

KILL_GRACE = 5.0
WAIT_STEP = 1.0


@dataclass(frozen=True)
class RunResult:
    """How the command ended, with the field names of `mint_common.proc.CommandResult`
    (its output went to files, not here). `return_code` is None if it never started."""

    return_code: Optional[int]
    timed_out: bool = False
    stopped: bool = False
    error: Optional[str] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.return_code == 0 and not (self.timed_out or self.stopped or self.error)

    @property
    def failed(self) -> bool:
        return not self.ok

    def describe(self, timeout: Optional[float]) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return f"the command exceeded its time limit of {timeout:g} s and was killed"
        if self.stopped:
            return "the agent was asked to stop; the command was killed after the grace period"
        if self.return_code is not None and self.return_code < 0:
            return f"the command was killed by signal {-self.return_code}"
        return f"the command exited with status {self.return_code}"


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus its own settings (the token may be among them), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINT_POLL_")}
    env.update(extra)
    return env


def run_command_in(
    argv: Sequence[str],
    workdir: Path,
    *,
    stdout_path: Path,
    stderr_path: Path,
    env: Mapping[str, str],
    timeout: Optional[float],
    stop: threading.Event,
    grace: float,
    on_start: Callable[[int], None] = lambda pid: None,
    on_tick: Callable[[], None] = lambda: None,
) -> RunResult:
    """Run `argv` in `workdir`, output streamed to the two files; wait, honouring timeout/stop.

    After `stop` is set the command may go on for `grace` seconds, then its
    process group is killed. A SystemExit/KeyboardInterrupt while waiting
    (the second signal) kills the group at once and propagates.
    """
    started = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"cannot start {argv[0]}: {exc.strerror or exc}"
            err.write(f"mint-poll: {message}\n".encode())
            return RunResult(None, error=message)
    on_start(process.pid)
    try:
        return _wait(process, started, timeout, stop, grace, on_tick)
    except BaseException:
        _kill_now(process)
        raise


def _wait(
    process: subprocess.Popen[bytes],
    started: float,
    timeout: Optional[float],
    stop: threading.Event,
    grace: float,
    on_tick: Callable[[], None],
) -> RunResult:
    stop_deadline: Optional[float] = None
    while True:
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            log.warning(
                "command pid %d exceeded %g s: killing its process group", process.pid, timeout
            )
            status = kill_process_group(process, KILL_GRACE)
            return RunResult(status, timed_out=True, seconds=time.monotonic() - started)
        if stop.is_set() and stop_deadline is None:
            stop_deadline = now + grace
            log.info("letting the command finish for up to %g s before killing it", grace)
        if stop_deadline is not None and now >= stop_deadline:
            log.warning("grace period over: killing the command's process group")
            status = kill_process_group(process, KILL_GRACE)
            return RunResult(status, stopped=True, seconds=time.monotonic() - started)
        limits = [WAIT_STEP]
        if timeout is not None:
            limits.append(started + timeout - now)
        if stop_deadline is not None:
            limits.append(stop_deadline - now)
        try:
            status = process.wait(timeout=max(0.01, min(limits)))
        except subprocess.TimeoutExpired:
            on_tick()
            continue
        return RunResult(status, seconds=time.monotonic() - started)


def _kill_now(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def kill_leftover_group(pid: Optional[int], workdir: Path) -> bool:
    """Kill what a command orphaned by a crash left running in `workdir`.

    That is the process group `pid` if it still runs in `workdir` (the check guards
    against a recycled pid), and every group with a process whose environment names
    `workdir` as CALC_DIR: a crash between the command's start and the saving of its
    pid leaves no pid to go by.
    """
    groups = _groups_of_calc_dir(workdir)
    if pid is not None:
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) == workdir:
                groups.add(pid)
        except OSError:
            pass
    groups.discard(os.getpgrp())
    killed = False
    for group in sorted(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
            log.warning("killed the leftover process group %d of an interrupted run", group)
            killed = True
    return killed


def _groups_of_calc_dir(workdir: Path) -> set[int]:
    marker = f"CALC_DIR={workdir}".encode()
    groups: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(entry.name)))
        except OSError:
            continue
    return groups
