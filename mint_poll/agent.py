"""The polling agent: fetch a calculation, run it, always report back.

Per calculation the agent walks the remote-side sequence

    calc-params -> calc-params-complete -> calc-start -> (run) -> calc-end
    -> send-results -> end-send

saving a CalcRecord after every step. When a step is refused, or when an
earlier run was killed mid-sequence, the server's `calc-progress` says which
step comes next (`_align`), so nothing is done twice and nothing is skipped:
a command that had finished is not run again, results are sent once. If the
server no longer knows the accept_id (quirk 6) the record is marked lost,
its working directory kept, and polling goes on.

An accept_id is checked before anything is made from it: one that is not a plain
name (`a/../../x`, `..`, a leading dot, a control character, too long) never touches
the disk; the calculation is reported abnormal with the reason (`_refuse_offer`).

`run_forever` survives anything one step throws (any Exception; a second signal's
exit is not one): the error is logged (the traceback with -v), kept as `last_error`
in the heartbeat, and the loop goes on. Work on one calculation is isolated: its
unexpected error is noted in its record and the other calculations go on. One that
fails the same way QUARANTINE_AFTER times in a row is quarantined: its record is
marked failed with the reason and it is not retried (when the server offers it
again, it is reported abnormal without running). Configuration mistakes are found
before the loop starts (`startup_checks`, exit 78), so the catch-all never hides one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mint_common.errors import (
    AuthError,
    CantCreateError,
    ConfigError,
    MintError,
    TransferError,
    TryAgainLater,
    UnavailableError,
)
from mint_common.files import safe_join
from mint_common.logging import redact
from mint_common.timeutil import now_iso
from mint_poll.api import (
    ABNORMAL,
    CALC_END,
    COMPLETE_SEND,
    COMPLETED,
    GETTING_RETURN,
    GOT_RETURN,
    NOT_START,
    PROGRESS_STEPS,
    RUNNING,
    SENDING_PARAMS,
    STD_NAMES,
    STDERR_NAME,
    STDOUT_NAME,
    ApiRefusal,
    OutgoingResult,
    PollAnswer,
    RemoteSideApi,
    UnknownCalculation,
)
from mint_poll.batch import (
    BatchJob,
    BatchRefused,
    BatchRunner,
    BatchSettings,
    JobState,
    JobView,
    RunnerKind,
    check_queue,
    make_scheduler,
)
from mint_poll.config import CommandSpec, PollConfig
from mint_poll.metrics import PollMetrics
from mint_poll.mime import mime_words
from mint_poll.pacing import Pacer
from mint_poll.runner import RunResult, child_environment, kill_leftover_group, run_command_in
from mint_poll.state import STOPPED, CalcRecord, CalcStore, ResultEntry, Step
from mint_poll.stream import TooLargeError, check_encodable
from mint_poll.workdirs import make_private_dir, prune

log = logging.getLogger(__name__)

#: How often a refused step may be re-aligned with the server's progress before giving up.
MAX_ALIGN = 4
HEARTBEAT_EVERY = 10.0
#: The heartbeat's state during a pause between two tries of a request.
RETRYING = "retrying"
PRUNE_EVERY = 3600.0
STAGING_PREFIX = ".mint-poll-"
#: What an accept_id may be to name a directory and a record file (the server sends UUIDs):
#: one plain name, no leading dot (so never `.`, `..` or a staging name), short enough to fit.
ACCEPT_ID_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: A job not yet started: calc-start waits (see docs: "Running calculations on your cluster").
_NOT_STARTED = (JobState.SUBMITTING, JobState.QUEUED, JobState.UNKNOWN)
#: The first pause between looks at a job; it doubles up to batch.watch_interval.
FIRST_LOOK_AFTER = 1.0
#: How often a job cancelled at a stop (cancel_on_stop) is looked at until it is gone.
CANCEL_LOOK_EVERY = 1.0

#: A calculation that fails the same unexpected way this many times in a row is quarantined.
QUARANTINE_AFTER = 3
#: How much of an error message is kept in a record or the heartbeat.
MAX_ERROR_TEXT = 500
#: Faults of the surroundings (network, token, disk), never counted against a calculation.
NOT_THE_CALCULATIONS_FAULT = (
    UnavailableError,
    AuthError,
    CantCreateError,
    TransferError,
    TryAgainLater,
)

#: Server progress (every one of PROGRESS_STEPS after NOT_START) -> the last step the agent
#: can consider done.
_DONE_BY_PROGRESS = {
    SENDING_PARAMS: Step.PARAMS,
    COMPLETE_SEND: Step.COMPLETE,
    RUNNING: Step.STARTED,
    CALC_END: Step.ENDED,
    GETTING_RETURN: Step.SENT,
    GOT_RETURN: Step.DONE,
}


@dataclass(frozen=True)
class PollOutcome:
    """What one poll did: nothing, or which calculation it handled and how that ended."""

    record: Optional[CalcRecord]
    message: str

    @property
    def delivered(self) -> bool:
        return self.record is not None and self.record.step == Step.DONE


class Agent:
    """Polls one site and runs its calculations (see the module docstring)."""

    def __init__(
        self,
        config: PollConfig,
        api: RemoteSideApi,
        store: CalcStore,
        *,
        stop: Optional[threading.Event] = None,
        rng: Optional[random.Random] = None,
        metrics: Optional[PollMetrics] = None,
    ) -> None:
        self.config = config
        # Always recorded (a dictionary update each); served or written only when asked for.
        self.metrics = metrics if metrics is not None else PollMetrics()
        self.api = api
        self.store = store
        self.stop = stop if stop is not None else threading.Event()
        self.rng = rng or random.Random()  # noqa: S311 (poll jitter, not cryptography)
        self.pacer = Pacer(
            config.poll_min, config.poll_interval, jitter=config.poll_jitter, rng=self.rng
        )
        self._last_beat = 0.0
        self._last_prune = 0.0
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self.last_error: Optional[dict[str, str]] = None
        #: accept_id -> (the last unexpected error, how many times in a row)
        self._failures: dict[str, tuple[str, int]] = {}
        self._quarantined: dict[str, str] = {}
        self._batch_runners: dict[str, BatchRunner] = {}
        #: Calculations whose batch job is submitted and has not ended (for the metrics).
        self._jobs: set[str] = set()

    # ---- polling ---------------------------------------------------------------------------

    def poll_once(self) -> PollOutcome:
        """Ask for one calculation; if there is one, take it through the whole sequence."""
        self.beat("polling")
        answer = self._request()
        if answer.accept_id is None:
            if answer.unknown_site:
                log.error(
                    "the server does not know site_id %r: %s", self.config.site_id, answer.message
                )
                raise UnknownSiteError(self.config.site_id, answer.message)
            log.debug("nothing to do (code %s: %s)", answer.code, answer.message)
            return PollOutcome(None, "nothing to do")
        accept_id = answer.accept_id
        with self._lock:
            if accept_id in self._in_flight:
                return PollOutcome(None, f"{shown_id(accept_id)} is already being handled")
            self._in_flight.add(accept_id)
        try:
            record = self._isolated(accept_id, lambda: self._take(accept_id))
        finally:
            with self._lock:
                self._in_flight.discard(accept_id)
        if record is None:
            return PollOutcome(
                None, f"calculation {shown_id(accept_id)}: {self._error_of(accept_id)}"
            )
        return PollOutcome(record, _summary(record))

    def _request(self) -> PollAnswer:
        """calc-request, counted for the metrics."""
        try:
            answer = self.api.calc_request(self.config.site_id)
        except Exception:
            self.metrics.poll(ok=False)
            raise
        self.metrics.poll(ok=not answer.unknown_site)
        return answer

    def _take(self, accept_id: str) -> CalcRecord:
        """Accept an offer, unless the calculation is quarantined: then only report it."""
        reason = self._quarantine_reason(accept_id)
        if reason is None:
            return self.accept(accept_id)
        log.warning("calculation %s is quarantined; reporting it abnormal", shown_id(accept_id))
        record = self._refuse_offer(accept_id, reason)
        self._quarantined.pop(accept_id, None)
        return record

    def _quarantine_reason(self, accept_id: str) -> Optional[str]:
        if accept_id in self._quarantined:
            return self._quarantined[accept_id]
        if not ACCEPT_ID_FORM.fullmatch(accept_id):
            return None
        previous = self.store.load(accept_id)
        if previous is not None and previous.quarantined:
            return previous.message
        return None

    # ---- isolation of one calculation ------------------------------------------------------

    def _isolated(self, accept_id: str, work: Callable[[], CalcRecord]) -> Optional[CalcRecord]:
        """Run the work on one calculation; an unexpected error is noted against it (and may
        quarantine it) instead of ending the loop. Faults of the surroundings propagate."""
        try:
            record = work()
        except (UnknownSiteError, *NOT_THE_CALCULATIONS_FAULT):
            raise
        except Exception as exc:
            self._calc_failed(accept_id, exc)
            return None
        if record.terminal:
            self.metrics.ended(record)
        return record

    def _calc_failed(self, accept_id: str, exc: Exception) -> None:
        error = describe_error(exc)
        previous, count = self._failures.get(accept_id, ("", 0))
        count = count + 1 if previous == error else 1
        self._failures[accept_id] = (error, count)
        log.error(
            "calculation %s: %s (failure %d of %d before quarantine)",
            shown_id(accept_id),
            error,
            count,
            QUARANTINE_AFTER,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        self.note_error(f"calculation {shown_id(accept_id)}: {error}")
        quarantine = count >= QUARANTINE_AFTER
        reason = f"quarantined after {count} identical failures: {error}"
        if quarantine:
            self._quarantined[accept_id] = reason
            log.error("calculation %s %s; it is not retried", shown_id(accept_id), reason)
        try:
            self._mark_record(accept_id, error, count, reason if quarantine else None)
        except Exception as store_exc:
            log.warning("cannot note the failure in the record: %s", describe_error(store_exc))

    def _mark_record(
        self, accept_id: str, error: str, count: int, quarantine: Optional[str]
    ) -> None:
        if not ACCEPT_ID_FORM.fullmatch(accept_id):
            return
        record = self.store.load(accept_id)
        if record is None:
            return
        record.last_error, record.failures = error, count
        if quarantine is not None:
            record.step, record.message, record.quarantined = Step.FAILED, quarantine, True
        self.store.save(record)

    def _error_of(self, accept_id: str) -> str:
        error, count = self._failures.get(accept_id, ("failed", 0))
        return f"{error} (failure {count})"

    def note_error(self, message: str) -> None:
        """Keep the error for the heartbeat (`status` shows it) until a later one replaces it."""
        noted = now_iso()
        # `time` is the field's old name, kept for one release
        self.last_error = {
            "message": redact(message)[:MAX_ERROR_TEXT],
            "noted_at": noted,
            "time": noted,
        }

    def resume_unfinished(
        self, workers: Optional[list[threading.Thread]] = None
    ) -> list[CalcRecord]:
        """Finish what an earlier run left mid-sequence (oldest first). With `workers`
        (`run`), a calculation that runs as a batch job is followed in a worker of its own,
        so that polling goes on while its job queues and runs."""
        finished: list[CalcRecord] = []
        for record in self.store.unfinished():
            if self.stop.is_set():
                break
            with self._lock:
                if record.accept_id in self._in_flight:
                    continue
                self._in_flight.add(record.accept_id)
            if workers is not None and self._job_settings(record) is not None:
                log.info("resuming %s (last step done: %s)", record.accept_id, record.step)
                self._start_worker(
                    workers, record.accept_id, functools.partial(self._resume, record)
                )
                continue
            try:
                log.info("resuming %s (last step done: %s)", record.accept_id, record.step)
                done = self._isolated(record.accept_id, functools.partial(self._resume, record))
                if done is not None:
                    finished.append(done)
            finally:
                with self._lock:
                    self._in_flight.discard(record.accept_id)
        return finished

    def run_forever(self) -> None:
        """Poll until `stop` is set; faults are logged and polling goes on at the interval."""
        log.info(
            "polling %s as site %s every %g s to %g s",
            self.config.url,
            self.config.site_id,
            self.pacer.minimum,
            self.config.poll_interval,
        )
        workers: list[threading.Thread] = []
        while not self.stop.is_set():
            workers = [w for w in workers if w.is_alive()]
            self.prune_if_due()
            busy = len(workers) >= self.config.max_parallel
            found, error = False, None
            if not busy:
                found, error = self._loop_step(workers)
            if error is not None:
                # stays until the next loop, so that `status` and monitoring can see it
                self.beat("error", error=redact(error), running=len(workers))
            else:
                self.beat("idle" if not workers else "running", running=len(workers))
            if found:
                self.pacer.activity()
                if len(workers) < self.config.max_parallel:
                    continue
            self.stop.wait(self._interval(len(workers) >= self.config.max_parallel))
        for worker in workers:
            worker.join()
        self.beat(STOPPED)

    def _loop_step(self, workers: list[threading.Thread]) -> tuple[bool, Optional[str]]:
        """One iteration: resume leftovers, then poll. (a calculation was taken, the error
        that stopped the iteration)."""
        try:
            self.resume_unfinished(workers)
            if self.stop.is_set() or len(workers) >= self.config.max_parallel:
                return False, None
            if self.config.max_parallel == 1:
                outcome = self.poll_once()
                if outcome.record is not None:
                    log.info("%s", outcome.message)
                return outcome.record is not None, None
            return self._poll_into_worker(workers), None
        except (UnknownSiteError, StoppedWhileWaiting):
            return False, None
        except MintError as exc:
            log.error("%s", exc.message)
            self.note_error(exc.message)
            return False, exc.message
        except Exception as exc:
            # Whatever a step throws, the daemon logs it and goes on with the next loop.
            error = describe_error(exc)
            log.error("unexpected error: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))
            self.note_error(error)
            return False, error

    def _poll_into_worker(self, workers: list[threading.Thread]) -> bool:
        answer = self._request()
        if answer.accept_id is None:
            if answer.unknown_site:
                log.error(
                    "the server does not know site_id %r: %s", self.config.site_id, answer.message
                )
            return False
        accept_id = answer.accept_id
        with self._lock:
            if accept_id in self._in_flight:
                return False
            self._in_flight.add(accept_id)
        self._start_worker(workers, accept_id, lambda: self._take(accept_id))
        return True

    def _start_worker(
        self, workers: list[threading.Thread], accept_id: str, work: Callable[[], CalcRecord]
    ) -> None:
        """Take or resume one calculation in a worker (its accept_id is already in flight)."""

        def run() -> None:
            try:
                record = self._isolated(accept_id, work)
                if record is not None:
                    log.info("%s", _summary(record))
                    self.pacer.activity()
            except StoppedWhileWaiting as exc:
                log.info("%s: %s; the next start resumes it", accept_id, exc.message)
            except MintError as exc:
                log.error("%s: %s", shown_id(accept_id), exc.message)
                self.note_error(exc.message)
            finally:
                with self._lock:
                    self._in_flight.discard(accept_id)

        worker = threading.Thread(target=run, name=f"calc-{accept_id[:8]}", daemon=True)
        worker.start()
        workers.append(worker)

    def _interval(self, busy: bool) -> float:
        """The pause before the next loop: the pacer's (mint_poll.pacing); while every slot is
        taken no poll is made, so look again soon and use a freed slot at once."""
        return self.pacer.minimum if busy else self.pacer.next_delay()

    def beat(self, state: str, **details: object) -> None:
        """Write the heartbeat (throttled while a command runs)."""
        self._last_beat = time.monotonic()
        if self.last_error is not None:
            details.setdefault("last_error", self.last_error)
        try:
            self.store.beat(state, site_id=self.config.site_id, **details)
        except MintError as exc:
            log.warning("cannot write the heartbeat: %s", exc.message)

    def _tick(self, accept_id: str) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_EVERY:
            self.beat("running", accept_id=accept_id)

    # ---- one calculation -------------------------------------------------------------------

    def accept(self, accept_id: str) -> CalcRecord:
        """Take a calculation the server offered: fetch its parameters and drive it to the end."""
        if not ACCEPT_ID_FORM.fullmatch(accept_id):
            return self._refuse_offer(
                accept_id,
                f"mint-poll refused accept_id {shown_id(accept_id)}: not a plain name (letters,"
                " digits, '.', '_', '-'; not starting with '.'; at most 128 characters)",
            )
        self.store.ensure()
        workdir = self.config.calc_base / accept_id
        try:
            self.config.calc_base.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging, created = make_private_dir(
                self.config.calc_base, f"{STAGING_PREFIX}{accept_id}."
            )
        except OSError as exc:
            # Nothing was asked of the server yet: the calculation stays offered to us.
            raise CantCreateError(
                f"cannot create a working directory in {self.config.calc_base}: {exc.strerror}",
                hint="check calc_base",
            ) from exc
        record = CalcRecord(
            accept_id=accept_id,
            site_id=self.config.site_id,
            workdir=str(workdir),
            staging_dir=str(staging),
            created_dir=created,
        )
        self.store.save(record)
        log.info("calculation %s: receiving parameters", accept_id)
        try:
            info = self.api.calc_params(accept_id, self.config.site_id, staging)
        except ApiRefusal as exc:
            shutil.rmtree(staging, ignore_errors=True)
            _forget_dirs(record)
            record.step = Step.TAKEN
            record.message = f"not ours to run: {exc.server_message or exc.message}"
            self.store.save(record)
            log.info("calculation %s: %s", accept_id, record.message)
            return record
        except MintError as exc:
            return self._broken_transfer(record, exc)
        self.metrics.received_files(info.parameter_files)
        record.workdir = str(_publish(staging, workdir))
        record.command = info.command
        record.parameters = info.parameters
        record.result_names = list(info.result_names)
        record.refusals = info.refusals
        for missing in (f.name for f in info.parameter_files if f.missing):
            log.warning("calculation %s: parameter file %r was not sent", accept_id, missing)
        record.step = Step.PARAMS
        self.store.save(record)
        return self._drive(record)

    def _refuse_offer(self, accept_id: str, reason: str) -> CalcRecord:
        """A calculation not to run (an accept_id unfit to name a directory, or one
        quarantined): nothing is made from it, no working dir and no new record file. The
        server still hears it out as abnormal, every result (the two logs included) an error
        entry giving the reason, so the workflow side ends."""
        log.error("%s", reason)
        site = self.config.site_id
        record = CalcRecord(
            accept_id, site, workdir="", staging_dir="", outcome=ABNORMAL, reason=reason
        )
        try:
            info = self.api.calc_params(accept_id, site, None)
        except ApiRefusal as exc:
            record.step = Step.TAKEN
            record.message = f"not ours to run: {exc.server_message or exc.message}"
            return record
        self.api.calc_params_complete(accept_id, site)
        self.api.calc_start(accept_id, site)
        self.api.calc_end(accept_id, site, ABNORMAL)
        names = dict.fromkeys([*info.result_names, *STD_NAMES])
        entries = [OutgoingResult(name, None, error=reason) for name in names]
        self.api.send_results(accept_id, site, entries)
        self.api.end_send(accept_id, site)
        record.step, record.delivered_at = Step.DONE, now_iso()
        return record

    def _broken_transfer(self, record: CalcRecord, exc: MintError) -> CalcRecord:
        """calc-params broke half-way: the server has moved on; report the run abnormal."""
        record.outcome = ABNORMAL
        record.reason = f"receiving the parameter files failed: {exc.message}"
        log.error("calculation %s: %s", record.accept_id, record.reason)
        if isinstance(exc, (UnavailableError, AuthError)):
            # The request may never have reached the server: resume() asks it where we are.
            self.store.save(record)
            raise exc
        staging = Path(record.staging_dir)
        if staging.is_dir():
            record.workdir = str(_publish(staging, Path(record.workdir)))
        record.step = Step.PARAMS
        self.store.save(record)
        return self._drive(record)

    def _resume(self, record: CalcRecord) -> CalcRecord:
        if record.step == Step.STARTED and record.outcome is None and record.batch_job is None:
            kill_leftover_group(record.pid, Path(record.workdir))
        try:
            progress = self.api.calc_progress(record.accept_id)
        except UnknownCalculation as exc:
            return self._lost(record, exc)
        if record.step == Step.RECEIVING:
            self._settle_staging(record, progress)
        self._align(record, progress)
        if record.terminal:
            self.store.save(record)
            return record
        return self._drive(record)

    @staticmethod
    def _settle_staging(record: CalcRecord, progress: str) -> None:
        """A fetch that never reached the server leaves nothing worth keeping; otherwise the
        partial files become the working dir (the place to look)."""
        staging = Path(record.staging_dir)
        if not staging.is_dir():
            return
        if progress == NOT_START:
            shutil.rmtree(staging, ignore_errors=True)
            _forget_dirs(record)
        else:
            record.workdir = str(_publish(staging, Path(record.workdir)))

    def _drive(self, record: CalcRecord) -> CalcRecord:
        for _ in range(MAX_ALIGN):
            try:
                self._advance(record)
                return record
            except UnknownCalculation as exc:
                return self._lost(record, exc)
            except ApiRefusal as exc:
                log.warning("calculation %s: %s", record.accept_id, exc.message)
                try:
                    progress = self.api.calc_progress(record.accept_id)
                except UnknownCalculation as lost:
                    return self._lost(record, lost)
                self._align(record, progress)
                if record.terminal:
                    self.store.save(record)
                    return record
        record.step = Step.FAILED
        record.message = "the server kept refusing the next step; giving up on this calculation"
        self.store.save(record)
        log.error("calculation %s: %s", record.accept_id, record.message)
        return record

    def _align(self, record: CalcRecord, progress: str) -> None:
        """Set the record's step from the server's progress (after a refusal or a restart)."""
        log.debug(
            "calculation %s: server progress %r, local step %r",
            record.accept_id,
            progress,
            record.step,
        )
        if progress == NOT_START:
            record.step = Step.RELEASED
            record.outcome = record.reason = None
            record.message = "the server still offers this calculation; it was released"
            return
        if progress not in PROGRESS_STEPS:
            record.step = Step.FAILED
            record.message = f"the server reports an unknown progress {progress!r}"
            return
        done = _DONE_BY_PROGRESS[progress]
        if done == Step.PARAMS and not record.reached(Step.PARAMS):
            record.outcome = ABNORMAL
            record.reason = record.reason or "the parameter transfer was interrupted"
        if done == Step.STARTED and record.reached(Step.RAN):
            done = Step.RAN
        if (
            done == Step.STARTED
            and record.outcome is None
            and record.reached(Step.STARTED)
            and record.batch_job is None  # a job runs on without us: it is followed again
        ):
            record.outcome = ABNORMAL
            record.reason = "the agent stopped while the command was running"
            done = Step.RAN
            if Path(record.workdir).is_dir():
                _append(Path(record.workdir) / STDERR_NAME, f"mint-poll: {record.reason}\n")
            record.results = self._collect_results(record)
        record.step = done

    def _lost(self, record: CalcRecord, exc: MintError) -> CalcRecord:
        record.step = Step.LOST
        record.message = (
            "the server no longer knows this calculation (restarted or purged); the working"
            f" directory {record.workdir} is kept"
        )
        self.store.save(record)
        log.error("calculation %s: %s (%s)", record.accept_id, record.message, exc.message)
        return record

    def _advance(self, record: CalcRecord) -> None:
        """Do every remaining step, saving the record after each."""
        aid, site = record.accept_id, record.site_id
        if record.step == Step.PARAMS:
            self.api.calc_params_complete(aid, site)
            self._done(record, Step.COMPLETE)
        if record.step == Step.COMPLETE:
            job_started = self._await_job_start(record)
            self.api.calc_start(aid, site)
            record.started_at = job_started or now_iso()
            self._done(record, Step.STARTED)
        if record.step == Step.STARTED:
            self._run(record)
            self._done(record, Step.RAN)
        if record.step == Step.RAN:
            result = CALC_END if record.outcome == COMPLETED else ABNORMAL
            self.api.calc_end(aid, site, result)
            self._done(record, Step.ENDED)
        if record.step == Step.ENDED:
            outgoing = self._outgoing(record)
            self.api.send_results(aid, site, outgoing)
            self.metrics.sent_files(outgoing)
            self._done(record, Step.SENT)
        if record.step == Step.SENT:
            self.api.end_send(aid, site)
            record.delivered_at = now_iso()
            self._done(record, Step.DONE)
            log.info(
                "calculation %s delivered: %s%s",
                aid,
                record.outcome,
                f" ({record.reason})" if record.reason else "",
            )

    def _done(self, record: CalcRecord, step: str) -> None:
        record.step = step
        self.store.save(record)

    # ---- running the command ---------------------------------------------------------------

    def _run(self, record: CalcRecord) -> None:
        workdir = Path(record.workdir)
        refusal = self._refusal(record)
        if refusal is not None:
            _write_refusal(workdir, refusal)
            record.outcome, record.reason = ABNORMAL, refusal
            log.error("calculation %s: %s", record.accept_id, refusal)
        else:
            record.outcome, record.reason = self._execute(record, workdir)
        record.finished_at = now_iso()
        record.results = self._collect_results(record)
        if record.outcome == COMPLETED:
            _judge_results(record)

    def _refusal(self, record: CalcRecord) -> Optional[str]:
        if record.outcome == ABNORMAL:
            return record.reason
        if record.refusals:
            return "refused parameter files: " + "; ".join(record.refusals)
        command = record.command or ""
        if command not in self.config.commands and not self.config.allow_any_command:
            return (
                f"command {command!r} is not in this site's allowlist (config key 'commands');"
                " it was not run"
            )
        return None

    def _argv(self, command: str) -> tuple[tuple[str, ...], Optional[CommandSpec]]:
        spec = self.config.commands.get(command)
        if spec is not None:
            return spec.argv, spec
        return ("/bin/sh", "-c", command), None

    @staticmethod
    def _calc_variables(
        record: CalcRecord, spec: Optional[CommandSpec], workdir: Path
    ) -> dict[str, str]:
        """The calculation's own environment variables (the command's env, CALC_*)."""
        return {
            **(spec.env if spec else {}),
            "CALC_DIR": str(workdir),
            "CALC_PARAMETERS": record.parameters or "",
        }

    def _execute(self, record: CalcRecord, workdir: Path) -> tuple[str, Optional[str]]:
        settings = self._job_settings(record)
        if settings is not None:
            return self._execute_job(record, workdir, settings)
        argv, spec = self._argv(record.command or "")
        timeout = self.config.timeout_for(spec)
        env = child_environment(self._calc_variables(record, spec, workdir))
        log.info("calculation %s: running %s in %s", record.accept_id, list(argv), workdir)

        def started(pid: int) -> None:
            record.pid = pid
            self.store.save(record)

        result: RunResult = run_command_in(
            argv,
            workdir,
            stdout_path=workdir / STDOUT_NAME,
            stderr_path=workdir / STDERR_NAME,
            env=env,
            timeout=timeout,
            stop=self.stop,
            grace=self.config.stop_grace,
            on_start=started,
            on_tick=lambda: self._tick(record.accept_id),
        )
        record.exit_status = result.return_code
        if result.ok:
            return COMPLETED, None
        reason = result.describe(timeout)
        if result.stopped or result.timed_out:
            _append(workdir / STDERR_NAME, f"mint-poll: {reason}\n")
        log.warning("calculation %s: %s", record.accept_id, reason)
        return ABNORMAL, reason

    # ---- running the command as a batch job (runner slurm / pbs) ---------------------------

    def _job_settings(self, record: CalcRecord) -> Optional[BatchSettings]:
        """The batch settings of a calculation that runs as a job; None: on this host (the
        local runner, a command outside the allowlist, or a calculation refused anyway)."""
        if record.batch_job is not None:
            # Submitted already: followed with the scheduler it went to, whatever the config
            # says now.
            kind: RunnerKind = "pbs" if record.batch_job.scheduler == "pbs" else "slurm"
            settings = self.config.batch_for(record.command or "")
            return dataclasses.replace(settings or self.config.batch, runner=kind)
        if self._refusal(record) is not None:
            return None
        return self.config.batch_for(record.command or "")

    def _batch_runner(self, runner: RunnerKind) -> BatchRunner:
        """One runner per scheduler; the site's and the command's arguments are given at
        each submission (`BatchSettings.for_command`)."""
        with self._lock:
            if runner not in self._batch_runners:
                base = dataclasses.replace(
                    self.config.batch, runner=runner, sbatch_args=(), qsub_args=()
                )
                self._batch_runners[runner] = BatchRunner(make_scheduler(base), base)
            return self._batch_runners[runner]

    def _await_job_start(self, record: CalcRecord) -> Optional[str]:
        """Submit the calculation's job (or follow the one saved) until it runs or ends:
        calc-start is sent when the job really starts. Returns the job's start time."""
        settings = self._job_settings(record)
        if settings is None:
            return None
        if record.batch_job is None:
            self._submit_job(record, settings)
            if record.batch_job is None:
                return None
        view = self._watch(record, settings, lambda v: v.state not in _NOT_STARTED)
        return view.started_at

    def _submit_job(self, record: CalcRecord, settings: BatchSettings) -> None:
        """Submit the job; a job the scheduler refuses makes the calculation abnormal."""
        workdir = Path(record.workdir)
        argv, spec = self._argv(record.command or "")
        log.info(
            "calculation %s: submitting %s as a %s job",
            record.accept_id,
            list(argv),
            settings.runner,
        )
        try:
            self._batch_runner(settings.runner).submit(
                calc_id=record.accept_id,
                workdir=workdir,
                argv=argv,
                env=self._calc_variables(record, spec, workdir),
                stdout_path=workdir / STDOUT_NAME,
                stderr_path=workdir / STDERR_NAME,
                time_limit=self.config.timeout_for(spec),
                extra_args=settings.extra_args,
                save=functools.partial(self._save_job, record),
            )
        except BatchRefused as exc:
            self._job_ended(record.accept_id)
            record.batch_job = None
            record.outcome, record.reason = ABNORMAL, exc.message
            self.store.save(record)
            log.error("calculation %s: %s", record.accept_id, exc.message)

    def _save_job(self, record: CalcRecord, job: BatchJob) -> None:
        record.batch_job = job
        self.store.save(record)
        with self._lock:
            self._jobs.add(record.accept_id)
            self.metrics.jobs_in_flight.set(len(self._jobs))

    def _job_ended(self, accept_id: str) -> None:
        with self._lock:
            self._jobs.discard(accept_id)
            self.metrics.jobs_in_flight.set(len(self._jobs))

    def _watch(
        self, record: CalcRecord, settings: BatchSettings, until: Callable[[JobView], bool]
    ) -> JobView:
        """Look at the job until `until` holds: soon at first (a short job is seen to start
        and end within seconds), then less often, up to every watch_interval. A stop leaves
        the job running (JobLeftRunning: the next start follows it), or with cancel_on_stop
        cancels it and returns its end."""
        job = record.batch_job
        assert job is not None
        runner = self._batch_runner(settings.runner)
        save = functools.partial(self._save_job, record)
        pause = min(FIRST_LOOK_AFTER, self.config.batch.watch_interval)
        while True:
            view = runner.poll(job, save)
            if until(view):
                return view
            if self.stop.is_set():
                return self._stop_job(record, runner, job)
            self._tick(record.accept_id)
            self.stop.wait(pause)
            pause = min(pause * 2, self.config.batch.watch_interval)

    def _stop_job(self, record: CalcRecord, runner: BatchRunner, job: BatchJob) -> JobView:
        left = f"{job.scheduler} job {job.job_id or job.name} is left running"
        if not self.config.batch.cancel_on_stop:
            raise JobLeftRunning(left)
        save = functools.partial(self._save_job, record)
        runner.cancel(job, "the agent was asked to stop (cancel_on_stop: true)", save)
        deadline = time.monotonic() + self.config.stop_grace
        while True:
            view = runner.poll(job, save)
            if view.done:
                return view
            if time.monotonic() >= deadline:
                raise JobLeftRunning(f"{left}: it did not end within stop_grace after scancel")
            time.sleep(CANCEL_LOOK_EVERY)

    def _execute_job(
        self, record: CalcRecord, workdir: Path, settings: BatchSettings
    ) -> tuple[str, Optional[str]]:
        if record.batch_job is None:
            self._submit_job(record, settings)
            if record.batch_job is None:
                _write_refusal(workdir, record.reason or "the job was not submitted")
                return ABNORMAL, record.reason
        view = self._watch(record, settings, lambda v: v.done)
        self._job_ended(record.accept_id)
        record.exit_status = view.exit_status
        if view.state is JobState.FINISHED and view.exit_status == 0:
            return COMPLETED, None
        if view.state is JobState.FINISHED:
            reason = f"the command exited with status {view.exit_status}"
        else:
            job = record.batch_job
            reason = f"{view.message} ({job.scheduler} job {view.job_id or job.name})"
            (workdir / STDOUT_NAME).touch()
            _append(workdir / STDERR_NAME, f"mint-poll: {reason}\n")
        log.warning("calculation %s: %s", record.accept_id, reason)
        return ABNORMAL, reason

    def _collect_results(self, record: CalcRecord) -> list[ResultEntry]:
        workdir = Path(record.workdir)
        entries: list[ResultEntry] = []
        for name in record.result_names or list(STD_NAMES):
            try:
                path = safe_join(workdir, name)
            except MintError as exc:
                entries.append(ResultEntry(name, None, exc.message))
                continue
            if not path.is_file():
                entries.append(ResultEntry(name, None, f"{name} が見つかりません (not found)"))
                continue
            try:
                # named by its result name: the local path is none of the server's business
                check_encodable(Path(name), path.stat().st_size)
            except TooLargeError as exc:
                entries.append(ResultEntry(name, None, f"{exc.message}; not sent", too_large=True))
                continue
            entries.append(ResultEntry(name, str(path)))
        return entries

    def _outgoing(self, record: CalcRecord) -> list[OutgoingResult]:
        items: list[OutgoingResult] = []
        for entry in record.results or self._collect_results(record):
            if entry.path is None or not Path(entry.path).is_file():
                error = entry.error or f"{entry.name} が見つかりません (not found)"
                items.append(OutgoingResult(entry.name, None, error=error))
                continue
            try:
                check_encodable(Path(entry.name), Path(entry.path).stat().st_size)
            except TooLargeError as exc:
                # It grew past the limit after the run was judged: still never send it.
                items.append(OutgoingResult(entry.name, None, error=f"{exc.message}; not sent"))
                continue
            words = mime_words(Path(entry.path))
            items.append(OutgoingResult(entry.name, Path(entry.path), words[0], words[1]))
        return items

    # ---- housekeeping ----------------------------------------------------------------------

    def prune_if_due(self) -> list[str]:
        """Remove working dirs of finished calculations older than keep_days (ours only)."""
        if self.config.keep_days is None:
            return []
        if time.monotonic() - self._last_prune < PRUNE_EVERY and self._last_prune:
            return []
        self._last_prune = time.monotonic()
        return prune(self.store, self.config.keep_days, self.config.calc_base)


