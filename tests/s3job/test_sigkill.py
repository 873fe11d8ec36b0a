"""`mint-s3job dispatch` SIGKILLed at each step of its main flow, then run again: the job is
submitted exactly once and ends JOB_SUBMIT with the one job id, whatever step the kill hit.

The kill comes from a loopback proxy in front of moto, at the first request of a step
(before moto sees it, or after moto applied it but before the answer goes back), or from
the fake sbatch once it has queued the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from mint_s3job.store import S3ObjectStore

from .conftest import NO_ANSWER, FakeSlurm, MotoProxy, Reply, serving
from .hostile import HostileBucket

MINT_S3JOB = str(Path(sys.executable).with_name("mint-s3job"))


class KillingProxy(MotoProxy):
    """The first request matching `rule` (method, path suffix, and "before" or "after" moto
    handles it) SIGKILLs process `pid` and gets no answer."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.rule: Optional[tuple[str, str, str]] = None
        self.pid = 0
        self.fired = threading.Event()

    def matches(self, method: str, path: str) -> Optional[str]:
        if self.rule is None or self.fired.is_set():
            return None
        wanted_method, suffix, when = self.rule
        return when if method == wanted_method and path.endswith(suffix) else None

    def kill(self) -> None:
        self.fired.set()
        os.kill(self.pid, signal.SIGKILL)

    def intercept(self, method: str, path: str) -> Optional[Reply]:
        if self.matches(method, path) != "before":
            return None
        self.kill()
        return NO_ANSWER

    def drop_answer(self, method: str, path: str) -> bool:
        if self.matches(method, path) != "after":
            return False
        self.kill()
        return True


@pytest.fixture
def killing_proxy(moto_endpoint: str) -> Iterator[KillingProxy]:
    with serving(KillingProxy(moto_endpoint)) as proxy:
        yield proxy


# (id, proxy rule or None for the fake sbatch's own kill)
KILL_POINTS = [
    ("claim-written-answer-lost", ("PUT", "/.mint-s3job/claim.json", "after")),
    ("download", ("GET", "/input.txt", "before")),
    ("sbatch-queued-answer-lost", None),
    ("first-write-after-sbatch", ("PUT", "/job-aws-sbatch.out", "before")),
    ("state-write", ("PUT", "/job-aws-stat.txt", "before")),
    ("state-written-answer-lost", ("PUT", "/job-aws-stat.txt", "after")),
]


@pytest.mark.parametrize(
    ("rule"), [rule for _, rule in KILL_POINTS], ids=[i for i, _ in KILL_POINTS]
)
def test_sigkill_at_each_dispatch_step_still_submits_exactly_once(
    rule: Optional[tuple[str, str, str]],
    store: S3ObjectStore,
    hostile_bucket: HostileBucket,
    killing_proxy: KillingProxy,
    cli_env: dict[str, str],
    fake_slurm: FakeSlurm,
    tmp_path: Path,
) -> None:
    hostile_bucket.plain("job-k")
    workdir = tmp_path / "head"
    killing_proxy.rule = rule
    env = dict(cli_env, MINT_S3JOB_ENDPOINT_URL=killing_proxy.endpoint)
    if rule is None:
        env["FAKE_SBATCH_KILL_CALLER"] = "1"
    command = [MINT_S3JOB, "dispatch", "--workdir", str(workdir)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killing_proxy.pid = first.pid
    _, first_err = first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL, first_err.decode()

    again = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=60)

    assert again.returncode == 0, again.stderr
    [call] = fake_slurm.calls()
    assert store.get_bytes("job-k/job-aws-stat.txt") == b"JOB_SUBMIT\n"
    assert store.get_bytes("job-k/job-aws-jobid.txt") == f"{call['job_id']}\n".encode()
    assert (workdir / "job-k" / "input.txt").read_bytes() == b"ok\n"
    assert not (workdir / ".mint-s3job" / "replaced").exists()
    third = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and third.stdout == "" and len(fake_slurm.calls()) == 1
