"""Slurm behind a small Protocol: sbatch and scancel as argument lists with timeouts."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from mint_common.errors import ConfigError

_SUBMITTED = re.compile(r"^Submitted batch job (\d+)\b", re.MULTILINE)
_ERROR = re.compile(r"^sbatch: error:.*$", re.MULTILINE)


@dataclass(frozen=True)
class SbatchResult:
    job_id: Optional[str]
    output: str
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.job_id is not None


def parse_sbatch(stdout: str, stderr: str, returncode: int) -> SbatchResult:
    """The seed's rule (any `sbatch: error:` line is a failure) plus the exit status and the
    `Submitted batch job N` line (N = the seed's `awk '{print $4}'`)."""
    output = stdout + stderr
    error = _ERROR.search(output)
    if error:
        return SbatchResult(None, output, error.group(0).strip())
    if returncode != 0:
        last = output.strip().splitlines()[-1:] or ["no output"]
        return SbatchResult(None, output, f"sbatch exited with status {returncode}: {last[0]}")
    submitted = _SUBMITTED.search(stdout) or _SUBMITTED.search(output)
    if not submitted:
        return SbatchResult(None, output, "sbatch printed no 'Submitted batch job N' line")
    return SbatchResult(submitted.group(1), output)


class Scheduler(Protocol):
    def submit(self, script_name: str, cwd: Path) -> SbatchResult: ...

    def cancel(self, job_id: str) -> tuple[bool, str]: ...


class SlurmCommands:
    """The real commands; sbatch runs in the job directory like the seed's `(cd $d; sbatch ...)`."""

    def __init__(
        self, sbatch: str, scancel: str, timeout: float, sbatch_args: Sequence[str] = ()
    ) -> None:
        self.sbatch = _resolve(sbatch, "sbatch")
        self.scancel_command = scancel
        self.timeout = timeout
        self.sbatch_args = tuple(sbatch_args)

    def submit(self, script_name: str, cwd: Path) -> SbatchResult:
        argv = [self.sbatch, *self.sbatch_args, script_name]
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return SbatchResult(
                None,
                "",
                f"sbatch did not answer within {self.timeout:g} s; the job may or may not have"
                " been queued (check squeue); it is not submitted again",
            )
        except OSError as exc:
            return SbatchResult(None, "", f"cannot run {self.sbatch}: {exc.strerror}")
        return parse_sbatch(done.stdout, done.stderr, done.returncode)

    def cancel(self, job_id: str) -> tuple[bool, str]:
        argv = [_resolve(self.scancel_command, "scancel"), job_id]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return False, f"scancel did not answer within {self.timeout:g} s"
        text = (done.stdout + done.stderr).strip()
        if done.returncode != 0 and "Invalid job id" not in text:
            return False, text or f"scancel exited with status {done.returncode}"
        return True, text


def _resolve(command: str, what: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise ConfigError(
            f"{what} command {command!r} not found",
            hint=f"set the '{what}' key to its full path (e.g. /opt/slurm/bin/{what})",
        )
    return found
