"""`mint-ssh run` and `resume`: push inputs, run detached, follow, pull results, clean up."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Callable, Optional, TypeVar, Union

from mint_common.errors import (
    CantCreateError,
    InputError,
    JobFailed,
    MintError,
    NoInputError,
    UnavailableError,
)
from mint_common.exitcodes import describe
from mint_common.files import SingleInstanceLock
from mint_common.progress import transfer_progress
from mint_ssh import protocol
from mint_ssh.config import SshToolConfig
from mint_ssh.connection import ConnectionLost, ExecResult, RemoteHost, refused_by_gate
from mint_ssh.hosts import HostSpec
from mint_ssh.inputs import Given, InputFile, as_input, expand_inputs
from mint_ssh.records import (
    DONE,
    DOWNLOADING,
    ENDED,
    FAILED,
    RUNNING,
    UPLOADING,
    RunRecord,
    RunStore,
)
from mint_ssh.transfer import (
    UPLOAD_COMMAND_LIMIT,
    DownloadReport,
    extract_stream,
    file_blocks,
    log_uploaded,
    upload_failed,
    upload_files,
    upload_items,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
OFFSET_SAVE_INTERVAL = 2.0
STABLE_CONNECTION = 60.0

Connector = Callable[[HostSpec], RemoteHost]
Carried = tuple[Path, protocol.UploadItem]  # an input sent on the start request, as announced


@dataclasses.dataclass(frozen=True)
class RunRequest:
    host: str
    command: tuple[str, ...]
    inputs: tuple[Given, ...] = ()  # as given: a trailing slash on a dir means its contents
    get: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dest: Path = Path()
    keep: bool = False
    timeout: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    record: RunRecord
    downloaded: DownloadReport
    kept_remote: bool
    # A finished run resumed: its results came back before, nothing was fetched now.
    fetched_earlier: bool = False

    @property
    def return_code(self) -> int:
        """The remote command's exit status (-1 when it is not known)."""
        return self.record.exit_status if self.record.exit_status is not None else -1

    @property
    def ok(self) -> bool:
        return self.return_code == 0

    @property
    def failed(self) -> bool:
        return not self.ok


def check_inputs(inputs: Sequence[Given], dest: Path) -> list[InputFile]:
    """The files to send; refuse missing inputs, duplicate names and an unusable --out-dir
    before connecting."""
    files = expand_inputs(inputs)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CantCreateError(f"cannot create the destination {dest}: {exc.strerror}") from exc
    if not os.access(dest, os.W_OK):
        raise CantCreateError(f"the destination {dest} is not writable")
    return files


