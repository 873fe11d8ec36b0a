"""What `mint-poll status` prints: the heartbeat and the calculations, ids never shortened.

Local files only: nothing here needs requests or the token.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional, TextIO

from mint_common.heartbeat import STALE_AFTER_INTERVALS, Heartbeat, stale_after
from mint_common.output import emit_table
from mint_common.terminal import terminal
from mint_common.timeutil import epoch_from_iso, format_duration
from mint_poll.state import STOPPED, CalcRecord, Step

COLUMNS = ("accept_id", "command", "state", "accepted_at", "finished_at", "working dir")
#: Added when a calculation ran as a batch job: as the agent last saw it (watch_interval).
JOB_COLUMNS = ("job id", "job state", "reason", "time in queue")
TITLE = "mint-poll calculations"


def agent_json(
    document: Optional[dict[str, Any]], interval: float, now: Optional[float] = None
) -> Optional[dict[str, Any]]:
    """The heartbeat for `status --json`, with `beat_at` also for a heartbeat written by an
    older release (which had only `time` and `epoch`; both are kept for one release), and
    `stale`: a running agent missed its beats (`mint_common.heartbeat.stale_after`)."""
    if document is None:
        return None
    shown = dict(document)
    beat = Heartbeat.from_json(document)
    if "beat_at" not in shown and beat is not None:
        shown["beat_at"] = beat.to_json()["at"]
    shown["stale"] = is_stale(document, interval, now)
    return shown


def is_stale(document: dict[str, Any], interval: float, now: Optional[float] = None) -> bool:
    """True when an agent that did not say it stopped has not beaten for `stale_after`."""
    if document.get("state") == STOPPED:
        return False
    beat = Heartbeat.from_json(document)
    return beat is None or beat.stale(stale_after(interval), now)


def heartbeat_lines(
    document: Optional[dict[str, Any]], interval: float, now: Optional[float] = None
) -> list[str]:
    if not document:
        return []
    when = document.get("beat_at") or document.get("at") or document.get("time")
    lines = [f"agent pid {document.get('pid')}: {document.get('state')} at {when}"]
    if is_stale(document, interval, now):
        lines.append(
            f"agent stalled: no heartbeat for more than {STALE_AFTER_INTERVALS} poll intervals"
            f" of {format_duration(interval)} (is it still running?)"
        )
    last_error = document.get("last_error")
    if isinstance(last_error, dict):
        noted = last_error.get("noted_at") or last_error.get("time")
        lines.append(f"last error at {noted}: {last_error.get('message')}")
    return lines


def _row(record: CalcRecord) -> tuple[str, ...]:
    return (
        record.accept_id,
        record.command or "",
        record.step if record.step != Step.DONE else f"done: {record.outcome}",
        record.accepted_at,
        record.delivered_at or record.finished_at or "",
        record.workdir,
    )


def job_cells(record: CalcRecord, now: Optional[float] = None) -> tuple[str, str, str, str]:
    """The job id, the scheduler's state and pending reason as last seen, and how long the
    job queued (until it started, or until now while it waits)."""
    job = record.batch_job
    if job is None:
        return ("", "", "", "")
    queued = ""
    # A job never seen starting that is over has no known time in queue (not "until now").
    if job.submitted_at and (job.started_at or not record.terminal):
        until = epoch_from_iso(job.started_at) if job.started_at else (now or time.time())
        queued = format_duration(max(0, math.floor(until - epoch_from_iso(job.submitted_at))))
    return (job.job_id or "(submitting)", job.last_state or "", job.last_reason or "", queued)


def print_table(records: Sequence[CalcRecord], stream: Optional[TextIO] = None) -> None:
    """A rich table on a terminal, never narrower than its cells (a wide table wraps in
    the terminal rather than cutting an id users must copy); tab-separated otherwise."""
    out = stream if stream is not None else sys.stdout
    columns: tuple[str, ...] = COLUMNS
    rows = [_row(r) for r in records]
    if any(r.batch_job is not None for r in records):
        columns = (*COLUMNS, *JOB_COLUMNS)
        rows = [(*row, *job_cells(r)) for row, r in zip(rows, records)]
    if not terminal().is_tty(out):
        emit_table(columns, rows, title=TITLE, stream=out)
        return
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(title=TITLE)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console(file=out)
    needed = Measurement.get(console, console.options.update(width=1 << 16), table).maximum
    Console(file=out, width=max(console.width, needed)).print(table)
