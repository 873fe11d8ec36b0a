"""The epilog (run as SlurmUser, often root) never uploads a file from outside the job's
directory, whatever the job replaced with a symlink, and whenever it did so."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Union

import pytest

from mint_common.errors import JobFailed
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher
from mint_s3job.epilog import run_epilog
from mint_s3job.jobdir import MAX_DEPTH
from mint_s3job.jobs import require_success, wait_until_done
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import Progress, S3ObjectStore

from .conftest import FakeSlurm
from .hostile import HostileBucket
from .jobhelpers import RecordingStore

SECRET = b"root's secret\n"


@pytest.fixture
def job_dir(
    store: S3ObjectStore, config: S3JobConfig, hostile_bucket: HostileBucket, fake_slurm: FakeSlurm
) -> Path:
    """A job dispatched (fake sbatch) and run: it wrote out/result.txt."""
    hostile_bucket.plain("job-x")
    assert config.workdir is not None
    Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config).run_once()
    directory = config.workdir / "job-x"
    (directory / "out").mkdir()
    (directory / "out" / "result.txt").write_text("mine\n")
    return directory


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    """What the job must not get: a directory with the names the job's own files have."""
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    for name in ("secret.txt", "result.txt", "input.txt"):
        (secret / name).write_bytes(SECRET)
    return secret


def _env(job_dir: Path) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_WORK_DIR": str(job_dir),
        "SLURM_JOB_EXIT_CODE2": "0:0",
    }


def _uploaded(store: S3ObjectStore) -> dict[str, bytes]:
    return {
        o.key: store.get_bytes(o.key) or b""
        for o in store.list_objects("job-x/")
        if "/.mint-s3job/" not in o.key
    }


def test_job_dir_replaced_by_a_symlink_uploads_nothing(
    store: S3ObjectStore, config: S3JobConfig, job_dir: Path, secret_dir: Path
) -> None:
    os.rename(job_dir, job_dir.with_name("job-x.orig"))
    os.symlink(secret_dir, job_dir)
    assert config.workdir is not None

    result = run_epilog(store, config.workdir, _env(job_dir))

    assert result is not None and result.uploaded == 0 and result.refused == ["."]
    assert SECRET not in _uploaded(store).values()
    assert store.head("job-x/secret.txt") is None
    assert store.get_bytes("job-x/job-aws-stat.txt") == b"JOB_COMPLETE\n"
    exit_doc = json.loads(store.get_bytes("job-x/.mint-s3job/exit.json") or b"")
    assert exit_doc["refused"] == ["."]
    with pytest.raises(JobFailed, match="replaced its job directory"):
        require_success(wait_until_done(store, "job-x", timeout=5, interval=0.01))


def test_symlinks_and_special_files_inside_are_skipped(
    store: S3ObjectStore, config: S3JobConfig, job_dir: Path, secret_dir: Path
) -> None:
    os.symlink(secret_dir / "secret.txt", job_dir / "leak.txt")
    os.symlink(secret_dir, job_dir / "out" / "linked")
    os.mkfifo(job_dir / "fifo")
    assert config.workdir is not None

    result = run_epilog(store, config.workdir, _env(job_dir))

    assert result is not None
    assert sorted(result.refused) == ["fifo", "leak.txt", "out/linked"]
    uploaded = _uploaded(store)
    assert uploaded["job-x/out/result.txt"] == b"mine\n"
    assert SECRET not in uploaded.values()
    assert require_success(wait_until_done(store, "job-x", timeout=5, interval=0.01)).exit_code == 0


class _SwapsBeforeUpload(RecordingStore):
    """The job (or another job of the same user) swaps `out` for a symlink to the secret
    directory after the epilog looked at it and before the upload reads it."""

    def __init__(self, inner: S3ObjectStore, job_dir: Path, secret: Path) -> None:
        super().__init__(inner)
        self.job_dir, self.secret = job_dir, secret

    def upload_files(
        self, items: Sequence[tuple[Union[Path, BinaryIO], str]], progress: Progress
    ) -> None:
        if not (self.job_dir / "out").is_symlink():
            os.rename(self.job_dir / "out", self.job_dir / "out.moved")
            os.symlink(self.secret, self.job_dir / "out")
        self.inner.upload_files(items, progress)


def test_a_swap_after_the_scan_uploads_what_was_opened(
    store: S3ObjectStore, config: S3JobConfig, job_dir: Path, secret_dir: Path
) -> None:
    swapping: Any = _SwapsBeforeUpload(store, job_dir, secret_dir)
    assert config.workdir is not None
    run_epilog(swapping, config.workdir, _env(job_dir))
    uploaded = _uploaded(store)
    assert uploaded["job-x/out/result.txt"] == b"mine\n"
    assert SECRET not in uploaded.values()


def test_a_tree_deeper_than_the_limit_is_cut_not_crashed_on(
    store: S3ObjectStore, config: S3JobConfig, job_dir: Path
) -> None:
    deep = job_dir / "deep"
    deep.mkdir()
    dir_fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(MAX_DEPTH + 20):  # relative to the last one: no path is too long
            os.mkdir("d", dir_fd=dir_fd)
            next_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        os.close(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, dir_fd=dir_fd))
    finally:
        os.close(dir_fd)
    assert config.workdir is not None

    result = run_epilog(store, config.workdir, _env(job_dir))

    assert result is not None
    assert result.refused == ["deep/" + "d/" * (MAX_DEPTH - 1)]
    assert store.get_bytes("job-x/out/result.txt") == b"mine\n"
