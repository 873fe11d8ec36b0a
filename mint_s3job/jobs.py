"""On-premises queries and controls: status, list, wait, cancel, clean."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

from mint_common.errors import InputError, JobFailed, NoInputError, TryAgainLater
from mint_common.timeutil import iso_from_epoch, now_iso
from mint_s3job import layout
from mint_s3job.layout import State
from mint_s3job.store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)
INCOMPLETE = "INCOMPLETE"  # objects but no job-aws-stat.txt: a submit that never committed


@dataclass
class JobStatus:
    prefix: str
    state: str
    job_id: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    cancel_requested: bool = False
    cancelled: Optional[str] = None
    claimed_by: Optional[str] = None
    # When the job's objects were written: ISO 8601 with the UTC offset, None if not (yet).
    # A job is as old as its submit manifest or, without one (the legacy scripts' jobs,
    # an unfinished submit), its oldest object.
    submitted_at: Optional[str] = None
    updated_at: Optional[str] = None
    claimed_at: Optional[str] = None
    completed_at: Optional[str] = None
    files: int = 0
    bytes: int = 0
    reason: Optional[str] = None
    # What the epilog would not upload (symlinks, special files; "." = the job's directory).
    refused: list[str] = field(default_factory=list)

    def times(self) -> dict[str, str]:
        """The `times` mapping of the JSON before the `..._at` fields (kept one release)."""
        moments = {
            "submitted": self.submitted_at,
            "updated": self.updated_at,
            "claimed": self.claimed_at,
            "completed": self.completed_at,
        }
        return {label: moment for label, moment in moments.items() if moment}


def read_json_object(store: ObjectStore, key: str) -> Optional[dict[str, Any]]:
    data = store.get_bytes(key)
    if data is None:
        return None
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"s3://{store.bucket}/{key} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"s3://{store.bucket}/{key}: expected a JSON object")
    return document


def read_state(store: ObjectStore, prefix: str) -> Optional[State]:
    data = store.get_bytes(layout.key(prefix, layout.JOB_STAT))
    return None if data is None else layout.parse_state(data, f"{prefix}/{layout.JOB_STAT}")


def _iso(moment: datetime) -> str:
    return iso_from_epoch(moment.timestamp()) or ""


def _text(store: ObjectStore, prefix: str, name: str) -> Optional[str]:
    data = store.get_bytes(layout.key(prefix, name))
    return None if data is None else data.decode("utf-8", "replace").strip()


def job_status(store: ObjectStore, prefix: str) -> JobStatus:
    layout.check_prefix(prefix)
    objects = {layout.relative_name(prefix, o.key): o for o in store.list_objects(prefix + "/")}
    if not objects:
        raise NoInputError(f"no job {prefix!r} in s3://{store.bucket}")
    status = JobStatus(prefix, INCOMPLETE)
    status.files = sum(1 for name in objects if not layout.is_metadata(name))
    status.bytes = sum(o.size for name, o in objects.items() if not layout.is_metadata(name))
    status.submitted_at = _iso(_submitted(objects))
    status.updated_at = _moment(objects, layout.JOB_STAT)
    status.claimed_at = _moment(objects, layout.CLAIM)
    status.completed_at = _moment(objects, layout.EXIT)
    if layout.JOB_STAT in objects:
        state = read_state(store, prefix)
        status.state = state.value if state else INCOMPLETE
    if layout.JOB_ID in objects:
        status.job_id = _text(store, prefix, layout.JOB_ID) or None
    status.cancel_requested = layout.CANCEL in objects
    _add_claim(store, prefix, objects, status)
    _add_exit(store, prefix, objects, status)
    if status.state == State.JOB_ERROR.value and layout.SBATCH_OUT in objects:
        status.reason = _first_error_line(_text(store, prefix, layout.SBATCH_OUT) or "")
    return status


def _moment(objects: dict[str, ObjectInfo], name: str) -> Optional[str]:
    return _iso(objects[name].last_modified) if name in objects else None


def _add_claim(
    store: ObjectStore, prefix: str, objects: dict[str, ObjectInfo], status: JobStatus
) -> None:
    if layout.CLAIM in objects:
        claim = read_json_object(store, layout.key(prefix, layout.CLAIM)) or {}
        status.claimed_by = str(claim.get("host", "?")) + ":" + str(claim.get("pid", "?"))
    if layout.CANCELLED in objects:
        record = read_json_object(store, layout.key(prefix, layout.CANCELLED)) or {}
        status.cancelled = str(record.get("action", "cancelled"))


def _add_exit(
    store: ObjectStore, prefix: str, objects: dict[str, ObjectInfo], status: JobStatus
) -> None:
    if layout.EXIT not in objects:
        return
    result = read_json_object(store, layout.key(prefix, layout.EXIT)) or {}
    exit_code, sig = result.get("exit_code"), result.get("signal")
    status.exit_code = exit_code if isinstance(exit_code, int) else None
    status.signal = sig if isinstance(sig, int) else None
    refused = result.get("refused")
    status.refused = [str(name) for name in refused] if isinstance(refused, list) else []


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else "no output"


@dataclass(frozen=True)
class JobSummary:
    prefix: str
    state: str
    job_id: Optional[str]
    submitted_at: Optional[str]
    updated_at: Optional[str]
    files: int
    bytes: int
    cancel_requested: bool


def list_jobs(store: ObjectStore, workers: int = 16) -> list[JobSummary]:
    """Every job in the bucket from one listing, newest submission first.

    Only the tiny state and job-id objects are read.
    """
    grouped: dict[str, dict[str, ObjectInfo]] = defaultdict(dict)
    for info in store.list_objects(""):
        prefix, sep, name = info.key.partition("/")
        if sep and name and not prefix.startswith("."):
            grouped[prefix][name] = info

    def summarise(prefix: str) -> JobSummary:
        objects = grouped[prefix]
        state, job_id, updated = INCOMPLETE, None, None
        if layout.JOB_STAT in objects:
            read = read_state(store, prefix)
            state = read.value if read else INCOMPLETE
            updated = _iso(objects[layout.JOB_STAT].last_modified)
        if layout.JOB_ID in objects:
            job_id = _text(store, prefix, layout.JOB_ID) or None
        files = [o for n, o in objects.items() if not layout.is_metadata(n)]
        return JobSummary(
            prefix,
            state,
            job_id,
            _iso(_submitted(objects)),
            updated,
            len(files),
            sum(o.size for o in files),
            layout.CANCEL in objects,
        )

    def newest_first(prefix: str) -> tuple[datetime, str]:
        return _submitted(grouped[prefix]), prefix

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(summarise, sorted(grouped, key=newest_first, reverse=True)))


def _submitted(objects: dict[str, ObjectInfo]) -> datetime:
    manifest = objects.get(layout.SUBMIT_MANIFEST)
    if manifest is not None:
        return manifest.last_modified
    return min(o.last_modified for o in objects.values())


def outcome(status: JobStatus) -> Optional[JobFailed]:
    """None when the job succeeded; the failure otherwise (only for finished jobs)."""
    if status.cancelled:
        return JobFailed(f"job {status.prefix} was cancelled ({status.cancelled})")
    if status.state == State.JOB_ERROR.value:
        return JobFailed(f"job {status.prefix} could not be submitted: {status.reason or '?'}")
    if "." in status.refused:
        return JobFailed(
            f"job {status.prefix} (Slurm job {status.job_id}) replaced its job directory with"
            " a symlink or file: no results were uploaded"
        )
    if status.exit_code not in (None, 0) or status.signal not in (None, 0):
        return JobFailed(
            f"job {status.prefix} (Slurm job {status.job_id}) failed: exit code"
            f" {status.exit_code}, signal {status.signal}",
            job_exit_status=status.exit_code,
        )
    return None


TERMINAL = (State.JOB_COMPLETE.value, State.JOB_ERROR.value)


def require_success(final: JobStatus) -> JobStatus:
    """The finished job's status if it succeeded; raise its JobFailed (exit 1) otherwise."""
    failure = outcome(final)
    if failure is not None:
        raise failure
    if final.exit_code is None:
        log.warning(
            "job %s finished, but no exit status was recorded (was the EpilogSlurmctld"
            " the legacy epilog.sh instead of mint-s3job epilog?)",
            final.prefix,
        )
    return final


