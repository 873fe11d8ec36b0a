"""The workflow side of the WebAPI method: register, wait, collect (replaces mi-system-wf.py).

    add-calcinfo -> allow-wait-calc -> calc-progress ... `got return` -> calc-status
    -> get-calc-result (files written atomically into the out dir)

Everything that can be checked locally is checked before the first request
(`submit_args`). Once a calculation is registered, nothing is left behind on
the server on the way out: a `--timeout` or a SIGTERM/SIGINT force-cancels the
registration before exiting. `get-calc-result` deletes the record on the
server, so the out dir is proven writable before anything is sent, and each
result file is written through a temp file and renamed.

A run killed outright (SIGKILL, power loss) cannot cancel, so the accept_id is kept
in the out dir (`JOURNAL_NAME`) from registration until the results are written or
the registration cancelled: a rerun of the same submission into that out dir picks
the calculation up where it was (nothing runs twice, nothing is left on the server);
a different submission force-cancels it first; one the server no longer knows is
registered afresh. A kill while add-calcinfo is in flight can still leave an
unallowed registration the client never heard of (the protocol has no idempotency
key); the server purges it after 30 minutes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from mint_common.config import log_effective_config, redacted_view
from mint_common.errors import (
    ConfigError,
    InputError,
    JobFailed,
    MintError,
    TryAgainLater,
    UnavailableError,
)
from mint_common.files import atomic_write
from mint_common.signals import Interrupted
from mint_poll.api import (
    COMPLETED,
    GOT_RETURN,
    STDERR_NAME,
    UNREQUESTED,
    ApiRefusal,
    CalcResult,
    UnknownCalculation,
)
from mint_poll.config import PollConfig, build_api
from mint_poll.mime import mime_words
from mint_poll.pacing import POLL_MIN, Pacer
from mint_poll.submit_args import (
    LOG_NAMES,
    SubmitRequest,
    check_result_targets,
    prepare_out_dir,
)
from mint_poll.submit_display import LogLineDisplay, StatusDisplay, format_elapsed, make_display

log = logging.getLogger(__name__)

TIMEOUT = "timeout"
INTERRUPTED = "interrupted"
HASH_CHUNK = 1024 * 1024
#: In the out dir while a registration is ours to finish (see the module docstring).
JOURNAL_NAME = ".mint-poll-submit.json"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class WorkflowApi(Protocol):
    """The workflow-side endpoints of the distcomp API (implemented by `DistcompApi`)."""

    def add_calcinfo(
        self,
        command: str,
        site_id: str,
        *,
        parameters: str = ...,
        parameter_files: Mapping[str, Optional[Path]] = ...,
        result_names: Sequence[str] = ...,
        mime: Callable[[Path], tuple[str, str]] = ...,
    ) -> str: ...

    def allow_wait_calc(self, accept_id: str) -> Any: ...

    def calc_progress(self, accept_id: str) -> str: ...

    def calc_status(self, accept_id: str) -> str: ...

    def get_calc_result(
        self,
        accept_id: str,
        dest_dir: Path,
        *,
        legacy_request: bool = ...,
        wanted: Optional[Collection[str]] = ...,
    ) -> CalcResult: ...

    def cancel_wait_calc(self, accept_id: str, *, force: bool = ...) -> Any: ...


class StopRequest(Protocol):
    """What `mint_common.signals.GracefulStop` offers: a flag set by SIGTERM/SIGINT."""

    stop_requested: threading.Event
    signal_number: Optional[int]

    def wait(self, seconds: float) -> bool: ...


class NoStop:
    """A StopRequest that never fires (for library use without signal handlers)."""

    def __init__(self) -> None:
        self.stop_requested = threading.Event()
        self.signal_number: Optional[int] = None

    def wait(self, seconds: float) -> bool:
        return self.stop_requested.wait(max(0.0, seconds))


@dataclass(frozen=True)
class WrittenFile:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class SkippedFile:
    """A result file not written: missing on the remote side, or refused here (unsafe name).

    `required` is True for the names the caller asked for with --result (the
    two stdout/stderr files are asked for implicitly and never fail the run).
    """

    name: str
    message: str
    required: bool = True


@dataclass(frozen=True)
class SubmitOutcome:
    """How a submission ended; the exit status and the `--json` summary come from here."""

    request: SubmitRequest
    accept_id: str
    status: str
    last_progress: str
    elapsed: float
    written: tuple[WrittenFile, ...] = ()
    missing: tuple[SkippedFile, ...] = ()
    refused: tuple[SkippedFile, ...] = ()
    unrequested: tuple[SkippedFile, ...] = ()
    cancelled: bool = False
    cancel_error: Optional[str] = None
    signal_number: Optional[int] = None

    @property
    def required_missing(self) -> tuple[SkippedFile, ...]:
        return tuple(item for item in self.missing if item.required)

    @property
    def exit_status(self) -> int:
        """0 ok; 1 abnormal or a result missing; 65 unsafe names or files nobody asked for;
        75 timeout; 128+N on signal N."""
        if self.status == INTERRUPTED:
            return 128 + (self.signal_number or int(signal.SIGTERM))
        if self.status == TIMEOUT:
            return TryAgainLater.exit_status
        if self.refused or self.unrequested:
            return InputError.exit_status
        if self.status != COMPLETED or self.required_missing:
            return JobFailed.exit_status
        return 0

    def failure_message(self) -> Optional[str]:
        """The one error line for a non-zero exit, or None when all went well."""
        if self.status in (TIMEOUT, INTERRUPTED):
            why = (
                f"no result within {self.request.timeout:g} s"
                if self.status == TIMEOUT
                else f"interrupted by {signal_name(self.signal_number)}"
            )
            return (
                f"{why} (calculation {self.accept_id} was at {self.last_progress!r});"
                f" {self._cancel_note()}"
            )
        problems: list[str] = []
        if self.refused:
            names = ", ".join(repr(item.name) for item in self.refused)
            problems.append(
                f"refused unsafe result file name(s) from the server: {names};"
                f" nothing was written outside {self.request.out_dir}"
            )
        if self.unrequested:
            names = ", ".join(repr(item.name) for item in self.unrequested)
            problems.append(
                f"the server sent result file(s) nobody asked for: {names}; not written"
            )
        if self.status != COMPLETED:
            problems.append(
                f"the remote run of {self.request.command!r} ended {self.status!r}"
                f" (calculation {self.accept_id}); see {STDERR_NAME} in {self.request.out_dir}"
            )
        if self.required_missing:
            names = ", ".join(item.name for item in self.required_missing)
            problems.append(f"requested result file(s) missing: {names}")
        return "; ".join(problems) or None

    def error(self) -> Optional[BaseException]:
        """The error that ends the command with `exit_status` (None for 0): the one error
        line, and a hint on where to look."""
        status = self.exit_status
        if status == 0:
            return None
        if self.status == INTERRUPTED:
            return SubmitInterrupted(
                self.signal_number,
                f"calculation {self.accept_id} was at {self.last_progress!r};"
                f" {self._cancel_note()}",
            )
        message = self.failure_message() or f"exit status {status}"
        if status == TryAgainLater.exit_status:
            return TryAgainLater(
                message,
                hint="give a longer --timeout; `mint-poll status` on the site shows whether"
                " its agent runs",
            )
        if status == InputError.exit_status:
            return InputError(
                message, hint="ask the site why its command writes such result file names"
            )
        return JobFailed(
            message,
            hint=f"the command's own error output is {self.request.out_dir / STDERR_NAME}",
        )

    def _cancel_note(self) -> str:
        if self.cancelled:
            return "the registration was force-cancelled on the server"
        return (
            f"force-cancelling the registration failed ({self.cancel_error});"
            " it may remain on the server"
        )

    def summary(self) -> dict[str, Any]:
        """The `--json` document: what a module script needs to decide what to do next."""
        return {
            "accept_id": self.accept_id,
            "status": self.status,
            "exit_status": self.exit_status,
            "site_id": self.request.site_id,
            "command": self.request.command,
            "progress": self.last_progress,
            "elapsed_seconds": round(self.elapsed, 3),
            "out_dir": str(self.request.out_dir),
            "files": [
                {"name": f.name, "path": str(f.path), "size": f.size, "sha256": f.sha256}
                for f in self.written
            ],
            "missing": [
                {"name": m.name, "message": m.message, "required": m.required} for m in self.missing
            ],
            "refused": [{"name": r.name, "message": r.message} for r in self.refused],
            "unrequested": [item.name for item in self.unrequested],
            "cancelled": self.cancelled,
        }


def signal_name(number: Optional[int]) -> str:
    if number is None:
        return "a signal"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class SubmitInterrupted(Interrupted):
    """A signal ended the submission: exit 128 + N like any interrupted command, with what
    became of the registration as the hint under the error line."""

    def __init__(self, signal_number: Optional[int], detail: str) -> None:
        super().__init__(signal_number or int(signal.SIGTERM))
        self.hint = detail


class StopRequested(Exception):
    """The wait ended early: `status` is TIMEOUT or INTERRUPTED."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def interruptible_sleep(stop: StopRequest) -> Callable[[float], None]:
    """A sleep for retry pauses that a SIGTERM/SIGINT cuts short (raising StopRequested)."""

    def pause(seconds: float) -> None:
        if stop.wait(seconds):
            raise StopRequested(INTERRUPTED)

    return pause


