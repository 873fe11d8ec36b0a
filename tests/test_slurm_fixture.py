"""The real Slurm fixture itself: jobs run on its nodes, nodes come and go, the controller stops."""

from __future__ import annotations

import subprocess
from typing import Callable

import pytest

from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm


def test_jobs_run_across_nodes_started_on_demand(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster(start=("c1",))
    assert cluster.node_state("c1") == "idle"
    assert cluster.node_state("c3") in ("unknown*", "down*", "unknown")
    cluster.control("node-start", "c2")
    cluster.wait_node("c2", "idle")
    job = cluster.sbatch("-N2", script="srun hostname")
    cluster.wait_job_state(job, "COMPLETED")
    assert cluster.job_field(job, "NodeList") == "c[1-2]"


def test_node_stop_kills_its_jobs_and_the_node_stops_responding(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster(start=("c1",))
    marker = cluster.work / "still-running"
    job = cluster.sbatch(script=f"while true; do touch {marker}; sleep 0.2; done")
    cluster.wait_job_state(job, "RUNNING")
    cluster.wait_for(marker.exists, "the job to start writing")
    cluster.control("node-stop", "c1")
    marker.unlink()
    cluster.wait_node("c1", "down*", "completing*", "idle*", "mixed*", "allocated*")
    cluster.wait_node("c1", "down*", timeout=30)
    assert not marker.exists()


def test_stopped_controller_fails_commands_fast(
    slurm_cluster: Callable[..., SlurmCluster],
) -> None:
    cluster = slurm_cluster(start=("c1",))
    cluster.control("ctld-stop")
    done = cluster.run("squeue", check=False)
    assert done.returncode != 0
    assert "Unable to contact slurm controller" in done.stderr
    cluster.control("ctld-start")
    assert cluster.run("scontrol", "ping").returncode == 0


def test_teardown_leaves_no_process(slurm_cluster: Callable[..., SlurmCluster]) -> None:
    from tests.slurm_support import stop_cluster

    cluster = slurm_cluster(start=("c1", "c2"))
    cluster.sbatch()
    pids_file = list(cluster.directory.glob("*.pid"))
    pids = [int(p.read_text()) for p in pids_file]
    stop_cluster(cluster.directory)
    states = subprocess.run(
        ["ps", "-o", "stat=", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert [s for s in states if not s.startswith("Z")] == []  # zombies await init's reaping
