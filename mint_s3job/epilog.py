"""`epilog`: the replacement for the seed's epilog.sh, run by Slurm as EpilogSlurmctld.

It uploads the job directory's new and changed files (compared with what the
dispatcher downloaded), the epilog manifest and the exit status object, and
writes job-aws-stat.txt = JOB_COMPLETE last. Jobs that did not come from the
bucket (their work directory is not under `workdir`) are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Optional

from mint_common.errors import UnsafePathError, UsageError
from mint_common.files import JsonState
from mint_s3job import jobdir, layout
from mint_s3job.dispatch import load_record, state_dir, update_record
from mint_s3job.layout import State
from mint_s3job.manifest import ManifestEntry, dump_manifest
from mint_s3job.slurm import prefix_from_comment
from mint_s3job.store import ObjectStore

log = logging.getLogger(__name__)
_CODE2 = re.compile(r"^\s*(\d+):(\d+)\s*$")


@dataclass(frozen=True)
class ExitInfo:
    exit_code: Optional[int]
    signal: Optional[int]


def parse_exit(env: Mapping[str, str]) -> ExitInfo:
    """SLURM_JOB_EXIT_CODE2 (`exit:signal`) when present, else SLURM_JOB_EXIT_CODE (a wait
    status, as from waitpid)."""
    code2 = _CODE2.match(env.get("SLURM_JOB_EXIT_CODE2", ""))
    if code2:
        return ExitInfo(int(code2.group(1)), int(code2.group(2)))
    raw = env.get("SLURM_JOB_EXIT_CODE", "").strip()
    if raw.isdigit():
        status = int(raw)
        return ExitInfo((status >> 8) & 0xFF, status & 0x7F)
    return ExitInfo(None, None)


@dataclass(frozen=True)
class EpilogResult:
    prefix: str
    slurm_job_id: str
    uploaded: int
    bytes: int
    exit_code: Optional[int]
    signal: Optional[int]
    # Not uploaded: symlinks and special files, or "." when the job dir itself was replaced.
    refused: list[str]


def find_prefix(workdir: Path, env: Mapping[str, str]) -> Optional[str]:
    """The job's prefix, or None when this Slurm job did not come from the bucket.

    First the comment the dispatcher gave the job (Slurm passes it as SLURM_JOB_COMMENT; it
    works even when the job ends before sbatch has returned its id to the dispatcher), then
    the job's working directory, then the job id in the dispatcher's records.
    """
    job_id = env.get("SLURM_JOB_ID", "").strip()
    commented = prefix_from_comment(env.get("SLURM_JOB_COMMENT", "").strip())
    # lexists, not is_dir: a job dir replaced by a symlink is still this job's, to be refused.
    if (
        commented is not None
        and layout.is_prefix(commented)
        and os.path.lexists(workdir / commented)
    ):
        return commented
    work_dir = env.get("SLURM_JOB_WORK_DIR", "").strip()
    if work_dir:
        # Compared as written: resolving would follow a symlink the job put in its place.
        path = Path(os.path.normpath(work_dir))
        if path.parent in (workdir, workdir.resolve()) and layout.is_prefix(path.name):
            return path.name
    # A job script may change its directory (#SBATCH --chdir): find it by its job id.
    for record_path in sorted((state_dir(workdir) / "jobs").glob("*.json")):
        record = JsonState(record_path).load(default={}) or {}
        if str(record.get("slurm_job_id")) == job_id:
            return str(record["prefix"])
    return None


UPLOAD_BATCH = 256  # files held open at once


def _changed(current: Mapping[str, list[int]], before: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name, size_mtime in sorted(current.items())
        # The seed's local files are the dispatcher's, not results (it writes them while
        # the job may already be running).
        if name not in layout.RESERVED_INPUTS
        and not layout.is_metadata(name)
        and before.get(name) != size_mtime
    ]


def _hash(handle: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(1024 * 1024):
        digest.update(block)
        size += len(block)
    handle.seek(0)
    return size, digest.hexdigest()


def _upload_results(
    store: ObjectStore, prefix: str, dir_fd: int, names: list[str], refused: list[str]
) -> list[ManifestEntry]:
    """Upload what is opened, not what a path names at upload time (see jobdir)."""
    entries: list[ManifestEntry] = []
    for start in range(0, len(names), UPLOAD_BATCH):
        with contextlib.ExitStack() as stack:
            items: list[tuple[BinaryIO, str]] = []
            for name in names[start : start + UPLOAD_BATCH]:
                try:
                    handle = stack.enter_context(jobdir.open_file(dir_fd, name))
                except UnsafePathError as exc:
                    log.error("job %s: refusing %s", prefix, exc.message)
                    refused.append(name)
                    continue
                size, sha256 = _hash(handle)
                entries.append(ManifestEntry(name, size, sha256))
                items.append((handle, layout.key(prefix, name)))
            store.upload_files(items, lambda _n: None)
    return entries


def _collect_and_upload(
    store: ObjectStore, workdir: Path, prefix: str, before: Mapping[str, Any]
) -> tuple[list[ManifestEntry], list[str]]:
    """(what was uploaded, what was refused: symlinks, special files, a replaced job dir)."""
    try:
        with jobdir.opened_job_dir(workdir, prefix) as dir_fd:
            if dir_fd is None:
                return [], []
            current, refused = jobdir.scan(dir_fd)
            for name in refused:
                log.warning("job %s: not uploading %s (a symlink or special file)", prefix, name)
            entries = _upload_results(store, prefix, dir_fd, _changed(current, before), refused)
            return entries, refused
    except UnsafePathError as exc:
        log.error("job %s: %s", prefix, exc.message)
        return [], ["."]


def run_epilog(store: ObjectStore, workdir: Path, env: Mapping[str, str]) -> Optional[EpilogResult]:
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        raise UsageError(
            "SLURM_JOB_ID is not set: mint-s3job epilog is meant to be run by Slurm"
            " as EpilogSlurmctld"
        )
    prefix = find_prefix(workdir, env)
    if prefix is None:
        log.debug("Slurm job %s did not come from s3://%s; nothing to do", job_id, store.bucket)
        return None
    layout.check_prefix(prefix)
    record = load_record(workdir, prefix)
    recorded_id = record.get("slurm_job_id")
    if recorded_id is not None and str(recorded_id) != job_id:
        log.warning(
            "job %s was dispatched as Slurm job %s, epilog is for %s", prefix, recorded_id, job_id
        )
    entries, refused = _collect_and_upload(store, workdir, prefix, record.get("files", {}))
    exit_info = parse_exit(env)
    completed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    store.put_bytes(
        layout.key(prefix, layout.EPILOG_MANIFEST),
        dump_manifest("epilog", entries, prefix=prefix, slurm_job_id=job_id),
    )
    exit_document = {
        "slurm_job_id": job_id,
        "exit_code": exit_info.exit_code,
        "signal": exit_info.signal,
        "completed_at": completed_at,
        "refused": refused,
        "slurm_env": {k: env[k] for k in sorted(env) if k.startswith("SLURM_JOB_EXIT")},
    }
    store.put_bytes(layout.key(prefix, layout.EXIT), json.dumps(exit_document).encode())
    # The dispatcher writes the id too, but maybe after this: readers of JOB_COMPLETE need it.
    store.put_bytes(layout.key(prefix, layout.JOB_ID), f"{job_id}\n".encode(), if_none_match=True)
    store.put_bytes(layout.key(prefix, layout.JOB_STAT), layout.state_body(State.JOB_COMPLETE))
    update_record(workdir, prefix, slurm_job_id=recorded_id or job_id, completed_at=completed_at)
    total = sum(e.size for e in entries)
    log.info("job %s (Slurm %s): uploaded %d file(s), JOB_COMPLETE", prefix, job_id, len(entries))
    return EpilogResult(
        prefix, job_id, len(entries), total, exit_info.exit_code, exit_info.signal, refused
    )
