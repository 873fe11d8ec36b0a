"""dispatch: finding, claiming, downloading, sbatch, cancel; exactly once under concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mint_common.errors import UnavailableError
from mint_common.files import JsonState
from mint_common.heartbeat import Heartbeat
from mint_common.proc import CommandResult
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher, job_record_path, state_dir, watch
from mint_s3job.jobs import cancel_job, job_status
from mint_s3job.slurm import Outcome, SbatchResult, SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit

from .conftest import FakeSlurm, make_bucket
from .jobhelpers import BINARY, JAPANESE_NAME, RecordingStore, make_job, no_progress


def _submit(store: Any, tmp_path: Path, prefix: str, failing: bool = False) -> None:
    script, inputs = make_job(tmp_path / f"src-{prefix}", failing=failing)
    submit(store, prefix, collect_inputs(script, [str(inputs)]), force=False, progress=no_progress)


def _dispatcher(store: Any, config: S3JobConfig) -> Dispatcher:
    assert config.workdir is not None
    return Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config)


def test_dispatch_downloads_and_submits_once(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-a")
    report = _dispatcher(store, config).run_once()
    assert report.submitted == [("job-a", "4242")]
    assert config.workdir is not None
    job_dir = config.workdir / "job-a"
    [call] = fake_slurm.calls()
    assert call["cwd"] == str(job_dir) and call["argv"][-1] == "job-aws-run.sh"
    [comment] = call["argv"][:-1]
    token = JsonState(job_record_path(config.workdir, "job-a")).load()["submission"]["token"]
    assert comment == f"--comment=mint-s3job:job-a:{token}"
    assert (job_dir / "job-aws-sbatch.out").read_text() == "Submitted batch job 4242\n"
    assert (job_dir / "job-aws-jobid.txt").read_text() == "4242\n"
    assert (job_dir / "input" / "deep" / "blob.bin").read_bytes() == BINARY
    assert (job_dir / "input" / "deep" / "深い" / JAPANESE_NAME).is_file()
    assert not (job_dir / ".mint-s3job").exists()
    assert store.get_bytes("job-a/job-aws-stat.txt") == b"JOB_SUBMIT\n"
    assert store.get_bytes("job-a/job-aws-jobid.txt") == b"4242\n"
    assert store.get_bytes("job-a/job-aws-sbatch.out") == b"Submitted batch job 4242\n"
    record = JsonState(job_record_path(config.workdir, "job-a")).load()
    assert record["slurm_job_id"] == "4242" and "input/params.txt" in record["files"]
    again = _dispatcher(store, config).run_once()
    assert again.submitted == [] and len(fake_slurm.calls()) == 1


def test_sbatch_failure_becomes_job_error(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-bad", failing=True)
    report = _dispatcher(store, config).run_once()
    assert report.submitted == []
    assert report.errors == [
        ("job-bad", "sbatch: error: Batch job submission failed: Invalid partition name specified")
    ]
    assert store.get_bytes("job-bad/job-aws-stat.txt") == b"JOB_ERROR\n"
    out = store.get_bytes("job-bad/job-aws-sbatch.out") or b""
    assert out.startswith(b"sbatch: error: Batch job submission failed")
    status = job_status(store, "job-bad")
    assert status.state == "JOB_ERROR" and status.reason and "Invalid partition" in status.reason


def test_hostile_key_is_refused_and_nothing_escapes(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    store.put_bytes("job-evil/job-aws-run.sh", b"#!/bin/bash\n")
    store.put_bytes("job-evil/../../x", b"owned")
    store.put_bytes("job-evil/job-aws-stat.txt", b"FILE_UPLOAD\n")
    report = _dispatcher(store, config).run_once()
    assert report.submitted == [] and fake_slurm.calls() == []
    assert len(report.errors) == 1 and "'..'" in report.errors[0][1]
    assert store.get_bytes("job-evil/job-aws-stat.txt") == b"JOB_ERROR\n"
    assert config.workdir is not None
    assert not (config.workdir.parent / "x").exists() and not (tmp_path / "x").exists()


def test_finished_jobs_cost_nothing_on_later_runs(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    for name in ("job-1", "job-2", "job-3"):
        _submit(store, tmp_path, name)
    store.put_bytes("job-3/job-aws-stat.txt", b"JOB_COMPLETE\n")  # finished elsewhere
    first = _dispatcher(store, config).run_once()
    assert first.full_scan and {p for p, _ in first.submitted} == {"job-1", "job-2"}
    for name in ("job-1", "job-2"):
        store.put_bytes(f"{name}/job-aws-stat.txt", b"JOB_COMPLETE\n")
    recording = RecordingStore(store)
    _dispatcher(recording, config).run_once()  # learns that job-1 and job-2 finished
    recording.calls.clear()
    _submit(store, tmp_path, "job-4")
    report = _dispatcher(recording, config).run_once()
    assert [p for p, _ in report.submitted] == ["job-4"]
    listings = [c for c in recording.calls if c.startswith("list_objects")]
    assert listings == ["list_objects:job-4/"]
    assert recording.calls.count("list_prefixes") == 1


def test_rescan_notices_a_cleaned_and_reused_prefix(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-reuse")
    clock = [1000.0]
    quick = replace(config, rescan_interval=600.0)
    assert quick.workdir is not None
    make = lambda: Dispatcher(  # noqa: E731
        store,
        SlurmCommands("sbatch", "scancel", 30),
        quick.workdir or Path(),
        quick,
        clock=lambda: clock[0],
    )
    make().run_once()
    store.put_bytes("job-reuse/job-aws-stat.txt", b"JOB_COMPLETE\n")
    make().run_once()
    store.delete_keys([o.key for o in store.list_objects("job-reuse/")])
    _submit(store, tmp_path / "again", "job-reuse")
    clock[0] += 10
    assert make().run_once().submitted == []  # settled in the cache until the next rescan
    clock[0] += 600
    assert [p for p, _ in make().run_once().submitted] == ["job-reuse"]


def test_cancel_before_submission_is_not_submitted(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-c")
    assert cancel_job(store, "job-c") == "FILE_UPLOAD"
    report = _dispatcher(store, config).run_once()
    assert report.cancelled == ["job-c"] and fake_slurm.calls() == []
    status = job_status(store, "job-c")
    assert status.state == "JOB_ERROR" and status.cancelled == "cancelled before submission"


def test_cancel_of_a_submitted_job_runs_scancel(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-r")
    _dispatcher(store, config).run_once()
    cancel_job(store, "job-r")
    report = _dispatcher(store, config).run_once()
    assert report.cancelled == ["job-r"]
    assert [c["argv"] for c in fake_slurm.calls("scancel")] == [["4242"]]
    status = job_status(store, "job-r")
    assert status.state == "JOB_ERROR" and status.cancelled == "scancel 4242"
    _dispatcher(store, config).run_once()
    assert len(fake_slurm.calls("scancel")) == 1


def test_job_claimed_by_another_dispatcher_is_left_alone(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-taken")
    store.put_bytes("job-taken/.mint-s3job/claim.json", b'{"host": "other", "pid": 1}')
    report = _dispatcher(store, config).run_once()
    assert report.submitted == [] and fake_slurm.calls() == []
    assert job_status(store, "job-taken").claimed_by == "other:1"


class _FlakyDownloads(RecordingStore):
    def download_files(self, items: Any, progress: Any) -> None:
        raise UnavailableError("connection reset")


def test_transient_download_failure_releases_the_claim(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-t")
    report = _dispatcher(_FlakyDownloads(store), config).run_once()
    assert report.submitted == [] and report.errors == []
    assert store.head("job-t/.mint-s3job/claim.json") is None
    assert store.get_bytes("job-t/job-aws-stat.txt") == b"FILE_UPLOAD\n"
    assert [p for p, _ in _dispatcher(store, config).run_once().submitted] == ["job-t"]


class _FastJob:
    """A scheduler whose job finishes (epilog writes JOB_COMPLETE) before sbatch returns."""

    def __init__(self, store: S3ObjectStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult:
        self.store.put_bytes(f"{self.prefix}/job-aws-stat.txt", b"JOB_COMPLETE\n")
        return SbatchResult("99", "Submitted batch job 99\n")

    def find(self, comment: str) -> None:
        return None

    def cancel(self, job_id: str) -> CommandResult:
        return CommandResult(("scancel", job_id), 0)


def test_late_job_submit_never_overwrites_job_complete(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path
) -> None:
    _submit(store, tmp_path, "job-fast")
    assert config.workdir is not None
    dispatcher = Dispatcher(store, _FastJob(store, "job-fast"), config.workdir, config)
    assert dispatcher.run_once().submitted == [("job-fast", "99")]
    assert store.get_bytes("job-fast/job-aws-stat.txt") == b"JOB_COMPLETE\n"


def test_watch_writes_a_heartbeat_every_loop(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-w")
    assert config.workdir is not None
    ticks = iter(float(t) for t in range(10_000, 20_000, 100))
    dispatcher = Dispatcher(
        store,
        SlurmCommands("sbatch", "scancel", 30),
        config.workdir,
        config,
        clock=lambda: next(ticks),
    )
    state_file = JsonState(state_dir(config.workdir) / "dispatch-state.json")
    beats: list[Any] = []

    def after_each_run(report: Any) -> None:
        state = state_file.load()
        beats.append(Heartbeat.from_json(state["heartbeat"]))
        assert state["pid"] == os.getpid()

    watch(dispatcher, 0.01, on_report=after_each_run, max_runs=3)
    assert len(beats) == 3 and None not in beats
    epochs = [beat.epoch for beat in beats]
    # Each loop beats anew, with the dispatcher's own clock.
    assert epochs == sorted(set(epochs)) and epochs[0] >= 10_000


def test_ten_dispatchers_at_once_submit_each_job_exactly_once(
    serial_moto_endpoint: str, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    bucket = make_bucket(serial_moto_endpoint)
    config = S3JobConfig(bucket=bucket, endpoint_url=serial_moto_endpoint, region="us-east-1")
    store = S3ObjectStore(config, bucket)
    prefixes = [f"job-{n}" for n in range(5)]
    for prefix in prefixes:
        _submit(store, tmp_path, prefix)
    env = dict(
        os.environ,
        MINT_S3JOB_BUCKET=bucket,
        MINT_S3JOB_ENDPOINT_URL=serial_moto_endpoint,
        MINT_S3JOB_REGION="us-east-1",
    )
    tool = str(Path(sys.executable).parent / "mint-s3job")
    # Each dispatcher has its own work dir, as on separate head nodes or EventBridge runs.
    processes = [
        subprocess.Popen(
            [tool, "dispatch", "--workdir", str(tmp_path / f"head{n}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(10)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 10, outputs
    calls = fake_slurm.calls()
    submitted_dirs = sorted(Path(c["cwd"]).name for c in calls)
    assert submitted_dirs == prefixes
    for prefix in prefixes:
        assert store.get_bytes(f"{prefix}/job-aws-stat.txt") == b"JOB_SUBMIT\n"
    printed = [line for out, _ in outputs for line in out.splitlines()]
    assert sorted(line.split("\t")[0] for line in printed) == prefixes


@pytest.mark.parametrize("prefix", ["..", ".hidden"], ids=["dotdot", "hidden"])
def test_odd_top_level_prefixes_are_ignored(
    store: S3ObjectStore,
    config: S3JobConfig,
    fake_slurm: FakeSlurm,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.put_bytes(f"{prefix}/job-aws-run.sh", b"#!/bin/bash\n")
    store.put_bytes(f"{prefix}/job-aws-stat.txt", b"FILE_UPLOAD\n")
    dispatcher = _dispatcher(store, config)
    # The first run lists the whole bucket, the second only its top-level prefixes:
    # neither looks at a dot prefix (`check`'s probes live under one), not even to refuse it.
    reports = [dispatcher.run_once(), dispatcher.run_once()]
    assert [r.full_scan for r in reports] == [True, False]
    assert [r.examined for r in reports] == [0, 0]
    assert all(r.submitted == [] for r in reports) and fake_slurm.calls() == []
    assert config.workdir is not None
    jobs = JsonState(state_dir(config.workdir) / "dispatch-state.json").load()["jobs"]
    assert prefix not in jobs
    assert "ignoring prefix" not in caplog.text


def test_input_that_does_not_match_the_submit_manifest_is_refused(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _submit(store, tmp_path, "job-corrupt")
    manifest = store.get_bytes("job-corrupt/.mint-s3job/manifest-submit.json") or b""
    document = json.loads(manifest)
    for entry in document["files"]:
        if entry["name"] == "input/params.txt":
            entry["sha256"] = "0" * 64
    store.put_bytes("job-corrupt/.mint-s3job/manifest-submit.json", json.dumps(document).encode())
    report = _dispatcher(store, config).run_once()
    assert report.submitted == [] and fake_slurm.calls() == []
    assert report.errors == [
        ("job-corrupt", "input/params.txt: SHA-256 does not match the submit manifest")
    ]
    assert store.get_bytes("job-corrupt/job-aws-stat.txt") == b"JOB_ERROR\n"


class _LostAnswer:
    """sbatch's answer is lost once; Slurm cannot say at first, then knows the job.

    The real cluster produces this too (test_real_slurm.py); this keeps the protocol covered
    where Slurm cannot be installed."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.looked_up: list[str] = []
        self.known: dict[str, str] = {}

    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult:
        self.submitted.append(comment)
        output = (
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n"
        )
        return SbatchResult(None, output, output.strip(), Outcome.UNCERTAIN)

    def find(self, comment: str) -> str | None:
        self.looked_up.append(comment)
        if comment not in self.known:
            raise UnavailableError("squeue failed: Socket timed out on send/recv operation")
        return self.known[comment]

    def cancel(self, job_id: str) -> CommandResult:
        return CommandResult(("scancel", job_id), 0)


