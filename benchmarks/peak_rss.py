"""Shared piece of the memory benchmarks: wait for a child and read its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import time


def wait_peak_rss(child: subprocess.Popen[bytes], timeout: float) -> tuple[str, float]:
    """(exit status, or "hung" once killed after `timeout` s; the child's peak RSS in MiB),
    from wait4(2), so the figure is the child's alone."""
    began = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            code = str(os.waitstatus_to_exitcode(status))
            break
        if time.perf_counter() - began > timeout:
            child.kill()
            _, _, usage = os.wait4(child.pid, 0)
            code = "hung"
            break
        time.sleep(0.02)
    child.returncode = -1  # reaped above
    return code, usage.ru_maxrss / 1024
