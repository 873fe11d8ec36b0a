"""Calculations as batch jobs of the site's scheduler (Slurm or PBS) instead of local processes.

One calculation is one job. Its script, written into the working dir, runs the allowlisted
argv there (each element quoted; never a shell string from the server), streams stdout and
stderr to the two result files and, as its last act, writes the command's exit status to
`.mint-poll-exit-status` atomically (a temp name in the same dir, then `mv`). That file is
the truth about how the command ended: no accounting (`sacct`) is needed. The scheduler's
queue (`squeue`, `qstat`) only says whether the job is still there, and its last word
explains a job that left without writing the file.

Submission, and why a calculation is never submitted twice nor lost:

1. Before `sbatch`/`qsub` runs, the job's unique name `mint-poll-<calc id>-<nonce>` and the
   exact submit command are saved (through the caller's `save` callback, into the
   calculation's record). The job id is saved the moment the scheduler prints it.
2. A saved job with an id is followed by that id.
3. A saved job without an id (the agent died between the two saves, or the submit's answer
   was lost, or the controller could not be reached) is looked up by its name. One found:
   its id is adopted. Several found (only possible after a lost answer and a new attempt):
   the lowest id is kept and the others are cancelled.
4. None found: if the exit-status file or the job's start marker exists, the job ran (and
   the scheduler has forgotten it), so nothing is submitted again. Otherwise the name is
   looked up once more, at least `confirm_after` seconds later and with the scheduler
   answering both times; only when that look finds nothing either is the saved submit
   command run again, under the same name.
5. Whatever the scheduler does, the command runs at most once: the script's first act is
   `mkdir .mint-poll-job.started` (atomic), and a job that finds it already there exits
   without running the command, naming the job that did. Jobs are submitted without
   requeueing (`--no-requeue`, `-r n`), so a node failure ends the job (abnormal, with the
   scheduler's reason) instead of starting the command again.

A job is `finished` as soon as its exit-status file is there (the command's output is
complete by then). A job the scheduler reports ended without that file is `vanished`
(abnormal, with the scheduler's last state and reason); after a normal end (Slurm
COMPLETED/FAILED, PBS completed) the file is given `status_grace` seconds to appear, since a
shared filesystem may show it late. When the scheduler cannot be asked, a job is `unknown`:
it is never declared vanished on a failed look.

The time limit (a calculation's timeout) is passed to the scheduler (`--time`, rounded up
to whole minutes; `-l walltime`) and enforced here too, counted from the job's start as
the scheduler reports it: past it the job is cancelled and reported abnormal.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Protocol

from mint_common.checks import PASS, SKIP, WARN
from mint_common.errors import ConfigError, JobFailed, MintError, UnavailableError
from mint_common.proc import CommandResult, run_command
from mint_common.timeutil import Duration, epoch_from_iso, format_duration, iso_from_epoch
from mint_poll.runner import child_environment

log = logging.getLogger(__name__)

RunnerKind = Literal["local", "slurm", "pbs"]
#: Jobs in flight when `max_parallel` is not set and the runner is a scheduler: the queue,
#: not this host, limits the work, but a burst of calculations should not flood it.
DEFAULT_MAX_IN_FLIGHT = 16
SCRIPT_NAME = ".mint-poll-job.sh"
STATUS_NAME = ".mint-poll-exit-status"
STARTED_NAME = ".mint-poll-job.started"
JOB_OUTPUT_NAME = ".mint-poll-job.out"
#: How long a scheduler command may take before the scheduler counts as unreachable.
COMMAND_TIMEOUT = 30.0
#: The most a scheduler command may print before its answer is refused.
COMMAND_MAX_OUTPUT = 1024 * 1024
#: After a normal end, how long the exit-status file may take to show on a shared filesystem.
STATUS_GRACE = 60.0
JOB_NAME_PREFIX = "mint-poll-"


class BatchRefused(JobFailed):
    """The scheduler refused the job itself (bad partition, bad argument): not transient."""


@dataclass(frozen=True)
class BatchOverride:
    """A command's own batch settings (its `commands:` entry): a runner, extra arguments."""

    runner: Optional[RunnerKind] = None
    sbatch_args: tuple[str, ...] = ()
    qsub_args: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, value: Mapping[str, Any], *, source: str, key: str) -> BatchOverride:
        """From the keys `runner`, `sbatch_args`, `qsub_args` of a command's mapping."""
        runner = value.get("runner")
        if runner is not None and runner not in ("local", "slurm", "pbs"):
            raise ConfigError(
                f"{source}: key {key}.runner: expected 'local', 'slurm' or 'pbs', got {runner!r}"
            )
        return cls(
            runner=runner,
            sbatch_args=_arg_list(value.get("sbatch_args"), source, f"{key}.sbatch_args"),
            qsub_args=_arg_list(value.get("qsub_args"), source, f"{key}.qsub_args"),
        )