class UnknownSiteError(MintError):
    """The server does not know our site id: a configuration error worth reporting loudly."""

    exit_status = 78

    def __init__(self, site_id: str, message: str) -> None:
        super().__init__(
            f"the server does not know site_id {site_id!r}: {message}",
            hint="check site_id with the MInt team",
        )


def _publish(staging: Path, workdir: Path) -> Path:
    """Move the staging dir to its final name; never replace an existing directory."""
    for candidate in _candidates(workdir):
        if candidate.exists():
            continue
        try:
            os.rename(staging, candidate)
        except OSError:
            continue
        return candidate
    raise CantCreateError(f"cannot create the working directory {workdir}")


def _forget_dirs(record: CalcRecord) -> None:
    """The agent removed its staging dir: the record no longer names a directory of its own
    (least of all `<calc_base>/<accept_id>`, which may be another agent's)."""
    record.workdir = record.staging_dir = ""
    record.created_dir = None


def _candidates(workdir: Path) -> Iterator[Path]:
    yield workdir
    for number in range(1, 100):
        yield workdir.with_name(f"{workdir.name}.{number}")


def _judge_results(record: CalcRecord) -> None:
    """A completed run is abnormal when none of the requested results exists, or when one
    is too large to send."""
    requested = [r for r in record.results if r.name not in STD_NAMES]
    if requested and all(r.path is None for r in requested):
        record.outcome = ABNORMAL
        record.reason = "none of the requested result files exists"
    oversized = [r for r in record.results if r.too_large]
    if oversized:
        record.outcome = ABNORMAL
        record.reason = oversized[0].error


