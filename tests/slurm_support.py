"""A real one-host Slurm for tests: `scripts/lib/slurm_cluster.py` driven from pytest.

Tests that use it carry the `slurm` marker and take the `slurm_cluster` factory
fixture (tests/conftest.py). Where the daemons cannot run (not root, packages
missing) they skip with one reason; under CI=true that skip fails the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "scripts" / "lib" / "slurm_cluster.py"
SKIP_REASON = (
    "a real Slurm needs root and Debian's slurmctld, slurmd, slurm-client and munge"
    " (./scripts/test installs them when run as root)"
)


def slurm_unavailable() -> Optional[str]:
    """Why a real cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return SKIP_REASON + ": not root"
    done = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "available"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"{SKIP_REASON}: {done.stderr.strip()}"
    return None


@dataclass
class SlurmCluster:
    """One running cluster: its directory, its slurm.conf, and ways to break it."""

    directory: Path
    nodes: dict[str, str]
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.directory / "work"
        self.work.mkdir(exist_ok=True)

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def control(self, command: str, *args: str) -> None:
        """node-start / node-stop / node-kill NAME, ctld-stop, ctld-start (see slurm_cluster.py)."""
        subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), command, str(self.directory), *args],
            check=True,
            timeout=60,
        )

    def node_command(self, command: str) -> list[str]:
        """The argv a command provider script runs to start or stop a node (add the name)."""
        return [sys.executable, str(CLUSTER_SCRIPT), command, str(self.directory)]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            cwd=self.work,
        )

    def sbatch(self, *args: str, script: str = "sleep 300") -> str:
        """Submit a job (output into the cluster's work dir); return its id."""
        done = self.run(
            "sbatch",
            "--parsable",
            f"--chdir={self.work}",
            f"--output={self.work}/slurm-%j.out",
            *args,
            f"--wrap={script}",
        )
        return done.stdout.strip().split(";")[0]

    def node_state(self, name: str) -> str:
        """`sinfo %T` of one node, e.g. `idle`, `down*`, `allocated`."""
        done = self.run("sinfo", "--noheader", "--Node", f"--nodes={name}", "--format=%T")
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""

    def job_field(self, job_id: str, name: str) -> str:
        done = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        for item in done.stdout.split():
            key, _, value = item.partition("=")
            if key == name:
                return value
        return ""

    def wait_for(
        self, ready: Callable[[], bool], what: str, timeout: float = 30.0, every: float = 0.2
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def wait_node(self, name: str, *states: str, timeout: float = 30.0) -> None:
        self.wait_for(
            lambda: self.node_state(name) in states,
            f"node {name} to be {' or '.join(states)} (now {self.node_state(name)!r})",
            timeout,
        )

    def wait_job_state(self, job_id: str, *states: str, timeout: float = 30.0) -> None:
        self.wait_for(
            lambda: self.job_field(job_id, "JobState") in states,
            f"job {job_id} to be {' or '.join(states)}",
            timeout,
        )


def start_cluster(
    nodes: Sequence[str] = ("c1@cloud", "c2@cloud", "c3@cloud", "c4@cloud"),
    start: Sequence[str] = (),
    epilog_slurmctld: Optional[str] = None,
    conf: Sequence[str] = (),
) -> SlurmCluster:
    """Bring a cluster up in a fresh short /tmp dir (munge's socket path must be short)."""
    directory = Path(tempfile.mkdtemp(prefix="mslurm-", dir="/tmp"))
    argv = [sys.executable, str(CLUSTER_SCRIPT), "up", str(directory)]
    for node in nodes:
        argv += ["--node", node]
    if start:
        argv += ["--start", ",".join(start)]
    if epilog_slurmctld:
        argv += ["--epilog-slurmctld", epilog_slurmctld]
    for line in conf:
        argv += ["--conf", line]
    try:
        subprocess.run(argv, check=True, timeout=60)
    except BaseException:
        stop_cluster(directory)
        raise
    parsed = {
        name: partition or "cloud" for name, _, partition in (n.partition("@") for n in nodes)
    }
    return SlurmCluster(directory, parsed)


def stop_cluster(directory: Path) -> None:
    subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "down", str(directory)], check=False, timeout=60
    )
    shutil.rmtree(directory, ignore_errors=True)


def pause_controller(cluster: SlurmCluster) -> None:
    """SIGSTOP slurmctld: clients connect, send and then time out without an answer, and the
    requests they sent are processed once it runs again (a lost reply, not a refused one)."""
    os.kill(int((cluster.directory / "slurmctld.pid").read_text()), signal.SIGSTOP)


def resume_controller(cluster: SlurmCluster) -> None:
    os.kill(int((cluster.directory / "slurmctld.pid").read_text()), signal.SIGCONT)
