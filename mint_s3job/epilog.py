"""`epilog`: the replacement for the seed's epilog.sh, run by Slurm as EpilogSlurmctld.

It uploads the job directory's new and changed files (compared with what the
dispatcher downloaded), the epilog manifest and the exit status object, and
writes job-aws-stat.txt = JOB_COMPLETE last. Jobs that did not come from the
bucket (their work directory is not under `workdir`) are left alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from mint_common.errors import UsageError
from mint_common.files import JsonState
from mint_s3job import layout
from mint_s3job.dispatch import load_record, snapshot, state_dir, update_record
from mint_s3job.layout import State
from mint_s3job.manifest import describe_files, dump_manifest
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


def find_prefix(workdir: Path, env: Mapping[str, str]) -> Optional[str]:
    """The job's prefix, or None when this Slurm job did not come from the bucket.

    First the comment the dispatcher gave the job (Slurm passes it as SLURM_JOB_COMMENT; it
    works even when the job ends before sbatch has returned its id to the dispatcher), then
    the job's working directory, then the job id in the dispatcher's records.
    """
    job_id = env.get("SLURM_JOB_ID", "").strip()
    commented = prefix_from_comment(env.get("SLURM_JOB_COMMENT", "").strip())
    if commented is not None and layout.is_prefix(commented) and (workdir / commented).is_dir():
        return commented
    work_dir = env.get("SLURM_JOB_WORK_DIR", "").strip()
    if work_dir:
        path = Path(work_dir)
        if path.resolve().parent == workdir.resolve() and path.name != layout.META_DIR:
            return path.name
    # A job script may change its directory (#SBATCH --chdir): find it by its job id.
    for record_path in sorted((state_dir(workdir) / "jobs").glob("*.json")):
        record = JsonState(record_path).load(default={}) or {}
        if str(record.get("slurm_job_id")) == job_id:
            return str(record["prefix"])
    return None


def _changed(job_dir: Path, before: Mapping[str, Any]) -> list[tuple[Path, str]]:
    changed = []
    for name, size_mtime in sorted(snapshot(job_dir).items()):
        # The seed's local files are the dispatcher's, not results (it writes them while
        # the job may already be running).
        if name in layout.RESERVED_INPUTS or layout.is_metadata(name):
            continue
        if before.get(name) != size_mtime:
            changed.append((job_dir / name, name))
    return changed


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
    job_dir = workdir / prefix
    record = load_record(workdir, prefix)
    recorded_id = record.get("slurm_job_id")
    if recorded_id is not None and str(recorded_id) != job_id:
        log.warning(
            "job %s was dispatched as Slurm job %s, epilog is for %s", prefix, recorded_id, job_id
        )
    changed = _changed(job_dir, record.get("files", {})) if job_dir.is_dir() else []
    entries = describe_files(changed)
    store.upload_files(
        [(path, layout.key(prefix, name)) for path, name in changed], lambda _n: None
    )
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
        "slurm_env": {k: env[k] for k in sorted(env) if k.startswith("SLURM_JOB_EXIT")},
    }
    store.put_bytes(layout.key(prefix, layout.EXIT), json.dumps(exit_document).encode())
    # The dispatcher writes the id too, but maybe after this: readers of JOB_COMPLETE need it.
    store.put_bytes(layout.key(prefix, layout.JOB_ID), f"{job_id}\n".encode(), if_none_match=True)
    store.put_bytes(layout.key(prefix, layout.JOB_STAT), layout.state_body(State.JOB_COMPLETE))
    update_record(workdir, prefix, slurm_job_id=recorded_id or job_id, completed_at=completed_at)
    total = sum(e.size for e in entries)
    log.info("job %s (Slurm %s): uploaded %d file(s), JOB_COMPLETE", prefix, job_id, len(entries))
    return EpilogResult(prefix, job_id, len(entries), total, exit_info.exit_code, exit_info.signal)