def _write_refusal(workdir: Path, reason: str) -> None:
    (workdir / STDOUT_NAME).write_bytes(b"")
    (workdir / STDERR_NAME).write_text(f"mint-poll: {reason}\n", encoding="utf-8")


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def shown_id(accept_id: str) -> str:
    """The accept_id for a message: as it is when it has the expected form, else quoted and
    cut short (a hostile one may hold line breaks or run to megabytes)."""
    if ACCEPT_ID_FORM.fullmatch(accept_id):
        return accept_id
    return repr(accept_id[:80]) + ("..." if len(accept_id) > 80 else "")


def _summary(record: CalcRecord) -> str:
    name = shown_id(record.accept_id)
    if record.step == Step.DONE:
        tail = f" ({record.reason})" if record.reason else ""
        return f"calculation {name}: delivered, {record.outcome}{tail}"
    return f"calculation {name}: {record.step}: {record.message or ''}".rstrip(": ")


def build_agent(
    config: PollConfig,
    stop: threading.Event,
    *,
    daemon: bool,
    metrics: Optional[PollMetrics] = None,
) -> Agent:
    """The agent of `run`/`once`/`legacy`, with its start-up log lines (the effective
    configuration at INFO for a daemon, else only with -v).

    A stop during a retry pause ends the retries (StoppedWhileWaiting), so a SIGTERM
    is not held up by a 60-second retry interval.
    """
    from mint_common.config import log_effective_config
    from mint_poll.config import build_api

    log_effective_config(log, effective_config_view(config), at_start=daemon)
    startup_checks(config)
    if config.allow_any_command:
        log.warning(
            "allow_any_command is ON: any command string the server sends runs in a shell"
            " on this computer"
        )
    elif not config.commands:
        log.warning("no commands are configured: every calculation will be refused")
    pause = RetryPause(stop)
    api = build_api(
        dataclasses.replace(config, retry=dataclasses.replace(config.retry, sleep=pause))
    )
    store = CalcStore(config.state_dir)
    store.ensure()
    agent = Agent(config, api, store, stop=stop, metrics=metrics)
    pause.on_wait = lambda: agent.beat(RETRYING)
    return agent


