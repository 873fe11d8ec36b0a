"""Graceful stop for daemons: the first SIGTERM/SIGINT asks to stop, the second exits at once."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class GracefulStop:
    """Install handlers for SIGTERM and SIGINT while in the `with` block.

    `stop_requested` is a threading.Event the loop checks (and waits on instead
    of sleeping, so a stop is noticed at once). The second signal raises
    SystemExit(128 + signal) in the main thread; state files are written
    atomically, so even that exit leaves none half-written.
    """

    def __init__(
        self,
        on_first: Optional[Callable[[int], None]] = None,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self.stop_requested = threading.Event()
        self.signal_number: Optional[int] = None
        self._on_first = on_first
        self._signals = signals
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.stop_requested.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(128 + signum)
        self.signal_number = signum
        self.stop_requested.set()
        log.info(
            "%s received: finishing the current step, then stopping", signal.Signals(signum).name
        )
        if self._on_first is not None:
            self._on_first(signum)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True at once if a stop was requested."""
        return self.stop_requested.wait(max(0.0, seconds))

    def __enter__(self) -> GracefulStop:
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


class Interrupted(KeyboardInterrupt):
    """A one-shot command was stopped by a signal; it unwinds like Ctrl-C and exits 128 + N."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


ONE_SHOT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum: int, _frame: Optional[FrameType]) -> None:
    raise Interrupted(signum)


def interrupt_on_signals() -> None:
    """Make SIGTERM and SIGHUP unwind a one-shot command like Ctrl-C (cleanup runs, exit 128+N).

    Called in the main thread before a command body runs; a daemon's `GracefulStop`
    replaces these handlers while it runs its loop and puts them back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in ONE_SHOT_SIGNALS:
        signal.signal(signum, _raise_interrupted)
