"""The batch runner against the real one-host Slurm: jobs run on its compute nodes (checked
through the scheduler), end in every way, survive an agent crash and a stopped controller."""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest

from mint_common.errors import ConfigError
from mint_common.timeutil import Duration
from mint_poll.batch import (
    STATUS_NAME,
    BatchJob,
    BatchOverride,
    BatchRefused,
    BatchRunner,
    BatchSettings,
    JobState,
    JobView,
    check_commands,
    check_queue,
    check_retention,
    job_name,
    probe_shared_dir,
    write_job_script,
)
from mint_poll.batch_slurm import SlurmBatch
from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm
WAIT = 60.0


class Crash(Exception):
    """The agent dies at this point."""


class Calc:
    """One calculation's working dir, its job and its saved record."""

    def __init__(self, cluster: SlurmCluster, name: str) -> None:
        self.workdir = cluster.work / name
        self.workdir.mkdir()
        self.saved: list[dict[str, Any]] = []
        self.job: Optional[BatchJob] = None
        self.view: Optional[JobView] = None

    def save(self, job: BatchJob) -> None:
        self.saved.append(job.to_json())

    def submit(
        self,
        runner: BatchRunner,
        argv: list[str],
        *,
        time_limit: Optional[float] = None,
        extra_args: tuple[str, ...] = (),
    ) -> BatchJob:
        self.job = runner.submit(
            calc_id=self.workdir.name,
            workdir=self.workdir,
            argv=argv,
            env={"CALC_DIR": str(self.workdir)},
            stdout_path=self.workdir / "stdout.txt",
            stderr_path=self.workdir / "stderr.txt",
            time_limit=time_limit,
            extra_args=extra_args,
            save=self.save,
        )
        return self.job

    def poll(self, runner: BatchRunner) -> JobView:
        assert self.job is not None
        self.view = runner.poll(self.job, self.save)
        return self.view

    def output(self) -> list[str]:
        return (self.workdir / "stdout.txt").read_text().split()


def make_runner(**settings: Any) -> BatchRunner:
    batch = BatchSettings(**{"runner": "slurm", "partition": "cloud", **settings})
    return BatchRunner(SlurmBatch(), batch, status_grace=5, confirm_after=1)


def wait_done(cluster: SlurmCluster, runner: BatchRunner, *calcs: Calc) -> None:
    def all_done() -> bool:
        return all(c.poll(runner).done for c in calcs if not (c.view and c.view.done))

    cluster.wait_for(all_done, "the jobs to end", timeout=WAIT, every=0.5)


def wait_state(cluster: SlurmCluster, runner: BatchRunner, calc: Calc, state: JobState) -> None:
    cluster.wait_for(
        lambda: calc.poll(runner).state is state, f"the job to be {state.value}", WAIT, 0.5
    )