def startup_checks(config: PollConfig) -> None:
    """Configuration mistakes found before the loop (ConfigError, exit 78): a command whose
    program is missing or not executable, a calc_base that cannot be made or written, a
    batch partition or queue the scheduler does not have."""
    problems = config.command_problems()
    if problems:
        raise ConfigError(
            "commands: " + "; ".join(problems), hint="fix the 'commands' entries in mint-poll.yaml"
        )
    try:
        config.calc_base.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe, _identity = make_private_dir(config.calc_base, STAGING_PREFIX + "probe.")
        probe.rmdir()
    except OSError as exc:
        raise ConfigError(
            f"calc_base {config.calc_base} cannot be used: {exc.strerror}",
            hint="set calc_base to a directory this user can write",
        ) from exc
    _check_batch_queues(config)


def _check_batch_queues(config: PollConfig) -> None:
    """Every partition / queue a command's jobs go to exists (ConfigError, 78): a typo would
    otherwise have each calculation taken and refused by sbatch. A scheduler that does not
    answer now is no reason not to start (its jobs keep running): logged, and polling begins."""
    distinct: dict[tuple[str, Optional[str]], BatchSettings] = {}
    for command in sorted(config.commands):
        settings = config.batch_for(command)
        if settings is not None:
            distinct.setdefault((settings.runner, settings.partition), settings)
    for settings in distinct.values():
        try:
            check_queue(make_scheduler(settings), settings)
        except UnavailableError as exc:
            log.warning(
                "cannot ask %s about its queue now (%s); starting anyway", settings.runner, exc
            )


