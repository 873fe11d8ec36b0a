"""dispatch and fetch against a hostile bucket, and a dispatcher that survives any one failure.

Poisoned jobs (names that cannot all be files, a lying manifest) become JOB_ERROR naming
the keys, once; a failure of unknown kind is retried, then quarantined; the other jobs in
the bucket go on being dispatched throughout.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_common.errors import UnavailableError
from mint_common.files import JsonState
from mint_common.proc import CommandResult
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher, state_dir, watch
from mint_s3job.fetch import fetch
from mint_s3job.jobs import cancel_job, job_status
from mint_s3job.layout import name_problems
from mint_s3job.slurm import SbatchResult, SlurmCommands
from mint_s3job.store import S3ObjectStore

from .conftest import FakeSlurm
from .hostile import LONG_PART, HostileBucket
from .jobhelpers import RecordingStore, no_progress


def _dispatcher(store: Any, config: S3JobConfig) -> Dispatcher:
    assert config.workdir is not None
    return Dispatcher(store, SlurmCommands("sbatch", "scancel", 30), config.workdir, config)


def _state(store: S3ObjectStore, prefix: str) -> bytes:
    return store.get_bytes(f"{prefix}/job-aws-stat.txt") or b""


def _dispatch_state(config: S3JobConfig) -> dict[str, Any]:
    assert config.workdir is not None
    document: dict[str, Any] = JsonState(state_dir(config.workdir) / "dispatch-state.json").load()
    return document


def test_file_then_directory_keys_make_one_job_error_naming_both(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
) -> None:
    """`a` and `a/b` used to fail the download on every run, keeping another copy each time."""
    hostile_bucket.file_then_directory("job-ab")
    hostile_bucket.plain("job-ok")

    first = _dispatcher(store, config).run_once()
    second = _dispatcher(store, config).run_once()

    assert [p for p, _ in first.submitted] == ["job-ok"]
    [(prefix, reason)] = first.errors
    assert prefix == "job-ab"
    assert "'job-ab/a/b'" in reason and "'a' is a file" in reason
    assert _state(store, "job-ab") == b"JOB_ERROR\n"
    assert "'job-ab/a/b'" in (job_status(store, "job-ab").reason or "")
    assert second.errors == [] and second.submitted == [] and len(fake_slurm.calls()) == 1
    assert config.workdir is not None
    assert not (config.workdir / "job-ab").exists()
    assert not (state_dir(config.workdir) / "replaced").exists()


def test_same_file_under_two_keys_is_job_error(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
) -> None:
    hostile_bucket.same_file_twice("job-dup")
    [(_, reason)] = _dispatcher(store, config).run_once().errors
    assert "'job-dup/d/f': it names the same file as 'd//f'" in reason
    assert fake_slurm.calls() == []


def test_long_name_is_job_error_and_watch_goes_on(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
) -> None:
    """A component over 255 bytes used to raise a raw OSError out of the download."""
    hostile_bucket.long_component("job-long")
    hostile_bucket.plain("job-ok")
    reports: list[Any] = []

    watch(_dispatcher(store, config), 0.01, on_report=reports.append, max_runs=2)

    assert [p for p, _ in reports[0].submitted] == ["job-ok"]
    [(prefix, reason)] = reports[0].errors
    assert prefix == "job-long" and f"'job-long/dir/{LONG_PART}'" in reason
    assert "longer than 255 bytes" in reason
    assert reports[1].errors == [] and reports[1].failed == []
    assert _state(store, "job-long") == b"JOB_ERROR\n"


def test_file_in_the_manifest_but_not_in_the_bucket_is_never_submitted(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
) -> None:
    hostile_bucket.manifest_lists_a_missing_file("job-incomplete")
    report = _dispatcher(store, config).run_once()
    assert report.submitted == [] and fake_slurm.calls() == []
    assert report.errors == [
        (
            "job-incomplete",
            "1 file(s) listed in the submit manifest are missing from the bucket:"
            " 'job-incomplete/input.dat'",
        )
    ]
    assert _state(store, "job-incomplete") == b"JOB_ERROR\n"


class _Poisoned(RecordingStore):
    """Raises an exception type no code path expects: for one job's download always, and
    for the whole bucket listing once."""

    def __init__(self, inner: S3ObjectStore) -> None:
        super().__init__(inner)
        self.listing_failures = 1

    def download_files(self, items: Any, progress: Any) -> None:
        if any(key.startswith("job-poison/") for key, _ in items):
            raise LookupError("no codec for this object")
        self.inner.download_files(items, progress)

    def list_prefixes(self) -> list[str]:
        if self.listing_failures:
            self.listing_failures -= 1
            raise ZeroDivisionError("listing went wrong")
        return self.inner.list_prefixes()


def test_unexpected_exceptions_are_survived_isolated_and_quarantined(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole run failing is logged and recorded; one job failing the same way is retried
    (its claim released) until the third time, then JOB_ERROR with its reason. The good job
    is submitted in the first run that lists it."""
    hostile_bucket.job("job-poison", {"input.txt": b"x\n"})
    hostile_bucket.plain("job-ok")
    poisoned = _Poisoned(store)
    dispatcher = Dispatcher(
        poisoned, SlurmCommands("sbatch", "scancel", 30), config.workdir or Path(), config
    )
    reports: list[Any] = []
    heartbeats: list[dict[str, Any]] = []

    def seen(report: Any) -> None:
        reports.append(report)
        heartbeats.append(_dispatch_state(config))

    with caplog.at_level(logging.DEBUG, logger="mint_s3job"):
        watch(dispatcher, 0.01, on_report=seen, max_runs=4)

    assert len(reports) == 3  # the first run failed as a whole
    assert "dispatch run failed: ZeroDivisionError: listing went wrong" in caplog.text
    assert "Traceback" in caplog.text  # -v shows where it came from
    assert [p for p, _ in reports[0].submitted] == ["job-ok"]
    reason = "LookupError: no codec for this object"
    assert reports[0].failed == [("job-poison", reason)]
    assert heartbeats[0]["last_error"] == f"job job-poison: {reason}"
    assert heartbeats[0]["failures"]["job-poison"]["count"] == 1
    assert reports[1].failed == [("job-poison", reason)]
    assert _state(store, "job-poison") == b"JOB_ERROR\n"
    assert reports[2].errors == [
        ("job-poison", f"quarantined after failing 3 times the same way: {reason}")
    ]
    assert "quarantined" in (job_status(store, "job-poison").reason or "")
    assert heartbeats[2]["failures"] == {}
    assert len(fake_slurm.calls()) == 1


