"""How `mint-poll submit` shows a calculation it is waiting for: the shared wait display
of `mint_common.waitdisplay` (a live line on a terminal, a log line per state change
otherwise), with the calculation's accept id as its subject."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Callable, Optional, Protocol, TextIO

from mint_common.waitdisplay import WaitDisplay, WaitStatus, format_elapsed, wait_display

__all__ = ["LogLineDisplay", "StatusDisplay", "format_elapsed", "make_display"]
log = logging.getLogger(__name__)


class StatusDisplay(Protocol):
    """Told about every progress state seen; shows it the way the output channel suits."""

    def state(self, progress: str) -> None: ...

    def __enter__(self) -> StatusDisplay: ...

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...


def _subject(accept_id: str) -> str:
    return f"calculation {accept_id}"


class LogLineDisplay(WaitDisplay):
    """One log line per state change (for journald, cron mail and MInt's module logs)."""

    def __init__(self, accept_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(WaitStatus(_subject(accept_id), interval=None, clock=clock), log)


def make_display(
    accept_id: str,
    *,
    live: Optional[bool] = None,
    stream: Optional[TextIO] = None,
    clock: Callable[[], float] = time.monotonic,
) -> StatusDisplay:
    """The live line when `stream` (default stderr) is a terminal, log lines otherwise."""
    return wait_display(
        _subject(accept_id),
        logger=log,
        initial="registered",
        live=live,
        stream=stream,
        clock=clock,
    )