class Submission:
    """One run of `submit`: `run()` registers, waits and collects, and returns the outcome.

    Errors that are not outcomes propagate as MintError: a refused registration
    (JobFailed, exit 1), the server unreachable after retries (69), the token
    refused (77), the calculation lost on the server mid-wait (75). Give the
    api a retry policy whose sleep is `interruptible_sleep(stop)` so that a
    signal also ends retry pauses.

    The progress is read on the agent's schedule (mint_poll.pacing): every `poll_min`
    for a minute after each change of progress, then backing off towards the request's
    `poll_interval`, so that a short calculation is collected within seconds and a long
    one costs no more requests than a fixed interval. `pacer` keeps the schedule.
    """

    def __init__(
        self,
        api: WorkflowApi,
        request: SubmitRequest,
        *,
        stop: Optional[StopRequest] = None,
        display: Optional[Callable[[str], StatusDisplay]] = None,
        clock: Callable[[], float] = time.monotonic,
        mime: Callable[[Path], tuple[str, str]] = mime_words,
        poll_min: float = POLL_MIN,
        jitter: float = 0.0,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.api = api
        self.request = request
        self.stop: StopRequest = stop if stop is not None else NoStop()
        self._display = display or (lambda accept_id: LogLineDisplay(accept_id, clock=clock))
        self._clock = clock
        self._mime = mime
        self._start = clock()
        self._progress = "not registered"
        self.pacer = Pacer(poll_min, request.poll_interval, jitter=jitter, clock=clock, rng=rng)

    def _elapsed(self) -> float:
        return self._clock() - self._start

    def run(self) -> SubmitOutcome:
        prepare_out_dir(self.request.out_dir)
        check_result_targets(self.request.out_dir, self.request.requested_results)
        try:
            accept_id = self._earlier_registration() or self._register()
        except StopRequested as exc:
            raise SubmitInterrupted(
                self.stop.signal_number,
                "it came while registering: the server may or may not have kept the registration",
            ) from exc
        try:
            if self.stop.stop_requested.is_set():
                raise StopRequested(INTERRUPTED)
            self._allow_and_wait(accept_id)
            outcome = self._collect(accept_id)
            self._journal.unlink(missing_ok=True)
            return outcome
        except StopRequested as stopped:
            return self._cancel(accept_id, stopped.status)
        except UnknownCalculation as exc:
            self._journal.unlink(missing_ok=True)
            raise TryAgainLater(
                f"the server no longer knows calculation {accept_id} ({exc.server_message}):"
                " it was restarted, purged or cancelled by someone else",
                hint="run the submission again",
            ) from exc
        except UnavailableError as exc:
            exc.hint = exc.hint or (
                f"calculation {accept_id} may still be registered on the server: run the"
                " same submission into the same out dir again to pick it up"
            )
            raise

    @property
    def _journal(self) -> Path:
        return self.request.out_dir / JOURNAL_NAME

    def _fingerprint(self) -> dict[str, Any]:
        request = self.request
        return {
            "site_id": request.site_id,
            "command": request.command,
            "parameters": request.parameters,
            "inputs": [[item.name, item.size] for item in request.inputs],
            "results": list(request.results),
        }

    def _earlier_registration(self) -> Optional[str]:
        """The accept_id an earlier, killed run of this submission left to finish, if any."""
        try:
            journal = json.loads(self._journal.read_text(encoding="utf-8"))
            accept_id = journal["accept_id"]
            if not isinstance(accept_id, str):
                raise TypeError("accept_id is not a string")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring the unreadable %s: %s", self._journal, exc)
            return None
        if journal.get("request") != self._fingerprint():
            log.warning(
                "force-cancelling calculation %s, left in %s by an earlier run of a different"
                " submission",
                accept_id,
                self.request.out_dir,
            )
            try:
                self.api.cancel_wait_calc(accept_id, force=True)
            except UnknownCalculation:
                log.info("calculation %s was already gone from the server", accept_id)
            self._journal.unlink(missing_ok=True)
            return None
        try:
            progress = self.api.calc_progress(accept_id)
        except UnknownCalculation:
            log.warning(
                "calculation %s of an earlier, interrupted run is gone from the server (its"
                " results were fetched, or it was purged); registering again",
                accept_id,
            )
            self._journal.unlink(missing_ok=True)
            return None
        log.info(
            "resuming calculation %s of an earlier, interrupted run (at %r)", accept_id, progress
        )
        self._progress = progress
        return accept_id

    def _register(self) -> str:
        request = self.request
        log.info(
            "registering %r on site %r with %d input file(s), %d byte(s)",
            request.command,
            request.site_id,
            len(request.inputs),
            sum(item.size for item in request.inputs),
        )
        try:
            accept_id = self.api.add_calcinfo(
                request.command,
                request.site_id,
                parameters=request.parameters,
                parameter_files={item.name: item.path for item in request.inputs},
                result_names=request.requested_results,
                mime=self._mime,
            )
        except ApiRefusal as exc:
            raise registration_refused(exc, request) from exc
        self._progress = "not allowed"
        log.info("registered calculation %s", accept_id)
        document = {"accept_id": accept_id, "request": self._fingerprint()}
        atomic_write(self._journal, json.dumps(document, ensure_ascii=False) + "\n")
        return accept_id

    def _allow_and_wait(self, accept_id: str) -> None:
        try:
            self.api.allow_wait_calc(accept_id)
        except ApiRefusal as exc:
            # HTTP 400 here means an unknown id, or one already allowed or started (a retry
            # whose first try got through): calc-progress tells which, raising
            # UnknownCalculation for the first.
            progress = self.api.calc_progress(accept_id)
            log.info("calculation %s is allowed already (%s; at %r)", accept_id, exc, progress)
        self._progress = "allowed"
        self.pacer.activity()
        with self._display(accept_id) as display:
            while True:
                progress = self.api.calc_progress(accept_id)
                if progress != self._progress:
                    self.pacer.activity()
                self._progress = progress
                display.state(progress)
                if progress == GOT_RETURN:
                    return
                pause = self.pacer.next_delay()
                if self.request.timeout is not None:
                    remaining = self.request.timeout - self._elapsed()
                    if remaining <= 0:
                        raise StopRequested(TIMEOUT)
                    pause = min(pause, remaining)
                if self.stop.wait(pause):
                    raise StopRequested(INTERRUPTED)

    def _cancel(self, accept_id: str, status: str) -> SubmitOutcome:
        reason = "timeout" if status == TIMEOUT else signal_name(self.stop.signal_number)
        log.warning(
            "%s: force-cancelling calculation %s (at %r)", reason, accept_id, self._progress
        )
        cancel_error: Optional[str] = None
        try:
            self.api.cancel_wait_calc(accept_id, force=True)
        except UnknownCalculation:
            log.info("calculation %s was already gone from the server", accept_id)
        except MintError as exc:
            cancel_error = exc.message
        except StopRequested:
            cancel_error = "the server did not answer and the run was interrupted"
        if cancel_error is None:
            self._journal.unlink(missing_ok=True)
        else:
            log.error("could not cancel calculation %s: %s", accept_id, cancel_error)
        return SubmitOutcome(
            request=self.request,
            accept_id=accept_id,
            status=status,
            last_progress=self._progress,
            elapsed=self._elapsed(),
            cancelled=cancel_error is None,
            cancel_error=cancel_error,
            signal_number=self.stop.signal_number if status == INTERRUPTED else None,
        )

    def _collect(self, accept_id: str) -> SubmitOutcome:
        status = self.api.calc_status(accept_id)
        if self.stop.stop_requested.is_set():
            raise StopRequested(INTERRUPTED)
        result = self.api.get_calc_result(
            accept_id, self.request.out_dir, wanted=self.request.requested_results
        )
        written, missing, refused = self._account(result)
        unrequested = tuple(SkippedFile(f.name, UNREQUESTED) for f in result.unrequested)
        for item in missing:
            log.warning("result file %s is missing: %s", item.name, item.message)
        for item in (*refused, *unrequested):
            log.error("result file %r refused: %s", item.name, item.message)
        outcome = SubmitOutcome(
            request=self.request,
            accept_id=accept_id,
            status=status,
            last_progress=self._progress,
            elapsed=self._elapsed(),
            written=written,
            missing=missing,
            refused=refused,
            unrequested=unrequested,
        )
        log.info(
            "calculation %s ended %s after %s: %d file(s) written to %s",
            accept_id,
            status,
            format_elapsed(outcome.elapsed),
            len(written),
            self.request.out_dir,
        )
        return outcome

    def _account(
        self, result: CalcResult
    ) -> tuple[tuple[WrittenFile, ...], tuple[SkippedFile, ...], tuple[SkippedFile, ...]]:
        by_name = {item.name: item for item in result.files}
        written: list[WrittenFile] = []
        refused: list[SkippedFile] = []
        for item in result.files:
            if item.path is not None:
                written.append(WrittenFile(item.name, item.path, item.size, sha256_of(item.path)))
            elif item.refused and not item.unrequested:
                refused.append(SkippedFile(item.name, item.refused))
        missing: list[SkippedFile] = []
        for name in self.request.requested_results:
            required = name in self.request.results
            entry = by_name.get(name)
            if entry is None:
                missing.append(SkippedFile(name, "the server sent no entry for it", required))
            elif entry.path is None and not entry.refused:
                missing.append(SkippedFile(name, entry.error or "not sent", required))
        for name in LOG_NAMES:
            entry = by_name.get(name)
            if entry is None or entry.path is None:
                written.append(_empty_log_file(self.request.out_dir, name))
        return tuple(written), tuple(missing), tuple(refused)


def _empty_log_file(out_dir: Path, name: str) -> WrittenFile:
    """The two stdout/stderr files are always left in the out dir, empty if none came back."""
    path = out_dir / name
    atomic_write(path, b"", mode=0o644)
    return WrittenFile(name, path, 0, EMPTY_SHA256)


def config_view(config: PollConfig) -> dict[str, Any]:
    """The settings `submit` uses, secrets masked, for the one start-up log line."""
    view = redacted_view(config)
    keys = (
        "url",
        "site_id",
        "token",
        "ca_bundle",
        "verify",
        "connect_timeout",
        "read_timeout",
        "poll_min",
        "poll_jitter",
    )
    retry = config.retry
    shown = {key: view[key] for key in keys}
    fixed = retry.backoff == 1 or retry.base_delay >= retry.max_delay
    pauses = (
        f"{min(retry.base_delay, retry.max_delay):g} s apart"
        if fixed
        else f"{retry.base_delay:g} s up to {retry.max_delay:g} s apart"
    )
    shown["retry"] = f"{retry.max_attempts} attempts, {pauses}"
    return shown


def submit_with_config(
    config: PollConfig,
    request: SubmitRequest,
    *,
    stop: StopRequest,
    live: Optional[bool] = None,
) -> SubmitOutcome:
    """Build the API client from `config` (retry pauses end on a signal) and run the submission."""
    log_effective_config(log, config_view(config), at_start=False)
    retry = dataclasses.replace(config.retry, sleep=interruptible_sleep(stop))
    with build_api(dataclasses.replace(config, retry=retry)) as api:
        submission = Submission(
            api,
            request,
            stop=stop,
            display=lambda accept_id: make_display(accept_id, live=live),
            poll_min=config.poll_min,
            jitter=config.poll_jitter,
        )
        return submission.run()


def registration_refused(exc: ApiRefusal, request: SubmitRequest) -> MintError:
    """What a refused `add-calcinfo` means: the server answers code 400 naming the site id
    for a site it does not know (a configuration mistake, 78, as for the agent), code 401
    for a command that site may not run, and code 400 without the site for a malformed
    registration."""
    said = f"{exc.server_message or exc.message} (HTTP {exc.http_status}, code {exc.code})"
    if exc.code == 400 and request.site_id in exc.server_message:
        return ConfigError(
            f"the server does not know site {request.site_id!r}: {said}",
            hint="check --site (or site_id in mint-poll.yaml): it must be the id the MInt"
            " team registered for the computer that runs the calculation",
        )
    hint = None
    if exc.code == 401:
        hint = (
            f"site {request.site_id!r} may run only the commands the MInt team registered"
            " for it; check --command"
        )
    return JobFailed(
        f"the server refused to register {request.command!r} for site {request.site_id!r}: {said}",
        hint=hint,
    )
