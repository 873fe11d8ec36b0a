"""Jobs move between the seed's scripts and mint-s3job in both directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher
from mint_s3job.epilog import run_epilog
from mint_s3job.fetch import fetch
from mint_s3job.jobs import job_status, require_success, wait_until_done
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit

from . import seed_procedure
from .conftest import FakeSlurm
from .jobhelpers import BINARY, JAPANESE_NAME, make_job, no_progress

SCRIPT = b"#!/bin/bash\n#SBATCH -N 1\ngcc hello.c -o hello && ./hello > hello.out\n"


def test_seed_manual_submit_is_dispatched_by_ours(
    s3: Any, store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    files = {"job-aws-run.sh": SCRIPT, "hello.c": b"int main(){return 0;}\n", "d/x.bin": BINARY}
    seed_procedure.manual_submit(s3, store.bucket, "job0001", files)
    assert config.workdir is not None
    dispatcher = Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config)
    assert dispatcher.run_once().submitted == [("job0001", "4242")]
    job_dir = config.workdir / "job0001"
    assert (job_dir / "d" / "x.bin").read_bytes() == BINARY
    (job_dir / "hello.out").write_text("Hello\n")
    run_epilog(
        store,
        config.workdir,
        {"SLURM_JOB_ID": "4242", "SLURM_JOB_WORK_DIR": str(job_dir), "SLURM_JOB_EXIT_CODE": "0"},
    )
    # The seed's way of checking: the first line of job-aws-stat.txt.
    stat = s3.get_object(Bucket=store.bucket, Key="job0001/job-aws-stat.txt")["Body"].read()
    assert stat.decode().splitlines()[0] == "JOB_COMPLETE"
    assert s3.get_object(Bucket=store.bucket, Key="job0001/hello.out")["Body"].read() == b"Hello\n"
    assert (
        require_success(wait_until_done(store, "job0001", timeout=5, interval=0.01)).exit_code == 0
    )


def test_ours_is_dispatched_by_the_seed_sub_job_and_epilog(
    s3: Any, store: S3ObjectStore, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, inputs = make_job(tmp_path / "src")
    submit(
        store, "job-ours", collect_inputs(script, [str(inputs)]), force=False, progress=no_progress
    )
    seed_workdir = tmp_path / "home" / "ubuntu" / "job-aws"
    seed_procedure.sub_job(s3, store.bucket, seed_workdir)
    assert [Path(c["cwd"]).name for c in fake_slurm.calls()] == ["job-ours"]
    assert job_status(store, "job-ours").state == "JOB_SUBMIT"
    job_dir = seed_workdir / "job-ours"
    assert (job_dir / "input" / "deep" / "深い" / JAPANESE_NAME).is_file()
    # A second sub-job.sh run (another S3 event) must not submit it again.
    seed_procedure.sub_job(s3, store.bucket, seed_workdir)
    assert len(fake_slurm.calls()) == 1
    (job_dir / "out").mkdir()
    (job_dir / "out" / "result.txt").write_text("done\n")
    seed_procedure.epilog(s3, store.bucket, job_dir)
    final = require_success(wait_until_done(store, "job-ours", timeout=5, interval=0.01))
    assert final.state == "JOB_COMPLETE" and final.exit_code is None
    dest = tmp_path / "fetched"
    first = fetch(store, "job-ours", dest, progress=no_progress)
    assert (dest / "out" / "result.txt").read_text() == "done\n"
    assert (dest / "input" / "deep" / "blob.bin").read_bytes() == BINARY
    # No manifest describes the seed epilog's outputs: size + MD5 ETag decide "unchanged".
    again = fetch(store, "job-ours", dest, progress=no_progress)
    assert again.downloaded == [] and sorted(again.skipped) == sorted(first.downloaded)


def test_seed_sub_job_skips_a_job_our_dispatcher_already_submitted(
    s3: Any, store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, _ = make_job(tmp_path / "src")
    submit(store, "job-mixed", collect_inputs(script, []), force=False, progress=no_progress)
    assert config.workdir is not None
    Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config).run_once()
    seed_procedure.sub_job(s3, store.bucket, tmp_path / "seed-work")
    assert len(fake_slurm.calls()) == 1
