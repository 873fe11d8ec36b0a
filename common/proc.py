"""Subprocesses the way the tools need them: argument lists, timeouts, own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Optional

from mint_common.errors import UnavailableError


def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    input_text: Optional[str] = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its output; it is not an error for it to exit non-zero.

    A missing program or a timeout raises UnavailableError naming the command.
    """
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            check=False,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise UnavailableError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise UnavailableError(f"command not executable: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise UnavailableError(f"{argv[0]} did not answer within {timeout:g} s") from None


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