def test_jobs_run_on_compute_nodes_and_end_every_way(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster(start=("c1", "c2", "c3"))
    runner = make_runner()
    node_and_fail, cancelled, too_long, with_comment = (
        Calc(cluster, n) for n in ("node", "cancelled", "toolong", "comment")
    )
    node_and_fail.submit(runner, ["sh", "-c", 'echo "$SLURMD_NODENAME"; hostname; exit 3'])
    cancelled.submit(runner, ["sleep", "300"])
    too_long.submit(runner, ["sleep", "300"], time_limit=2)
    override = BatchOverride(sbatch_args=("--comment=mint-override",))
    extra = runner.settings.for_command(override).sbatch_args
    with_comment.submit(runner, ["sh", "-c", 'echo "$CALC_DIR"'], extra_args=extra)

    wait_state(cluster, runner, cancelled, JobState.RUNNING)
    assert cancelled.job and cancelled.job.job_id
    cluster.run("scancel", cancelled.job.job_id)
    wait_done(cluster, runner, node_and_fail, cancelled, too_long, with_comment)

    assert node_and_fail.view and node_and_fail.view.state is JobState.FINISHED
    assert node_and_fail.view.exit_status == 3
    assert node_and_fail.job and node_and_fail.job.job_id
    node = cluster.job_field(node_and_fail.job.job_id, "NodeList")
    assert node in ("c1", "c2", "c3")
    assert node_and_fail.view.node == node
    assert node_and_fail.output()[0] == node
    assert (node_and_fail.workdir / STATUS_NAME).read_text() == "3\n"
    assert [p.name for p in node_and_fail.workdir.glob(f"{STATUS_NAME}*")] == [STATUS_NAME]

    assert cancelled.view and cancelled.view.state is JobState.VANISHED
    assert cancelled.view.message == (
        "the job ended without writing its exit status (slurm says CANCELLED)"
    )

    assert too_long.view and too_long.view.state is JobState.VANISHED
    assert too_long.view.message and too_long.view.message.startswith(
        "the command exceeded its time limit of 2s"
    )
    assert too_long.job and too_long.job.job_id
    assert cluster.job_field(too_long.job.job_id, "TimeLimit") == "00:01:00"
    assert cluster.job_field(too_long.job.job_id, "JobState") == "CANCELLED"

    assert with_comment.view and with_comment.view.exit_status == 0
    assert with_comment.job and with_comment.job.job_id
    assert cluster.job_field(with_comment.job.job_id, "Comment") == "mint-override"
    assert cluster.job_field(with_comment.job.job_id, "JobName") == with_comment.job.name
    assert with_comment.output() == [str(with_comment.workdir)]


def jobs_named(cluster: SlurmCluster, name: str) -> list[str]:
    done = cluster.run("squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i")
    return done.stdout.split()


def test_checks_pass_and_name_what_is_wrong(slurm_cluster: Callable[..., SlurmCluster]) -> None:
    cluster = slurm_cluster(nodes=("c1@cloud",), start=("c1",))
    runner = make_runner()
    scheduler = runner.scheduler
    assert check_commands(scheduler).startswith("slurm: slurm")
    assert check_queue(scheduler, runner.settings).startswith("partition cloud: State=UP")
    with pytest.raises(ConfigError, match="Slurm has no partition 'nosuch'"):
        check_queue(scheduler, BatchSettings(runner="slurm", partition="nosuch"))
    assert check_retention(scheduler, runner.settings)[0] == "pass"
    refused = Calc(cluster, "refused")
    with pytest.raises(BatchRefused, match="Invalid partition name specified"):
        refused.submit(make_runner(partition="nosuch"), ["true"])
    slow = BatchSettings(runner="slurm", watch_interval=Duration(200))
    status, detail = check_retention(scheduler, slow)
    assert status == "warn" and "MinJobAge 5m" in detail
    status, detail = probe_shared_dir(runner, cluster.work, timeout=WAIT, every=0.5)
    assert status == "pass" and "on c1 wrote into" in detail
    assert [p.name for p in cluster.work.iterdir()] == ["refused"]


def test_agent_crash_and_stopped_controller_lose_nothing_and_submit_once(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"), start=("c1", "c2"))
    crashed = Calc(cluster, "crashed")

    def die_on_id(job: BatchJob) -> None:
        if job.job_id is not None:
            raise Crash
        crashed.save(job)

    with pytest.raises(Crash):
        make_runner().submit(
            calc_id="crashed",
            workdir=crashed.workdir,
            argv=["sh", "-c", "sleep 8; echo done"],
            env={},
            stdout_path=crashed.workdir / "stdout.txt",
            stderr_path=crashed.workdir / "stderr.txt",
            time_limit=None,
            save=die_on_id,
        )
    assert crashed.saved[-1]["job_id"] is None

    # A new agent: the job is found by its name, then followed by id by the next one.
    crashed.job, _ = make_runner().reattach(crashed.saved[-1], crashed.save)
    assert crashed.job.job_id is not None
    assert jobs_named(cluster, crashed.job.name) == [crashed.job.job_id]
    crashed.job, view = make_runner().reattach(crashed.saved[-1], crashed.save)
    assert view.state in (JobState.QUEUED, JobState.RUNNING)
    assert view.job_id == jobs_named(cluster, crashed.job.name)[0]
    runner = make_runner()
    wait_state(cluster, runner, crashed, JobState.RUNNING)

    # Never submitted at all (the agent died between saving the name and sbatch).
    never = Calc(cluster, "never")
    script = write_job_script(
        never.workdir,
        ["echo", "once"],
        env={},
        stdout_path=never.workdir / "stdout.txt",
        stderr_path=never.workdir / "stderr.txt",
    )
    name = job_name("never")
    argv = runner.scheduler.submit_argv(
        name=name,
        workdir=never.workdir,
        script=script,
        partition="cloud",
        time_limit=None,
        extra_args=(),
    )
    never.job = BatchJob("slurm", name, str(never.workdir), argv)

    cluster.control("ctld-stop")
    view = crashed.poll(runner)
    assert view.state is JobState.UNKNOWN
    assert view.message and view.message.startswith("the scheduler does not answer")
    assert never.poll(runner).state is JobState.UNKNOWN
    cluster.control("ctld-start")

    wait_done(cluster, runner, crashed, never)
    assert crashed.view and crashed.view.state is JobState.FINISHED
    assert crashed.output() == ["done"]
    assert never.view and (never.view.state, never.view.exit_status) == (JobState.FINISHED, 0)
    assert never.job.submits == 1
    assert jobs_named(cluster, name) == [never.job.job_id]
    assert never.output() == ["once"]