def wait_until_done(
    store: ObjectStore,
    prefix: str,
    *,
    timeout: Optional[float],
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_state: Callable[[str], None] = lambda _state: None,
) -> JobStatus:
    """Poll the state object until the job ends, whichever way; TryAgainLater (75) on timeout.

    `on_state` hears the state after every look (a display shows the time of the next one)."""
    status = job_status(store, prefix)
    if status.state == INCOMPLETE:
        raise NoInputError(
            f"job {prefix!r} has no {layout.JOB_STAT}: its submit never finished, it will not run"
        )
    deadline = None if timeout is None else clock() + timeout
    last = status.state
    on_state(last)
    while last not in TERMINAL:
        if deadline is not None and clock() >= deadline:
            raise TryAgainLater(f"job {prefix} is still {last} after {timeout:g} s")
        pause = interval if deadline is None else max(0.0, min(interval, deadline - clock()))
        sleep(pause)
        state = read_state(store, prefix)
        last = state.value if state else INCOMPLETE
        on_state(last)
    return job_status(store, prefix)


def cancel_job(store: ObjectStore, prefix: str) -> str:
    """Write the cancel marker; the dispatcher acts on it. Returns the state it found."""
    layout.check_prefix(prefix)
    state = read_state(store, prefix)
    if state is None:
        raise NoInputError(f"no committed job {prefix!r} in s3://{store.bucket}")
    if state.value in TERMINAL:
        log.info("job %s is already %s; nothing to cancel", prefix, state.value)
        return state.value
    marker = {
        "requested_at": now_iso(),
        "host": socket.gethostname(),
    }
    store.put_bytes(layout.key(prefix, layout.CANCEL), json.dumps(marker).encode())
    log.info("cancel requested for %s (state %s)", prefix, state.value)
    return state.value


def clean_job(store: ObjectStore, prefix: str, *, force: bool) -> int:
    """Delete every object of the job (the state object first); returns how many."""
    layout.check_prefix(prefix)
    objects = store.list_objects(prefix + "/")
    if not objects:
        raise NoInputError(f"no job {prefix!r} in s3://{store.bucket}")
    keys = {o.key for o in objects}
    stat_key = layout.key(prefix, layout.JOB_STAT)
    if not force and stat_key in keys:
        state = read_state(store, prefix)
        active = state is State.JOB_SUBMIT or (
            state is State.FILE_UPLOAD and layout.key(prefix, layout.CLAIM) in keys
        )
        if active:
            raise TryAgainLater(
                f"job {prefix} is being run ({state.value if state else '?'}); not deleting it",
                hint=f"mint-s3job cancel {prefix} and wait, or clean --force",
            )
    if stat_key in keys:
        store.delete_keys([stat_key])
    store.delete_keys(sorted(keys - {stat_key}))
    return len(keys)
