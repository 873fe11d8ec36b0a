"""mint-s3job against a real Slurm 22.05: sbatch, squeue and scontrol of a running cluster, and
the example EpilogSlurmctld wrapper run by the real slurmctld with what Slurm really passes.

The dispatcher runs in this process (its sbatch, squeue and scontrol are the real commands);
the epilog runs where a site runs it, in slurmctld, reaching moto through the wrapper's
settings file alone: slurmctld gives its epilog no environment but SLURM_* variables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from mint_common.retry import RetryPolicy
from mint_s3job.check import run_checks
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher, load_record
from mint_s3job.jobs import job_status
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit
from tests.slurm_support import SlurmCluster, pause_controller, resume_controller

from .jobhelpers import no_progress

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "examples" / "mint-s3job" / "epilog-slurmctld.sh"
MINT_S3JOB = Path(sys.executable).with_name("mint-s3job")
REAL_SBATCH = shutil.which("sbatch") or "sbatch"


@dataclass
class HeadNode:
    """A head node's files: mint-s3job's config, the installed epilog wrapper, the work dir."""

    root: Path
    config: S3JobConfig
    wrapper: Path

    @property
    def workdir(self) -> Path:
        assert self.config.workdir is not None
        return self.config.workdir

    @property
    def store(self) -> S3ObjectStore:
        assert self.config.bucket
        return S3ObjectStore(self.config, self.config.bucket)

    def dispatcher(self, sbatch: str = "sbatch", timeout: float = 20.0) -> Dispatcher:
        slurm = SlurmCommands(sbatch, "scancel", timeout)
        return Dispatcher(self.store, slurm, self.workdir, self.config)

    def submit(self, prefix: str, script: str, files: Optional[dict[str, str]] = None) -> None:
        source = self.root / "on-premises" / prefix
        source.mkdir(parents=True)
        (source / "run.sh").write_text(script)
        paths = []
        for name, text in (files or {}).items():
            (source / name).write_text(text)
            paths.append(str(source / name))
        inputs = collect_inputs(source / "run.sh", paths)
        submit(self.store, prefix, inputs, force=False, progress=no_progress)

    def state(self, prefix: str) -> bytes:
        return self.store.get_bytes(f"{prefix}/job-aws-stat.txt") or b""

    def env(self) -> dict[str, str]:
        """What the on-premises commands (wait, fetch) run with."""
        return {
            **os.environ,
            "MINT_S3JOB_BUCKET": str(self.config.bucket),
            "MINT_S3JOB_ENDPOINT_URL": str(self.config.endpoint_url),
            "MINT_S3JOB_REGION": "us-east-1",
            "MINT_S3JOB_POLL_INTERVAL": "0.2",
        }


@pytest.fixture
def head_node(tmp_path: Path, moto_endpoint: str, bucket: str) -> HeadNode:
    """The wrapper installed unchanged, with a settings file beside it and a config file."""
    root = tmp_path / "head"
    (root / "etc").mkdir(parents=True)
    config = S3JobConfig(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        region="us-east-1",
        retry=RetryPolicy(max_attempts=2),
        workdir=root / "job-aws",
        rescan_interval=3600.0,
        poll_interval=0.2,
    )
    (root / "etc" / "mint-s3job.yaml").write_text(
        f"bucket: {bucket}\nendpoint_url: {moto_endpoint}\nregion: us-east-1\n"
        f"workdir: {config.workdir}\nretry: {{max_attempts: 2}}\n"
    )
    (root / "etc" / "aws-credentials").write_text(
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    wrapper = root / "libexec" / "mint-s3job-epilog.sh"
    wrapper.parent.mkdir()
    shutil.copy2(WRAPPER, wrapper)
    wrapper.with_suffix(".conf").write_text(
        f"mint_s3job={MINT_S3JOB}\n"
        f"config={root / 'etc' / 'mint-s3job.yaml'}\n"
        f"log_file={root / 'epilog.log'}\n"
        f"export AWS_SHARED_CREDENTIALS_FILE={root / 'etc' / 'aws-credentials'}\n"
        f"export AWS_CONFIG_FILE={root / 'etc' / 'no-aws-config'}\n"
        # Keep this machine's /etc/mint and /root/.config out of the test.
        f"export MINT_SYSTEM_CONFIG_DIR={root / 'etc' / 'system'}\n"
        f"export XDG_CONFIG_HOME={root / 'etc' / 'user'}\n"
    )
    return HeadNode(root, config, wrapper)


def _squeue_comments(cluster: SlurmCluster) -> dict[str, str]:
    done = cluster.run("squeue", "--states=all", "--noheader", "--format=%i|%k")
    return dict(line.split("|", 1) for line in done.stdout.splitlines())


def _wait_done(head: HeadNode, cluster: SlurmCluster, prefix: str) -> None:
    cluster.wait_for(
        lambda: head.state(prefix) in (b"JOB_COMPLETE\n", b"JOB_ERROR\n"),
        f"the epilog to finish {prefix} (log: {head.root / 'epilog.log'})",
        timeout=60,
    )


def test_dispatch_run_epilog_wait_fetch_on_the_real_cluster(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode, tmp_path: Path
) -> None:
    """Dispatch with the real sbatch, the job runs on c1, the real EpilogSlurmctld (the example
    wrapper) runs `mint-s3job epilog`, and `wait` and `fetch` get the results; sbatch's
    refusals become JOB_ERROR with Slurm's own words."""
    cluster = slurm_cluster(start=("c1",), epilog_slurmctld=str(head_node.wrapper))
    head = head_node
    head.submit(
        "job-ok",
        "#!/bin/bash\n#SBATCH --job-name=e2e\nmkdir -p out\n"
        'tr a-z A-Z < params.txt > out/result.txt\necho "$SLURMD_NODENAME" > out/node.txt\n',
        {"params.txt": "alpha=1\n"},
    )
    head.submit("job-exit3", "#!/bin/bash\necho failing > why.txt\nexit 3\n")
    head.submit("job-partition", "#!/bin/bash\n#SBATCH --partition=nosuch\ntrue\n")
    head.submit("job-noshebang", "echo no interpreter line\n")

    report = head.dispatcher().run_once()

    submitted = dict(report.submitted)
    assert sorted(submitted) == ["job-exit3", "job-ok"]
    assert dict(report.errors) == {
        "job-partition": "sbatch: error: invalid partition specified: nosuch",
        "job-noshebang": "sbatch: error: This does not look like a batch script.  The first",
    }
    assert report.waiting == []
    job_dir = head.workdir / "job-ok"
    assert (job_dir / "job-aws-jobid.txt").read_text() == submitted["job-ok"] + "\n"
    local_out = (job_dir / "job-aws-sbatch.out").read_text()
    assert local_out == f"Submitted batch job {submitted['job-ok']}\n"
    bad_out = (head.workdir / "job-partition" / "job-aws-sbatch.out").read_text()
    assert "Batch job submission failed: Invalid partition name specified" in bad_out
    assert not (head.workdir / "job-partition" / "job-aws-jobid.txt").exists()
    assert head.state("job-partition") == b"JOB_ERROR\n"

    for prefix in ("job-ok", "job-exit3"):
        _wait_done(head, cluster, prefix)
    waited = subprocess.run(
        [str(MINT_S3JOB), "wait", "job-ok", "--timeout", "30"],
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (waited.returncode, waited.stdout) == (0, "JOB_COMPLETE\n"), waited.stderr
    failed = subprocess.run(
        [str(MINT_S3JOB), "wait", "job-exit3", "--timeout", "30"],
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and "exit code 3" in failed.stderr
    dest = tmp_path / "results"
    fetched = subprocess.run(
        [str(MINT_S3JOB), "fetch", "job-ok", "--out-dir", str(dest)],
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (dest / "out" / "result.txt").read_text() == "ALPHA=1\n"
    assert (dest / "out" / "node.txt").read_text() == "c1\n"
    assert (dest / f"slurm-{submitted['job-ok']}.out").exists()
    assert (dest / "job-aws-jobid.txt").read_text() == submitted["job-ok"] + "\n"

    # What Slurm really passed, recorded by the epilog; the seed's local files are no results.
    exit_doc = json.loads(head.store.get_bytes("job-ok/.mint-s3job/exit.json") or b"")
    assert exit_doc["slurm_job_id"] == submitted["job-ok"]
    assert exit_doc["slurm_env"]["SLURM_JOB_EXIT_CODE2"] == "0:0"
    manifest = json.loads(head.store.get_bytes("job-ok/.mint-s3job/manifest-epilog.json") or b"")
    uploaded = sorted(entry["name"] for entry in manifest["files"])
    assert uploaded == ["out/node.txt", "out/result.txt", f"slurm-{submitted['job-ok']}.out"]

    checks = {r.name: r for r in run_checks(head.config, head.store, head_node=True).results}
    assert checks["slurmctld"].status == "pass" and "is UP" in checks["slurmctld"].detail
    assert checks["EpilogSlurmctld"].status == "pass"
    assert str(head.wrapper) in checks["EpilogSlurmctld"].detail


def test_job_that_ends_before_sbatch_returns(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode
) -> None:
    """sbatch's answer reaches the dispatcher only after the real epilog has finished the job:
    the job is still found (by its comment, although it changed directory and its id is not yet
    recorded), completes once, and the late JOB_SUBMIT never overwrites JOB_COMPLETE."""
    cluster = slurm_cluster(start=("c1",), epilog_slurmctld=str(head_node.wrapper))
    head = head_node
    scratch = head.root / "scratch"
    scratch.mkdir()
    late = head.root / "bin" / "sbatch"
    late.parent.mkdir()
    # Holds sbatch's answer back until the epilog has recorded the job's completion.
    late.write_text(
        "#!/bin/bash\n"
        f'out=$("{REAL_SBATCH}" "$@" 2>&1); rc=$?\n'
        'record="$PWD/../.mint-s3job/jobs/$(basename "$PWD").json"\n'
        "for _ in $(seq 600); do\n"
        '  grep -q \'"completed_at": "\' "$record" 2>/dev/null && break; sleep 0.1\n'
        "done\n"
        'echo "$out"; exit $rc\n'
    )
    late.chmod(0o755)
    head.submit(
        "job-fast",
        f'#!/bin/bash\n#SBATCH --chdir={scratch}\necho done > "$SLURM_SUBMIT_DIR/out.txt"\n',
    )

    report = head.dispatcher(sbatch=str(late), timeout=60).run_once()

    [(prefix, job_id)] = report.submitted
    assert prefix == "job-fast"
    assert head.state("job-fast") == b"JOB_COMPLETE\n"
    assert head.store.get_bytes("job-fast/out.txt") == b"done\n"
    assert head.store.get_bytes("job-fast/job-aws-jobid.txt") == f"{job_id}\n".encode()
    assert head.store.get_bytes("job-fast/job-aws-sbatch.out") == (
        f"Submitted batch job {job_id}\n".encode()
    )
    assert (head.workdir / "job-fast" / "job-aws-jobid.txt").read_text() == f"{job_id}\n"
    record = load_record(head.workdir, "job-fast")
    assert record["slurm_job_id"] == job_id and record["completed_at"]
    assert job_status(head.store, "job-fast").exit_code == 0
    assert list(_squeue_comments(cluster)) == [job_id]


def test_unreachable_controller_leaves_jobs_waiting_then_submits_once(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode
) -> None:
    """sbatch cannot reach slurmctld: not the job's fault. Exit 69, jobs stay FILE_UPLOAD and
    unclaimed; the next run submits each once and replaces (not copies) the first download.
    No node is started: the jobs only need to be queued."""
    cluster = slurm_cluster(start=(), epilog_slurmctld=str(head_node.wrapper))
    head = head_node
    head.submit("job-a", "#!/bin/bash\ntrue\n", {"input.txt": "x\n"})
    head.submit("job-b", "#!/bin/bash\ntrue\n")
    cluster.control("ctld-stop")

    cfg = head.root / "etc" / "mint-s3job.yaml"
    dispatched = subprocess.run(
        [str(MINT_S3JOB), "dispatch", "--config", str(cfg)],
        env={**os.environ, "MINT_S3JOB_COMMAND_TIMEOUT": "20"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert dispatched.returncode == 69, dispatched.stderr
    rows = [line.split("\t") for line in dispatched.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["job-a", "WAITING"], ["job-b", "WAITING"]]
    assert rows[0][2] == (
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller"
        " (connect failure)"
    )
    assert "WARNING" in dispatched.stderr and "left waiting" in dispatched.stderr
    for prefix in ("job-a", "job-b"):
        assert head.state(prefix) == b"FILE_UPLOAD\n"
        assert head.store.head(f"{prefix}/.mint-s3job/claim.json") is None
        assert head.store.head(f"{prefix}/job-aws-sbatch.out") is None
    checks = {r.name: r for r in run_checks(head.config, head.store, head_node=True).results}
    assert checks["slurmctld"].status == "fail" and "DOWN" in checks["slurmctld"].detail
    assert checks["EpilogSlurmctld"].status == "skip"

    cluster.control("ctld-start")
    report = head.dispatcher().run_once()

    assert sorted(p for p, _ in report.submitted) == ["job-a", "job-b"]
    assert sorted(p.name for p in head.workdir.iterdir()) == [".mint-s3job", "job-a", "job-b"]
    assert sorted(p.name for p in (head.workdir / ".mint-s3job").iterdir()) == [
        "dispatch-state.json",
        "jobs",
    ]
    assert (head.workdir / "job-a" / "input.txt").read_text() == "x\n"
    comments = sorted(_squeue_comments(cluster).values())
    assert [c.rsplit(":", 1)[0] for c in comments] == ["mint-s3job:job-a", "mint-s3job:job-b"]
    for prefix in ("job-a", "job-b"):
        assert head.state(prefix) == b"JOB_SUBMIT\n"


def test_lost_sbatch_answers_never_submit_twice(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode
) -> None:
    """Two ways sbatch's answer gets lost after the job was queued: slurmctld stopped mid-request
    ("Socket timed out on send/recv operation"; it queues the job when it runs again), and an
    sbatch that queues the job and then hangs past our timeout. Each job is found by its
    comment and adopted, never submitted again. No node runs, so the jobs stay in squeue."""
    cluster = slurm_cluster(start=())
    head = head_node
    head.submit("job-timeout", "#!/bin/bash\ntrue\n")
    pause_controller(cluster)
    try:
        first = head.dispatcher().run_once()
    finally:
        resume_controller(cluster)

    [(prefix, reason)] = first.waiting
    assert prefix == "job-timeout"
    assert "Socket timed out on send/recv operation" in reason
    assert head.state("job-timeout") == b"FILE_UPLOAD\n"
    cluster.wait_for(lambda: len(_squeue_comments(cluster)) == 1, "the paused request to queue")
    [(queued_id, comment)] = _squeue_comments(cluster).items()
    assert comment.startswith("mint-s3job:job-timeout:")

    second = head.dispatcher().run_once()

    assert second.submitted == [("job-timeout", queued_id)]
    assert head.state("job-timeout") == b"JOB_SUBMIT\n"
    assert head.store.get_bytes("job-timeout/job-aws-jobid.txt") == f"{queued_id}\n".encode()
    assert len(_squeue_comments(cluster)) == 1

    hanging = head.root / "bin" / "sbatch"
    hanging.parent.mkdir()
    hanging.write_text(f'#!/bin/bash\n"{REAL_SBATCH}" "$@"\nsleep 300\n')
    hanging.chmod(0o755)
    head.submit("job-hang", "#!/bin/bash\ntrue\n")

    third = head.dispatcher(sbatch=str(hanging), timeout=5).run_once()

    [(prefix, hung_id)] = third.submitted
    assert prefix == "job-hang" and third.waiting == []
    assert head.state("job-hang") == b"JOB_SUBMIT\n"
    jobs = _squeue_comments(cluster)
    assert len(jobs) == 2 and jobs[hung_id].startswith("mint-s3job:job-hang:")

    checks = {r.name: r for r in run_checks(head.config, head.store, head_node=True).results}
    assert checks["slurmctld"].status == "pass"
    assert checks["EpilogSlurmctld"].status == "fail"
    assert "not set" in checks["EpilogSlurmctld"].detail


def test_check_warns_about_an_epilog_that_is_not_ours(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode
) -> None:
    """The seed's epilog.sh as EpilogSlurmctld: jobs complete, but without exit status."""
    seed_epilog = head_node.root / "epilog.sh"
    seed_epilog.write_text(
        '#!/bin/bash\n# mint-s3job epilog is not called here\ncd "${SLURM_JOB_WORK_DIR}"\n'
        'echo "JOB_COMPLETE" > job-aws-stat.txt\n'
    )
    seed_epilog.chmod(0o755)
    slurm_cluster(start=(), epilog_slurmctld=str(seed_epilog))
    checks = {
        r.name: r for r in run_checks(head_node.config, head_node.store, head_node=True).results
    }
    assert checks["EpilogSlurmctld"].status == "warn"
    assert "does not call 'mint-s3job epilog'" in checks["EpilogSlurmctld"].detail


def test_real_epilog_never_uploads_from_outside_the_job_dir(
    slurm_cluster: Callable[..., SlurmCluster], head_node: HeadNode
) -> None:
    """Two jobs attack the real EpilogSlurmctld, run as root (SlurmUser here, as at many
    sites): one replaces its own job directory with a symlink to a directory holding a
    secret, the other leaves symlinks to the secret (a file, a directory) and a FIFO among
    its results. Nothing from outside is uploaded; the second job's own results are."""
    cluster = slurm_cluster(start=("c1",), epilog_slurmctld=str(head_node.wrapper))
    head = head_node
    secret = head.root / "secret"
    secret.mkdir(mode=0o700)
    for name in ("secret.txt", "result.txt"):
        (secret / name).write_text("root's secret\n")
    head.submit(
        "job-swap",
        f"#!/bin/bash\necho mine > result.txt\ncd ..\nmv job-swap job-swap.orig\n"
        f"ln -s {secret} job-swap\n",
    )
    head.submit(
        "job-links",
        f"#!/bin/bash\nmkdir out\necho mine > out/result.txt\nln -s {secret}/secret.txt leak.txt\n"
        f"ln -s {secret} out/linked\nmkfifo fifo\n",
    )

    report = head.dispatcher().run_once()

    assert sorted(p for p, _ in report.submitted) == ["job-links", "job-swap"]
    for prefix in ("job-swap", "job-links"):
        _wait_done(head, cluster, prefix)
    assert (head.workdir / "job-swap").is_symlink()  # the attack really happened
    store = head.store
    keys = sorted(o.key for o in store.list_objects(""))
    assert all(b"root's" not in (store.get_bytes(k, 64 * 1024 * 1024) or b"") for k in keys)
    assert "job-swap/result.txt" not in keys and "job-swap/secret.txt" not in keys
    swap_exit = json.loads(store.get_bytes("job-swap/.mint-s3job/exit.json") or b"")
    assert swap_exit["refused"] == ["."] and swap_exit["exit_code"] == 0
    assert (
        "job-swap is a symlink, not the job's directory" in (head.root / "epilog.log").read_text()
    )
    links_exit = json.loads(store.get_bytes("job-links/.mint-s3job/exit.json") or b"")
    assert sorted(links_exit["refused"]) == ["fifo", "leak.txt", "out/linked"]
    assert store.get_bytes("job-links/out/result.txt") == b"mine\n"
    assert not any(k.startswith(("job-links/leak.txt", "job-links/out/linked")) for k in keys)

    waited = subprocess.run(
        [str(MINT_S3JOB), "wait", "job-swap", "--timeout", "30"],
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert waited.returncode == 1 and "replaced its job directory" in waited.stderr
