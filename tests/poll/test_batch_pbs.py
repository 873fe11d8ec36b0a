"""The batch runner with PBS (Torque), through fakes.

No PBS server can run here: every test in this file drives tests/poll/fakes/pbs/, whose
qsub, qstat -f, qselect and qdel outputs are written from the Torque 6.1 documentation,
not captured. The job scripts themselves are real: the fake runs them with /bin/sh.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mint_common.errors import ConfigError, UnavailableError
from mint_poll.batch import (
    BatchJob,
    BatchRefused,
    BatchRunner,
    BatchSettings,
    JobState,
    check_commands,
    check_queue,
    check_retention,
    probe_shared_dir,
)
from mint_poll.batch_pbs import PbsBatch, parse_qstat_f

FAKES = Path(__file__).parent / "fakes" / "pbs"


class FakePbs:
    def __init__(self, state: Path) -> None:
        self.state = state

    def control(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, str(FAKES / "fakepbs.py"), *args],
            env={"FAKE_PBS_STATE": str(self.state), "PATH": "/usr/bin:/bin"},
            check=True,
            timeout=60,
        )

    def read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state.read_text())
        return data

    def fail(self, command: str, rc: int, stderr: str) -> None:
        data = self.read()
        data["fail"] = {command: {"rc": rc, "stderr": stderr}}
        self.state.write_text(json.dumps(data))


@pytest.fixture
def pbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePbs:
    monkeypatch.setenv("PATH", f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_PBS_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_PBS_STATE", str(tmp_path / "pbs.json"))
    return FakePbs(tmp_path / "pbs.json")


def make_runner(**settings: Any) -> BatchRunner:
    batch = BatchSettings(**{"runner": "pbs", "partition": "batch", **settings})
    return BatchRunner(PbsBatch(), batch, status_grace=0, confirm_after=0)


def submit(
    runner: BatchRunner, workdir: Path, argv: list[str], saves: list[dict[str, Any]], **kw: Any
) -> BatchJob:
    workdir.mkdir(exist_ok=True)
    return runner.submit(
        calc_id="c1",
        workdir=workdir,
        argv=argv,
        env={"CALC_DIR": str(workdir)},
        stdout_path=workdir / "stdout.txt",
        stderr_path=workdir / "stderr.txt",
        save=lambda job: saves.append(job.to_json()),
        **{"time_limit": None, **kw},
    )


def test_qsub_gets_queue_walltime_no_rerun_and_the_name_last(pbs: FakePbs, tmp_path: Path) -> None:
    saves: list[dict[str, Any]] = []
    runner = make_runner(qsub_args=("-A", "proj"))
    job = submit(runner, tmp_path / "w", ["true"], saves, time_limit=90, extra_args=["-V"])
    assert (saves[0]["job_id"], saves[-1]["job_id"]) == (None, "1.fakeserver")
    argv = pbs.read()["submitted"][0]
    assert argv[-3:] == ["-N", job.name, str(tmp_path / "w" / ".mint-poll-job.sh")]
    assert argv[:4] == ["-r", "n", "-j", "oe"]
    for option in (["-q", "batch"], ["-l", "walltime=00:01:30"], ["-A", "proj"], ["-V"]):
        assert any(argv[i : i + len(option)] == option for i in range(len(argv)))


def test_job_runs_and_its_exit_status_file_decides(pbs: FakePbs, tmp_path: Path) -> None:
    runner = make_runner()
    job = submit(runner, tmp_path / "w", ["sh", "-c", 'echo "$CALC_DIR"; exit 4'], [])
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.scheduler_state) == (JobState.QUEUED, "Q")
    pbs.control("run", "1.fakeserver")
    view = runner.poll(job, lambda j: None)
    assert (view.state, view.exit_status, view.node) == (JobState.FINISHED, 4, "node1")
    assert (tmp_path / "w" / "stdout.txt").read_text() == f"{tmp_path / 'w'}\n"
    pbs.control("purge", "1.fakeserver")
    assert runner.poll(job, lambda j: None).state is JobState.FINISHED


def test_cancelled_and_resource_killed_jobs_are_abnormal(pbs: FakePbs, tmp_path: Path) -> None:
    runner = make_runner()
    first = submit(runner, tmp_path / "a", ["sleep", "300"], [])
    pbs.control("start", "1.fakeserver")
    assert runner.poll(first, lambda j: None).state is JobState.RUNNING
    runner.cancel(first, "the agent was asked to stop (cancel_on_stop)", lambda j: None)
    view = runner.poll(first, lambda j: None)
    assert (view.state, view.message) == (
        JobState.VANISHED,
        "the agent was asked to stop (cancel_on_stop)",
    )
    second = submit(runner, tmp_path / "b", ["sleep", "300"], [])
    # Torque's JOB_EXEC_OVERLIMIT (-11): killed for a resource limit such as walltime.
    pbs.control("finish", "2.fakeserver", "-11")
    view = runner.poll(second, lambda j: None)
    assert view.state is JobState.VANISHED
    assert view.message == (
        "the job ended without writing its exit status (pbs says C, reason Exit_status=-11)"
    )


def test_our_time_limit_is_counted_from_the_start_and_qdel_follows(
    pbs: FakePbs, tmp_path: Path
) -> None:
    clock = [1_800_000_000.0]
    runner = BatchRunner(
        PbsBatch(), BatchSettings(runner="pbs"), clock=lambda: clock[0], status_grace=0
    )
    job = submit(runner, tmp_path / "w", ["sleep", "300"], [], time_limit=60)
    pbs.control("start", "1.fakeserver")
    started = pbs.read()["jobs"]["1.fakeserver"]["start_time"]
    clock[0] = started + 59
    assert runner.poll(job, lambda j: None).state is JobState.RUNNING
    clock[0] = started + 61
    runner.poll(job, lambda j: None)
    assert pbs.read()["jobs"]["1.fakeserver"]["exit_status"] == 271
    view = runner.poll(job, lambda j: None)
    assert view.state is JobState.VANISHED
    assert (
        view.message == "the command exceeded its time limit of 1m (ran 1m1s from the job's start)"
    )


def test_crash_before_the_id_was_saved_finds_the_job_by_name(pbs: FakePbs, tmp_path: Path) -> None:
    saves: list[dict[str, Any]] = []

    def crash_on_id(job: BatchJob) -> None:
        if job.job_id:
            raise KeyboardInterrupt
        saves.append(job.to_json())

    with pytest.raises(KeyboardInterrupt):
        make_runner().submit(
            calc_id="c1",
            workdir=tmp_path,
            argv=["echo", "once"],
            env={},
            stdout_path=tmp_path / "stdout.txt",
            stderr_path=tmp_path / "stderr.txt",
            time_limit=None,
            save=crash_on_id,
        )
    job, view = make_runner().reattach(saves[-1], lambda j: None)
    assert (job.job_id, view.state) == ("1.fakeserver", JobState.QUEUED)
    pbs.control("run", "1.fakeserver")
    assert make_runner().poll(job, lambda j: None).exit_status == 0
    assert len(pbs.read()["submitted"]) == 1


def test_refused_job_and_unreachable_server(pbs: FakePbs, tmp_path: Path) -> None:
    with pytest.raises(BatchRefused, match="Unknown queue"):
        submit(make_runner(partition="nosuch"), tmp_path / "a", ["true"], [])
    runner = make_runner()
    job = submit(runner, tmp_path / "b", ["true"], [])
    pbs.fail("qstat", 111, "Cannot connect to specified server host 'fakeserver'.\n")
    view = runner.poll(job, lambda j: None)
    assert view.state is JobState.UNKNOWN
    assert view.message and "Cannot connect to specified server host" in view.message
    with pytest.raises(UnavailableError):
        check_commands(runner.scheduler)


def test_checks_and_a_probe_on_a_dir_the_nodes_do_not_share(pbs: FakePbs, tmp_path: Path) -> None:
    runner = make_runner()
    assert check_commands(runner.scheduler) == "pbs: Version: 6.1.3"
    assert check_queue(runner.scheduler, runner.settings) == "queue batch exists"
    with pytest.raises(ConfigError, match="PBS has no queue 'nosuch'"):
        check_queue(runner.scheduler, BatchSettings(runner="pbs", partition="nosuch"))
    assert check_retention(runner.scheduler, runner.settings)[0] == "skip"

    def node_cannot_see_the_dir(seconds: float) -> None:
        # The job ends on its node, but nothing it wrote reaches this host.
        pbs.control("finish", "1.fakeserver", "0")

    with pytest.raises(Exception, match="is not on a filesystem the compute nodes share"):
        probe_shared_dir(runner, tmp_path, timeout=30, sleep=node_cannot_see_the_dir)
    assert list(tmp_path.glob(".mint-poll-probe-*")) == []


def test_qstat_f_continuation_lines_and_odd_values() -> None:
    text = (
        "Job Id: 7.server\n"
        "    Job_Name = mint-poll-c1-ab\n"
        "    comment = job held, because\n"
        "\t of a dependency\n"
        "    weird line without separator\n"
        "    exec_host = n3/0+n3/1\n"
    )
    parsed = parse_qstat_f(text)
    assert parsed["comment"] == "job held, because of a dependency"
    assert parsed["Job Id"] == "7.server"
    assert parsed["exec_host"] == "n3/0+n3/1"