class _S3Down(RecordingStore):
    def download_files(self, items: Any, progress: Any) -> None:
        raise UnavailableError("downloading: cannot reach S3: connection refused")


def test_s3_or_disk_trouble_is_retried_forever_never_quarantined(
    store: S3ObjectStore,
    config: S3JobConfig,
    hostile_bucket: HostileBucket,
    fake_slurm: FakeSlurm,
) -> None:
    hostile_bucket.plain("job-later")
    for _ in range(config.quarantine_after + 1):
        report = _dispatcher(_S3Down(store), config).run_once()
        assert report.failed and report.errors == []
    assert _state(store, "job-later") == b"FILE_UPLOAD\n"
    assert store.head("job-later/.mint-s3job/claim.json") is None
    assert config.workdir is not None
    assert not (state_dir(config.workdir) / "replaced").exists()  # no copy per attempt
    assert [p for p, _ in _dispatcher(store, config).run_once().submitted] == ["job-later"]


class _PlantsSymlinks:
    """sbatch, and a job that ran at once and replaced the dispatcher's local files with
    symlinks to a file outside (the dispatcher may run as root)."""

    def __init__(self, workdir: Path, prefix: str, victim: Path) -> None:
        self.job_dir, self.victim = workdir / prefix, victim

    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult:
        for name in ("job-aws-sbatch.out", "job-aws-jobid.txt"):
            os.symlink(self.victim, self.job_dir / name)
        return SbatchResult("77", "Submitted batch job 77\n")

    def find(self, comment: str) -> None:
        return None

    def cancel(self, job_id: str) -> CommandResult:
        return CommandResult(("scancel", job_id), 0)


def test_local_files_are_never_written_through_a_symlink(
    store: S3ObjectStore, config: S3JobConfig, hostile_bucket: HostileBucket, tmp_path: Path
) -> None:
    hostile_bucket.plain("job-s")
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    assert config.workdir is not None
    slurm = _PlantsSymlinks(config.workdir, "job-s", victim)
    report = Dispatcher(store, slurm, config.workdir, config).run_once()
    assert report.submitted == [("job-s", "77")]
    assert victim.read_text() == "precious\n"
    assert (config.workdir / "job-s" / "job-aws-jobid.txt").read_text() == "77\n"
    assert not (config.workdir / "job-s" / "job-aws-jobid.txt").is_symlink()


