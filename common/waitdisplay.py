"""The one display of "waiting for something": its state, the time waited, the next check.

On a terminal (as `mint_common.terminal.terminal()` says, so tests can override
it): one live rich line that redraws itself. Otherwise (cron, a log file, a
module script): one log line per state change, so a log shows when each step
happened and nothing else. `mint-s3job wait` and `mint-poll submit` both use it.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any, Callable, Optional, TextIO

from mint_common.terminal import terminal

Clock = Callable[[], float]


def format_elapsed(seconds: float) -> str:
    """`75.4` -> `1:15`; hours appear only when needed (`1:02:03`)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class WaitStatus:
    """What is known about the wait: the subject, its last state, when it started and
    was last checked."""

    def __init__(
        self, subject: str, *, state: str = "", interval: Optional[float], clock: Clock
    ) -> None:
        self.subject = subject
        self.state = state
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.checked = self.started

    def elapsed(self) -> float:
        return self.clock() - self.started

    def next_check_in(self) -> Optional[float]:
        if self.interval is None:
            return None
        return max(0.0, self.checked + self.interval - self.clock())

    def line(self) -> str:
        """`SUBJECT  STATE  1:23 elapsed  next check in 0:07`, as the live line shows it."""
        parts = [self.subject, self.state, f"{format_elapsed(self.elapsed())} elapsed"]
        pause = self.next_check_in()
        if pause is not None:
            parts.append(f"next check in {format_elapsed(pause)}")
        return "  ".join(part for part in parts if part)


class WaitDisplay:
    """Told about every state seen (`state()` after each check); plain: one log line per
    change, at INFO on `logger`."""

    def __init__(self, status: WaitStatus, logger: logging.Logger) -> None:
        self.status = status
        self.log = logger
        self._shown: Optional[str] = None

    def state(self, state: str) -> None:
        self.status.state = state
        self.status.checked = self.status.clock()
        if state == self._shown:
            return
        self._shown = state
        self.changed(state)

    def changed(self, state: str) -> None:
        self.log.info(
            "%s: %s (after %s)",
            self.status.subject,
            state,
            format_elapsed(self.status.elapsed()),
        )

    def __enter__(self) -> WaitDisplay:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None


class _LiveLine:
    """A renderable that reads the clock each time rich redraws it, so the times tick."""

    def __init__(self, status: WaitStatus) -> None:
        self.status = status

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text(self.status.line())


class LiveWaitDisplay(WaitDisplay):
    """The live rich line; state changes are logged at DEBUG only (the line shows them)."""

    def __init__(self, status: WaitStatus, logger: logging.Logger, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        super().__init__(status, logger)
        # Forced: the caller already decided this stream is a terminal.
        console = Console(file=stream, force_terminal=True)
        self._live = Live(_LiveLine(status), console=console, refresh_per_second=4)

    def state(self, state: str) -> None:
        super().state(state)
        self._live.refresh()

    def changed(self, state: str) -> None:
        self.log.debug("%s: %s", self.status.subject, state)

    def __enter__(self) -> LiveWaitDisplay:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._live.stop()


def wait_display(
    subject: str,
    *,
    logger: logging.Logger,
    interval: Optional[float] = None,
    initial: str = "",
    live: Optional[bool] = None,
    stream: Optional[TextIO] = None,
    clock: Clock = time.monotonic,
) -> WaitDisplay:
    """The live line when `stream` (default stderr) is a terminal, log lines otherwise;
    `live` forces one or the other."""
    out = stream if stream is not None else sys.stderr
    status = WaitStatus(subject, state=initial, interval=interval, clock=clock)
    show_live = terminal().is_tty(out) if live is None else live
    if show_live:
        return LiveWaitDisplay(status, logger, out)
    return WaitDisplay(status, logger)