class RemoteRun:
    """One run against one host: keeps the connection and reconnects under the retry policy."""

    def __init__(
        self, spec: HostSpec, cfg: SshToolConfig, store: RunStore, connector: Connector
    ) -> None:
        self.spec = spec
        self.cfg = cfg
        self.store = store
        self.connector = connector
        self.host: Optional[RemoteHost] = None
        # The start request waiting to send the results, on the connection it belongs to.
        self._waiting_fetch: Optional[tuple[RemoteHost, object]] = None
        self._last_offset_save = 0.0

    # --- connection handling ----------------------------------------------------------

    def connect(self) -> RemoteHost:
        self.close()
        self.host = self.cfg.retry.call(
            self.connector, self.spec, what=f"connect to {self.spec.alias}"
        )
        return self.host

    def close(self) -> None:
        self._waiting_fetch = None
        if self.host is not None:
            self.host.close()
            self.host = None

    def with_reconnect(self, step: str, operation: Callable[[RemoteHost], T]) -> T:
        """Run `operation`; when the connection drops, reconnect (retry policy) and run it again."""
        losses = 0
        while True:
            host = self.host or self.connect()
            began = time.monotonic()
            try:
                return operation(host)
            except ConnectionLost as exc:
                # A connection that held for a while made progress: count only drops in a row.
                losses = 1 if time.monotonic() - began > STABLE_CONNECTION else losses + 1
                self.close()
                if losses >= self.cfg.retry.max_attempts:
                    raise UnavailableError(
                        f"{step}: the connection dropped {losses} times in a row; last: {exc}"
                    ) from exc
                log.warning("%s: %s; reconnecting", step, exc)

    # --- the steps --------------------------------------------------------------------

    def upload(self, record: RunRecord, inputs: Sequence[InputFile]) -> list[Carried]:
        """Connect; the inputs to carry on the start request's stdin. Only when that request
        would grow past the argument limit do they go first in upload requests of their own
        (back to back; after a dropped connection all of them are sent again: uploads are
        idempotent)."""
        log.info("remote working dir %s:%s", self.spec.alias, record.workdir)
        self.connect()
        if not inputs:
            return []
        carried = self.describe(inputs)
        items = [item for _, item in carried]
        start = protocol.start(record.workdir, record.command, 0, items, record.get)
        if len(start.encode()) <= UPLOAD_COMMAND_LIMIT:
            record.inputs_with_start = True
            return carried
        self.with_reconnect(
            "upload",
            lambda host: upload_files(
                host, record.workdir, inputs, verify_sha256=self.cfg.verify_sha256
            ),
        )
        return []

    def describe(self, inputs: Sequence[Union[Path, InputFile]]) -> list[Carried]:
        items = upload_items(inputs, verify_sha256=self.cfg.verify_sha256)
        return list(zip([path for path, _ in map(as_input, inputs)], items))

    def start_and_wait(
        self, record: RunRecord, timeout: Optional[float], carried: Sequence[Carried] = ()
    ) -> int:
        """Start the command detached (unless it was started before; the `carried` inputs go
        first on the same request) and follow it on the same channel, reconnecting as needed;
        its exit status. The request then waits to send the results (`fetch_and_clean`)."""
        record.state = RUNNING
        self.store.save(record)
        command = record.command
        items = [item for _, item in carried]
        log.info("following %s on %s (run %s)", command[0], self.spec.alias, record.run_id)
        # The time limit counts from when the inputs have been sent: the command starts then.
        timer = _Timeout(timeout, lambda: self._kill(record))

        def start_and_follow(host: RemoteHost) -> ExecResult:
            end_mark = protocol.new_end_mark()
            request = protocol.start(
                record.workdir,
                command,
                record.output_offset,
                items,
                record.get,
                errors_offset=record.errors_offset,
                end_mark=end_mark,
            )
            result = host.watch(
                request,
                lambda chunk: self._output(record, chunk, items, to_stderr=True),
                _with_progress(carried) if carried else (),
                timer.start,
                lambda chunk: self._output(record, chunk, items, to_stderr=False),
                end_mark,
            )
            if result.pending is not None:
                self._waiting_fetch = (host, result.pending)
            return result

        try:
            result = self.with_reconnect("following the remote command", start_and_follow)
        finally:
            timer.cancel()
        if result.failed:
            refused_by_gate(result)
            if items and result.return_code == protocol.UPLOAD_FAILED:
                record.state = FAILED
                record.message = f"remote dir kept: {record.workdir}"
                self.store.save(record)
                raise upload_failed(record.workdir, items, result)
            raise JobFailed(
                f"could not start {command[0]} on {self.spec.alias}:"
                f" {result.error_text() or result.return_code}"
            )
        if record.inputs_with_start:
            self._inputs_in_place(record, items)
        return self._exit_status(record, result.text.strip(), timer.fired, timeout)

    def _exit_status(
        self, record: RunRecord, text: str, timed_out: bool, timeout: Optional[float]
    ) -> int:
        where = f"{self.spec.alias}:{record.workdir}"
        status = protocol.parse_exit_status(text)
        if timed_out or status is None:
            record.state = FAILED
            record.message = f"remote dir kept: {record.workdir}"
            self.store.save(record)
        if timed_out:
            raise JobFailed(
                f"the remote command ran longer than {timeout:g} s and was stopped;"
                f" its files are kept in {where}"
            )
        if status is None:
            raise JobFailed(
                "the remote command ended without writing an exit status (killed, or the host"
                f" restarted; or not one of 0-255: {text[:40]!r}); its files are kept in {where}"
            )
        return status

    def _inputs_in_place(self, record: RunRecord, items: Sequence[protocol.UploadItem]) -> None:
        log_uploaded(items)
        record.inputs_with_start = False
        self.store.save(record)

    def _output(
        self,
        record: RunRecord,
        chunk: bytes,
        items: Sequence[protocol.UploadItem],
        *,
        to_stderr: bool,
    ) -> None:
        """Pass the command's stdout to ours and its stderr to ours, as ssh does."""
        if record.inputs_with_start:
            # Output exists only once the command has started, so its inputs are in place.
            self._inputs_in_place(record, items)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.buffer.write(chunk)
        stream.buffer.flush()
        if to_stderr:
            record.errors_offset += len(chunk)
        else:
            record.output_offset += len(chunk)
        now = time.monotonic()
        if now - self._last_offset_save >= OFFSET_SAVE_INTERVAL:
            self._last_offset_save = now
            self.store.save(record)

    def _kill(self, record: RunRecord) -> None:
        log.warning("the remote command exceeded its time limit; stopping it")
        host = self.host
        if host is not None:
            host.execute(protocol.kill(record.workdir))

    def fetch_and_clean(self, record: RunRecord) -> tuple[DownloadReport, bool]:
        """Download the results; remove the remote dir unless it must stay. (report, kept)"""
        dest = Path(record.dest)
        record.state = DOWNLOADING
        self.store.save(record)
        failed = record.exit_status != 0
        outcome: dict[str, DownloadReport] = {}

        sources = _input_sources(record)

        def unpack(stream: BinaryIO) -> bool:
            report = extract_stream(
                stream, dest, record.run_id, exclude=record.exclude, sources=sources
            )
            outcome["report"] = report
            return not (record.keep or failed or report.refused or report.conflicts)

        def fetch_from(host: RemoteHost) -> ExecResult:
            waiting, self._waiting_fetch = self._waiting_fetch, None
            opened = waiting[1] if waiting is not None and waiting[0] is host else None
            return host.fetch(protocol.fetch(record.workdir, record.get), unpack, opened)

        result = self.with_reconnect("download", fetch_from)
        if result.stderr:
            # remote tar's warnings, or the last of the command's output if it came late
            sys.stderr.buffer.write(result.stderr)
            sys.stderr.buffer.flush()
        report = outcome["report"]
        removed = result.stdout.endswith(f"{protocol.REMOVED}\n".encode())
        if not removed:
            log.warning(
                "kept the remote working dir %s:%s (%s)",
                self.spec.alias,
                record.workdir,
                _kept_reason(record, report, result.error_text() or str(result.return_code)),
            )
        if record.get and report.files == 0:
            log.warning("no remote file matched --include %s", " ".join(record.get))
        log.info("downloaded %d file(s), %d bytes into %s", report.files, report.bytes, dest)
        if report.unchanged:
            log.info(
                "left %d input(s) in place, unchanged: %s",
                len(report.unchanged),
                ", ".join(report.unchanged[:5]),
            )
        record.state = FAILED if failed else DONE
        record.message = "remote dir removed" if removed else f"remote dir kept: {record.workdir}"
        self.store.save(record)
        return report, not removed