def test_dispatch_watch_exits_78_on_a_bucket_that_does_not_exist(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Found before the loop, whose catch-all would otherwise log it forever."""
    tool = str(Path(sys.executable).parent / "mint-s3job")
    done = subprocess.run(
        [tool, "dispatch", "--watch", "--workdir", str(tmp_path / "w"), "--bucket", "no-such"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert "bucket 'no-such' does not exist" in done.stderr


def test_fetch_skips_names_that_cannot_be_files_and_goes_on(
    store: S3ObjectStore,
    hostile_bucket: HostileBucket,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`a` then `a/b` used to abort the rest of the download with a raw OSError."""
    hostile_bucket.file_then_directory("job-f")
    store.put_bytes(f"job-f/{LONG_PART}", b"long\n")
    store.put_bytes("job-f/zz-last.txt", b"last\n")
    dest = tmp_path / "dest"

    result = fetch(store, "job-f", dest, progress=no_progress)

    assert (dest / "a").read_bytes() == b"file a\n"
    assert (dest / "z.txt").read_bytes() == b"fine\n"
    assert (dest / "zz-last.txt").read_bytes() == b"last\n"
    assert sorted(result.conflicts) == ["a/b", LONG_PART]
    assert "skipping job-f/a/b: 'a' is a file" in caplog.text
    assert sorted(p.name for p in dest.iterdir()) == [
        "a",
        "job-aws-run.sh",
        "job-aws-stat.txt",
        "z.txt",
        "zz-last.txt",
    ]
    again = fetch(store, "job-f", dest, progress=no_progress)
    assert again.downloaded == [] and sorted(again.conflicts) == ["a/b", LONG_PART]


def test_fetch_skips_an_object_whose_local_place_is_taken_by_a_directory(
    store: S3ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.put_bytes("job-d/out", b"now a file\n")
    store.put_bytes("job-d/other.txt", b"other\n")
    dest = tmp_path / "dest"
    (dest / "out").mkdir(parents=True)
    result = fetch(store, "job-d", dest, progress=no_progress)
    assert result.conflicts == ["out"] and result.downloaded == ["other.txt"]
    assert (dest / "other.txt").read_bytes() == b"other\n" and (dest / "out").is_dir()
    assert "skipping job-d/out:" in caplog.text


class _CancelExplodes:
    """A scheduler whose scancel step throws what nobody expects."""

    def submit(self, script_name: str, cwd: Path, comment: str) -> SbatchResult:
        return SbatchResult("55", "Submitted batch job 55\n")

    def find(self, comment: str) -> None:
        return None

    def cancel(self, job_id: str) -> CommandResult:
        raise RuntimeError("scancel wrapper crashed")


def test_one_jobs_unexpected_failure_never_stops_the_others(
    store: S3ObjectStore, config: S3JobConfig, hostile_bucket: HostileBucket
) -> None:
    assert config.workdir is not None
    hostile_bucket.plain("job-c")
    Dispatcher(store, _CancelExplodes(), config.workdir, config).run_once()
    cancel_job(store, "job-c")
    hostile_bucket.plain("job-new")

    report = Dispatcher(store, _CancelExplodes(), config.workdir, config).run_once()

    assert report.failed == [("job-c", "RuntimeError: scancel wrapper crashed")]
    assert report.submitted == [("job-new", "55")]
    assert (
        _dispatch_state(config)["last_error"] == "job job-c: RuntimeError: scancel wrapper crashed"
    )
    assert _state(store, "job-c") == b"JOB_SUBMIT\n"


_PARTS = st.sampled_from(["a", "b", "ab", "", LONG_PART])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PARTS, min_size=1, max_size=4).map("/".join), max_size=8))
def test_names_left_after_name_problems_can_all_be_written(names: list[str]) -> None:
    """Whatever a bucket lists, the names kept can all become files side by side, and each
    name dropped has a reason."""
    usable = [n for n in set(names) if n.strip("/") and not n.startswith("/")]
    problems = name_problems(usable)
    with tempfile.TemporaryDirectory() as base:
        for name in sorted(set(usable) - set(problems)):
            target = Path(base, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x") as handle:  # "x": two names for one file would fail here
                handle.write(name)
    assert all(problems.values())
