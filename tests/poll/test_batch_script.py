"""The batch runner without a scheduler: the job script, the saved job, the settings, and the
never-twice rule driven through a scripted scheduler.

The scripted scheduler (`Scripted`) stands in only where the real Slurm cannot be made to
misbehave on demand (a submission whose answer is lost, two jobs under one name); the
real-Slurm behaviour is in test_batch_slurm.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest

from mint_common.errors import ConfigError, UnavailableError
from mint_common.proc import CommandResult
from mint_common.timeutil import epoch_from_iso
from mint_poll.batch import (
    STARTED_NAME,
    STATUS_NAME,
    BatchJob,
    BatchOverride,
    BatchRunner,
    BatchSettings,
    JobState,
    Phase,
    Sighting,
    Submission,
    read_exit_status,
    slurm_minutes,
    walltime,
    write_job_script,
)
from mint_poll.batch_slurm import parse_sbatch, parse_squeue

HOSTILE_ARGV = [
    sys.executable,
    "-c",
    "import json, sys; print(json.dumps(sys.argv[1:]))",
    "$(touch pwned)",
    "a; touch pwned",
    'it\'s "quoted"',
    "two\nlines",
    "`touch pwned`",
    "*",
    "",
]


def run_script(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(workdir / ".mint-poll-job.sh")],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "42"},
    )


def script(workdir: Path, argv: Sequence[str], env: Optional[dict[str, str]] = None) -> Path:
    return write_job_script(
        workdir,
        argv,
        env=env or {},
        stdout_path=workdir / "stdout.txt",
        stderr_path=workdir / "stderr.txt",
    )


def test_script_passes_hostile_argv_unchanged_and_runs_no_shell_text(tmp_path: Path) -> None:
    path = script(tmp_path, HOSTILE_ARGV, {"CALC_DIR": str(tmp_path), "ODD": "x'; touch pwned"})
    assert path.stat().st_mode & 0o777 == 0o700
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "stdout.txt").read_text()) == HOSTILE_ARGV[3:]
    assert not (tmp_path / "pwned").exists()
    assert not Path("/pwned").exists()
    assert (tmp_path / STATUS_NAME).read_text() == "0\n"
    assert (tmp_path / STARTED_NAME / "job").read_text() == "42\n"


def test_script_exports_env_and_records_a_nonzero_status_without_leftovers(
    tmp_path: Path,
) -> None:
    script(tmp_path, ["sh", "-c", 'echo "$CALC_DIR" >&2; exit 7'], {"CALC_DIR": "/x y"})
    done = run_script(tmp_path)
    assert done.returncode == 7
    assert (tmp_path / "stderr.txt").read_text() == "/x y\n"
    assert read_exit_status(tmp_path) == 7
    assert sorted(p.name for p in tmp_path.iterdir() if STATUS_NAME in p.name) == [STATUS_NAME]


def test_script_never_runs_the_command_twice(tmp_path: Path) -> None:
    script(tmp_path, ["sh", "-c", "echo ran >> count.txt"])
    run_script(tmp_path)
    second = run_script(tmp_path)
    assert second.returncode == 0
    assert "job 42 already ran this calculation" in second.stderr
    assert (tmp_path / "count.txt").read_text() == "ran\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0\n", 0), ("137", 137), ("", 255), ("\xff\xfe", 255), ("12; rm -rf /", 255)],
    ids=["zero", "no-newline", "empty", "not-utf8", "garbage"],
)
def test_exit_status_file_is_read_safely(tmp_path: Path, text: str, expected: int) -> None:
    (tmp_path / STATUS_NAME).write_text(text, encoding="latin-1")
    assert read_exit_status(tmp_path) == expected


def test_no_exit_status_file_reads_as_none(tmp_path: Path) -> None:
    assert read_exit_status(tmp_path) is None


def test_command_override_replaces_runner_and_appends_arguments() -> None:
    base = BatchSettings(runner="slurm", partition="cloud", sbatch_args=("--account=a",))
    override = BatchOverride.from_config(
        {"sbatch_args": ["--gres=gpu:1"]}, source="mint-poll.yaml", key="commands.gpu"
    )
    merged = base.for_command(override)
    assert merged.sbatch_args == ("--account=a", "--gres=gpu:1")
    assert merged.extra_args == ("--account=a", "--gres=gpu:1")
    assert merged.partition == "cloud"
    local = base.for_command(BatchOverride.from_config({"runner": "local"}, source="f", key="k"))
    assert not local.batch
    assert base.for_command(None) is base


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"runner": "lsf"}, "commands.x.runner: expected 'local', 'slurm' or 'pbs'"),
        ({"sbatch_args": "--gres=gpu:1"}, "commands.x.sbatch_args: expected a list of strings"),
        ({"qsub_args": [1]}, "commands.x.qsub_args: expected a list of strings"),
    ],
    ids=["runner", "args-string", "args-number"],
)
def test_bad_override_names_the_key(value: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BatchOverride.from_config(value, source="mint-poll.yaml", key="commands.x")


def test_saved_job_round_trips_and_garbage_is_refused() -> None:
    job = BatchJob("slurm", "mint-poll-c1-ab", "/w", ["sbatch", "s"], time_limit=60, job_id="9")
    assert BatchJob.from_json(json.loads(json.dumps(job.to_json()))) == job
    assert BatchJob.from_json({**job.to_json(), "future_field": 1}) == job
    assert BatchJob.from_json({"name": "x"}) is None
    assert BatchJob.from_json(["not", "a", "job"]) is None
    assert BatchJob.from_json({**job.to_json(), "submit_argv": "sbatch s"}) is None


def test_time_limits_round_up() -> None:
    assert slurm_minutes(1) == 1
    assert slurm_minutes(90) == 2
    assert walltime(3661.5) == "01:01:02"


class Scripted:
    """A scheduler whose answers the test sets: submissions, jobs by id and by name."""

    kind = "slurm"

    def __init__(self) -> None:
        self.jobs: dict[str, Sighting] = {}
        self.cancelled: list[str] = []
        self.next_answer: Submission = Submission("1")
        self.submitted = 0

    def submit_argv(self, **kwargs: object) -> list[str]:
        return ["true"]

    def parse_submit(self, result: CommandResult) -> Submission:
        self.submitted += 1
        return self.next_answer

    def lookup(self, job_id: str) -> Optional[Sighting]:
        return self.jobs.get(job_id)

    def find_by_name(self, name: str) -> list[Sighting]:
        return [s for s in self.jobs.values() if s.name == name]

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def version(self) -> str:
        return "scripted"

    def queue_detail(self, queue: Optional[str]) -> str:
        return "ok"

    def job_retention(self) -> Optional[float]:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def runner_for(scheduler: Scripted, clock: Clock, **kwargs: float) -> BatchRunner:
    return BatchRunner(
        scheduler, BatchSettings(runner="slurm"), clock=clock, confirm_after=10, **kwargs
    )


def submit(runner: BatchRunner, tmp_path: Path, saves: list[dict[str, object]]) -> BatchJob:
    return runner.submit(
        calc_id="c1",
        workdir=tmp_path,
        argv=["true"],
        env={},
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        time_limit=None,
        save=lambda job: saves.append(job.to_json()),
    )


def test_name_is_saved_before_submitting_and_id_right_after(tmp_path: Path) -> None:
    saves: list[dict[str, object]] = []
    scheduler = Scripted()
    job = submit(runner_for(scheduler, Clock()), tmp_path, saves)
    assert saves[0]["job_id"] is None and saves[0]["name"] == job.name
    assert saves[0]["submits"] == 1
    assert saves[-1]["job_id"] == "1"
    assert job.name.startswith("mint-poll-c1-")


def test_lost_answer_is_settled_by_name_and_duplicates_cancelled(tmp_path: Path) -> None:
    scheduler = Scripted()
    scheduler.next_answer = Submission(None, message="Socket timed out (may have been queued)")
    runner = runner_for(scheduler, Clock())
    job = submit(runner, tmp_path, [])
    assert job.job_id is None
    for job_id in ("7", "5"):
        scheduler.jobs[job_id] = Sighting(job_id, job.name, Phase.QUEUED, "PENDING")
    view = runner.poll(job, lambda j: None)
    assert (view.state, job.job_id) == (JobState.QUEUED, "5")
    assert scheduler.cancelled == ["7"]
    assert scheduler.submitted == 1


def test_never_queued_job_is_submitted_again_only_after_a_second_look(tmp_path: Path) -> None:
    scheduler = Scripted()
    scheduler.next_answer = Submission(None, message="Unable to contact slurm controller")
    clock = Clock()
    runner = runner_for(scheduler, clock)
    job = submit(runner, tmp_path, [])
    assert runner.poll(job, lambda j: None).state is JobState.SUBMITTING
    clock.now += 5
    assert runner.poll(job, lambda j: None).state is JobState.SUBMITTING
    assert scheduler.submitted == 1
    scheduler.next_answer = Submission("3")
    clock.now += 6
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.job_id, scheduler.submitted, job.submits) == (
        JobState.QUEUED,
        "3",
        2,
        2,
    )


def test_job_that_started_is_never_submitted_again(tmp_path: Path) -> None:
    scheduler = Scripted()
    scheduler.next_answer = Submission(None, message="Socket timed out")
    clock = Clock()
    runner = runner_for(scheduler, clock, status_grace=0)
    job = submit(runner, tmp_path, [])
    (tmp_path / STARTED_NAME).mkdir()
    (tmp_path / STARTED_NAME / "job").write_text("12\n")
    clock.now += 100
    view = runner.poll(job, lambda j: None)
    assert (view.state, job.job_id) == (JobState.VANISHED, "12")
    assert scheduler.submitted == 1


def test_ended_job_waits_for_its_status_file_then_finishes(tmp_path: Path) -> None:
    scheduler = Scripted()
    clock = Clock()
    runner = runner_for(scheduler, clock, status_grace=30)
    job = submit(runner, tmp_path, [])
    scheduler.jobs["1"] = Sighting("1", job.name, Phase.ENDED, "COMPLETED")
    assert runner.poll(job, lambda j: None).state is JobState.ENDING
    clock.now += 10
    (tmp_path / STATUS_NAME).write_text("3\n")
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.exit_status) == (JobState.FINISHED, 3)


def test_a_job_that_ended_before_the_first_look_keeps_the_schedulers_start(
    tmp_path: Path,
) -> None:
    scheduler = Scripted()
    clock = Clock()
    runner = runner_for(scheduler, clock)
    job = submit(runner, tmp_path, [])
    start = clock.now + 1
    scheduler.jobs["1"] = Sighting("1", job.name, Phase.ENDED, "COMPLETED", started_epoch=start)
    (tmp_path / STATUS_NAME).write_text("0\n")
    clock.now += 20
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.exit_status) == (JobState.FINISHED, 0)
    assert job.started_at is not None and epoch_from_iso(job.started_at) == start


def test_ended_job_without_status_file_vanishes_after_the_grace(tmp_path: Path) -> None:
    scheduler = Scripted()
    clock = Clock()
    runner = runner_for(scheduler, clock, status_grace=30)
    job = submit(runner, tmp_path, [])
    scheduler.jobs["1"] = Sighting("1", job.name, Phase.ENDED, "FAILED", reason="NonZeroExitCode")
    assert runner.poll(job, lambda j: None).state is JobState.ENDING
    clock.now += 31
    view = runner.poll(job, lambda j: None)
    assert view.state is JobState.VANISHED
    assert view.message == (
        "the job ended without writing its exit status (slurm says FAILED, reason NonZeroExitCode)"
    )


def test_a_failed_cancel_is_repeated_until_the_job_is_gone(tmp_path: Path) -> None:
    scheduler = Scripted()
    runner = runner_for(scheduler, Clock())
    job = submit(runner, tmp_path, [])
    scheduler.jobs["1"] = Sighting("1", job.name, Phase.RUNNING, "RUNNING")

    def no_controller(job_id: str) -> None:
        raise UnavailableError("Unable to contact slurm controller (connect failure)")

    scheduler.cancel = no_controller  # type: ignore[method-assign]
    with pytest.raises(UnavailableError):
        runner.cancel(job, "the agent was asked to stop", lambda j: None)
    del scheduler.cancel
    assert runner.poll(job, lambda j: None).state is JobState.RUNNING
    assert scheduler.cancelled == ["1"]
    scheduler.jobs["1"] = Sighting("1", job.name, Phase.KILLED, "CANCELLED")
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.message) == (JobState.VANISHED, "the agent was asked to stop")


RECORDED = Path(__file__).resolve().parent.parent / "burst" / "recorded"


def recorded(name: str) -> CommandResult:
    """A real sbatch answer captured from the test cluster (see tests/burst/recorded)."""
    rc = RECORDED / f"{name}.rc"
    return CommandResult(
        ("sbatch",),
        int(rc.read_text()) if rc.exists() else 0,
        (RECORDED / f"{name}.stdout").read_text(),
        (RECORDED / f"{name}.stderr").read_text(),
    )


def test_sbatch_refusal_and_unreachable_controller_are_told_apart() -> None:
    refused = parse_sbatch(recorded("s3job_sbatch_refused"))
    assert (refused.job_id, refused.refused) == (None, True)
    assert refused.message == "allocation failure: Invalid partition name specified"
    down = parse_sbatch(recorded("s3job_sbatch_test_controller_down"))
    assert (down.job_id, down.refused) == (None, False)
    lost = parse_sbatch(
        CommandResult(
            ("sbatch",), 1, "", "sbatch: error: Socket timed out on send/recv operation\n"
        )
    )
    assert (lost.job_id, lost.refused) == (None, False)
    assert lost.message.endswith("(the job may have been queued)")
    assert parse_sbatch(CommandResult(("sbatch",), 0, "123;minttest\n")).job_id == "123"
    assert not parse_sbatch(CommandResult(("sbatch",), 0, "123 and more\n")).refused


@pytest.mark.parametrize(
    "line",
    ["garbage", "|RUNNING|None|x|y|c1|name", "1|RUNNING|None"],
    ids=["one-field", "no-id", "short"],
)
def test_squeue_line_that_is_not_a_job_is_refused(line: str) -> None:
    with pytest.raises(UnavailableError, match="squeue printed a line that is not a job"):
        parse_squeue(line)


def test_squeue_name_with_separators_and_bad_times_is_read() -> None:
    (sighting,) = parse_squeue("5|PENDING|Resources|not-a-time|N/A||mint|poll|x\n")
    assert (sighting.job_id, sighting.name, sighting.reason) == ("5", "mint|poll|x", "Resources")
    assert (sighting.submitted_epoch, sighting.started_epoch, sighting.node) == (None, None, "")
    assert sighting.phase is Phase.QUEUED


def test_time_in_queue_stops_at_the_start_and_is_unknown_for_an_ended_unseen_job() -> None:
    from mint_poll.state import CalcRecord, Step
    from mint_poll.status import job_cells

    job = BatchJob("slurm", "mint-poll-c1-x", "/w", ["sbatch"], job_id="4")
    job.submitted_at = "2026-11-30T02:05:51+00:00"
    record = CalcRecord("c1", "s", "/w", "/s", step=Step.DONE, batch_job=job)
    later = epoch_from_iso("2026-11-30T03:00:00+00:00")
    assert job_cells(record, now=later)[3] == ""
    job.started_at = "2026-11-30T02:05:52+00:00"
    assert job_cells(record, now=later)[3] == "1s"
    running = CalcRecord("c2", "s", "/w", "/s", step=Step.STARTED, batch_job=job)
    job.started_at = None
    assert job_cells(running, now=epoch_from_iso("2026-11-30T02:06:51+00:00"))[3] == "1m"