def describe_error(exc: BaseException) -> str:
    """One line for an error: a MintError's message, else its type and text (secrets masked)."""
    text = exc.message if isinstance(exc, MintError) else f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))[:MAX_ERROR_TEXT]


class StoppedWhileWaiting(UnavailableError):
    """A stop was asked for during a retry pause: the retries end there."""


class JobLeftRunning(StoppedWhileWaiting):
    """A stop was asked for while a calculation's batch job queued or ran: the job runs on,
    its record stays unfinished, and the next start follows it."""


class RetryPause:
    """The retry policy's sleep for the agent: a stop ends it (StoppedWhileWaiting), and it
    beats (`on_wait`) at its start and every `every` seconds, so that a long run of retries
    (5 x 60 s by default) is not taken for a stalled agent."""

    def __init__(self, stop: threading.Event, every: float = HEARTBEAT_EVERY) -> None:
        self.stop = stop
        self.every = every
        self.on_wait: Callable[[], None] = lambda: None

    def __call__(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.on_wait()
            left = deadline - time.monotonic()
            if self.stop.wait(max(0.0, min(left, self.every))):
                raise StoppedWhileWaiting("stopped while waiting to retry")
            if left <= self.every:
                return


def effective_config_view(config: PollConfig) -> dict[str, object]:
    """The config for the start-up log line: secrets masked, the retry policy in short."""
    from mint_common.config import redacted_view

    view = redacted_view(config)
    retry = config.retry
    view["retry"] = {
        "max_attempts": retry.max_attempts,
        "base_delay": retry.base_delay,
        "max_delay": retry.max_delay,
        "backoff": retry.backoff,
        "jitter": retry.jitter,
    }
    return view
