"""The one place that decides whether a person is at a terminal.

Tables, progress bars, wait displays and questions ask `terminal()` instead of
calling `isatty()` themselves, so a test (or a wrapper script) can say what the
streams are with `terminal_override`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Optional, TextIO

from mint_common.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Terminal:
    stdin_isatty: bool
    stdout_isatty: bool
    stderr_isatty: bool

    @classmethod
    def detect(cls) -> Terminal:
        return cls(_isatty(sys.stdin), _isatty(sys.stdout), _isatty(sys.stderr))

    def is_tty(self, stream: TextIO) -> bool:
        """Whether `stream` (stdout, stderr or another file) is a terminal."""
        if stream is sys.stdout:
            return self.stdout_isatty
        if stream is sys.stderr:
            return self.stderr_isatty
        return _isatty(stream)


_override: Optional[Terminal] = None


def _isatty(stream: Optional[TextIO]) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal() -> Terminal:
    return _override if _override is not None else Terminal.detect()


@contextlib.contextmanager
def terminal_override(term: Terminal) -> Iterator[Terminal]:
    global _override
    previous, _override = _override, term
    try:
        yield term
    finally:
        _override = previous


def confirm(question: str, *, yes_flag: str = "--yes") -> bool:
    """Ask a yes/no question on the terminal (default no); UsageError when nobody can answer."""
    term = terminal()
    if not (term.stdin_isatty and term.stderr_isatty):
        raise UsageError(
            f"{question.rstrip('?')}: not asked, no terminal to answer on",
            hint=f"add {yes_flag} to go ahead without the question",
        )
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")
