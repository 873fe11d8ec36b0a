"""Slurm behind a small Protocol: sbatch, squeue, scancel and scontrol as argument lists with
timeouts.

sbatch's outcome is one of four, told apart by the messages Slurm 22.05 really prints
(captured on a running cluster; the transport messages are libslurm's error strings):
the job was queued; Slurm refused the job itself (bad script, bad partition: the job's
fault); the controller could not be reached, so nothing was queued; or the request may
have reached the controller without an answer coming back, so the job may or may not
exist. Every submission carries a comment naming the job, so that last case can be
settled with squeue instead of a second sbatch.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional, Protocol

from mint_common.errors import ConfigError, UnavailableError
from mint_common.proc import CommandResult, run_command

_SUBMITTED = re.compile(r"^Submitted batch job (\d+)\b", re.MULTILINE)
# sbatch prints "sbatch: error: Slurm temporarily unable to accept job, sleeping and
# retrying" (or "... job queue full, sleeping and retrying.") and then queues the job: a
# notice, not a refusal (seen on 22.05 with MaxJobCount reached).
_ERROR = re.compile(r"^sbatch: error:(?!.*sleeping and retrying\.?\s*$).*$", re.MULTILINE)
COMMENT_TAG = "mint-s3job"

# Nothing was queued (the controller was never reached, or asked us to come back later).
_NOT_REACHED = (
    "Unable to contact slurm controller (connect failure)",
    "Communication connection failure",
    "Slurm backup controller in standby mode",
    "Controller is in standby mode",
    "Resource temporarily unavailable",
)
# The request may have been sent: a SIGSTOPped slurmctld gave "Socket timed out on
# send/recv operation" and queued the job once it ran again.
_MAYBE_QUEUED = (
    "Socket timed out on send/recv operation",
    "Zero Bytes were transmitted or received",
    "Unable to contact slurm controller (send failure)",
    "Unable to contact slurm controller (receive failure)",
    "Unable to contact slurm controller (shutdown failure)",
    "Message send failure",
    "Message receive failure",
)


class Outcome(str, Enum):
    SUBMITTED = "submitted"
    REFUSED = "refused"  # the job itself is wrong: JOB_ERROR
    UNREACHABLE = "unreachable"  # nothing was queued; try again later
    UNCERTAIN = "uncertain"  # may have been queued; look it up before submitting again


@dataclass(frozen=True)
class SbatchResult:
    """sbatch's outcome, with CommandResult's field names: `return_code` is None when
    sbatch did not finish (timed out)."""

    job_id: Optional[str]
    output: str
    reason: Optional[str] = None
    outcome: Outcome = Outcome.SUBMITTED
    return_code: Optional[int] = 0

    @property
    def ok(self) -> bool:
        return self.job_id is not None


def parse_sbatch(stdout: str, stderr: str, return_code: int) -> SbatchResult:
    """The seed's rule (any `sbatch: error:` line is a failure) plus the exit status and the
    `Submitted batch job N` line (N = the seed's `awk '{print $4}'`); transport failures are
    not the job's fault and are classified apart."""
    output = stdout + stderr
    error = _ERROR.search(output)
    if any(text in output for text in _MAYBE_QUEUED):
        outcome, reason = Outcome.UNCERTAIN, _first(error, output)
    elif any(text in output for text in _NOT_REACHED):
        outcome, reason = Outcome.UNREACHABLE, _first(error, output)
    elif error:
        outcome, reason = Outcome.REFUSED, error.group(0).strip()
    elif return_code != 0:
        last = output.strip().splitlines()[-1:] or ["no output"]
        outcome, reason = Outcome.REFUSED, f"sbatch exited with status {return_code}: {last[0]}"
    else:
        submitted = _SUBMITTED.search(stdout) or _SUBMITTED.search(output)
        if submitted:
            return SbatchResult(submitted.group(1), output, return_code=return_code)
        outcome, reason = Outcome.UNCERTAIN, "sbatch printed no 'Submitted batch job N' line"
    return SbatchResult(None, output, reason, outcome, return_code)


def _first(error: Optional[re.Match[str]], output: str) -> str:
    if error:
        return error.group(0).strip()
    return (output.strip().splitlines() or ["no output"])[-1]


def job_comment(prefix: str, token: str) -> str:
    """The `--comment` that finds a submission again: `mint-s3job:PREFIX:TOKEN`."""
    return f"{COMMENT_TAG}:{prefix}:{token}"


def prefix_from_comment(comment: str) -> Optional[str]:
    tag, sep, rest = comment.partition(":")
    prefix, sep2, _token = rest.rpartition(":")
    return prefix if tag == COMMENT_TAG and sep and sep2 and prefix else None


class Scheduler(Protocol):
    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult: ...

    def find(self, comment: str) -> Optional[str]:
        """The id of the job carrying this comment, None if Slurm knows none; raises
        UnavailableError when the controller cannot say."""
        ...

    def cancel(self, job_id: str) -> CommandResult:
        """scancel's result (a job Slurm no longer knows counts as cancelled); raises
        UnavailableError when scancel could not run or failed."""
        ...


class SlurmCommands:
    """The real commands; sbatch runs in the job directory like the seed's `(cd $d; sbatch ...)`.

    squeue and scontrol are taken from sbatch's directory (e.g. /opt/slurm/bin), else PATH.
    """

    def __init__(
        self, sbatch: str, scancel: str, timeout: float, sbatch_args: Sequence[str] = ()
    ) -> None:
        self.sbatch = _resolve(sbatch, "sbatch")
        self.scancel_command = scancel
        self.timeout = timeout
        self.sbatch_args = tuple(sbatch_args)

    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult:
        """Raises UnavailableError when sbatch cannot be run at all (nothing was queued)."""
        # The comment goes last among the options, so a site's sbatch_args cannot hide it.
        argv = [self.sbatch, *self.sbatch_args, f"--comment={comment}", script_name]
        if not os.access(self.sbatch, os.X_OK):
            raise UnavailableError(f"cannot run {self.sbatch}: missing or not executable")
        try:
            done = run_command(argv, timeout=self.timeout, cwd=str(cwd))
        except UnavailableError as exc:
            # It started (it is executable): a timeout may come after the job was queued.
            reason = f"{exc.message}; the job may or may not have been queued"
            return SbatchResult(None, "", reason, Outcome.UNCERTAIN, None)
        return parse_sbatch(done.stdout, done.stderr, done.return_code)

    def find(self, comment: str) -> Optional[str]:
        done = run_command(
            [self.sibling("squeue"), "--me", "--states=all", "--noheader", "--format=%i|%k"],
            timeout=self.timeout,
        )
        if done.failed:
            raise UnavailableError(f"squeue failed: {_text(done)}")
        for line in done.stdout.splitlines():
            job_id, _, job_comment_text = line.partition("|")
            if job_comment_text.strip() == comment:
                return job_id.strip()
        return None

    def cancel(self, job_id: str) -> CommandResult:
        done = run_command(
            [_resolve(self.scancel_command, "scancel"), job_id], timeout=self.timeout
        )
        if done.failed and "Invalid job id" not in _text(done):
            raise UnavailableError(f"scancel {job_id} failed: {done.describe()}")
        return done

    def ping(self) -> str:
        """`scontrol ping`'s one-line verdict when the controller is up; UnavailableError
        with that verdict otherwise."""
        done = run_command([self.sibling("scontrol"), "ping"], timeout=self.timeout)
        text = _text(done)
        verdict = text.splitlines()[0] if text else ""
        if done.failed or " is UP" not in text:
            raise UnavailableError(f"scontrol ping: {verdict or 'no answer'}")
        return verdict

    def show_config(self) -> dict[str, str]:
        """`scontrol show config` as Key -> value; raises UnavailableError when it fails."""
        done = run_command([self.sibling("scontrol"), "show", "config"], timeout=self.timeout)
        if done.failed:
            raise UnavailableError(f"scontrol show config failed: {_text(done)}")
        values: dict[str, str] = {}
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values.setdefault(key.strip(), value.strip())
        return values

    def sibling(self, name: str) -> str:
        beside = os.path.join(os.path.dirname(self.sbatch), name)
        return beside if os.access(beside, os.X_OK) else _resolve(name, name)


def _text(done: CommandResult) -> str:
    return (done.stdout + done.stderr).strip()


def _resolve(command: str, what: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise ConfigError(
            f"{what} command {command!r} not found",
            hint=f"set the '{what}' key to its full path (e.g. /opt/slurm/bin/{what})",
        )
    return found