def test_lost_sbatch_answer_is_looked_up_not_resubmitted(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path
) -> None:
    _submit(store, tmp_path, "job-u")
    _submit(store, tmp_path, "job-v")
    assert config.workdir is not None
    slurm = _LostAnswer()
    first = Dispatcher(store, slurm, config.workdir, config).run_once()
    assert [p for p, _ in first.waiting] == ["job-u", "job-v"]
    assert len(slurm.submitted) == 1  # job-v is not tried against the same dead controller
    for prefix in ("job-u", "job-v"):
        assert store.get_bytes(f"{prefix}/job-aws-stat.txt") == b"FILE_UPLOAD\n"
        assert store.head(f"{prefix}/.mint-s3job/claim.json") is None
    slurm.known[slurm.submitted[0]] = "77"
    second = Dispatcher(store, slurm, config.workdir, config).run_once()
    assert second.submitted == [("job-u", "77")]
    assert [p for p, _ in second.waiting] == ["job-v"]  # its own answer was lost this time
    assert slurm.looked_up.count(slurm.submitted[0]) == 2
    assert slurm.submitted.count(slurm.submitted[0]) == 1
    assert store.get_bytes("job-u/job-aws-stat.txt") == b"JOB_SUBMIT\n"
    assert (config.workdir / "job-u" / "job-aws-jobid.txt").read_text() == "77\n"
