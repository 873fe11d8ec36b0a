"""Slurm behind `mint_poll.batch.BatchScheduler`: sbatch, squeue, scancel, scontrol, sinfo.

The commands and formats (tested against Slurm 22.05.8 of Debian 12):

    sbatch --parsable --chdir=W --output=W/.mint-poll-job.out --open-mode=append
           --no-requeue [--partition=P] [--time=MIN] [site args] --job-name=N SCRIPT
    squeue --noheader --states=all --jobs=ID --format=%i|%T|%r|%V|%S|%N|%j
           (a job the controller has forgotten, older than MinJobAge: exit 1 and
           "Invalid job id specified")
    squeue --noheader --states=all --me --name=N --format=...   (the lookup by name)
    scancel ID
    sinfo --version;  scontrol --oneliner show partition [P];  scontrol show config

The job name goes last among the options, so a site's `sbatch_args` cannot change it:
the lookup by name depends on it. sbatch's failures are told apart by libslurm's
messages: the job refused (its fault), the controller not reached (nothing queued), or
the request perhaps queued without an answer (a SIGSTOPped slurmctld answers "Socket
timed out on send/recv operation" and queues the job once it runs again).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from mint_common.errors import ConfigError, UnavailableError
from mint_common.proc import CommandResult
from mint_poll.batch import (
    JOB_OUTPUT_NAME,
    Phase,
    SchedulerCommands,
    Sighting,
    Submission,
    slurm_minutes,
)

SQUEUE_FORMAT = "%i|%T|%r|%V|%S|%N|%j"
#: The most an squeue answer about our own jobs may print: a few lines are expected.
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
# Normal ends: the script ran to its end (FAILED: it exited non-zero), so it wrote the file.
ENDED = frozenset({"COMPLETED", "FAILED"})
KILLED = frozenset(
    {
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
NO_VALUE = frozenset({"", "(null)", "N/A", "None", "Unknown"})
_JOB_ID = re.compile(r"^([0-9]+)(?:;\S+)?$")
_MIN_JOB_AGE = re.compile(r"^MinJobAge\s*=\s*([0-9]+)\s*sec", re.MULTILINE)
# Nothing was queued: the controller was never reached, or asked us to come back later.
_NOT_REACHED = (
    "Unable to contact slurm controller (connect failure)",
    "Communication connection failure",
    "Controller is in standby mode",
    "Resource temporarily unavailable",
)
# The request may have been received: the job may exist without our knowing its id.
_MAYBE_QUEUED = (
    "Socket timed out on send/recv operation",
    "Zero Bytes were transmitted or received",
    "Unable to contact slurm controller (send failure)",
    "Unable to contact slurm controller (receive failure)",
    "Message send failure",
    "Message receive failure",
)
_INVALID_JOB = "Invalid job id specified"


def slurm_time(text: str) -> Optional[float]:
    """`2026-11-30T01:03:46` (Slurm prints local time) -> epoch seconds; N/A, None -> None."""
    text = text.strip()
    if text in NO_VALUE:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def phase_of(state: str) -> Phase:
    """Where a job in this `%T` state is; an unknown state counts as still running."""
    if state in QUEUED:
        return Phase.QUEUED
    if state in ENDED:
        return Phase.ENDED
    if state in KILLED:
        return Phase.KILLED
    return Phase.RUNNING


def parse_squeue(text: str) -> list[Sighting]:
    """Lines of SQUEUE_FORMAT; a line that does not fit is an unreadable answer."""
    found: list[Sighting] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 6)
        if len(parts) != 7 or not parts[0].strip():
            raise UnavailableError(f"squeue printed a line that is not a job: {line[:200]!r}")
        job_id, state, reason, submitted, started, node, name = (p.strip() for p in parts)
        state = state.split()[0] if state else ""
        found.append(
            Sighting(
                job_id=job_id,
                name=name,
                phase=phase_of(state),
                state=state,
                reason="" if reason in NO_VALUE else reason,
                submitted_epoch=slurm_time(submitted),
                started_epoch=slurm_time(started),
                node="" if node in NO_VALUE else node,
            )
        )
    return found


def parse_sbatch(result: CommandResult) -> Submission:
    """sbatch --parsable's answer: the job id, or why there is none."""
    text = f"{result.stdout}\n{result.stderr}"
    first = result.stdout.strip().splitlines()[:1]
    if result.ok and first and _JOB_ID.match(first[0].strip()):
        return Submission(_JOB_ID.match(first[0].strip()).group(1))  # type: ignore[union-attr]
    message = result.describe()
    if any(known in text for known in _MAYBE_QUEUED):
        return Submission(None, message=f"{message} (the job may have been queued)")
    if any(known in text for known in _NOT_REACHED):
        return Submission(None, message=message)
    if result.ok:
        return Submission(None, message=f"sbatch printed no job id: {result.tail(stream='stdout')}")
    return Submission(None, refused=True, message=result.tail() or message)


