"""`dispatch`: the replacement for the seed's sub-job.sh, run on the cluster's head node.

Finding work costs one listing of the bucket's top-level prefixes, plus one small
listing per job that is new or still active: finished jobs are remembered in a
cache in the work directory, so the cost does not grow with the bucket's history.
Every `rescan_interval` seconds the whole bucket is listed again to catch a prefix
that was cleaned and reused.

Each job is claimed with a conditional write (`If-None-Match: *`) of
`PREFIX/.mint-s3job/claim.json`: exactly one dispatcher wins, however many run.
State changes after sbatch are written with `If-Match` on the state object's ETag,
so a fast epilog's JOB_COMPLETE is never overwritten by a late JOB_SUBMIT.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from mint_common.errors import (
    InputError,
    MintError,
    TransferError,
    UnavailableError,
    UnsafePathError,
)
from mint_common.files import JsonState, safe_join
from mint_common.signals import GracefulStop
from mint_s3job import layout
from mint_s3job.config import S3JobConfig
from mint_s3job.layout import State
from mint_s3job.manifest import parse_manifest, sha256_file
from mint_s3job.slurm import Outcome, SbatchResult, Scheduler, job_comment
from mint_s3job.store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)
BULK_LISTING_THRESHOLD = 64
Objects = dict[str, ObjectInfo]  # name inside the prefix -> object


@dataclass
class DispatchReport:
    submitted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    # Jobs left in FILE_UPLOAD because slurmctld could not be reached (or could not say).
    waiting: list[tuple[str, str]] = field(default_factory=list)
    examined: int = 0
    full_scan: bool = False


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def state_dir(workdir: Path) -> Path:
    return workdir / layout.META_DIR


def job_record_path(workdir: Path, prefix: str) -> Path:
    return state_dir(workdir) / "jobs" / f"{prefix}.json"


def load_record(workdir: Path, prefix: str) -> dict[str, Any]:
    return JsonState(job_record_path(workdir, prefix)).load(default={}) or {}


def update_record(workdir: Path, prefix: str, **values: Any) -> dict[str, Any]:
    """Read, update and save a job's record under a lock: the dispatcher and the epilog
    (a very short job's epilog runs while sbatch is still returning) both write it."""
    path = job_record_path(workdir, prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = JsonState(path)
        document = record.load(default={}) or {}
        document.update(prefix=prefix, **values)
        record.save(document)
    return document


def snapshot(job_dir: Path) -> dict[str, list[int]]:
    """name -> [size, mtime_ns] of every regular file (symlinks are not followed)."""
    files: dict[str, list[int]] = {}
    for current, dirnames, filenames in os.walk(job_dir):
        dirnames[:] = [d for d in dirnames if not (Path(current) / d).is_symlink()]
        for name in filenames:
            path = Path(current) / name
            info = path.lstat()
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(job_dir).as_posix()] = [info.st_size, info.st_mtime_ns]
    return files


class Dispatcher:
    def __init__(
        self,
        store: ObjectStore,
        scheduler: Scheduler,
        workdir: Path,
        config: S3JobConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.workdir = workdir
        self.config = config
        self.clock = clock
        self.cache = JsonState(state_dir(workdir) / "dispatch-state.json")
        self.identity = {"host": socket.gethostname(), "pid": os.getpid()}
        self.controller_down: Optional[str] = None

    # ---- one run ---------------------------------------------------------------------------

    def run_once(self) -> DispatchReport:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cache = self.cache.load(default={}) or {}
        known: dict[str, Any] = dict(cache.get("jobs", {}))
        report = DispatchReport()
        self.controller_down = None
        full = self.clock() - float(cache.get("last_full_scan", 0)) >= self.config.rescan_interval
        listings = self._find_candidates(known, full, report)
        states = self._states(listings, known)
        for prefix in sorted(listings):
            report.examined += 1
            try:
                self._handle(prefix, listings[prefix], states.get(prefix), known, report)
            except (UnavailableError, TransferError) as exc:
                log.warning("job %s: %s; trying again next run", prefix, exc)
        cache = self.cache.load(default={}) or {}
        cache.update(
            jobs=known,
            heartbeat=_now_iso(),
            last_run={
                "submitted": len(report.submitted),
                "errors": len(report.errors),
                "waiting": len(report.waiting),
            },
            last_error=self.controller_down,
            **self.identity,
        )
        if full:
            cache["last_full_scan"] = self.clock()
        self.cache.save(cache)
        return report

    def _find_candidates(
        self, known: dict[str, Any], full: bool, report: DispatchReport
    ) -> dict[str, Objects]:
        if full:
            report.full_scan = True
            listings = self._list_all()
            for gone in set(known) - set(listings):
                known.pop(gone)
            return listings
        prefixes = [p for p in self.store.list_prefixes() if not p.startswith(".")]
        for gone in set(known) - set(prefixes):
            known.pop(gone)
        todo = [p for p in prefixes if not known.get(p, {}).get("settled")]
        if len(todo) > BULK_LISTING_THRESHOLD:
            everything = self._list_all()
            return {p: everything.get(p, {}) for p in todo}
        return {
            p: {layout.relative_name(p, o.key): o for o in self.store.list_objects(p + "/")}
            for p in todo
        }

    def _list_all(self) -> dict[str, Objects]:
        grouped: dict[str, Objects] = defaultdict(dict)
        for info in self.store.list_objects(""):
            prefix, sep, name = info.key.partition("/")
            if sep and name and not prefix.startswith("."):
                grouped[prefix][name] = info
        return dict(grouped)

    def _states(self, listings: Mapping[str, Objects], known: dict[str, Any]) -> dict[str, State]:
        """The state word of each candidate; read only when its state object changed."""
        to_read = []
        states: dict[str, State] = {}
        for prefix, objects in listings.items():
            stat = objects.get(layout.JOB_STAT)
            if stat is None:
                continue
            entry = known.get(prefix, {})
            if (
                entry.get("etag") == stat.etag
                and entry.get("modified") == stat.last_modified.isoformat()
                and entry.get("state") in State._value2member_map_
            ):
                states[prefix] = State(entry["state"])
            elif layout.CLAIM in objects and (
                layout.EXIT in objects or layout.CANCELLED in objects
            ):
                states[prefix] = State.JOB_COMPLETE  # ours and finished: no need to read it
            else:
                to_read.append(prefix)

        def read(prefix: str) -> tuple[str, Optional[State]]:
            data = self.store.get_bytes(layout.key(prefix, layout.JOB_STAT))
            if data is None:
                return prefix, None
            try:
                return prefix, layout.parse_state(data, f"{prefix}/{layout.JOB_STAT}")
            except InputError as exc:
                log.warning("%s; ignoring that job", exc.message)
                return prefix, None

        with ThreadPoolExecutor(max_workers=8) as pool:
            for prefix, state in pool.map(read, to_read):
                if state is not None:
                    states[prefix] = state
        return states

    def _remember(
        self, known: dict[str, Any], prefix: str, objects: Objects, state: State, settled: bool
    ) -> None:
        stat = objects.get(layout.JOB_STAT)
        known[prefix] = {
            "state": state.value,
            "etag": stat.etag if stat else None,
            "modified": stat.last_modified.isoformat() if stat else None,
            "settled": settled,
        }

    def _handle(
        self,
        prefix: str,
        objects: Objects,
        state: Optional[State],
        known: dict[str, Any],
        report: DispatchReport,
    ) -> None:
        try:
            layout.check_prefix(prefix)
        except InputError as exc:
            log.warning("ignoring prefix %r: %s", prefix, exc.message)
            known[prefix] = {"state": "REFUSED", "settled": True}
            return
        if state is None:
            return  # no state object yet: a submit in progress or abandoned; not ours to touch
        if state is State.FILE_UPLOAD:
            if layout.CLAIM in objects:
                self._warn_if_stale(prefix, objects[layout.CLAIM])
                self._remember(known, prefix, objects, state, settled=False)
                return
            self._dispatch(prefix, objects, report)
            return
        if state is State.JOB_SUBMIT:
            if layout.CANCEL in objects and layout.CANCELLED not in objects:
                self._cancel_running(prefix, objects, report)
                return
            self._remember(known, prefix, objects, state, settled=False)
            return
        self._remember(known, prefix, objects, state, settled=True)

    def _warn_if_stale(self, prefix: str, claim: ObjectInfo) -> None:
        age = self.clock() - claim.last_modified.timestamp()
        if age > self.config.claim_stale_after:
            log.warning(
                "job %s was claimed %.0f s ago and is still FILE_UPLOAD: its dispatcher may have"
                " died; inspect it with 'mint-s3job status %s'",
                prefix,
                age,
                prefix,
            )

    # ---- claiming and submitting -----------------------------------------------------------

    def _claim(self, prefix: str) -> bool:
        body = json.dumps({**self.identity, "claimed_at": _now_iso()}).encode()
        won = self.store.put_bytes(layout.key(prefix, layout.CLAIM), body, if_none_match=True)
        if not won:
            log.info("job %s was claimed by another dispatcher", prefix)
        return won

    def _release(self, prefix: str) -> None:
        self.store.delete_keys([layout.key(prefix, layout.CLAIM)])

    def _dispatch(self, prefix: str, objects: Objects, report: DispatchReport) -> None:
        stat = objects[layout.JOB_STAT]
        if self.controller_down is not None:
            # Each sbatch would wait for the same dead controller; leave the job unclaimed.
            report.waiting.append((prefix, self.controller_down))
            return
        if not self._claim(prefix):
            report.lost.append(prefix)
            return
        current = self.store.head(layout.key(prefix, layout.JOB_STAT))
        if current is None or current.etag != stat.etag:
            log.info("job %s changed while being claimed; leaving it for the next run", prefix)
            self._release(prefix)
            return
        submission = self._submission(prefix, stat)
        comment = job_comment(prefix, submission["token"])
        # An earlier sbatch whose answer was lost may have queued the job: look before acting.
        if submission.get("pending") and self._found_earlier(prefix, stat, comment, report):
            return
        if layout.CANCEL in objects or self.store.head(layout.key(prefix, layout.CANCEL)):
            self._record_cancel(prefix, "cancelled before submission", None)
            self._set_state(prefix, State.JOB_ERROR, stat.etag)
            self._put_text(prefix, layout.SBATCH_OUT, "mint-s3job: cancelled before submission\n")
            report.cancelled.append(prefix)
            return
        try:
            job_dir = self._download(prefix, objects)
            # Recorded before sbatch: if its answer is lost, the next attempt looks it up.
            update_record(self.workdir, prefix, submission={**submission, "pending": True})
        except (UnavailableError, TransferError, OSError) as exc:
            self._release(prefix)  # nothing was submitted
            raise UnavailableError(f"preparing job {prefix} failed: {exc}") from exc
        except MintError as exc:
            self._fail(prefix, stat.etag, exc.message, report)
            return
        self._sbatch(prefix, stat, job_dir, submission, report)

    def _sbatch(
        self,
        prefix: str,
        stat: ObjectInfo,
        job_dir: Path,
        submission: dict[str, Any],
        report: DispatchReport,
    ) -> None:
        comment = job_comment(prefix, submission["token"])
        result = self.scheduler.submit(layout.JOB_SCRIPT, job_dir, comment)
        if result.outcome is Outcome.UNCERTAIN:
            log.warning("job %s: %s; looking it up by its comment", prefix, result.reason)
            if not self._found_earlier(prefix, stat, comment, report):
                self._defer(prefix, result.reason or "sbatch gave no answer", report)
            return
        if result.outcome is Outcome.UNREACHABLE:
            self._defer(prefix, result.reason or "slurmctld unreachable", report)
            return
        # Local first: the epilog may run before the S3 writes below are done.
        self._note_locally(prefix, job_dir, result, {**submission, "pending": False})
        self._put_text(prefix, layout.SBATCH_OUT, result.output or (result.reason or "") + "\n")
        if result.job_id is None:
            self._fail(prefix, stat.etag, result.reason or "sbatch failed", report, written=True)
            return
        self._submitted(prefix, stat.etag, result.job_id, report)

    def _submission(self, prefix: str, stat: ObjectInfo) -> dict[str, Any]:
        """This submission's comment token: the earlier one while an attempt whose outcome
        was not known is pending for the same state object, else a new one."""
        identity = {"stat_etag": stat.etag, "stat_modified": stat.last_modified.isoformat()}
        earlier = load_record(self.workdir, prefix).get("submission") or {}
        if earlier.get("pending") and all(earlier.get(k) == v for k, v in identity.items()):
            return dict(earlier)
        return {**identity, "token": secrets.token_hex(8), "pending": False}

    def _found_earlier(
        self, prefix: str, stat: ObjectInfo, comment: str, report: DispatchReport
    ) -> bool:
        """True when the job was dealt with: found in Slurm (adopted), or the controller could
        not say (left waiting). False when Slurm certainly has no such job."""
        try:
            job_id = self.scheduler.find(comment)
        except UnavailableError as exc:
            self._defer(prefix, f"cannot tell whether it was queued: {exc.message}", report)
            return True
        if job_id is None:
            log.info("job %s: Slurm has no job with comment %s; submitting it", prefix, comment)
            return False
        log.warning("job %s: an earlier sbatch did queue it, as Slurm job %s", prefix, job_id)
        found = SbatchResult(
            job_id,
            f"Submitted batch job {job_id}\n(found by its comment {comment}: sbatch's answer"
            " was lost)\n",
        )
        submission = load_record(self.workdir, prefix).get("submission", {})
        self._note_locally(prefix, self.workdir / prefix, found, {**submission, "pending": False})
        self._put_text(prefix, layout.SBATCH_OUT, found.output)
        self._submitted(prefix, stat.etag, job_id, report)
        return True

    def _submitted(self, prefix: str, stat_etag: str, job_id: str, report: DispatchReport) -> None:
        self._put_text(prefix, layout.JOB_ID, job_id + "\n")
        self._set_state(prefix, State.JOB_SUBMIT, stat_etag)
        log.info("job %s submitted as Slurm job %s", prefix, job_id)
        report.submitted.append((prefix, job_id))

    def _defer(self, prefix: str, reason: str, report: DispatchReport) -> None:
        """Not the job's fault: release the claim so the next run tries again."""
        self._release(prefix)
        self.controller_down = f"slurmctld unreachable: {reason}"
        log.warning("job %s left waiting (FILE_UPLOAD): %s; trying again next run", prefix, reason)
        report.waiting.append((prefix, reason))

    def _note_locally(
        self, prefix: str, job_dir: Path, result: SbatchResult, submission: dict[str, Any]
    ) -> None:
        """The record, and what the seed's sub-job.sh leaves in the job directory (sbatch's
        output and the job id). sbatch has run: a local failure must not stop the S3 writes."""
        try:
            update_record(self.workdir, prefix, slurm_job_id=result.job_id, submission=submission)
            if job_dir.is_dir():
                text = result.output or (result.reason or "") + "\n"
                (job_dir / layout.SBATCH_OUT).write_text(text, encoding="utf-8")
                if result.job_id is not None:
                    (job_dir / layout.JOB_ID).write_text(result.job_id + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("job %s: cannot write its local files: %s", prefix, exc)

    def _fail(
        self,
        prefix: str,
        stat_etag: str,
        reason: str,
        report: DispatchReport,
        *,
        written: bool = False,
    ) -> None:
        log.error("job %s: %s", prefix, reason)
        if not written:
            self._put_text(prefix, layout.SBATCH_OUT, f"mint-s3job: error: {reason}\n")
        self._set_state(prefix, State.JOB_ERROR, stat_etag)
        report.errors.append((prefix, reason))

    def _set_state(self, prefix: str, state: State, expected_etag: str) -> None:
        written = self.store.put_bytes(
            layout.key(prefix, layout.JOB_STAT), layout.state_body(state), if_match=expected_etag
        )
        if not written:
            log.info(
                "job %s: state changed meanwhile (epilog?); not writing %s", prefix, state.value
            )

    def _put_text(self, prefix: str, name: str, text: str) -> None:
        self.store.put_bytes(layout.key(prefix, name), text.encode("utf-8"))

    def _download(self, prefix: str, objects: Objects) -> Path:
        if layout.JOB_SCRIPT not in objects:
            raise InputError(f"the job has no {layout.JOB_SCRIPT}")
        job_dir = self.workdir / prefix
        if job_dir.exists():
            self._clear(prefix, job_dir)
        names = [
            n
            for n in objects
            if not layout.is_metadata(n) and n not in layout.RESERVED_INPUTS and not n.endswith("/")
        ]
        job_dir.mkdir(parents=True)
        targets = [(n, safe_join(job_dir, n)) for n in names]  # refuses hostile names first
        for _, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            safe_join(job_dir, target.relative_to(job_dir).as_posix())
        items = [(layout.key(prefix, n), t) for n, t in targets]
        self.store.download_files(items, lambda _n: None)
        self._verify(prefix, objects, targets)
        update_record(
            self.workdir,
            prefix,
            bucket=self.store.bucket,
            dispatched_at=_now_iso(),
            files=snapshot(job_dir),
            slurm_job_id=None,
            completed_at=None,
        )
        return job_dir

    def _clear(self, prefix: str, job_dir: Path) -> None:
        """Our own earlier download of this job, never submitted, is replaced; anything else
        (an older job under a reused prefix, with its results) is moved aside."""
        record = load_record(self.workdir, prefix)
        if record.get("dispatched_at") and not record.get("slurm_job_id"):
            log.info("replacing the earlier, unsubmitted download in %s", job_dir)
            shutil.rmtree(job_dir)
            return
        aside = state_dir(self.workdir) / "replaced" / f"{prefix}-{int(self.clock())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        log.warning("moving the old %s aside to %s", job_dir, aside)
        shutil.move(str(job_dir), str(aside))

    def _verify(self, prefix: str, objects: Objects, targets: list[tuple[str, Path]]) -> None:
        manifest_info = objects.get(layout.SUBMIT_MANIFEST)
        if manifest_info is None:
            return  # a seed-procedure job: S3's own checksums covered the transfer
        data = self.store.get_bytes(layout.key(prefix, layout.SUBMIT_MANIFEST), 64 * 1024 * 1024)
        entries = parse_manifest(data, f"{prefix}/{layout.SUBMIT_MANIFEST}")
        for name, path in targets:
            entry = entries.get(name)
            fresh = objects[name].last_modified <= manifest_info.last_modified
            if entry is not None and fresh and sha256_file(path) != entry.sha256:
                # The object itself differs from what submit uploaded: retrying cannot help.
                raise InputError(f"{name}: SHA-256 does not match the submit manifest")

    # ---- cancelling ------------------------------------------------------------------------

    def _record_cancel(self, prefix: str, action: str, job_id: Optional[str]) -> None:
        document = {"action": action, "job_id": job_id, "at": _now_iso(), **self.identity}
        self.store.put_bytes(layout.key(prefix, layout.CANCELLED), json.dumps(document).encode())
        log.info("job %s: %s", prefix, action)

    def _cancel_running(self, prefix: str, objects: Objects, report: DispatchReport) -> None:
        job_id_text = self.store.get_bytes(layout.key(prefix, layout.JOB_ID))
        job_id = (job_id_text or b"").decode("utf-8", "replace").strip()
        if not job_id.isdigit():
            log.error("job %s: cancel requested but its job id %r is unusable", prefix, job_id)
            return
        ok, text = self.scheduler.cancel(job_id)
        if not ok:
            log.error("job %s: scancel %s failed: %s", prefix, job_id, text)
            return
        self._record_cancel(prefix, f"scancel {job_id}", job_id)
        self._set_state(prefix, State.JOB_ERROR, objects[layout.JOB_STAT].etag)
        report.cancelled.append(prefix)


def watch(
    dispatcher: Dispatcher,
    interval: float,
    *,
    on_report: Callable[[DispatchReport], None],
    max_runs: Optional[int] = None,
) -> None:
    """Dispatch every `interval` seconds until SIGTERM/SIGINT; transient errors do not stop it."""
    runs = 0
    with GracefulStop() as stop:
        while not stop.stop_requested.is_set():
            try:
                on_report(dispatcher.run_once())
            except (UnavailableError, TransferError, UnsafePathError, OSError) as exc:
                log.error("dispatch run failed: %s; next try in %g s", exc, interval)
                _note_error(dispatcher, str(exc))
            runs += 1
            if max_runs is not None and runs >= max_runs:
                return
            stop.wait(interval)


def _note_error(dispatcher: Dispatcher, message: str) -> None:
    cache = dispatcher.cache.load(default={}) or {}
    cache.update(heartbeat=_now_iso(), last_error=message, **dispatcher.identity)
    dispatcher.cache.save(cache)
