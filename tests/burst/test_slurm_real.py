"""The Slurm adapter and the policy against a real Slurm 22.05 (scripts/lib/slurm_cluster.py).

Each test reproduces one of the behaviours issue 11 saw on a real cluster: the real
SlurmScheduler reads the real controller and the real policy decides on what it read.
End-to-end runs of the mint-burst command are in test_e2e_slurm.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import pytest
import yaml
from click.testing import CliRunner

from mint_burst.cli import main
from mint_burst.engine import Engine
from mint_burst.model import (
    BOOTING,
    JOINED,
    Host,
    Instance,
    NodeRecord,
    NodeTable,
    QueueStatus,
)
from mint_burst.policy import Decision, PolicySettings, decide
from mint_burst.provider import LaunchRequest
from mint_burst.scheduler import CommandRunner, UnknownNode
from mint_burst.slurm import SlurmScheduler
from mint_burst.state import MemoryStore
from mint_common.errors import ConfigError
from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm

BURST = ("c1", "c2", "c3", "c4")
# Power saving with programs that do nothing: Slurm powers idle nodes down (`%`, then `~`)
# and up (`#`) on its own, and nothing ever answers the power-up.
POWER_SAVING = (
    "SuspendProgram=/bin/true",
    "ResumeProgram=/bin/true",
    "SuspendTime=2",
    "SuspendTimeout=2",
    "ResumeTimeout=60",
)


def scheduler(queue: str = "cloud") -> SlurmScheduler:
    return SlurmScheduler(queue, CommandRunner(timeout=15))


def settings(hosts: int = 4, max_nodes: int = 4, boot_timeout: float = 300.0) -> PolicySettings:
    """c1..c4 are the cluster's burst nodes; more names stand for hosts Slurm lacks."""
    names = [*BURST, *(f"x{i}" for i in range(hosts - len(BURST)))]
    return PolicySettings(
        hosts=tuple(Host(ip=f"10.0.1.{i + 1}", name=n) for i, n in enumerate(names[:hosts])),
        max_nodes=max_nodes,
        idle_timeout=60.0,
        boot_timeout=boot_timeout,
    )


def record(
    name: str, phase: str, launched_at: float, idle_since: float | None = None
) -> NodeRecord:
    return NodeRecord(
        name=name,
        ip="10.0.1.1",
        phase=phase,
        launched_at=launched_at,
        phase_since=launched_at,
        instance_id=f"i-{name}",
        joined_at=launched_at if phase == JOINED else None,
        idle_since=idle_since,
    )


def step(status: QueueStatus, *records: NodeRecord, policy: PolicySettings) -> Decision:
    return decide(status, NodeTable(records={r.name: r for r in records}), time.time(), policy)


def write_config(tmp_path: Path, queue: str, touched: Path) -> Path:
    """A mint-burst config for c1..c4 whose provider script only leaves a mark when run."""
    script = [sys.executable, "-c", f"open({str(touched)!r}, 'w'); print('{{\"instances\": []}}')"]
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({f"10.0.1.{i}": f"c{i}" for i in range(1, 5)}))
    config = tmp_path / "mint-burst.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scheduler": "slurm",
                "queue": queue,
                "cluster": "real",
                "hosts_file": str(hosts),
                "state_file": str(tmp_path / "state.json"),
                "provider": "command",
                "command": {"create": script, "list": script, "delete": script},
            }
        )
    )
    return config


def kinds(decision: Decision, kind: str) -> list[str]:
    return sorted(a.node for a in decision.actions if a.kind == kind)


