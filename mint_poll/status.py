"""What `mint-poll status` prints: the heartbeat and the calculations, ids never shortened.

Local files only: nothing here needs requests or the token.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Optional, TextIO

from mint_common.output import emit_table
from mint_common.terminal import terminal
from mint_common.timeutil import iso_from_epoch
from mint_poll.state import CalcRecord

COLUMNS = ("accept_id", "command", "state", "accepted_at", "finished_at", "working dir")
TITLE = "mint-poll calculations"


def agent_json(beat: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The heartbeat for `status --json`, with `beat_at` also for a heartbeat written by an
    older release (which had only `time` and `epoch`; both are kept for one release)."""
    if beat is None:
        return None
    shown = dict(beat)
    epoch = beat.get("epoch")
    if "beat_at" not in shown and isinstance(epoch, (int, float)):
        shown["beat_at"] = iso_from_epoch(float(epoch))
    return shown


def heartbeat_lines(beat: Optional[dict[str, Any]]) -> list[str]:
    if not beat:
        return []
    when = beat.get("beat_at") or beat.get("time")
    lines = [f"agent pid {beat.get('pid')}: {beat.get('state')} at {when}"]
    last_error = beat.get("last_error")
    if isinstance(last_error, dict):
        noted = last_error.get("noted_at") or last_error.get("time")
        lines.append(f"last error at {noted}: {last_error.get('message')}")
    return lines


def _row(record: CalcRecord) -> tuple[str, ...]:
    return (
        record.accept_id,
        record.command or "",
        record.step if record.step != "done" else f"done: {record.outcome}",
        record.accepted_at,
        record.delivered_at or record.finished_at or "",
        record.workdir,
    )


def print_table(records: Sequence[CalcRecord], stream: Optional[TextIO] = None) -> None:
    """A rich table on a terminal, never narrower than its cells (a wide table wraps in
    the terminal rather than cutting an id users must copy); tab-separated otherwise."""
    out = stream if stream is not None else sys.stdout
    rows = [_row(r) for r in records]
    if not terminal().is_tty(out):
        emit_table(COLUMNS, rows, title=TITLE, stream=out)
        return
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(title=TITLE)
    for column in COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console(file=out)
    needed = Measurement.get(console, console.options.update(width=1 << 16), table).maximum
    Console(file=out, width=max(console.width, needed)).print(table)
