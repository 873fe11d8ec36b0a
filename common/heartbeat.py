"""The daemons' sign of life: one timestamp format, one rule for "stalled".

Each daemon writes a heartbeat at every loop (`Heartbeat.beat()` stored with
`to_json()`); its `check` and `status` read it back with `from_json`, which also
understands the forms written before this module existed (epoch seconds, an
ISO string, `{"time": ..., "epoch": ...}`), and judge it with `stale_after`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional

from mint_common.checks import PASS, WARN, CheckResult
from mint_common.timeutil import epoch_from_iso, format_duration, iso_from_epoch

# A daemon that missed this many of its own intervals is stalled.
STALE_AFTER_INTERVALS = 3


def stale_after(interval: float) -> float:
    """Seconds without a beat after which a daemon looping every `interval` is stalled."""
    return STALE_AFTER_INTERVALS * interval


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    epoch: float

    @classmethod
    def beat(cls, clock: Callable[[], float] = time.time) -> Heartbeat:
        return cls(clock())

    def to_json(self) -> dict[str, Any]:
        return {"at": iso_from_epoch(self.epoch), "epoch": self.epoch}

    @classmethod
    def from_json(cls, value: Any) -> Optional[Heartbeat]:
        """The heartbeat in any stored form; None for none or an unreadable one."""
        if isinstance(value, dict):
            value = value.get("epoch", value.get("at", value.get("time")))
        try:
            if isinstance(value, bool):
                return None
            if isinstance(value, (int, float)):
                epoch = float(value)
            elif isinstance(value, str):
                epoch = epoch_from_iso(value)
            else:
                return None
        except ValueError:
            return None
        return cls(epoch) if math.isfinite(epoch) else None

    def age(self, now: Optional[float] = None) -> float:
        return (time.time() if now is None else now) - self.epoch

    def stale(self, after: float, now: Optional[float] = None) -> bool:
        """True once more than `after` seconds passed since the beat."""
        return self.age(now) > after


def heartbeat_check(
    name: str,
    beat: Optional[Heartbeat],
    *,
    interval: float,
    where: str,
    now: Optional[float] = None,
) -> CheckResult:
    """A `check` row for a daemon's heartbeat: WARN when it never ran or is stalled."""
    if beat is None:
        return CheckResult(name, WARN, f"{where}: no heartbeat yet (the daemon has not run)")
    age = beat.age(now)
    detail = (
        f"{where}: last beat {format_duration(max(0.0, round(age)))} ago ({beat.to_json()['at']})"
    )
    limit = stale_after(interval)
    if age > limit:
        return CheckResult(
            name,
            WARN,
            f"{detail}: stalled, more than {STALE_AFTER_INTERVALS} intervals"
            f" of {format_duration(interval)}",
            {"age_s": age, "stale": True},
        )
    return CheckResult(name, PASS, detail, {"age_s": age, "stale": False})
