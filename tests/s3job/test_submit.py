"""submit: inputs, layout under the prefix, the commit point, prefix reuse."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from mint_common.errors import CantCreateError, InputError, NoInputError
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import Dispatcher
from mint_s3job.manifest import parse_manifest
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import S3ObjectStore
from mint_s3job.submit import collect_inputs, submit

from .conftest import FakeSlurm
from .jobhelpers import BINARY, JAPANESE_NAME, RecordingStore, make_job, no_progress


def test_collect_inputs_keeps_layout_and_renames_the_script(tmp_path: Path) -> None:
    script, inputs = make_job(tmp_path)
    single = tmp_path / "single.dat"
    single.write_bytes(b"1")
    names = [n for _, n in collect_inputs(script, [str(inputs), str(single)])]
    assert names[0] == "job-aws-run.sh"
    assert "input/params.txt" in names
    assert f"input/deep/深い/{JAPANESE_NAME}" in names
    assert "single.dat" in names
    flat = [n for _, n in collect_inputs(script, [str(inputs) + "/"])]
    assert "params.txt" in flat and "deep/blob.bin" in flat


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("job-aws-stat.txt", "reserved"),
        ("job-aws-sbatch.out", "reserved"),
        (".mint-s3job", "reserved"),
        ("job-aws-run.sh", "same name"),
    ],
    ids=["stat", "sbatch-out", "metadata", "second-script"],
)
def test_collect_inputs_refuses_reserved_and_duplicate_names(
    tmp_path: Path, name: str, error: str
) -> None:
    script, _ = make_job(tmp_path)
    bad = tmp_path / "x" / name
    bad.parent.mkdir()
    bad.write_text("x")
    with pytest.raises(InputError, match=error):
        collect_inputs(script, [str(bad)])


def test_collect_inputs_refuses_symlinks_out_of_a_directory(tmp_path: Path) -> None:
    script, inputs = make_job(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    os.symlink(secret, inputs / "leak.txt")
    with pytest.raises(InputError, match="outside"):
        collect_inputs(script, [str(inputs)])


def test_collect_inputs_reports_missing_files(tmp_path: Path) -> None:
    script, _ = make_job(tmp_path)
    with pytest.raises(NoInputError, match="nope"):
        collect_inputs(script, [str(tmp_path / "nope")])
    with pytest.raises(NoInputError, match="job script"):
        collect_inputs(tmp_path / "missing.sh", [])


def test_submit_uploads_everything_and_writes_the_state_last(
    store: S3ObjectStore, tmp_path: Path
) -> None:
    script, inputs = make_job(tmp_path)
    recording = RecordingStore(store)
    items = collect_inputs(script, [str(inputs)])
    result = submit(recording, "job-order", items, force=False, progress=no_progress)
    assert recording.writes[-1] == "job-order/job-aws-stat.txt"
    assert recording.writes[-2] == "job-order/.mint-s3job/manifest-submit.json"
    assert store.get_bytes("job-order/job-aws-stat.txt") == b"FILE_UPLOAD\n"
    assert store.get_bytes("job-order/input/deep/blob.bin") == BINARY
    manifest = parse_manifest(store.get_bytes("job-order/.mint-s3job/manifest-submit.json"), "m")
    assert manifest["input/deep/blob.bin"].size == len(BINARY)
    assert result.files == len(items) and result.bytes == sum(p.stat().st_size for p, _ in items)


def test_submit_uploads_the_largest_files_first(store: S3ObjectStore, tmp_path: Path) -> None:
    script, inputs = make_job(tmp_path)
    (inputs / "zz-largest.bin").write_bytes(os.urandom(300_000))
    (inputs / "aa-empty.txt").write_bytes(b"")
    recording = RecordingStore(store)
    items = collect_inputs(script, [str(inputs)])
    submit(recording, "job-big-first", items, force=False, progress=no_progress)
    uploaded = recording.writes[:-2]
    assert uploaded[0] == "job-big-first/input/zz-largest.bin"
    assert uploaded[-1] == "job-big-first/input/aa-empty.txt"
    assert sorted(uploaded) == sorted(f"job-big-first/{name}" for _, name in items)
    manifest = parse_manifest(store.get_bytes(recording.writes[-2]), "m")
    assert list(manifest) == [name for _, name in items]


def test_submit_refuses_an_existing_prefix_unless_forced(
    store: S3ObjectStore, tmp_path: Path
) -> None:
    script, inputs = make_job(tmp_path)
    items = collect_inputs(script, [str(inputs)])
    submit(store, "job-again", items, force=False, progress=no_progress)
    with pytest.raises(CantCreateError, match="already holds"):
        submit(store, "job-again", items[:1], force=False, progress=no_progress)
    result = submit(store, "job-again", items[:1], force=True, progress=no_progress)
    assert result.replaced
    keys = {o.key for o in store.list_objects("job-again/")}
    assert "job-again/input/params.txt" not in keys
    assert "job-again/job-aws-stat.txt" in keys


def test_force_refuses_to_replace_a_running_job(store: S3ObjectStore, tmp_path: Path) -> None:
    script, _ = make_job(tmp_path)
    items = collect_inputs(script, [])
    submit(store, "job-running", items, force=False, progress=no_progress)
    store.put_bytes("job-running/job-aws-stat.txt", b"JOB_SUBMIT\n")
    with pytest.raises(CantCreateError, match="JOB_SUBMIT"):
        submit(store, "job-running", items, force=True, progress=no_progress)


def test_interrupted_submit_is_never_dispatched(
    store: S3ObjectStore, config: S3JobConfig, tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    script, inputs = make_job(tmp_path)
    items = collect_inputs(script, [str(inputs)])
    broken = RecordingStore(store, fail_upload_after=2)
    with pytest.raises(KeyboardInterrupt):
        submit(broken, "job-cut", items, force=False, progress=no_progress)
    keys = {o.key for o in store.list_objects("job-cut/")}
    assert keys and "job-cut/job-aws-stat.txt" not in keys
    scheduler = SlurmCommands("sbatch", "scancel", 30)
    assert config.workdir is not None
    report = Dispatcher(store, scheduler, config.workdir, config).run_once()
    assert report.submitted == [] and fake_slurm.calls() == []
    # The user resubmits under the same prefix with --force; now it runs.
    submit(store, "job-cut", items, force=True, progress=no_progress)
    report = Dispatcher(store, scheduler, config.workdir, config).run_once()
    assert [p for p, _ in report.submitted] == ["job-cut"]


def test_submit_refuses_a_bad_prefix(store: S3ObjectStore, tmp_path: Path) -> None:
    script, _ = make_job(tmp_path)
    with pytest.raises(InputError, match="invalid job prefix"):
        submit(store, "../x", collect_inputs(script, []), force=False, progress=no_progress)


def test_submit_reports_every_byte_to_the_progress_bar(
    store: S3ObjectStore, tmp_path: Path
) -> None:
    script, inputs = make_job(tmp_path)
    big = inputs / "big.bin"
    big.write_bytes(os.urandom(6 * 1024 * 1024))
    seen: list[tuple[str, int]] = []
    advanced: list[int] = []

    @contextlib.contextmanager
    def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
        seen.append((description, total))
        yield advanced.append

    mib5 = 5 * 1024 * 1024
    small_parts = replace(store.config, multipart_threshold=mib5, multipart_chunksize=mib5)
    chunked = S3ObjectStore(small_parts, store.bucket)
    items = collect_inputs(script, [str(inputs)])
    result = submit(chunked, "job-progress", items, force=False, progress=progress)
    assert seen == [("upload job-progress", result.bytes)]
    assert sum(advanced) == result.bytes
    assert store.get_bytes("job-progress/input/big.bin", limit=7 * 1024 * 1024) == big.read_bytes()