def _input_sources(record: RunRecord) -> dict[str, Path]:
    """Result name -> the local input it came from; none with --include (what was asked for
    comes back as it is) or when the inputs can no longer be listed."""
    if record.get:
        return {}
    try:
        return {name: path for path, name in expand_inputs(record.inputs)}
    except MintError:
        return {}


def _kept_reason(record: RunRecord, report: DownloadReport, remote_error: str) -> str:
    if record.keep:
        return "--keep"
    if record.exit_status != 0:
        return "the command failed"
    if report.refused:
        return "some names were refused"
    if report.conflicts:
        return "some files could not be placed"
    return f"remote tar: {remote_error}"


def _with_progress(carried: Sequence[Carried]) -> Iterator[bytes]:
    """The inputs' blocks, with a progress bar open only while they are sent."""
    items = [item for _, item in carried]
    label = items[0].name if len(items) == 1 else f"{len(items)} files"
    with transfer_progress(f"upload {label}", sum(item.size for item in items)) as advance:
        for block in file_blocks(list(carried)):
            yield block
            advance(len(block))


class _Timeout:
    """Runs `action` `seconds` after the first `start()` (a no-op without a limit)."""

    def __init__(self, seconds: Optional[float], action: Callable[[], None]) -> None:
        self.fired = False
        self._started = False
        self._timer: Optional[threading.Timer] = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._fire, args=(action,))
            self._timer.daemon = True

    def start(self) -> None:
        if self._timer is not None and not self._started:
            self._started = True
            self._timer.start()

    def _fire(self, action: Callable[[], None]) -> None:
        self.fired = True
        try:
            action()
        except Exception as exc:
            log.warning("could not stop the remote command: %s", exc)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _finish(run: RemoteRun, record: RunRecord) -> RunOutcome:
    log.info("the remote command exited with status %d", record.exit_status)
    report, kept = run.fetch_and_clean(record)
    return RunOutcome(record, report, kept)