def test_a_misspelt_partition_is_a_configuration_error(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    """squeue and sinfo answer `--partition=nosuch` with an empty list and exit 0."""
    cluster = slurm_cluster()
    assert cluster.run("squeue", "--noheader", "--partition=nosuch").stdout == ""
    with pytest.raises(ConfigError, match="nosuch"):
        scheduler("nosuch").get_status()
    with pytest.raises(ConfigError, match="nosuch"):
        scheduler("nosuch").check_queue()
    scheduler("cloud").check_queue()


@pytest.mark.parametrize(
    ("command", "lists_instances"),
    [
        (["once"], False),
        (["run"], False),
        (["status"], False),
        # check runs every diagnostic, the provider's (read-only `list`) too.
        (["check"], True),
        (["drain-all", "--force"], False),
    ],
    ids=["once", "run", "status", "check", "drain-all"],
)
def test_every_command_exits_78_on_a_misspelt_queue_before_touching_anything(
    slurm_cluster: Callable[..., SlurmCluster],
    tmp_path: Path,
    command: list[str],
    lists_instances: bool,
) -> None:
    slurm_cluster(nodes=("c1@cloud",))
    touched = tmp_path / "provider-was-called"
    config = write_config(tmp_path, "nosuch", touched)
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    assert result.exit_code == 78, result.output
    assert "nosuch" in result.output
    assert touched.exists() is lists_instances


def test_demand_comes_from_the_fields_that_carry_it(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path
) -> None:
    """Held, dependent, throttled, oversized and pinned-elsewhere jobs are no demand; the
    jobs waiting for our down nodes (ReqNodeNotAvail naming them) are."""
    cluster = slurm_cluster(nodes=(*(f"{n}@cloud" for n in BURST), "s2@cloud", "s1@local"))
    held = cluster.sbatch("-H")
    cluster.sbatch(f"--dependency=afterok:{held}")
    too_big = cluster.sbatch("-N6")
    over_cap = cluster.sbatch("-N4")
    cluster.sbatch("--array=1-6%2")
    cluster.sbatch("-w", "s2")
    wanted = cluster.sbatch("-N2")
    cluster.wait_for(
        lambda: cluster.job_field(wanted, "Reason").startswith("ReqNodeNotAvail"),
        "the two-node job to wait for the down burst nodes",
    )
    cluster.wait_for(
        lambda: cluster.job_field(too_big, "Reason") == "PartitionConfig",
        "the six-node job to be refused by the partition",
    )
    status = scheduler().get_status()
    assert {j.job_id for j in status.pending} >= {held, too_big, wanted}

    # Demand: two throttled array elements, the two- and the four-node job, nothing else.
    roomy = step(status, policy=settings(hosts=12, max_nodes=12))
    assert len(kinds(roomy, "launch")) == 8
    assert set(roomy.unservable) == {too_big}

    # Two burst nodes and s2 can never make four: that job is reported, not chased.
    small = step(status, policy=settings(max_nodes=2))
    assert set(small.unservable) == {too_big, over_cap}
    assert "partition 'cloud' allows 5" in small.unservable[too_big]

    # status and check name the job that will never run.
    config = write_config(tmp_path, "cloud", tmp_path / "listed")
    status_output = CliRunner().invoke(main, ["status", "--config", str(config)]).output
    assert f"never served: job {too_big}: needs 6 node(s)" in status_output
    check_output = CliRunner().invoke(main, ["check", "--json", "--config", str(config)]).output
    queue_check = next(
        c for c in json.loads(check_output)["checks"] if c["name"] == "scheduler queue"
    )
    assert queue_check["status"] == "warn" and f"job {too_big}:" in queue_check["detail"]


def test_planned_node_is_ready_not_a_failed_boot(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    """Backfill holds idle c1 for a two-node job (`planned`): it has joined."""
    cluster = slurm_cluster(
        nodes=("c1@cloud", "c2@cloud"),
        start=("c1", "c2"),
        conf=("SchedulerParameters=sched_interval=2,bf_interval=1",),
    )
    cluster.sbatch("-w", "c2", "-t", "5")
    cluster.sbatch("-N2", "-t", "5")
    cluster.wait_node("c1", "planned", timeout=60)
    booted_long_ago = record("c1", BOOTING, time.time() - 600)
    decision = step(scheduler().get_status(), booted_long_ago, policy=settings())
    assert kinds(decision, "terminate") == []
    assert decision.records["c1"].phase == JOINED


def test_no_join_of_a_dead_node_after_a_controller_restart(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    """After a restart slurmctld shows a node whose slurmd is gone `down`, without `*`,
    for several seconds: SlurmdStartTime (None) shows it has not registered since."""
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"), start=("c2",))
    cluster.run("scontrol", "update", "NodeName=c2", "State=DOWN", "Reason=test")
    cluster.control("node-stop", "c2")
    cluster.control("ctld-stop")
    relaunched = record("c2", BOOTING, time.time())
    cluster.control("ctld-start")
    status = scheduler().get_status()
    assert (status.nodes["c2"].state, status.nodes["c2"].flags) == ("down", "")
    assert kinds(step(status, relaunched, policy=settings()), "join") == []

    cluster.control("node-start", "c2")
    cluster.wait_for(
        lambda: "SlurmdStartTime=None" not in cluster.run("scontrol", "show", "node", "c2").stdout,
        "c2's slurmd to register",
    )
    decision = step(scheduler().get_status(), relaunched, policy=settings())
    assert kinds(decision, "join") == ["c2"]
    scheduler().join_cluster("c2")
    cluster.wait_node("c2", "idle")


def test_jobs_eligible_within_boot_time_keep_their_nodes(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    """A requeued job waits out BeginTime (~2 min): the idle node it will need stays; a
    requeue-held job, and a job that begins later than a boot takes, keep nothing."""
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"), start=("c1",))
    held = cluster.sbatch("--requeue")
    cluster.wait_job_state(held, "RUNNING")
    cluster.run("scontrol", "requeuehold", held)
    requeued = cluster.sbatch("--requeue")
    cluster.wait_job_state(requeued, "RUNNING")
    cluster.run("scontrol", "requeue", requeued)
    cluster.wait_for(
        lambda: (
            cluster.job_field(requeued, "Reason") == "BeginTime"
            and cluster.node_state("c1") == "idle"
        ),
        "the requeued job to wait for its BeginTime on an idle c1",
    )
    idle = record("c1", JOINED, time.time() - 900, idle_since=time.time() - 600)
    status = scheduler().get_status()
    without_held = dataclasses.replace(
        status, jobs=tuple(j for j in status.jobs if j.job_id != held)
    )
    kept = step(without_held, idle, policy=settings(boot_timeout=300))
    assert kept.actions == ()

    # Begins only after a boot would have finished, and held: no demand, the idle node goes.
    removed = step(status, idle, policy=settings(boot_timeout=30))
    assert kinds(removed, "remove") == ["c1"]
    assert next(j for j in status.pending if j.job_id == held).reason == (
        "job requeued in held state"
    )


def test_powering_down_and_up_nodes_are_not_ready(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    """Real power saving: `idle%` (powering down), then `allocated#` (powering up for a job
    whose node never answers). Neither is a booted node that has joined."""
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"), start=("c1",), conf=POWER_SAVING)
    cluster.wait_node("c1", "idle%", timeout=60)
    booting = record("c1", BOOTING, time.time())
    decision = step(scheduler().get_status(), booting, policy=settings())
    assert decision.records["c1"].phase == BOOTING and decision.actions == ()

    cluster.wait_node("c1", "idle~", timeout=60)
    cluster.sbatch("-w", "c1")
    cluster.wait_node("c1", "allocated#", "mixed#")
    decision = step(scheduler().get_status(), booting, policy=settings())
    assert decision.records["c1"].phase == BOOTING


@pytest.mark.slurm
def test_site_output_settings_in_the_environment_change_nothing(
    slurm_cluster: Callable[..., SlurmCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sites set SLURM_TIME_FORMAT=relative or SQUEUE_ARRAY in profile.d; cron and shells
    pass them on. The adapter must read the same queue as without them."""
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"))
    begin = cluster.sbatch("--begin=now+600")
    cluster.sbatch("-N1", "--array=1-6%2")
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")
    monkeypatch.setenv("SQUEUE_ARRAY", "1")
    scheduler = SlurmScheduler("cloud", CommandRunner(timeout=30))
    status = scheduler.get_status()
    jobs = {job.job_id: job for job in status.pending}
    assert jobs[begin].start_time is not None
    assert len([j for j in status.pending if j.job_id != begin]) == 1


def test_a_host_slurm_lacks_is_refused_at_start_and_a_never_joined_node_is_terminated(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path
) -> None:
    """hosts.json naming x9, which slurm.conf lacks: it would boot, never join, and be
    billed forever, since `scontrol update NodeName=x9` answers "Invalid node name"."""
    slurm_cluster(nodes=("c1@cloud", "c2@local"))
    touched = tmp_path / "provider-was-called"
    config = write_config(tmp_path, "cloud", touched)
    hosts = tmp_path / "hosts.json"
    for names in (["c1", "x9"], ["c1", "c2"]):
        hosts.write_text(json.dumps({f"10.0.1.{i}": n for i, n in enumerate(names, start=1)}))
        for command in (["once"], ["run"]):
            result = CliRunner().invoke(main, [*command, "--config", str(config)])
            assert result.exit_code == 78, result.output
            assert f"{names[1]} not among the nodes of queue 'cloud' (c1)" in result.output
    assert not touched.exists()

    with pytest.raises(UnknownNode, match="Invalid node name"):
        scheduler().leave_cluster("x9")
    terminated: list[str] = []
    engine = Engine(
        scheduler=scheduler(),
        provider=ProviderDouble(["i-x9"], terminated),
        store=MemoryStore(NodeTable(records={"x9": record("x9", BOOTING, time.time() - 600)})),
        settings=settings(hosts=5, boot_timeout=60),
        user_data=lambda host: "",
    )
    report = engine.step()
    assert terminated == ["i-x9"], report
    assert [a.kind for a in report.actions] == ["terminate"]
    assert report.errors == []


@dataclasses.dataclass
class ProviderDouble:
    """A cloud that lists the given instances (tagged as the node of the same name)."""

    live: list[str]
    terminated: list[str]
    backoffs: dict[str, float] = dataclasses.field(default_factory=dict)

    def launch(self, request: LaunchRequest) -> str:
        raise AssertionError(f"no launch expected, got {request.node}")

    def list_instances(self) -> list[Instance]:
        return [
            Instance(i, i.removeprefix("i-"), "10.0.1.5", "running")
            for i in self.live
            if i not in self.terminated
        ]

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.terminated.extend(instance_ids)

    def check(self) -> list[tuple[str, str]]:
        return []
