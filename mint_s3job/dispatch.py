"""`dispatch`: the replacement for the legacy sub-job.sh, run on the cluster's head node.

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

import errno
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
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from mint_common.errors import (
    ConfigError,
    InputError,
    MintError,
    TransferError,
    UnavailableError,
)
from mint_common.files import JsonState, check_relative_name, safe_join
from mint_common.heartbeat import Heartbeat
from mint_common.metrics import serving
from mint_common.signals import GracefulStop
from mint_common.timeutil import now_iso
from mint_s3job import jobdir, layout
from mint_s3job.config import S3JobConfig
from mint_s3job.layout import State
from mint_s3job.manifest import ManifestEntry, parse_manifest, sha256_file
from mint_s3job.metrics import DispatchMetrics
from mint_s3job.slurm import Outcome, SbatchResult, Scheduler, job_comment
from mint_s3job.store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")
BULK_LISTING_THRESHOLD = 64
Objects = dict[str, ObjectInfo]  # name inside the prefix -> object
# The cache's state for a prefix that is not a valid job name: never looked at again.
REFUSED = "REFUSED"
# What `cancelled.json` records when the job never reached Slurm.
CANCELLED_BEFORE_SUBMISSION = "cancelled before submission"


@dataclass
class DispatchReport:
    submitted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    # Jobs left in FILE_UPLOAD because slurmctld could not be reached (or could not say).
    waiting: list[tuple[str, str]] = field(default_factory=list)
    # Jobs whose step failed for a reason that was not theirs for sure: tried again next run.
    failed: list[tuple[str, str]] = field(default_factory=list)
    examined: int = 0
    full_scan: bool = False
    # Seconds from the write of each submitted job's FILE_UPLOAD state object to its sbatch.
    dispatch_latency_s: dict[str, float] = field(default_factory=dict)


def describe(exc: BaseException) -> str:
    """One line for a failure: our own message, or the type and text of anything else."""
    if isinstance(exc, MintError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


# Failures of the head node, not of one job: they never count towards quarantine.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
)


def is_poison(exc: BaseException) -> bool:
    """Could this failure be the job's own doing, so that retrying it forever would not help?
    S3 or the network being down, or the head node's disk, are not."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, (ConnectionError, TimeoutError)):
        return False
    if isinstance(cause, OSError):
        return cause.errno not in _ENVIRONMENT_ERRNOS
    return not isinstance(exc, (UnavailableError, TransferError))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
        self.last_error: Optional[str] = None
        self.failures: dict[str, dict[str, Any]] = {}

    def preflight(self) -> None:
        """Mistakes in the configuration, found before a watch loop that would only log them:
        ConfigError (78) for a work dir that cannot be made or a bucket that does not exist,
        AuthError (77) for credentials S3 refuses."""
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"work directory {self.workdir} cannot be created: {exc.strerror}",
                hint="set 'workdir' to a directory the dispatcher's user can write",
            ) from exc
        self.store.bucket_region()

    # ---- one run ---------------------------------------------------------------------------

    def run_once(self) -> DispatchReport:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cache = self.cache.load(default={}) or {}
        known: dict[str, Any] = dict(cache.get("jobs", {}))
        report = DispatchReport()
        self.controller_down = None
        self.last_error = None
        self.failures = dict(cache.get("failures", {}))
        full = self.clock() - float(cache.get("last_full_scan", 0)) >= self.config.rescan_interval
        listings = self._find_candidates(known, full, report)
        states = self._states(listings, known)
        for prefix in sorted(listings):
            report.examined += 1
            try:
                self._handle(prefix, listings[prefix], states.get(prefix), known, report)
            except Exception as exc:
                # One job's failure never stops the others.
                self.last_error = f"job {prefix}: {describe(exc)}"
                report.failed.append((prefix, describe(exc)))
                log.error(
                    "job %s: %s; trying again next run",
                    prefix,
                    describe(exc),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
        for gone in set(self.failures) - set(known) - set(listings):
            self.failures.pop(gone)
        cache = self.cache.load(default={}) or {}
        cache.update(
            jobs=known,
            heartbeat=Heartbeat.beat(self.clock).to_json(),
            last_run={
                "submitted": len(report.submitted),
                "errors": len(report.errors),
                "waiting": len(report.waiting),
                "failed": len(report.failed),
            },
            last_error=self.controller_down or self.last_error,
            failures=self.failures,
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
            known[prefix] = {"state": REFUSED, "settled": True}
            return
        if state is None:
            return  # no state object yet: a submit in progress or abandoned; not ours to touch
        if state is State.FILE_UPLOAD:
            claim = objects.get(layout.CLAIM)
            if claim is not None and not self._reclaim_from_the_dead(prefix, objects):
                self._warn_if_stale(prefix, claim)
                self._remember(known, prefix, objects, state, settled=False)
                return
            self._dispatch(prefix, objects, report, claimed=claim is not None)
            return
        if state is State.JOB_SUBMIT:
            if layout.CANCEL in objects and layout.CANCELLED not in objects:
                self._cancel_running(prefix, objects, report)
                return
            self._remember(known, prefix, objects, state, settled=False)
            return
        self._remember(known, prefix, objects, state, settled=True)

    def _reclaim_from_the_dead(self, prefix: str, objects: Objects) -> bool:
        """Take over a claim held by a dispatcher process of this host that no longer runs
        (killed in the middle of a step). The local record tells the taker how far it got;
        the If-Match write lets only one taker win."""
        claim = objects[layout.CLAIM]
        try:
            holder = json.loads(self.store.get_bytes(layout.key(prefix, layout.CLAIM)) or b"")
        except ValueError:
            return False
        if not isinstance(holder, dict) or holder.get("host") != self.identity["host"]:
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return False
        if pid == os.getpid() or _process_exists(pid):
            return False
        current = self.store.head(layout.key(prefix, layout.JOB_STAT))
        if current is None or current.etag != objects[layout.JOB_STAT].etag:
            return False  # it finished its step after all, after this run's listing
        body = json.dumps({**self.identity, "claimed_at": now_iso(), "took_over_from": pid})
        key = layout.key(prefix, layout.CLAIM)
        if not self.store.put_bytes(key, body.encode(), if_match=claim.etag):
            return False
        log.warning(
            "job %s: its dispatcher (pid %d on this host) died holding its claim; taking over",
            prefix,
            pid,
        )
        return True

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
        body = json.dumps({**self.identity, "claimed_at": now_iso()}).encode()
        won = self.store.put_bytes(layout.key(prefix, layout.CLAIM), body, if_none_match=True)
        if not won:
            log.info("job %s was claimed by another dispatcher", prefix)
        return won

    def _release(self, prefix: str) -> None:
        self.store.delete_keys([layout.key(prefix, layout.CLAIM)])

    def _dispatch(
        self, prefix: str, objects: Objects, report: DispatchReport, *, claimed: bool = False
    ) -> None:
        stat = objects[layout.JOB_STAT]
        if self.controller_down is not None:
            # Each sbatch would wait for the same dead controller; leave the job unclaimed.
            if claimed:
                self._release(prefix)
            report.waiting.append((prefix, self.controller_down))
            return
        if not claimed and not self._claim(prefix):
            report.lost.append(prefix)
            return
        submission = self._before_sbatch(
            prefix, stat, report, lambda: self._unchanged(prefix, stat)
        )
        if submission is None:
            return
        if submission.get("slurm_job_id"):
            # sbatch had answered when the last dispatcher died: finish its writes, never
            # submit again.
            self._submitted(prefix, stat.etag, str(submission["slurm_job_id"]), report)
            return
        comment = job_comment(prefix, submission["token"])
        # An earlier sbatch whose answer was lost may have queued the job: look before acting.
        # Outside the guard: once Slurm has the job, a failure must keep the claim.
        if submission.get("pending") and self._found_earlier(prefix, stat, comment, report):
            return
        job_dir = self._before_sbatch(
            prefix, stat, report, lambda: self._prepare(prefix, objects, stat, submission, report)
        )
        if job_dir is not None:
            self._forget_failures(prefix)
            self._sbatch(prefix, stat, job_dir, submission, report)

    def _unchanged(self, prefix: str, stat: ObjectInfo) -> Optional[dict[str, Any]]:
        """This submission, or None when the job changed while being claimed."""
        current = self.store.head(layout.key(prefix, layout.JOB_STAT))
        if current is None or current.etag != stat.etag:
            log.info("job %s changed while being claimed; leaving it for the next run", prefix)
            self._release(prefix)
            return None
        return self._submission(prefix, stat)

    def _prepare(
        self,
        prefix: str,
        objects: Objects,
        stat: ObjectInfo,
        submission: dict[str, Any],
        report: DispatchReport,
    ) -> Optional[Path]:
        """The downloaded job directory, or None when the job was cancelled."""
        if layout.CANCEL in objects or self.store.head(layout.key(prefix, layout.CANCEL)):
            self._record_cancel(prefix, CANCELLED_BEFORE_SUBMISSION, None)
            self._set_state(prefix, State.JOB_ERROR, stat.etag)
            self._put_text(
                prefix, layout.SBATCH_OUT, f"mint-s3job: {CANCELLED_BEFORE_SUBMISSION}\n"
            )
            report.cancelled.append(prefix)
            return None
        job_dir = self._download(prefix, objects)
        # Recorded before sbatch: if its answer is lost, the next attempt looks it up.
        update_record(self.workdir, prefix, submission={**submission, "pending": True})
        return job_dir

    def _before_sbatch(
        self, prefix: str, stat: ObjectInfo, report: DispatchReport, step: Callable[[], _T]
    ) -> Optional[_T]:
        """Run a step between the claim and sbatch. The job's own bad data makes it JOB_ERROR;
        any other failure releases the claim (nothing was submitted) for the next run, and
        the same failure `quarantine_after` times in a row makes it JOB_ERROR too."""
        try:
            return step()
        except InputError as exc:
            self._forget_failures(prefix)
            self._fail(prefix, stat.etag, exc.message, report)
        except Exception as exc:
            reason = describe(exc)
            log.warning(
                "job %s: %s; trying again next run",
                prefix,
                reason,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            count = self._count_failure(prefix, reason) if is_poison(exc) else 0
            self.last_error = f"job {prefix}: {reason}"
            if count >= self.config.quarantine_after:
                self._forget_failures(prefix)
                why = f"quarantined after failing {count} times the same way: {reason}"
                self._fail(prefix, stat.etag, why, report)
                return None
            self._release(prefix)
            report.failed.append((prefix, reason))
        return None

    def _count_failure(self, prefix: str, reason: str) -> int:
        earlier = self.failures.get(prefix, {})
        count = int(earlier.get("count", 0)) + 1 if earlier.get("reason") == reason else 1
        self.failures[prefix] = {"reason": reason, "count": count, "at": now_iso()}
        return count

    def _forget_failures(self, prefix: str) -> None:
        self.failures.pop(prefix, None)

    def _sbatch(
        self,
        prefix: str,
        stat: ObjectInfo,
        job_dir: Path,
        submission: dict[str, Any],
        report: DispatchReport,
    ) -> None:
        comment = job_comment(prefix, submission["token"])
        called = self.clock()
        try:
            result = self.scheduler.submit(layout.JOB_SCRIPT, job_dir, comment)
        except UnavailableError as exc:
            self._defer(prefix, exc.message, report)
            return
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
        report.dispatch_latency_s[prefix] = max(0.0, called - stat.last_modified.timestamp())

    def _submission(self, prefix: str, stat: ObjectInfo) -> dict[str, Any]:
        """This submission's comment token: the earlier one while an attempt whose outcome
        was not known is pending for the same state object, else a new one."""
        identity = {"stat_etag": stat.etag, "stat_modified": stat.last_modified.isoformat()}
        record = load_record(self.workdir, prefix)
        earlier = record.get("submission") or {}
        if all(earlier.get(k) == v for k, v in identity.items()):
            if earlier.get("pending"):
                return dict(earlier)
            if record.get("slurm_job_id"):
                return {**earlier, "slurm_job_id": record["slurm_job_id"]}
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
            # The job may already run and may have put symlinks in place of these.
            jobdir.write_file(
                job_dir, layout.SBATCH_OUT, result.output or (result.reason or "") + "\n"
            )
            if result.job_id is not None:
                jobdir.write_file(job_dir, layout.JOB_ID, result.job_id + "\n")
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
        """The job's files into WORKDIR/PREFIX; InputError (JOB_ERROR) when the job's own
        objects cannot make a complete job directory, before anything is written."""
        if layout.JOB_SCRIPT not in objects:
            raise InputError(f"the job has no {layout.JOB_SCRIPT}")
        job_dir = self.workdir / prefix
        names = [
            n
            for n in objects
            if not layout.is_metadata(n) and n not in layout.RESERVED_INPUTS and not n.endswith("/")
        ]
        for name in names:
            check_relative_name(name)  # hostile names are refused before anything is written
        self._check_names(prefix, job_dir, names)
        manifest = self._submit_manifest(prefix, objects)
        missing = sorted(set(manifest) - set(objects))
        if missing:
            raise InputError(
                f"{len(missing)} file(s) listed in the submit manifest are missing from the"
                " bucket: " + ", ".join(repr(layout.key(prefix, n)) for n in missing[:10])
            )
        if os.path.lexists(job_dir):
            self._clear(prefix, job_dir)
        # Recorded first: a failed download is ours to replace next time, not to move aside.
        update_record(
            self.workdir, prefix, download_started=now_iso(), slurm_job_id=None, completed_at=None
        )
        job_dir.mkdir(parents=True)
        targets = [(n, safe_join(job_dir, n)) for n in names]
        for _, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            safe_join(job_dir, target.relative_to(job_dir).as_posix())
        items = [(layout.key(prefix, n), t) for n, t in targets]
        self.store.download_files(items, lambda _n: None)
        self._verify(prefix, objects, manifest, targets)
        with jobdir.opened_job_dir(self.workdir, prefix) as dir_fd:
            files = jobdir.scan(dir_fd)[0] if dir_fd is not None else {}
        update_record(
            self.workdir, prefix, bucket=self.store.bucket, dispatched_at=now_iso(), files=files
        )
        return job_dir

    @staticmethod
    def _check_names(prefix: str, job_dir: Path, names: list[str]) -> None:
        problems = layout.name_problems(names, str(job_dir))
        if problems:
            listed = "; ".join(
                f"{layout.key(prefix, name)!r}: {why}"
                for name, why in sorted(problems.items())[:10]
            )
            raise InputError(f"{len(problems)} key(s) cannot be written as files: {listed}")

    def _submit_manifest(self, prefix: str, objects: Objects) -> dict[str, ManifestEntry]:
        if layout.SUBMIT_MANIFEST not in objects:
            return {}  # a seed-procedure job: S3's own checksums covered the transfer
        data = self.store.get_bytes(layout.key(prefix, layout.SUBMIT_MANIFEST), 64 * 1024 * 1024)
        entries = parse_manifest(data, f"{prefix}/{layout.SUBMIT_MANIFEST}")
        return {
            name: entry
            for name, entry in entries.items()
            if not layout.is_metadata(name) and name not in layout.RESERVED_INPUTS
        }

    def _clear(self, prefix: str, job_dir: Path) -> None:
        """Our own earlier download of this job, never submitted, is replaced; anything else
        (an older job under a reused prefix, with its results) is moved aside."""
        record = load_record(self.workdir, prefix)
        ours = record.get("dispatched_at") or record.get("download_started")
        if ours and not record.get("slurm_job_id"):
            log.info("replacing the earlier, unsubmitted download in %s", job_dir)
            if job_dir.is_symlink():
                job_dir.unlink()
            else:
                shutil.rmtree(job_dir)
            return
        aside = state_dir(self.workdir) / "replaced" / f"{prefix}-{int(self.clock())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        log.warning("moving the old %s aside to %s", job_dir, aside)
        os.rename(job_dir, aside)

    def _verify(
        self,
        prefix: str,
        objects: Objects,
        manifest: dict[str, ManifestEntry],
        targets: list[tuple[str, Path]],
    ) -> None:
        if layout.SUBMIT_MANIFEST not in objects:
            return
        written = objects[layout.SUBMIT_MANIFEST].last_modified
        for name, path in targets:
            entry = manifest.get(name)
            fresh = objects[name].last_modified <= written
            if entry is not None and fresh and sha256_file(path) != entry.sha256:
                # The object itself differs from what submit uploaded: retrying cannot help.
                raise InputError(f"{name}: SHA-256 does not match the submit manifest")

    # ---- cancelling ------------------------------------------------------------------------

    def _record_cancel(self, prefix: str, action: str, job_id: Optional[str]) -> None:
        document = {"action": action, "job_id": job_id, "at": now_iso(), **self.identity}
        self.store.put_bytes(layout.key(prefix, layout.CANCELLED), json.dumps(document).encode())
        log.info("job %s: %s", prefix, action)

    def _cancel_running(self, prefix: str, objects: Objects, report: DispatchReport) -> None:
        job_id_text = self.store.get_bytes(layout.key(prefix, layout.JOB_ID))
        job_id = (job_id_text or b"").decode("utf-8", "replace").strip()
        if not job_id.isdigit():
            log.error("job %s: cancel requested but its job id %r is unusable", prefix, job_id)
            return
        try:
            self.scheduler.cancel(job_id)
        except UnavailableError as exc:
            log.error("job %s: %s", prefix, exc.message)
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
    metrics: Optional[DispatchMetrics] = None,
) -> None:
    """Check the configuration, then dispatch every `interval` seconds until SIGTERM/SIGINT.

    A stop asked for during the checks or a run ends the loop after them (a daemon asked
    to stop exits 0). Whatever one run throws is logged and recorded in the heartbeat,
    and the next run comes (a second signal's SystemExit is no Exception, so it still
    ends the loop). With `metrics`, they are served on the configured port meanwhile."""
    runs = 0
    config = dispatcher.config
    with (
        GracefulStop() as stop,
        serving(
            None if metrics is None else metrics.metrics,
            port=config.metrics_port,
            address=config.metrics_address,
        ),
    ):
        dispatcher.preflight()
        while not stop.stop_requested.is_set():
            report: Optional[DispatchReport] = None
            try:
                report = dispatcher.run_once()
                on_report(report)
            except Exception as exc:
                log.error(
                    "dispatch run failed: %s; next try in %g s",
                    describe(exc),
                    interval,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                _note_error(dispatcher, describe(exc))
            if metrics is not None:
                metrics.record(report, dispatcher.clock())
            runs += 1
            if max_runs is not None and runs >= max_runs:
                return
            stop.wait(interval)


def _note_error(dispatcher: Dispatcher, message: str) -> None:
    try:
        cache = dispatcher.cache.load(default={}) or {}
        cache.update(
            heartbeat=Heartbeat.beat(dispatcher.clock).to_json(),
            last_error=message,
            **dispatcher.identity,
        )
        dispatcher.cache.save(cache)
    except Exception as exc:
        log.error("cannot record the error in %s: %s", dispatcher.cache.path, describe(exc))
