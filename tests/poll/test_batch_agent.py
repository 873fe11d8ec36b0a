"""`mint-poll run` / `once` / `check` / `status` with the batch runner, against the real
one-host Slurm and the loopback rehearsal server: calculations become jobs on the compute
nodes (checked through the scheduler), survive SIGKILL, SIGTERM and a stopped controller,
and end abnormal with the scheduler's or our own reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from mint_poll.api import STDERR_NAME, DistcompApi
from mint_poll.server import DistcompServer
from tests.helpers import BIN
from tests.poll.conftest import SITE, fetch, register, write_token
from tests.poll.test_cli import poll
from tests.slurm_support import SlurmCluster

pytestmark = pytest.mark.slurm
WAIT = 60.0
#: Waits for `gate` in its working dir (the test opens it), then copies its input.
GATED = (
    'echo "$CALC_DIR" >> {runs}; while [ ! -e gate ]; do sleep 0.2; done; cp input.txt result.txt'
)
AT_ONCE = 'echo "$CALC_DIR" >> {runs}; cp input.txt result.txt'


class Site:
    """The agent's config on a cluster: calc_base on the cluster's work dir (shared with
    its nodes, never the repository), state in tmp_path."""

    def __init__(self, cluster: SlurmCluster, tmp_path: Path, server: DistcompServer) -> None:
        self.cluster = cluster
        self.home = tmp_path
        self.calc_base = cluster.work / "calc"
        self.calc_base.mkdir()
        self.runs = cluster.work / "runs.log"
        self.config = tmp_path / "mint-poll.yaml"
        self.log = tmp_path / "agent.log"
        self.server = server

    def write(self, **overrides: Any) -> Path:
        gated = ["/bin/sh", "-c", GATED.format(runs=self.runs)]
        settings: dict[str, Any] = {
            "url": self.server.url,
            "site_id": SITE,
            "token_file": str(write_token(self.home)),
            "calc_base": str(self.calc_base),
            "state_dir": str(self.home / "state"),
            "poll_interval": 0.2,
            "retry": {"max_attempts": 3, "base_delay": 0.05, "jitter": False},
            "stop_grace": 10,
            "runner": "slurm",
            "batch": {"partition": "cloud", "watch_interval": 0.5},
            "commands": {
                "run.sh": gated,
                "count.sh": {"run": gated, "sbatch_args": ["--comment=from-override"]},
                "sleep.sh": ["sleep", "300"],
                "nofiles.sh": {"run": ["sleep", "300"], "timeout": 2},
                "sh": ["/bin/sh", "-c", AT_ONCE.format(runs=self.runs)],
            },
            **overrides,
        }
        self.config.write_text(yaml.safe_dump(settings))
        return self.config

    @contextmanager
    def agent(self) -> Iterator[subprocess.Popen[str]]:
        """`mint-poll run` in the background; killed if still alive at the end."""
        with open(self.log, "a") as log:
            process = subprocess.Popen(
                [
                    str(BIN / "mint-poll"),
                    "--config",
                    str(self.config),
                    "--log-format",
                    "plain",
                    "run",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "NO_COLOR": "1"},
            )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    def record(self, accept_id: str) -> dict[str, Any]:
        path = self.home / "state" / "calcs" / f"{accept_id}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def job_id(self, accept_id: str) -> str:
        return str((self.record(accept_id).get("batch_job") or {}).get("job_id") or "")

    def job_state(self, accept_id: str) -> str:
        job_id = self.job_id(accept_id)
        return self.cluster.job_field(job_id, "JobState") if job_id else ""

    def wait_job(self, accept_id: str, *states: str) -> None:
        self.cluster.wait_for(
            lambda: self.job_state(accept_id) in states,
            f"the job of {accept_id} to be {' or '.join(states)}",
            WAIT,
            0.2,
        )

    def wait_delivered(self, *accept_ids: str) -> None:
        self.cluster.wait_for(
            lambda: all(self.record(a).get("step") == "done" for a in accept_ids),
            f"{len(accept_ids)} calculation(s) to be delivered",
            WAIT,
            0.2,
        )

    def open_gate(self, accept_id: str) -> None:
        (self.calc_base / accept_id / "gate").touch()

    def jobs_of(self, accept_id: str) -> list[str]:
        """Every job the scheduler knows for this calculation, whatever its state."""
        done = self.cluster.run("squeue", "--noheader", "--states=all", "--format=%i %j")
        return [
            line.split()[0]
            for line in done.stdout.splitlines()
            if line.split()[1].startswith(f"mint-poll-{accept_id}-")
        ]

    def runs_of(self, accept_id: str) -> int:
        lines = self.runs.read_text().splitlines() if self.runs.exists() else []
        return sum(1 for line in lines if line == str(self.calc_base / accept_id))


def stop(process: subprocess.Popen[str]) -> int:
    """SIGTERM; the agent must exit promptly whatever its jobs do."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=20)


@pytest.fixture
def site(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path, server: DistcompServer
) -> Site:
    return Site(slurm_cluster(start=("c1", "c2", "c3", "c4")), tmp_path, server)


