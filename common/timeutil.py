"""Durations and timestamps in the one form every tool reads and writes.

Durations: `600`, `1.5`, `600s`, `30m`, `2h`, `1d`, `1h30m` (seconds when no
unit is given). Timestamps: ISO 8601 with the UTC offset, to the second.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Optional

from mint_common.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})([smhd])")
_WHOLE = re.compile(rf"(?:{_NUMBER}[smhd])+")
DURATION_FORMS = "seconds (600) or a number with s, m, h or d (30m, 2h, 1h30m)"


def parse_duration(text: Any) -> float:
    """Seconds for a duration; ValueError (saying which forms are accepted) otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"expected {DURATION_FORMS}, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif isinstance(text, str):
        compact = text.strip().lower().replace(" ", "")
        try:
            seconds = float(compact)
        except ValueError:
            if not _WHOLE.fullmatch(compact):
                raise ValueError(f"expected {DURATION_FORMS}, got {text!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact))
    else:
        raise ValueError(f"expected {DURATION_FORMS}, got {text!r}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite duration, got {text!r}")
    return seconds


class Duration(float):
    """A config field type: a length of time in seconds, written in any duration form."""

    @classmethod
    def from_config(cls, value: Any, *, source: str, key: str) -> Duration:
        try:
            return cls(parse_duration(value))
        except ValueError as exc:
            raise ConfigError(f"{source}: key {key!r}: {exc}") from None


def format_duration(seconds: float) -> str:
    """`5400` -> `1h30m`, `90` -> `1m30s`, `0.5` -> `0.5s` (for messages and help)."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s"
    remaining = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def iso_from_epoch(epoch: Optional[float]) -> Optional[str]:
    """Epoch seconds as local ISO 8601 with offset (`2026-11-30T09:15:00+09:00`), None as None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).astimezone().isoformat(timespec="seconds")


def now_iso() -> str:
    """Now, as ISO 8601 with the UTC offset."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def epoch_from_iso(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp; one without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
