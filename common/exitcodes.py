"""The one table of exit codes shared by every mint tool, and the one place that maps errors to it.

Scripts, cron and systemd read these numbers, so they never change meaning:
0 ok, 1 the job itself failed, 2 usage, then the BSD sysexits codes.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import traceback
from enum import IntEnum
from typing import TextIO

from mint_common.errors import MintError


class ExitStatus(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2
    DATA_ERROR = 65
    NO_INPUT = 66
    UNAVAILABLE = 69
    CANT_CREATE = 73
    IO_ERROR = 74
    TEMP_FAIL = 75
    NO_PERMISSION = 77
    CONFIG = 78
    INTERRUPTED = 130


EXIT_TABLE: tuple[tuple[ExitStatus, str], ...] = (
    (ExitStatus.OK, "success"),
    (ExitStatus.JOB_FAILED, "the job itself failed (remote command exited non-zero, run abnormal)"),
    (ExitStatus.USAGE, "command-line usage error"),
    (ExitStatus.DATA_ERROR, "bad data: malformed input, unsafe path, oversized payload"),
    (ExitStatus.NO_INPUT, "an input file does not exist or cannot be read"),
    (ExitStatus.UNAVAILABLE, "a service stayed unavailable after retries, or a missing extra"),
    (ExitStatus.CANT_CREATE, "cannot create an output file or directory"),
    (ExitStatus.IO_ERROR, "input/output error, failed transfer"),
    (ExitStatus.TEMP_FAIL, "temporary failure, try again later (lock held, timeout)"),
    (ExitStatus.NO_PERMISSION, "permission denied, authentication failed, host key refused"),
    (ExitStatus.CONFIG, "configuration error"),
    (
        ExitStatus.INTERRUPTED,
        "interrupted by SIGINT (Ctrl-C); by signal N: 128 + N, e.g. 143 SIGTERM",
    ),
)


def exit_status_for(exc: BaseException) -> int:
    """Map any exception to the exit status a caller should see (128 + N for signal N)."""
    if isinstance(exc, MintError):
        return ExitStatus(exc.exit_status)
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", None)
        return 128 + signum if isinstance(signum, int) else ExitStatus.INTERRUPTED
    if isinstance(exc, FileNotFoundError):
        return ExitStatus.NO_INPUT
    if isinstance(exc, PermissionError):
        return ExitStatus.NO_PERMISSION
    if isinstance(exc, OSError):
        return ExitStatus.IO_ERROR
    return ExitStatus.JOB_FAILED


def describe(exc: BaseException) -> str:
    """The one-line human message for an exception (secrets already masked)."""
    from mint_common.logging import redact

    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", None)
        return f"interrupted by {signal.Signals(signum).name}" if signum else "interrupted"
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, MintError):
        text = f"{type(exc).__name__}: {text}"
    return redact("; ".join(line.strip() for line in text.splitlines() if line.strip()))


def report_error(
    exc: BaseException,
    tool: str,
    *,
    verbose: bool = False,
    stream: TextIO | None = None,
    as_json: bool = False,
) -> int:
    """Print the error line (and the traceback when verbose) and return the exit status.

    With `as_json` (the `--log-format json` of every tool) the line is one JSON object
    with `level`, `tool`, `message`, `hint` and `exit_status`, like the log lines before it.
    """
    from mint_common.logging import local_iso, redact

    out = stream if stream is not None else sys.stderr
    status = exit_status_for(exc)
    hint = getattr(exc, "hint", None)
    trace = ""
    if verbose and not isinstance(exc, KeyboardInterrupt):
        trace = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if as_json:
        entry = {
            "time": local_iso(time.time()),
            "level": "ERROR",
            "tool": tool,
            "message": describe(exc),
            "exit_status": int(status),
        }
        if hint:
            entry["hint"] = redact(str(hint))
        if trace:
            entry["traceback"] = trace
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    else:
        out.write(trace)
        out.write(f"{tool}: error: {describe(exc)}\n")
        if hint:
            out.write(f"{tool}: hint: {redact(str(hint))}\n")
    out.flush()
    logging.getLogger(tool).debug("exiting with status %d", status)
    return status