def test_jobs_in_flight_survive_sigkill_and_a_stopped_controller(
    site: Site, workflow: DistcompApi, tmp_path: Path
) -> None:
    site.write(max_parallel=4)
    inputs = {f"c{i}": f"input {i}\n".encode() for i in range(5)}
    first = [register(workflow, tmp_path, files={"input.txt": inputs[f"c{i}"]}) for i in range(4)]
    fifth = register(workflow, tmp_path, command="count.sh", files={"input.txt": inputs["c4"]})
    with site.agent() as agent:
        for accept_id in first:
            site.wait_job(accept_id, "RUNNING")
        # calc-start is sent when the job runs on its node, not at submission.
        site.cluster.wait_for(
            lambda: all(workflow.calc_progress(a) == "running" for a in first), "calc-start"
        )
        assert workflow.calc_progress(fifth) == "not start"  # four in flight: not taken
        table = poll(site.config, "status").stdout.splitlines()
        header = next(line.split("\t") for line in table if line.startswith("accept_id\t"))
        assert header[-4:] == ["job id", "job state", "reason", "time in queue"]
        row = next(line.split("\t") for line in table if line.startswith(first[0]))
        assert row[-4:-1] == [site.job_id(first[0]), "RUNNING", ""]
        assert row[-1].endswith("s")  # how long it queued, e.g. "2s"
        agent.kill()
        agent.wait(timeout=10)
    nodes = {site.cluster.job_field(site.job_id(a), "NodeList") for a in first}
    assert nodes <= {"c1", "c2", "c3", "c4"} and nodes

    with site.agent():
        for accept_id in first:
            site.open_gate(accept_id)
        site.wait_delivered(*first)
        site.wait_job(fifth, "RUNNING")
        assert site.cluster.job_field(site.job_id(fifth), "Comment") == "from-override"

        site.cluster.control("ctld-stop")
        site.cluster.wait_for(
            lambda: "cannot ask the scheduler about its jobs" in site.log.read_text(),
            "the agent to notice the controller is gone",
            WAIT,
        )
        assert site.record(fifth)["step"] != "done"
        site.cluster.control("ctld-start")
        site.open_gate(fifth)
        site.wait_delivered(fifth)

    for index, accept_id in enumerate([*first, fifth]):
        assert site.record(accept_id)["outcome"] == "completed"
        assert fetch(workflow, accept_id, tmp_path)["result.txt"] == inputs[f"c{index}"]
        assert site.runs_of(accept_id) == 1
        assert site.jobs_of(accept_id) == [site.job_id(accept_id)]


def test_scheduler_kills_our_limit_sigterm_once_and_check(
    site: Site, workflow: DistcompApi, tmp_path: Path
) -> None:
    site.write()
    cancelled = register(workflow, tmp_path, command="sleep.sh")
    too_long = register(workflow, tmp_path, command="nofiles.sh")
    survives = register(workflow, tmp_path)
    with site.agent() as agent:
        site.wait_job(cancelled, "RUNNING")
        site.cluster.run("scancel", site.job_id(cancelled))
        site.wait_delivered(cancelled, too_long)
        site.wait_job(survives, "RUNNING")
        assert stop(agent) == 0
    assert site.job_state(survives) == "RUNNING"  # SIGTERM leaves the job running
    assert site.record(survives)["step"] in ("complete", "started")

    reason = site.record(cancelled)["reason"]
    assert reason == (
        "the job ended without writing its exit status (slurm says CANCELLED)"
        f" (slurm job {site.job_id(cancelled)})"
    )
    assert site.record(too_long)["reason"].startswith("the command exceeded its time limit of 2s")
    assert site.cluster.job_field(site.job_id(too_long), "TimeLimit") == "00:01:00"
    assert site.job_state(too_long) == "CANCELLED"
    stderr = (site.calc_base / too_long / STDERR_NAME).read_text()
    assert "mint-poll: the command exceeded its time limit" in stderr

    # `once` follows the job the stopped agent left, then takes a new one to the end.
    site.open_gate(survives)
    later = register(workflow, tmp_path, command="sh")
    once = poll(site.config, "once", "--json", timeout=WAIT)
    assert once.returncode == 0, once.stderr
    done = {c["accept_id"]: c for c in json.loads(once.stdout)["calculations"]}
    assert done[survives]["outcome"] == "completed" and done[later]["outcome"] == "completed"
    assert site.runs_of(survives) == 1 and site.jobs_of(survives) == [site.job_id(survives)]

    site.write(batch={"partition": "cloud", "watch_interval": 0.5, "cancel_on_stop": True})
    with site.agent() as agent:
        cancelled_at_stop = register(workflow, tmp_path)
        site.wait_job(cancelled_at_stop, "RUNNING")
        assert stop(agent) == 0
    assert site.record(cancelled_at_stop)["outcome"] == "abnormal"
    assert site.record(cancelled_at_stop)["reason"].startswith(
        "the agent was asked to stop (cancel_on_stop: true)"
    )
    assert site.job_state(cancelled_at_stop) == "CANCELLED"

    checked = poll(site.config, "check", "--json", timeout=WAIT)
    rows = {row["name"]: row for row in json.loads(checked.stdout)["checks"]}
    assert rows["scheduler"]["status"] == "pass"
    assert rows["partition"]["detail"].startswith("partition cloud: State=UP")
    assert rows["job_retention"]["status"] == "pass"
    assert rows["shared_dir"]["status"] == "pass"
    assert f"wrote into {site.calc_base}" in rows["shared_dir"]["detail"]
    site.write(batch={"partition": "nosuch"})
    checked = poll(site.config, "check", "--json", timeout=WAIT)
    rows = {row["name"]: row for row in json.loads(checked.stdout)["checks"]}
    assert checked.returncode == 1
    assert rows["partition"]["status"] == "fail" and "nosuch" in rows["partition"]["detail"]
    assert rows["shared_dir"]["status"] == "skip"
    # The same typo stops `once` and `run` at start (78) before any calculation is taken.
    waiting = register(workflow, tmp_path, command="sh")
    for command in ("once", "run"):
        refused = poll(site.config, command, timeout=WAIT)
        assert refused.returncode == 78, refused.stderr
        assert "Slurm has no partition 'nosuch'" in refused.stderr
    assert workflow.calc_progress(waiting) == "not start"
