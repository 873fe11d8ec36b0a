"""SlurmCommands over small stand-in programs: every command's result and failure shape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mint_common.errors import UnavailableError
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher
from mint_s3job.slurm import Outcome, SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit

from .jobhelpers import make_job, no_progress


def _program(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _commands(tmp_path: Path, sbatch_body: str, timeout: float = 30) -> SlurmCommands:
    sbatch = _program(tmp_path / "bin", "sbatch", sbatch_body)
    scancel = _program(
        tmp_path / "bin", "scancel", 'echo "scancel: error: Invalid job id $1" >&2; exit 1'
    )
    return SlurmCommands(str(sbatch), str(scancel), timeout)


def test_submit_runs_sbatch_in_the_job_directory(tmp_path: Path) -> None:
    slurm = _commands(tmp_path, 'pwd > where; echo "Submitted batch job 17"')
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    result = slurm.submit("job-aws-run.sh", job_dir, "mint-s3job:job:t")
    assert (result.job_id, result.outcome, result.return_code, result.ok) == (
        "17",
        Outcome.SUBMITTED,
        0,
        True,
    )
    assert (job_dir / "where").read_text().strip() == str(job_dir)


@pytest.mark.parametrize("how", ["removed", "not-executable"])
def test_a_missing_or_unexecutable_sbatch_is_unavailable(tmp_path: Path, how: str) -> None:
    slurm = _commands(tmp_path, 'echo "Submitted batch job 17"')
    if how == "removed":
        Path(slurm.sbatch).unlink()
    else:
        Path(slurm.sbatch).chmod(0o644)
    with pytest.raises(UnavailableError, match=r"cannot run .*sbatch"):
        slurm.submit("job-aws-run.sh", tmp_path, "mint-s3job:job:t")


def test_an_sbatch_that_does_not_answer_is_uncertain(tmp_path: Path) -> None:
    slurm = _commands(tmp_path, "exec sleep 30", timeout=0.5)
    result = slurm.submit("job-aws-run.sh", tmp_path, "mint-s3job:job:t")
    assert (result.job_id, result.outcome, result.return_code) == (None, Outcome.UNCERTAIN, None)
    assert result.reason is not None and "may or may not have been queued" in result.reason


def test_cancel_accepts_a_job_slurm_no_longer_knows(tmp_path: Path) -> None:
    result = _commands(tmp_path, "true").cancel("12")
    assert result.return_code == 1 and "Invalid job id 12" in result.stderr


def test_a_failing_scancel_is_unavailable(tmp_path: Path) -> None:
    slurm = _commands(tmp_path, "true")
    _program(
        tmp_path / "bin", "scancel", 'echo "scancel: error: Access/permission denied" >&2; exit 1'
    )
    with pytest.raises(UnavailableError, match=r"scancel 12 failed: .*permission denied"):
        slurm.cancel("12")


@pytest.mark.parametrize(
    ("answer", "up"),
    [
        ('echo "Slurmctld(primary) at head is UP"', True),
        ('echo "Slurmctld(primary) at head is DOWN"; exit 1', False),
    ],
    ids=["up", "down"],
)
def test_ping_says_whether_the_controller_is_up(tmp_path: Path, answer: str, up: bool) -> None:
    slurm = _commands(tmp_path, "true")
    _program(tmp_path / "bin", "scontrol", answer)
    if up:
        assert slurm.ping() == "Slurmctld(primary) at head is UP"
    else:
        with pytest.raises(UnavailableError, match="is DOWN"):
            slurm.ping()


def test_dispatch_leaves_the_job_waiting_when_sbatch_cannot_run(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path
) -> None:
    script, inputs = make_job(tmp_path / "src")
    submit(store, "job-s", collect_inputs(script, [str(inputs)]), force=False, progress=no_progress)
    slurm = _commands(tmp_path, 'echo "Submitted batch job 17"')
    os.unlink(slurm.sbatch)
    assert config.workdir is not None
    report = Dispatcher(store, slurm, config.workdir, config).run_once()
    assert [prefix for prefix, _ in report.waiting] == ["job-s"] and report.submitted == []
    assert "cannot run" in report.waiting[0][1]
    assert store.get_bytes("job-s/job-aws-stat.txt") == b"FILE_UPLOAD\n"
    assert store.head("job-s/.mint-s3job/claim.json") is None  # released for the next run
