"""mint-burst SIGKILLed right after each side effect of a step, against the real Slurm.

The "VMs" are slurmds of the test cluster (tests/burst/test_e2e_slurm.py's cloud script);
a wrapper around each provider script, and one around scontrol, SIGKILLs the mint-burst
process that called it right after the call did its work, the moment a crash hurts most:
the VM exists (or is gone, or the node is resumed) and mint-burst never heard of it.
The next `mint-burst once` must carry on from the state file: adopt, not launch again;
not join twice harmfully; free the name of a VM already deleted. One cluster, one job,
three kill points, as a node's life goes launch -> join -> run -> remove.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.burst.test_e2e_slurm import Burst, job_state, slurmd_running
from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm

# Runs the real command, then SIGKILLs its caller (mint-burst) if the flag file says so.
KILLER = """\
import os, signal, subprocess, sys
flag = os.path.join({flags!r}, "kill-{point}")
real = {real!r} + sys.argv[1:]
done = subprocess.run(real, stdin=sys.stdin, capture_output=True)
if os.path.exists(flag) and {match!r} in " ".join(sys.argv[1:]):
    os.unlink(flag)
    os.kill(os.getppid(), signal.SIGKILL)
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
sys.exit(done.returncode)
"""


def write_killer(path: Path, flags: Path, point: str, real: list[str], match: str = "") -> str:
    text = KILLER.format(flags=str(flags), point=point, real=real, match=match)
    path.write_text(f"#!{sys.executable}\n{text}")
    path.chmod(0o755)
    return str(path)


class KillableBurst(Burst):
    """Burst whose provider scripts and scontrol can kill it after doing their work."""

    def __init__(
        self, tmp_path: Path, cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        super().__init__(tmp_path, cluster, {"10.0.1.11": "c1", "10.0.1.12": "c2"})
        self.flags = tmp_path / "flags"
        self.flags.mkdir()
        cloud = [sys.executable, str(tmp_path / "cloud.py")]
        config = yaml.safe_load(self.config.read_text())
        for action in ("create", "list", "delete"):
            killer = write_killer(tmp_path / f"kill-{action}.py", self.flags, action, cloud)
            config["command"][action] = [killer, action]
        self.config.write_text(yaml.safe_dump(config))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        scontrol = shutil.which("scontrol")
        assert scontrol is not None
        write_killer(bin_dir / "scontrol", self.flags, "resume", [scontrol], "State=RESUME")
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def kill_at(self, point: str) -> None:
        (self.flags / f"kill-{point}").touch()

    def armed(self, point: str) -> bool:
        return (self.flags / f"kill-{point}").exists()

    def once_until_killed(self, point: str, what: str, timeout: float = 60.0) -> None:
        """Step until the kill point fires; every step before it must succeed."""
        self.kill_at(point)
        killed: list[int] = []

        def step() -> bool:
            result = self.run("once", "--json")
            if result.returncode == -signal.SIGKILL:
                killed.append(result.returncode)
                return True
            assert result.returncode == 0, result.stdout + result.stderr
            return False

        self.cluster.wait_for(step, what, timeout=timeout, every=0.5)
        assert not self.armed(point) and killed


def creates(burst: Burst) -> int:
    return burst.calls().count("create")


@pytest.fixture
def cluster(slurm_cluster: Callable[..., SlurmCluster]) -> SlurmCluster:
    return slurm_cluster(nodes=("c1@cloud", "c2@cloud"))


def test_sigkill_after_launch_join_and_remove_loses_nothing(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = KillableBurst(tmp_path, cluster, monkeypatch)
    job = cluster.sbatch("-N1", script="sleep 1")

    # Launch: the VM is created (its slurmd runs), mint-burst dies before hearing its id.
    burst.once_until_killed("create", "the kill after the create script")
    assert list(burst.instances()) == ["c1"] and slurmd_running(cluster, "c1")
    assert burst.phases() == {"c1": "requested"}
    burst.step_until(lambda: job_state(cluster, job) == "COMPLETED", "the job to run")
    assert cluster.job_field(job, "NodeList") == "c1"
    assert creates(burst) == 1, "a second VM was launched for the same job"

    # Remove: the idle node is set down and deleted, mint-burst dies before noting it.
    burst.once_until_killed("delete", "the kill after the delete script")
    assert burst.instances() == {} and not slurmd_running(cluster, "c1")
    assert burst.phases() == {"c1": "terminating"}
    report = burst.once()
    assert report["errors"] == [] and report["orphans"] == []
    assert burst.phases() == {}

    # Join: c1 boots again and registers DOWN (it was set down when it left); mint-burst
    # resumes it and dies. The next step must not take the running node for a dead one.
    again = cluster.sbatch("-N1", script="sleep 1")
    burst.once_until_killed("resume", "the kill after resuming c1")
    assert burst.phases() == {"c1": "booting"}
    burst.step_until(lambda: job_state(cluster, again) == "COMPLETED", "the second job to run")
    assert cluster.job_field(again, "NodeList") == "c1"
    assert creates(burst) == 2
    assert not any(a.startswith("terminate") for a in burst.actions)
