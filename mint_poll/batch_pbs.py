"""Torque / PBS Pro behind `mint_poll.batch.BatchScheduler`: qsub, qstat -f, qselect, qdel.

Written from the Torque 6.1 and PBS Pro 2022 documentation (no PBS server runs here; the
tests use fakes whose outputs follow that documentation):

    qsub -r n -j oe -o W/.mint-poll-job.out [-q Q] [-l walltime=HH:MM:SS] [site args]
         -N NAME SCRIPT                  prints `123.server`
    qstat -f ID                           `Job Id: ID` then `    key = value` lines, long
                                          values continued on lines starting with a tab;
                                          `qstat: Unknown Job Id ID` (PBSE_UNKJOBID) once
                                          the server has forgotten it; PBS Pro says
                                          `Job has finished, use -x or -H ...` for an
                                          ended job it keeps in its history
    qselect -N NAME                       the ids of the jobs with that name
    qdel ID;  qstat --version;  qstat -Q QUEUE (`Unknown queue` when there is none)

PBS has no `--chdir` in every version (Torque's `-d` is not in PBS Pro): the job script
changes to the working dir itself. Job states: Q/H/W/T queued, R/E/S/B/U running,
C (Torque) / F (PBS Pro) / X ended; an `Exit_status` below 0 (JOB_EXEC_* codes, e.g. a
resource limit) or of 256 and more (killed by a signal) means the script was killed.
Older PBS releases limit job names to 15 characters: use short calculation ids there.
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
    walltime,
)

QUEUED = frozenset("QHWT")
RUNNING = frozenset("RESBU")
_JOB_ID = re.compile(r"^[0-9]+(?:\[[0-9]*\])?(?:\.[A-Za-z0-9._-]+)?$")
_UNKNOWN_JOB = "Unknown Job Id"
_FINISHED = "Job has finished"
_NOT_REACHED = ("Cannot connect to specified server host", "cannot connect to server")
_CTIME = "%a %b %d %H:%M:%S %Y"


def parse_qstat_f(text: str) -> dict[str, str]:
    """`qstat -f` of one job as attribute -> value (continuation lines joined)."""
    attributes: dict[str, str] = {}
    last: Optional[str] = None
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            attributes["Job Id"] = line.split(":", 1)[1].strip()
        elif line.startswith("\t") and last is not None:
            # Wrapped at a fixed width: only the tab is added, the rest belongs to the value.
            attributes[last] += line[1:]
        elif " = " in line:
            key, _, value = line.strip().partition(" = ")
            attributes[key] = value
            last = key
    return attributes


def _ctime(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        return time.mktime(time.strptime(text.strip(), _CTIME))
    except ValueError:
        return None


def _phase(state: str, exit_status: Optional[str]) -> Phase:
    if state in QUEUED:
        return Phase.QUEUED
    if state in RUNNING:
        return Phase.RUNNING
    try:
        code = int(exit_status) if exit_status is not None else 0
    except ValueError:
        code = 0
    return Phase.KILLED if code < 0 or code >= 256 else Phase.ENDED


def sighting_of(attributes: dict[str, str]) -> Sighting:
    state = attributes.get("job_state", "")
    exit_status = attributes.get("Exit_status")
    reason = attributes.get("comment", "")
    if exit_status is not None:
        reason = f"Exit_status={exit_status}" + (f" ({reason})" if reason else "")
    return Sighting(
        job_id=attributes.get("Job Id", ""),
        name=attributes.get("Job_Name", ""),
        phase=_phase(state, exit_status),
        state=state,
        reason=reason,
        submitted_epoch=_ctime(attributes.get("qtime")),
        started_epoch=_ctime(attributes.get("start_time") or attributes.get("stime")),
        node=attributes.get("exec_host", "").split("/")[0].split("+")[0],
    )


def parse_qsub(result: CommandResult) -> Submission:
    first = result.stdout.strip().splitlines()[:1]
    if result.ok and first and _JOB_ID.match(first[0].strip()):
        return Submission(first[0].strip())
    text = f"{result.stdout}\n{result.stderr}"
    if any(known in text for known in _NOT_REACHED):
        return Submission(None, message=result.describe())
    if result.ok:
        return Submission(None, message=f"qsub printed no job id: {result.tail(stream='stdout')}")
    return Submission(None, refused=True, message=result.tail() or result.describe())


class PbsBatch(SchedulerCommands):
    """The PBS commands found on PATH, each with a timeout."""

    kind = "pbs"

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
        argv = ["qsub", "-r", "n", "-j", "oe", "-o", str(workdir / JOB_OUTPUT_NAME)]
        if partition:
            argv += ["-q", partition]
        if time_limit is not None:
            argv += ["-l", f"walltime={walltime(time_limit)}"]
        return [*argv, *extra_args, "-N", name, str(script)]

    def parse_submit(self, result: CommandResult) -> Submission:
        return parse_qsub(result)

    def lookup(self, job_id: str) -> Optional[Sighting]:
        done = self._run("qstat", "-f", job_id)
        text = done.stdout + done.stderr
        if done.failed and _UNKNOWN_JOB in text:
            return None
        if done.failed and _FINISHED in text:
            return Sighting(job_id=job_id, name="", phase=Phase.ENDED, state="F")
        if done.failed:
            raise UnavailableError(done.describe())
        attributes = parse_qstat_f(done.stdout)
        if "job_state" not in attributes:
            raise UnavailableError(f"qstat -f {job_id} printed no job_state")
        return sighting_of(attributes)

    def find_by_name(self, name: str) -> list[Sighting]:
        done = self._run("qselect", "-N", name)
        if done.failed:
            raise UnavailableError(done.describe())
        found = []
        for job_id in done.stdout.split():
            sighting = self.lookup(job_id)
            if sighting is not None:
                found.append(sighting)
        return found

    def cancel(self, job_id: str) -> None:
        done = self._run("qdel", job_id)
        text = done.stdout + done.stderr
        if done.failed and _UNKNOWN_JOB not in text and _FINISHED not in text:
            raise UnavailableError(done.describe())

    def version(self) -> str:
        done = self._run("qstat", "--version")
        if done.failed:
            raise UnavailableError(done.describe())
        return done.stdout.strip() or done.stderr.strip()

    def queue_detail(self, queue: Optional[str]) -> str:
        if not queue:
            return "the server's default queue (batch.partition not set)"
        done = self._run("qstat", "-Q", queue)
        if done.failed and "Unknown queue" in done.stdout + done.stderr:
            raise ConfigError(f"PBS has no queue {queue!r}")
        if done.failed:
            raise UnavailableError(done.describe())
        return f"queue {queue} exists"

    def job_retention(self) -> Optional[float]:
        return None
