"""epilog, wait and fetch: results come back byte-exact, verified, and only inside DEST."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mint_common.errors import (
    JobFailed,
    NoInputError,
    TransferError,
    TryAgainLater,
    UnsafePathError,
    UsageError,
)
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher
from mint_s3job.epilog import run_epilog
from mint_s3job.fetch import fetch
from mint_s3job.jobs import clean_job, list_jobs, require_success, wait_until_done
from mint_s3job.manifest import ManifestEntry, dump_manifest
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit

from .conftest import FakeSlurm
from .jobhelpers import BINARY, JAPANESE_NAME, make_job, no_progress


def _run_to_slurm(store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, prefix: str) -> Path:
    script, inputs = make_job(tmp_path / f"src-{prefix}")
    submit(store, prefix, collect_inputs(script, [str(inputs)]), force=False, progress=no_progress)
    assert config.workdir is not None
    Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config).run_once()
    return config.workdir / prefix


def _finish(job_dir: Path, exit_code: int = 0) -> dict[str, str]:
    """What the job script and Slurm do: write outputs, then call the epilog with its env."""
    (job_dir / "out").mkdir()
    (job_dir / "out" / "result.bin").write_bytes(BINARY[::-1])
    (job_dir / "out" / "ログ.txt").write_text("完了\n", encoding="utf-8")
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_WORK_DIR": str(job_dir),
        "SLURM_JOB_EXIT_CODE2": f"{exit_code}:0",
        "SLURM_JOB_EXIT_CODE": str(exit_code << 8),
    }


def test_epilog_uploads_only_new_and_changed_files_then_completes(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    job_dir = _run_to_slurm(store, config, tmp_path, "job-e")
    env = _finish(job_dir)
    (job_dir / "input" / "params.txt").write_text("alpha=2\n")
    os.symlink("/etc/passwd", job_dir / "out" / "leak")
    assert config.workdir is not None
    result = run_epilog(store, config.workdir, env)
    assert result is not None
    assert result.uploaded == 3 and result.exit_code == 0
    assert store.get_bytes("job-e/input/params.txt") == b"alpha=2\n"
    assert store.head("job-e/out/leak") is None
    assert store.get_bytes("job-e/job-aws-stat.txt") == b"JOB_COMPLETE\n"
    assert require_success(wait_until_done(store, "job-e", timeout=5, interval=0.01)).exit_code == 0


def test_epilog_ignores_jobs_that_did_not_come_from_the_bucket(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path
) -> None:
    assert config.workdir is not None
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_WORK_DIR": str(tmp_path / "home" / "someone")}
    assert run_epilog(store, config.workdir, env) is None
    assert store.list_objects("") == []
    with pytest.raises(UsageError, match="SLURM_JOB_ID"):
        run_epilog(store, config.workdir, {})


def test_failed_job_makes_wait_fail_with_its_exit_code(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    job_dir = _run_to_slurm(store, config, tmp_path, "job-f")
    assert config.workdir is not None
    run_epilog(store, config.workdir, _finish(job_dir, exit_code=3))
    assert store.get_bytes("job-f/job-aws-stat.txt") == b"JOB_COMPLETE\n"
    with pytest.raises(JobFailed, match="exit code 3") as caught:
        require_success(wait_until_done(store, "job-f", timeout=5, interval=0.01))
    assert caught.value.job_exit_status == 3


def test_wait_times_out_with_try_again_later(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _run_to_slurm(store, config, tmp_path, "job-slow")
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    with pytest.raises(TryAgainLater, match="still JOB_SUBMIT"):
        require_success(
            wait_until_done(
                store, "job-slow", timeout=30, interval=10, sleep=sleep, clock=lambda: clock[0]
            )
        )
    assert sleeps == [10, 10, 10]


def test_wait_refuses_an_uncommitted_job(store: S3ObjectStore) -> None:
    store.put_bytes("job-half/job-aws-run.sh", b"#!/bin/bash\n")
    with pytest.raises(NoInputError, match="never finished"):
        require_success(wait_until_done(store, "job-half", timeout=1, interval=0.01))
    with pytest.raises(NoInputError, match="no job"):
        require_success(wait_until_done(store, "job-none", timeout=1, interval=0.01))


def test_fetch_round_trip_is_byte_exact_and_skips_unchanged(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    job_dir = _run_to_slurm(store, config, tmp_path, "job-x")
    assert config.workdir is not None
    run_epilog(store, config.workdir, _finish(job_dir))
    dest = tmp_path / "results"
    first = fetch(store, "job-x", dest, progress=no_progress)
    assert (dest / "out" / "result.bin").read_bytes() == BINARY[::-1]
    assert (dest / "out" / "ログ.txt").read_text(encoding="utf-8") == "完了\n"
    assert (dest / "input" / "deep" / "深い" / JAPANESE_NAME).read_text() == "日本語の内容\n"
    assert (dest / "job-aws-stat.txt").read_text() == "JOB_COMPLETE\n"
    assert not (dest / ".mint-s3job").exists()
    assert not any(p.name.startswith(".") for p in dest.rglob("*"))
    second = fetch(store, "job-x", dest, progress=no_progress)
    assert second.downloaded == [] and sorted(second.skipped) == sorted(first.downloaded)
    (dest / "out" / "result.bin").write_bytes(b"tampered")
    third = fetch(store, "job-x", dest, progress=no_progress)
    assert third.downloaded == ["out/result.bin"]
    assert (dest / "out" / "result.bin").read_bytes() == BINARY[::-1]


def test_fetch_include_and_exclude(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    job_dir = _run_to_slurm(store, config, tmp_path, "job-i")
    assert config.workdir is not None
    run_epilog(store, config.workdir, _finish(job_dir))
    result = fetch(
        store, "job-i", tmp_path / "d", include=["out/*"], exclude=["*.txt"], progress=no_progress
    )
    assert result.downloaded == ["out/result.bin"]


def test_fetch_refuses_hostile_keys_and_keeps_the_rest(
    store: S3ObjectStore, tmp_path: Path
) -> None:
    store.put_bytes("job-h/good.txt", b"fine")
    store.put_bytes("job-h/../../x", b"owned")
    store.put_bytes("job-h/job-aws-stat.txt", b"JOB_COMPLETE\n")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(UnsafePathError, match=r"job-h/\.\./\.\./x"):
        fetch(store, "job-h", dest, progress=no_progress)
    assert (dest / "good.txt").read_bytes() == b"fine"
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()


def test_fetch_discards_a_download_that_does_not_match_the_manifest(
    store: S3ObjectStore, tmp_path: Path
) -> None:
    store.put_bytes("job-m/data.bin", b"real data")
    wrong = ManifestEntry("data.bin", 9, "0" * 64)
    store.put_bytes("job-m/.mint-s3job/manifest-epilog.json", dump_manifest("epilog", [wrong]))
    with pytest.raises(TransferError, match="does not match the manifest"):
        fetch(store, "job-m", tmp_path / "d", progress=no_progress)
    assert not (tmp_path / "d" / "data.bin").exists()
    assert list((tmp_path / "d").iterdir()) == []


def test_list_and_clean(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    _run_to_slurm(store, config, tmp_path, "job-l1")
    store.put_bytes("job-l2/job-aws-run.sh", b"#!/bin/bash\n")
    jobs = {j.prefix: j for j in list_jobs(store)}
    assert jobs["job-l1"].state == "JOB_SUBMIT" and jobs["job-l1"].job_id == "4242"
    assert jobs["job-l2"].state == "INCOMPLETE"
    with pytest.raises(TryAgainLater, match="being run"):
        clean_job(store, "job-l1", force=False)
    assert clean_job(store, "job-l2", force=False) == 1
    assert clean_job(store, "job-l1", force=True) > 5
    assert store.list_objects("") == []


def test_epilog_finds_a_job_that_changed_its_directory_by_job_id(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    job_dir = _run_to_slurm(store, config, tmp_path, "job-cd")
    env = dict(_finish(job_dir), SLURM_JOB_WORK_DIR=str(tmp_path / "scratch"))
    assert config.workdir is not None
    result = run_epilog(store, config.workdir, env)
    assert result is not None and result.prefix == "job-cd"
    assert store.get_bytes("job-cd/out/result.bin") == BINARY[::-1]