class SlurmBatch(SchedulerCommands):
    """The Slurm commands found on PATH, each with a timeout."""

    kind = "slurm"

    def submit_argv(
        self,
        *,
        name: str,
        workdir: Path,
        script: Path,
        partition: Optional[str],
        time_limit: Optional[float],
        extra_args: Sequence[str],
    ) -> list[str]:
        argv = [
            "sbatch",
            "--parsable",
            f"--chdir={workdir}",
            f"--output={workdir / JOB_OUTPUT_NAME}",
            "--open-mode=append",
            "--no-requeue",
        ]
        if partition:
            argv.append(f"--partition={partition}")
        if time_limit is not None:
            argv.append(f"--time={slurm_minutes(time_limit)}")
        return [*argv, *extra_args, f"--job-name={name}", str(script)]

    def parse_submit(self, result: CommandResult) -> Submission:
        return parse_sbatch(result)

    def _squeue(self, *selection: str) -> Optional[list[Sighting]]:
        done = self._run(
            "squeue", "--noheader", "--states=all", *selection, f"--format={SQUEUE_FORMAT}"
        )
        if done.failed:
            if _INVALID_JOB in done.stderr:
                return None
            raise UnavailableError(done.describe())
        return parse_squeue(done.stdout)

    def lookup(self, job_id: str) -> Optional[Sighting]:
        found = self._squeue(f"--jobs={job_id}")
        return next((s for s in found or [] if s.job_id == job_id), None)

    def find_by_name(self, name: str) -> list[Sighting]:
        return [s for s in self._squeue("--me", f"--name={name}") or [] if s.name == name]

    def cancel(self, job_id: str) -> None:
        done = self._run("scancel", job_id)
        if done.failed and _INVALID_JOB not in done.stderr:
            raise UnavailableError(done.describe())

    def version(self) -> str:
        done = self._run("sinfo", "--version")
        if done.failed:
            raise UnavailableError(done.describe())
        return done.stdout.strip()

    def queue_detail(self, queue: Optional[str]) -> str:
        done = self._run("scontrol", "--oneliner", "show", "partition", *([queue] if queue else []))
        if done.failed and "not found" in done.stderr + done.stdout:
            raise ConfigError(
                f"Slurm has no partition {queue!r}: {done.tail() or done.tail(stream='stdout')}"
            )
        if done.failed:
            raise UnavailableError(done.describe())
        for line in done.stdout.splitlines():
            fields = dict(item.partition("=")[::2] for item in line.split())
            if queue or fields.get("Default") == "YES":
                return (
                    f"partition {fields.get('PartitionName')}: State={fields.get('State')}"
                    f" Nodes={fields.get('Nodes')} MaxTime={fields.get('MaxTime')}"
                )
        raise ConfigError("Slurm has no default partition: set batch.partition")

    def job_retention(self) -> Optional[float]:
        done = self._run("scontrol", "show", "config")
        if done.failed:
            raise UnavailableError(done.describe())
        found = _MIN_JOB_AGE.search(done.stdout)
        return float(found.group(1)) if found else None