def run_job(
    spec: HostSpec, cfg: SshToolConfig, request: RunRequest, connector: Connector
) -> RunOutcome:
    """The whole `mint-ssh run`."""
    files = check_inputs(request.inputs, request.dest)
    store = RunStore(cfg.runs_dir)
    run_id = uuid.uuid4().hex
    record = RunRecord(
        run_id=run_id,
        workdir=protocol.workdir_path(spec.workdir_base, run_id),
        state=UPLOADING,
        host=request.host,
        command=list(request.command),
        dest=str(request.dest.resolve()),
        inputs=[_absolute(given) for given in request.inputs],
        get=list(request.get),
        exclude=list(request.exclude),
        keep=request.keep,
    )
    store.save(record)
    log.info("run %s on %s", record.run_id, spec.describe())
    run = RemoteRun(spec, cfg, store, connector)
    with SingleInstanceLock(store.lock_path(record.run_id)), _attached(run, record):
        carried = _upload_or_fail(run, record, files)
        record.exit_status = run.start_and_wait(record, request.timeout, carried)
        return _finish(run, record)


def _absolute(given: Given) -> str:
    """An input as `resume` finds it from any dir, keeping a trailing slash (its meaning)."""
    text = str(given)
    return os.path.abspath(text) + ("/" if text.endswith("/") and text != "/" else "")


def _upload_or_fail(run: RemoteRun, record: RunRecord, files: list[InputFile]) -> list[Carried]:
    """Connect and send the inputs; when that fails the command never ran, so the record says
    `failed` with the reason (and `runs` does not show it as under way for ever)."""
    try:
        return run.upload(record, files)
    except BaseException as exc:
        record.state = FAILED
        record.message = f"not started: {describe(exc)}"
        run.store.save(record)
        raise


def resume_job(
    run_id: str, spec_for: Callable[[str], HostSpec], cfg: SshToolConfig, connector: Connector
) -> RunOutcome:
    """Reattach to an earlier run, wait for it, fetch its results."""
    store = RunStore(cfg.runs_dir)
    record = store.load(run_id)
    with SingleInstanceLock(store.lock_path(run_id)):
        record = store.load(run_id)
        if record.state in ENDED and record.exit_status is None:
            raise InputError(
                f"run {run_id} ended before its command ran or finished ({record.message});"
                " there is nothing to resume",
                hint="start it again with `mint-ssh run`",
            )
        if record.state in ENDED:
            return RunOutcome(
                record, DownloadReport(), kept_remote="kept" in record.message, fetched_earlier=True
            )
        if record.state == UPLOADING:
            raise InputError(
                f"run {run_id} stopped before its command started (state {record.state});"
                " there is nothing to resume",
                hint="start it again with `mint-ssh run`"
                + (f"; its partial remote dir is {record.workdir}" if record.workdir else ""),
            )
        spec = spec_for(record.host)
        log.info("resuming run %s on %s (state %s)", run_id, spec.describe(), record.state)
        run = RemoteRun(spec, cfg, store, connector)
        with _attached(run, record):
            if record.state == RUNNING:
                unconfirmed = run.describe(_unconfirmed_inputs(record))
                record.exit_status = run.start_and_wait(record, None, unconfirmed)
            return _finish(run, record)


def _unconfirmed_inputs(record: RunRecord) -> list[InputFile]:
    """The inputs to send again with the start: those of a start not known to have happened
    (the remote side discards them if it did)."""
    if not record.inputs_with_start:
        return []
    try:
        return expand_inputs(record.inputs)
    except NoInputError as exc:
        raise NoInputError(
            f"run {record.run_id} may not have started yet and an input is gone: {exc}",
            hint="restore it, or start the run again with `mint-ssh run`",
        ) from exc


@contextlib.contextmanager
def _attached(run: RemoteRun, record: RunRecord) -> Iterator[None]:
    """Close the run's connection at the end; if the run is lost on the way, say how to resume."""
    try:
        yield
    except (UnavailableError, KeyboardInterrupt, SystemExit) as exc:
        _explain_interrupted(record, exc)
        raise
    finally:
        run.close()


def _explain_interrupted(record: RunRecord, exc: BaseException) -> None:
    if record.state in (RUNNING, DOWNLOADING):
        log.error(
            "lost the run %s (%s); the remote command keeps running in %s."
            " Resume with: mint-ssh resume %s",
            record.run_id,
            exc or type(exc).__name__,
            record.workdir,
            record.run_id,
        )