def _arg_list(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{source}: key {key}: expected a list of strings, got {value!r}")


@dataclass(frozen=True)
class BatchSettings:
    """The `runner` key and the `batch:` section of mint-poll.yaml."""

    runner: RunnerKind = "local"
    #: Slurm partition / PBS queue; None: the scheduler's default.
    partition: Optional[str] = None
    sbatch_args: tuple[str, ...] = ()
    qsub_args: tuple[str, ...] = ()
    #: How often jobs in flight are looked at (not the server's poll_interval).
    watch_interval: Duration = field(default=Duration(10), metadata={"above": 0})
    #: On SIGTERM: cancel the jobs in flight (reported abnormal) instead of leaving them.
    cancel_on_stop: bool = False

    @property
    def batch(self) -> bool:
        return self.runner != "local"

    def for_command(self, override: Optional[BatchOverride]) -> BatchSettings:
        """These settings for one command: its runner instead, its arguments after ours."""
        if override is None:
            return self
        return dataclasses.replace(
            self,
            runner=override.runner or self.runner,
            sbatch_args=(*self.sbatch_args, *override.sbatch_args),
            qsub_args=(*self.qsub_args, *override.qsub_args),
        )

    @property
    def extra_args(self) -> tuple[str, ...]:
        """The site's arguments for the configured scheduler's submit command."""
        return self.qsub_args if self.runner == "pbs" else self.sbatch_args


class JobState(str, Enum):
    SUBMITTING = "submitting"  # no job id yet: being looked up by name or submitted again
    QUEUED = "queued"
    RUNNING = "running"
    ENDING = "ending"  # the scheduler says it ended; waiting for the exit-status file
    FINISHED = "finished"  # the exit-status file is there
    VANISHED = "vanished"  # ended without writing it: abnormal
    UNKNOWN = "unknown"  # the scheduler could not be asked; look again later


class Phase(str, Enum):
    """Where the scheduler has a job."""

    QUEUED = "queued"
    RUNNING = "running"
    ENDED = "ended"  # a normal end: the script may have written the status file
    KILLED = "killed"  # cancelled, timed out, node failure: the script did not finish


@dataclass(frozen=True)
class Sighting:
    """What the scheduler said about one job."""

    job_id: str
    name: str
    phase: Phase
    state: str
    reason: str = ""
    submitted_epoch: Optional[float] = None
    started_epoch: Optional[float] = None
    node: str = ""


@dataclass(frozen=True)
class Submission:
    """What a submit command did: queued a job (its id), or did not, or may have."""

    job_id: Optional[str]
    refused: bool = False
    message: str = ""


class BatchScheduler(Protocol):
    """One scheduler's commands. Lookups raise UnavailableError when it cannot answer."""

    kind: str

    def submit_argv(
        self,
        *,
        name: str,
        workdir: Path,
        script: Path,
        partition: Optional[str],
        time_limit: Optional[float],
        extra_args: Sequence[str],
    ) -> list[str]: ...

    def parse_submit(self, result: CommandResult) -> Submission: ...

    def lookup(self, job_id: str) -> Optional[Sighting]:
        """The job, or None when the scheduler does not know it (any more)."""
        ...

    def find_by_name(self, name: str) -> list[Sighting]: ...

    def cancel(self, job_id: str) -> None: ...

    def version(self) -> str: ...

    def queue_detail(self, queue: Optional[str]) -> str:
        """A line about the queue; ConfigError when it does not exist."""
        ...

    def job_retention(self) -> Optional[float]:
        """How long an ended job stays visible (Slurm MinJobAge), None if unknown."""
        ...


@dataclass
class BatchJob:
    """What the agent saves about one calculation's job (in its record), to follow it
    after a restart."""

    scheduler: str
    name: str
    workdir: str
    submit_argv: list[str]
    time_limit: Optional[float] = None
    job_id: Optional[str] = None
    submits: int = 0
    submitted_at: Optional[str] = None
    started_at: Optional[str] = None
    node: Optional[str] = None
    #: The scheduler's last word: state and reason as last seen.
    last_state: Optional[str] = None
    last_reason: Optional[str] = None
    #: When a lookup by name (or the job's end without a status file) was first seen.
    missing_at: Optional[str] = None
    ended_at: Optional[str] = None
    #: Why we cancelled it (time limit, stop): the abnormal reason once it is gone.
    cancel_reason: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Optional[BatchJob]:
        """The saved job; None for anything that is not one."""
        if not isinstance(data, dict):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            job = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None
        if not isinstance(job.name, str) or not isinstance(job.submit_argv, list):
            return None
        return job

    @property
    def status_file(self) -> Path:
        return Path(self.workdir) / STATUS_NAME


@dataclass(frozen=True)
class JobView:
    """One look at a job, for the agent and `status`."""

    state: JobState
    job_id: Optional[str] = None
    exit_status: Optional[int] = None
    scheduler_state: Optional[str] = None
    reason: Optional[str] = None
    node: Optional[str] = None
    queued_seconds: Optional[float] = None
    started_at: Optional[str] = None
    #: Why the calculation is abnormal (vanished), or what is awaited.
    message: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.state in (JobState.FINISHED, JobState.VANISHED)


Save = Callable[[BatchJob], None]


def job_name(calc_id: str, nonce: Optional[str] = None) -> str:
    """`mint-poll-<calc id>-<nonce>`: unique, so a lookup by name finds only this attempt."""
    return f"{JOB_NAME_PREFIX}{calc_id}-{nonce or secrets.token_hex(4)}"


def write_job_script(
    workdir: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
) -> Path:
    """Write the job script into `workdir` (mode 0700) and return its path."""
    q = shlex.quote
    status, started = q(STATUS_NAME), q(STARTED_NAME)
    lines = [
        "#!/bin/sh",
        "# Written by mint-poll: runs one calculation's command, then records its exit status.",
        f"cd {q(str(workdir))} || exit 1",
        f"if ! mkdir {started} 2>/dev/null; then",
        f'    echo "mint-poll: job $(cat {started}/job 2>/dev/null) already ran this'
        ' calculation; not running it twice" >&2',
        "    exit 0",
        "fi",
        f"printf '%s\\n' \"${{SLURM_JOB_ID:-${{PBS_JOBID:-}}}}\" > {started}/job",
        *(f"export {name}={q(value)}" for name, value in sorted(env.items())),
        f"{shlex.join(argv)} </dev/null >{q(str(stdout_path))} 2>{q(str(stderr_path))}",
        "status=$?",
        # The last act, and atomic: a reader sees no file or the whole number.
        f"printf '%s\\n' \"$status\" > {status}.tmp.$$ && mv -f {status}.tmp.$$ {status}",
        'exit "$status"',
    ]
    path = workdir / SCRIPT_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    path.chmod(0o700)
    return path


def read_exit_status(workdir: Path) -> Optional[int]:
    """The command's exit status from its file; None while there is none. A file that is
    not a number (it is written atomically, so only a hostile or broken one) counts as 255."""
    try:
        text = (workdir / STATUS_NAME).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        return int(text.strip())
    except ValueError:
        log.warning("%s holds %r, not an exit status", workdir / STATUS_NAME, text[:40])
        return 255


def _started_by(workdir: Path) -> Optional[str]:
    """The id of the job that started the command (its marker), '' if unnamed, None if none."""
    marker = workdir / STARTED_NAME
    if not marker.is_dir():
        return None
    try:
        return (marker / "job").read_text(encoding="utf-8", errors="replace").strip()[:64]
    except OSError:
        return ""


class SchedulerCommands:
    """What the Slurm and PBS adapters share: their commands run with a timeout and a cap
    on what they may print."""

    def __init__(self, timeout: float = COMMAND_TIMEOUT) -> None:
        self.timeout = timeout

    def _run(self, *argv: str) -> CommandResult:
        return run_command(argv, timeout=self.timeout, max_output=COMMAND_MAX_OUTPUT)


class BatchRunner:
    """Submits, follows and cancels calculation jobs through one scheduler adapter."""

    def __init__(
        self,
        scheduler: BatchScheduler,
        settings: BatchSettings,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = COMMAND_TIMEOUT,
        status_grace: float = STATUS_GRACE,
        confirm_after: Optional[float] = None,
    ) -> None:
        self.scheduler = scheduler
        self.settings = settings
        self.clock = clock
        self.timeout = timeout
        self.status_grace = status_grace
        self.confirm_after = settings.watch_interval if confirm_after is None else confirm_after
        self._unreachable_logged = False

    def submit(
        self,
        *,
        calc_id: str,
        workdir: Path,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdout_path: Path,
        stderr_path: Path,
        time_limit: Optional[float],
        save: Save,
        extra_args: Sequence[str] = (),
    ) -> BatchJob:
        """Write the script, save the job's name, submit, save its id; return the job.

        `env` holds only the calculation's own variables (written into the script). A
        job whose submission went unanswered is returned without an id: `poll` settles
        it. BatchRefused when the scheduler refuses the job itself.
        """
        script = write_job_script(
            workdir, argv, env=env, stdout_path=stdout_path, stderr_path=stderr_path
        )
        name = job_name(calc_id)
        job = BatchJob(
            scheduler=self.scheduler.kind,
            name=name,
            workdir=str(workdir),
            time_limit=time_limit,
            submit_argv=self.scheduler.submit_argv(
                name=name,
                workdir=workdir,
                script=script,
                partition=self.settings.partition,
                time_limit=time_limit,
                extra_args=[*self.settings.extra_args, *extra_args],
            ),
        )
        self._submit(job, save)
        return job

    def _submit(self, job: BatchJob, save: Save) -> None:
        job.submits += 1
        job.missing_at = None
        save(job)  # before the submit command runs: the name to look for after a crash
        try:
            result = run_command(
                job.submit_argv, timeout=self.timeout, env=child_environment({}), cwd=job.workdir
            )
        except UnavailableError as exc:
            log.warning(
                "job %s: %s; it is looked up by name before any new attempt", job.name, exc.message
            )
            save(job)
            return
        submission = self.scheduler.parse_submit(result)
        if submission.job_id is not None:
            job.job_id = submission.job_id
            job.submitted_at = _iso(self.clock())
            log.info("job %s submitted as %s job %s", job.name, job.scheduler, job.job_id)
            save(job)
            return
        if submission.refused:
            save(job)
            raise BatchRefused(f"the scheduler refused the job: {submission.message}")
        log.warning(
            "job %s: %s; looking it up by name before submitting again",
            job.name,
            submission.message,
        )
        save(job)

    def poll(self, job: BatchJob, save: Save) -> JobView:
        """Look at the job once (settling a job without id first); save what changed."""
        before = job.to_json()
        try:
            view = self._look(job, save)
        except UnavailableError as exc:
            view = self._unreachable(job, exc)
        else:
            self._unreachable_logged = False
        if job.to_json() != before:
            save(job)
        return view

    def reattach(self, data: Any, save: Save) -> tuple[BatchJob, JobView]:
        """A saved job after a restart, and its first look (by id, else by name)."""
        job = BatchJob.from_json(data)
        if job is None:
            raise JobFailed("the calculation's saved batch job cannot be read")
        log.info("re-attaching to job %s (%s)", job.name, job.job_id or "no id saved")
        return job, self.poll(job, save)

    def cancel(self, job: BatchJob, reason: str, save: Save) -> None:
        """Cancel the job; once it is gone it is reported vanished with `reason`."""
        job.cancel_reason = reason
        save(job)
        ids = (
            [job.job_id]
            if job.job_id
            else [s.job_id for s in self.scheduler.find_by_name(job.name)]
        )
        for job_id in ids:
            log.warning("cancelling %s job %s (%s): %s", job.scheduler, job_id, job.name, reason)
            self.scheduler.cancel(job_id)

    def _unreachable(self, job: BatchJob, exc: MintError) -> JobView:
        if not self._unreachable_logged:
            log.warning("cannot ask the scheduler about its jobs: %s; trying again", exc.message)
            self._unreachable_logged = True
        status = read_exit_status(Path(job.workdir))
        if status is not None and job.cancel_reason is None:
            return self._finished(job, status)
        return JobView(
            JobState.UNKNOWN,
            job.job_id,
            scheduler_state=job.last_state,
            reason=job.last_reason,
            node=job.node,
            started_at=job.started_at,
            message=f"the scheduler does not answer: {exc.message}",
        )

    def _look(self, job: BatchJob, save: Save) -> JobView:
        if job.job_id is None:
            settled = self._settle(job, save)
            if settled is not None:
                return settled
        assert job.job_id is not None
        sighting = self.scheduler.lookup(job.job_id)
        if sighting is not None:
            self._note(job, sighting)
        status = read_exit_status(Path(job.workdir))
        if status is not None and job.cancel_reason is None:
            return self._finished(job, status)
        if sighting is None or sighting.phase in (Phase.ENDED, Phase.KILLED):
            return self._gone(job, sighting, save)
        job.missing_at = None
        if job.cancel_reason is not None:
            # Asked again on every look: an earlier cancel may have found no controller.
            self.scheduler.cancel(sighting.job_id)
        else:
            self._enforce_limit(job, sighting, save)
        return self._in_queue(job, sighting)

    def _settle(self, job: BatchJob, save: Save) -> Optional[JobView]:
        """Find a job without id by name; submit again when it surely never was queued.
        Returns a view when there is nothing more to look at yet."""
        found = sorted(self.scheduler.find_by_name(job.name), key=lambda s: _id_key(s.job_id))
        if found:
            self._adopt(job, found, save)
            return None
        started = _started_by(Path(job.workdir))
        if started:
            log.warning("job %s: found by its start marker as job %s", job.name, started)
            job.job_id = started
            save(job)
            return None
        status = read_exit_status(Path(job.workdir))
        if status is not None or started is not None:
            return self._forgotten(job, status)
        now = self.clock()
        if job.missing_at is None:
            job.missing_at = _iso(now)
            return JobView(JobState.SUBMITTING, message="looking for the job by its name")
        if now - epoch_from_iso(job.missing_at) < self.confirm_after:
            return JobView(JobState.SUBMITTING, message="looking for the job by its name")
        log.warning("job %s was never queued: submitting it (again)", job.name)
        self._submit(job, save)
        return JobView(JobState.SUBMITTING if job.job_id is None else JobState.QUEUED, job.job_id)

    def _adopt(self, job: BatchJob, found: list[Sighting], save: Save) -> None:
        job.job_id = found[0].job_id
        log.warning("job %s: found by its name as %s job %s", job.name, job.scheduler, job.job_id)
        save(job)
        for extra in found[1:]:
            log.warning("job %s: cancelling the duplicate job %s", job.name, extra.job_id)
            self.scheduler.cancel(extra.job_id)

    def _forgotten(self, job: BatchJob, status: Optional[int]) -> JobView:
        """Ran (status file or marker) but no id and the scheduler has forgotten it."""
        if status is not None:
            return self._finished(job, status)
        return self._vanished(job, "the job started but the scheduler no longer knows it")

    def _note(self, job: BatchJob, sighting: Sighting) -> None:
        job.last_state = sighting.state
        job.last_reason = sighting.reason or None
        job.node = sighting.node or job.node
        # A job that ended before the first look still has the scheduler's start time.
        if sighting.started_epoch is not None and sighting.phase in (Phase.RUNNING, Phase.ENDED):
            job.started_at = iso_from_epoch(sighting.started_epoch)

    def _gone(self, job: BatchJob, sighting: Optional[Sighting], save: Save) -> JobView:
        """Ended or forgotten by the scheduler without the status file (yet)."""
        if sighting is None:
            started = _started_by(Path(job.workdir))
            if started and started != job.job_id:
                # A duplicate that found the marker ended: follow the job that runs the command.
                log.warning("job %s: the command runs in job %s", job.name, started)
                job.job_id = started
                save(job)
                return JobView(JobState.RUNNING, started)
        if job.cancel_reason is not None:
            return self._vanished(job, job.cancel_reason)
        if sighting is not None and sighting.phase is Phase.KILLED:
            return self._vanished(job, self._last_word(job))
        now = self.clock()
        if job.ended_at is None:
            job.ended_at = _iso(now)
        if now - epoch_from_iso(job.ended_at) < self.status_grace:
            return JobView(
                JobState.ENDING,
                job.job_id,
                scheduler_state=job.last_state,
                node=job.node,
                message="the job ended; waiting for its exit-status file",
            )
        return self._vanished(job, self._last_word(job))

    def _last_word(self, job: BatchJob) -> str:
        said = job.last_state or "no state seen"
        if job.last_reason:
            said += f", reason {job.last_reason}"
        if job.last_state == "TIMEOUT":
            return f"the job exceeded its time limit ({job.scheduler} says {said})"
        return f"the job ended without writing its exit status ({job.scheduler} says {said})"

    def _enforce_limit(self, job: BatchJob, sighting: Sighting, save: Save) -> None:
        if job.time_limit is None or sighting.phase is not Phase.RUNNING or not job.started_at:
            return
        ran = self.clock() - epoch_from_iso(job.started_at)
        if ran >= job.time_limit:
            self.cancel(
                job,
                f"the command exceeded its time limit of {format_duration(job.time_limit)}"
                f" (ran {format_duration(math.floor(ran))} from the job's start)",
                save,
            )

    def _in_queue(self, job: BatchJob, sighting: Sighting) -> JobView:
        queued: Optional[float] = None
        if sighting.submitted_epoch is not None:
            end = sighting.started_epoch if sighting.phase is Phase.RUNNING else None
            queued = max(0.0, (end or self.clock()) - sighting.submitted_epoch)
        return JobView(
            JobState.RUNNING if sighting.phase is Phase.RUNNING else JobState.QUEUED,
            job.job_id,
            scheduler_state=sighting.state,
            reason=sighting.reason or None,
            node=job.node,
            queued_seconds=queued,
            started_at=job.started_at,
        )

    def _finished(self, job: BatchJob, status: int) -> JobView:
        return JobView(
            JobState.FINISHED,
            job.job_id,
            exit_status=status,
            scheduler_state=job.last_state,
            node=job.node,
            started_at=job.started_at,
        )

    def _vanished(self, job: BatchJob, message: str) -> JobView:
        return JobView(
            JobState.VANISHED,
            job.job_id,
            scheduler_state=job.last_state,
            reason=job.last_reason,
            node=job.node,
            started_at=job.started_at,
            message=message,
        )


def _iso(epoch: float) -> str:
    return iso_from_epoch(epoch) or ""


def _id_key(job_id: str) -> tuple[int, str]:
    head = job_id.split(".")[0].split("_")[0]
    return (int(head) if head.isdigit() else 0, job_id)


def make_scheduler(settings: BatchSettings) -> BatchScheduler:
    """The adapter for `settings.runner` ('slurm' or 'pbs')."""
    if settings.runner == "slurm":
        from mint_poll.batch_slurm import SlurmBatch

        return SlurmBatch()
    if settings.runner == "pbs":
        from mint_poll.batch_pbs import PbsBatch

        return PbsBatch()
    raise ConfigError(f"runner {settings.runner!r} does not submit batch jobs")


def walltime(seconds: float) -> str:
    """`HH:MM:SS`, rounded up to the second."""
    whole = math.ceil(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def slurm_minutes(seconds: float) -> int:
    """Slurm's `--time` in whole minutes, rounded up (a 90 s limit is 2 minutes)."""
    return max(1, math.ceil(seconds / 60))


# `check` helpers: each returns a detail line or (status, detail), or raises (a FAIL row).


def check_commands(scheduler: BatchScheduler) -> str:
    """The scheduler's commands answer (its version)."""
    return f"{scheduler.kind}: {scheduler.version()}"


def check_queue(scheduler: BatchScheduler, settings: BatchSettings) -> str:
    """The partition / queue exists (ConfigError otherwise)."""
    return scheduler.queue_detail(settings.partition)


def check_retention(scheduler: BatchScheduler, settings: BatchSettings) -> tuple[str, str]:
    """Jobs are watched well within the time an ended job stays visible (Slurm MinJobAge)."""
    retention = scheduler.job_retention()
    if retention is None:
        return SKIP, f"{scheduler.kind}: how long ended jobs stay visible is not read"
    shown = f"MinJobAge {format_duration(retention)}"
    if retention and settings.watch_interval * 3 > retention:
        return WARN, (
            f"{shown} is less than three watch_interval"
            f" ({format_duration(settings.watch_interval)}): an ended job may be forgotten"
            " before it is looked at; lower batch.watch_interval"
        )
    return PASS, f"{shown}, watch_interval {format_duration(settings.watch_interval)}"


def probe_shared_dir(
    runner: BatchRunner,
    directory: Path,
    *,
    timeout: float = 120.0,
    every: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, str]:
    """Submit a job that writes a file into a new dir under `directory` and read it here.

    PASS when it appears, FAIL (JobFailed) when the job ended and it never did, WARN when
    the job did not run within `timeout` (it is cancelled; nothing was proved).
    """
    probe = Path(tempfile.mkdtemp(prefix=".mint-poll-probe-", dir=directory))
    saved: list[BatchJob] = []
    try:
        job = runner.submit(
            calc_id="probe",
            workdir=probe,
            argv=["hostname"],
            env={},
            stdout_path=probe / "hostname",
            stderr_path=probe / "hostname.err",
            time_limit=60.0,
            save=saved.append,
        )
        view = _wait_done(runner, job, saved.append, timeout, every, sleep)
        if view is None:
            runner.cancel(job, "the check's probe job did not run in time", saved.append)
            return WARN, (
                f"the probe job did not run within {format_duration(timeout)}"
                f" (still {job.last_state or 'queued'}): could not prove that {directory}"
                " is shared with the compute nodes"
            )
        return _probe_verdict(view, probe, directory)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _wait_done(
    runner: BatchRunner,
    job: BatchJob,
    save: Save,
    timeout: float,
    every: float,
    sleep: Callable[[float], None],
) -> Optional[JobView]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = runner.poll(job, save)
        if view.done:
            return view
        sleep(every)
    return None


def _probe_verdict(view: JobView, probe: Path, directory: Path) -> tuple[str, str]:
    if view.state is JobState.FINISHED and view.exit_status == 0:
        host = (probe / "hostname").read_text(encoding="utf-8", errors="replace").strip()
        return PASS, (
            f"job {view.job_id} on {view.node or host} wrote into {directory}, read back here"
        )
    if view.state is JobState.FINISHED:
        raise JobFailed(
            f"the probe job {view.job_id} ran but `hostname` exited with {view.exit_status}"
        )
    raise JobFailed(
        f"{directory} is not on a filesystem the compute nodes share: the probe job"
        f" {view.job_id} ended on {view.node or 'its node'} but its file never appeared here"
        f" ({view.message})",
        hint="set calc_base to a directory shared with the compute nodes (not /tmp)",
    )
