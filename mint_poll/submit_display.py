"""How `mint-poll submit` shows a calculation it is waiting for.

On a terminal: one live rich line (accept id, progress state, elapsed time)
that redraws itself. Otherwise (a module script, cron, a log file): one log
line per state change, so a log shows when each step happened and nothing else.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any, Callable, Optional, Protocol, TextIO

log = logging.getLogger(__name__)


def format_elapsed(seconds: float) -> str:
    """`75.4` -> `1:15`; hours appear only when needed (`1:02:03`)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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


class LogLineDisplay:
    """One log line per state change (for journald, cron mail and MInt's module logs)."""

    def __init__(self, accept_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.accept_id = accept_id
        self._clock = clock
        self._start = clock()
        self._last: Optional[str] = None

    def state(self, progress: str) -> None:
        if progress == self._last:
            return
        self._last = progress
        log.info(
            "calculation %s: %s (after %s)",
            self.accept_id,
            progress,
            format_elapsed(self._clock() - self._start),
        )

    def __enter__(self) -> LogLineDisplay:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None


class _StatusLine:
    """A renderable that reads the clock each time rich redraws it, so elapsed time ticks."""

    def __init__(self, accept_id: str, clock: Callable[[], float]) -> None:
        self.accept_id = accept_id
        self.progress = "registered"
        self._clock = clock
        self._start = clock()

    def __rich__(self) -> Any:
        from rich.text import Text

        line = Text()
        line.append("calculation ", style="dim")
        line.append(self.accept_id, style="cyan")
        line.append("  ")
        line.append(self.progress, style="bold")
        line.append(f"  {format_elapsed(self._clock() - self._start)} elapsed", style="dim")
        return line


class LiveStatusDisplay:
    """A live rich status line on a terminal; state changes are also logged at debug level."""

    def __init__(
        self,
        accept_id: str,
        *,
        stream: Optional[TextIO] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self._line = _StatusLine(accept_id, clock)
        self._live = Live(
            self._line,
            console=Console(file=stream if stream is not None else sys.stderr),
            refresh_per_second=4,
            transient=False,
        )

    def state(self, progress: str) -> None:
        if progress != self._line.progress:
            log.debug("calculation %s: %s", self._line.accept_id, progress)
        self._line.progress = progress
        self._live.refresh()

    def __enter__(self) -> LiveStatusDisplay:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._live.stop()


def make_display(
    accept_id: str,
    *,
    live: Optional[bool] = None,
    stream: Optional[TextIO] = None,
    clock: Callable[[], float] = time.monotonic,
) -> StatusDisplay:
    """The live line when `stream` (default stderr) is a terminal, log lines otherwise."""
    out = stream if stream is not None else sys.stderr
    show_live = out.isatty() if live is None else live
    if show_live:
        return LiveStatusDisplay(accept_id, stream=out, clock=clock)
    return LogLineDisplay(accept_id, clock=clock)
