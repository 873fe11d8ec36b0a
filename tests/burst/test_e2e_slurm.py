"""mint-burst end to end: the real CLI, a real Slurm, and "VMs" that are real slurmds.

`mint-burst` runs as a process against the one-host cluster of
scripts/lib/slurm_cluster.py, with the command provider. Its create script starts
the node's slurmd (the VM boots) and prints an instance id; list prints the live
ones from a small JSON file; delete stops the slurmd (the VM goes away). The jobs
are real sbatch jobs, so "the job ran on the burst node" is Slurm's own record.
Timeouts are small (idle 2 s) and `once` is called in a loop until a condition holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.helpers import BIN, run_tool
from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm

HOSTS = {"10.0.1.11": "c1", "10.0.1.12": "c2", "10.0.1.13": "c3", "10.0.1.14": "c4"}

# The site's cloud scripts, as a test double of a VM service: one JSON file of instances.
CLOUD_SCRIPT = """\
import fcntl, json, os, subprocess, sys, uuid
DB, START, STOP, SLOW = {db!r}, {start!r}, {stop!r}, {slow!r}
request = json.load(sys.stdin)
action = request["action"]
with open(DB + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    db = json.load(open(DB)) if os.path.exists(DB) else {{}}
    with open(DB + ".log", "a") as log:
        log.write(json.dumps({{"action": action, "node": request.get("node"),
                              "ids": request.get("instance_ids")}}) + "\\n")
    if action == "create":
        node = request["node"]
        slow = os.path.exists(SLOW) and node in open(SLOW).read().split()
        if not slow:
            subprocess.run(START + [node], check=True, stdout=sys.stderr)
        vm = "vm-" + node + "-" + uuid.uuid4().hex[:6]
        db[vm] = {{"node": node, "ip": request["ip"]}}
        answer = {{"instance_id": vm}}
    elif action == "list":
        answer = {{"instances": [{{"instance_id": k, "node": v["node"], "ip": v["ip"],
                                  "state": "running"}} for k, v in db.items()]}}
    else:
        for vm in request["instance_ids"]:
            gone = db.pop(vm, None)
            if gone:
                subprocess.run(STOP + [gone["node"]], check=True, stdout=sys.stderr)
        answer = {{}}
    with open(DB + ".tmp", "w") as out:
        json.dump(db, out)
    os.replace(DB + ".tmp", DB)
print(json.dumps(answer))
"""


class Burst:
    """mint-burst with the command provider over the cluster's slurmds, all in tmp_path."""

    def __init__(
        self,
        tmp_path: Path,
        cluster: SlurmCluster,
        hosts: Mapping[str, str] = HOSTS,
        **settings: Any,
    ) -> None:
        """`hosts` must name nodes of the cluster's partition (else mint-burst exits 78)."""
        self.cluster = cluster
        self.db = tmp_path / "instances.json"
        self.slow = tmp_path / "slow-nodes"
        script = tmp_path / "cloud.py"
        script.write_text(
            CLOUD_SCRIPT.format(
                db=str(self.db),
                start=cluster.node_command("node-start"),
                stop=cluster.node_command("node-stop"),
                slow=str(self.slow),
            )
        )
        hosts_file = tmp_path / "hosts.json"
        hosts_file.write_text(json.dumps(dict(hosts)))
        self.state_file = tmp_path / "state" / "state.json"
        self.config = tmp_path / "mint-burst.yaml"
        command = [sys.executable, str(script)]
        self.config.write_text(
            yaml.safe_dump(
                {
                    "scheduler": "slurm",
                    "queue": "cloud",
                    "cluster": "e2e",
                    "hosts_file": str(hosts_file),
                    "state_file": str(self.state_file),
                    "idle_timeout": 2,
                    "boot_timeout": 60,
                    "poll_interval": 1,
                    "command_timeout": 15,
                    "provider": "command",
                    "command": {
                        "create": [*command, "create"],
                        "list": [*command, "list"],
                        "delete": [*command, "delete"],
                        "timeout": 60,
                    },
                    **settings,
                }
            )
        )
        self.actions: list[str] = []
        self.done: list[str] = []
        self.seen: dict[str, set[str]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_tool("mint-burst", *args, "--config", str(self.config))

    def once(self) -> dict[str, Any]:
        """One real step; it must succeed. Its actions and results are kept for later asserts."""
        result = self.run("once", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        self.actions.extend(report["actions"])
        self.done.extend(report["done"])
        for name, phase in self.phases().items():
            self.seen.setdefault(name, set()).add(phase)
        return report

    def step_until(self, ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.once()
            if ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}; actions: {self.actions}"
                )
            time.sleep(0.5)

    def instances(self) -> dict[str, str]:
        """node -> instance id of the live "VMs"."""
        if not self.db.exists():
            return {}
        return {v["node"]: k for k, v in json.loads(self.db.read_text()).items()}

    def calls(self) -> list[str]:
        log = self.db.with_name(self.db.name + ".log")
        if not log.exists():
            return []
        return [json.loads(line)["action"] for line in log.read_text().splitlines()]

    def phases(self) -> dict[str, str]:
        document = json.loads(self.state_file.read_text())
        return {n["name"]: n["phase"] for n in document["nodes"]}


def slurmd_running(cluster: SlurmCluster, node: str) -> bool:
    try:
        pid = int((cluster.directory / f"slurmd-{node}.pid").read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def job_state(cluster: SlurmCluster, job: str) -> str:
    return cluster.job_field(job, "JobState")


def one_busy_one_idle(burst: Burst, cluster: SlurmCluster) -> tuple[str, str, str]:
    """Two jobs bring up c1 and c2; one finishes, the other runs on: (its job id, the busy
    node, the idle node)."""
    long_job = cluster.sbatch("-N1", script="sleep 300")
    short_job = cluster.sbatch("-N1", script="sleep 1")
    burst.step_until(
        lambda: (
            job_state(cluster, short_job) == "COMPLETED"
            and job_state(cluster, long_job) == "RUNNING"
        ),
        "one job to finish while the other runs",
    )
    busy = cluster.job_field(long_job, "NodeList")
    return long_job, busy, ({"c1", "c2"} - {busy}).pop()


@pytest.fixture
def cluster(slurm_cluster: Callable[..., SlurmCluster]) -> SlurmCluster:
    """c1..c4 in partition cloud, every slurmd stopped: no node exists until mint-burst asks."""
    return slurm_cluster()


def test_jobs_bring_nodes_up_run_on_them_and_idle_nodes_go_away(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    burst = Burst(tmp_path, cluster)
    jobs = [cluster.sbatch("-N1", script="sleep 2") for _ in range(2)]
    checked = burst.run("check", "--json")
    assert checked.returncode == 0, checked.stdout
    statuses = {c["name"]: c["status"] for c in json.loads(checked.stdout)["checks"]}
    assert statuses["scheduler queue"] == statuses["provider"] == "pass"
    first = burst.once()
    assert [a.split(":")[0] for a in first["actions"]] == [
        "launch c1 (10.0.1.11)",
        "launch c2 (10.0.1.12)",
    ]
    assert sorted(burst.instances()) == ["c1", "c2"]
    assert slurmd_running(cluster, "c1") and slurmd_running(cluster, "c2")

    burst.step_until(
        lambda: all(job_state(cluster, j) == "COMPLETED" for j in jobs), "both jobs to complete"
    )
    assert {cluster.job_field(j, "NodeList") for j in jobs} <= {"c1", "c2"}

    burst.step_until(lambda: burst.instances() == {}, "the idle nodes to be terminated")
    assert any(a.startswith("remove c1: idle for") for a in burst.actions)
    assert any(a.startswith("remove c2: idle for") for a in burst.actions)
    assert not slurmd_running(cluster, "c1") and not slurmd_running(cluster, "c2")
    burst.once()
    assert burst.phases() == {}
    assert burst.seen == {n: {"booting", "joined", "terminating"} for n in ("c1", "c2")}

    # c1 was taken DOWN when it left: booted again, it registers but stays down until
    # mint-burst resumes it (ReturnToService=0, as on most sites).
    again = cluster.sbatch("-N1", script="sleep 1")
    burst.step_until(lambda: job_state(cluster, again) == "COMPLETED", "the new job to run")
    assert cluster.job_field(again, "NodeList") == "c1"
    assert any(a.startswith("join c1") for a in burst.actions)


def test_drain_all_waits_for_running_jobs_and_force_requeues_them(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    # No idle removal here: the idle node is drain-all's to take down.
    burst = Burst(tmp_path, cluster, idle_timeout=600)
    long_job, busy, idle = one_busy_one_idle(burst, cluster)
    assert sorted(burst.instances()) == ["c1", "c2"]
    shown = burst.run("drain-all", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert sorted(line.split()[4] for line in shown.stdout.splitlines()) == ["c1", "c2"]
    assert sorted(burst.instances()) == ["c1", "c2"] and cluster.node_state(busy) != "draining"

    drain = subprocess.Popen(
        [str(BIN / "mint-burst"), "drain-all", "--yes", "--config", str(burst.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        cluster.wait_for(
            lambda: list(burst.instances()) == [busy] and cluster.node_state(busy) == "draining",
            "the idle node to go and the busy one to drain",
        )
        assert not slurmd_running(cluster, idle)
        assert drain.poll() is None, "drain-all returned while a job still ran"
        assert job_state(cluster, long_job) == "RUNNING"
        cluster.run("scancel", long_job)
        out, err = drain.communicate(timeout=60)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.communicate()
    assert drain.returncode == 0, err
    assert "every burst node is drained and terminating" in out
    assert burst.instances() == {}
    assert not slurmd_running(cluster, busy)

    requeued = cluster.sbatch("-N1", "--requeue", script="sleep 300")
    burst.step_until(lambda: job_state(cluster, requeued) == "RUNNING", "a node for the job")
    node = cluster.job_field(requeued, "NodeList")
    forced = burst.run("drain-all", "--force", "--yes")
    assert forced.returncode == 0, forced.stderr
    assert burst.instances() == {}
    assert not slurmd_running(cluster, node)
    cluster.wait_job_state(requeued, "PENDING")
    assert cluster.job_field(requeued, "Restarts") == "1"


def test_stopped_controller_means_no_decision_and_restart_joins_no_dead_node(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path
) -> None:
    # c2 ran once and was taken down; its next VM boots slowly, so no slurmd runs for it.
    cluster = slurm_cluster(start=("c2",))
    cluster.run("scontrol", "update", "NodeName=c2", "State=DOWN", "Reason=e2e: earlier failure")
    cluster.control("node-stop", "c2")
    cluster.wait_node("c2", "down*")
    burst = Burst(tmp_path, cluster)
    burst.slow.write_text("c2\n")
    jobs = [cluster.sbatch("-N1", script="sleep 300") for _ in range(2)]
    burst.step_until(
        lambda: (
            "c1" in {cluster.job_field(j, "NodeList") for j in jobs}
            and burst.phases()["c1"] == "joined"
        ),
        "a job to run on c1",
    )
    running = next(j for j in jobs if cluster.job_field(j, "NodeList") == "c1")
    assert burst.phases() == {"c1": "joined", "c2": "booting"}
    calls = burst.calls()

    # One more job that a readable queue would launch c3 for; then the controller stops.
    cluster.sbatch("-N1", script="sleep 300")
    cluster.control("ctld-stop")
    result = burst.run("once")
    assert result.returncode == 69, result.stdout + result.stderr
    assert "Unable to contact slurm controller" in result.stderr
    assert not {"create", "delete"} & set(burst.calls()[len(calls) :])
    assert burst.phases() == {"c1": "joined", "c2": "booting"}
    assert sorted(burst.instances()) == ["c1", "c2"]

    cluster.control("ctld-start")
    # Right after a restart Slurm shows c2 plain `down`, without the not-responding `*`,
    # although its slurmd is not running: that must not read as "booted, resume it".
    assert cluster.node_state("c2") == "down"
    report = burst.once()
    assert not [a for a in report["actions"] if a.startswith("join c2")]
    assert job_state(cluster, running) == "RUNNING"
    assert cluster.node_state("c2") in ("down", "down*")
    assert burst.phases()["c2"] == "booting"


def test_node_failure_requeues_the_job_and_mint_burst_replaces_the_dead_vm(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    # boot_timeout as on a real cloud: longer than the ~2 minutes Slurm holds back a job
    # requeued after a node failure, so that job is demand already while it waits.
    burst = Burst(tmp_path, cluster, boot_timeout=300)
    job = cluster.sbatch("-N1", "--requeue", script="sleep 300")
    burst.step_until(lambda: job_state(cluster, job) == "RUNNING", "the job to run")
    dead = cluster.job_field(job, "NodeList")
    # The VM crashes (SIGKILL, nothing reports back) but the cloud still lists it.
    cluster.control("node-kill", dead)
    cluster.wait_job_state(job, "PENDING", timeout=60)
    assert cluster.job_field(job, "Restarts") == "1"
    assert cluster.job_field(job, "Reason") == "BeginTime"

    def replacement() -> str:
        live = [n for n in burst.instances() if n != dead and slurmd_running(cluster, n)]
        return live[0] if live and burst.phases().get(live[0]) == "joined" else ""

    burst.step_until(lambda: bool(replacement()), "a new node for the requeued job")
    spare = replacement()
    # The job still waits out its BeginTime: its new node must outlast idle_timeout (2 s).
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        burst.once()
        time.sleep(0.5)
    assert job_state(cluster, job) == "PENDING"
    assert burst.phases().get(spare) == "joined"

    # Instead of waiting the two minutes out, the admin lets the job start now.
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    burst.step_until(lambda: job_state(cluster, job) == "RUNNING", "the job to run again")
    assert cluster.job_field(job, "NodeList") == spare
    burst.step_until(lambda: dead not in burst.instances(), "the dead VM to be terminated")
    assert {n: slurmd_running(cluster, n) for n in burst.instances()} == {spare: True}


def test_a_dead_node_is_replaced_while_jobs_keep_waiting(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    # Two nodes at most, three jobs: demand never drops to zero, so "remove it once idle"
    # never comes; the dead node still holds one of the two names.
    burst = Burst(tmp_path, cluster, max_nodes=2, boot_timeout=10)
    jobs = [cluster.sbatch("-N1", "--requeue", script="sleep 300") for _ in range(3)]
    burst.step_until(
        lambda: sum(job_state(cluster, j) == "RUNNING" for j in jobs) == 2, "two jobs to run"
    )
    victim = next(j for j in jobs if job_state(cluster, j) == "RUNNING")
    dead = cluster.job_field(victim, "NodeList")
    cluster.control("node-kill", dead)
    cluster.wait_job_state(victim, "PENDING", timeout=60)
    cluster.run("scontrol", "update", f"JobId={victim}", "StartTime=now")

    def replaced() -> bool:
        return dead in burst.instances() and slurmd_running(cluster, dead)

    burst.step_until(replaced, f"the dead {dead} to be terminated and launched again", 45)
    assert any(
        a.startswith(f"terminate {dead}") or a.startswith(f"remove {dead}") for a in burst.actions
    )
    burst.step_until(
        lambda: sum(job_state(cluster, j) == "RUNNING" for j in jobs) == 2,
        "two jobs to run again",
    )
