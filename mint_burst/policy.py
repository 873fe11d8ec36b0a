"""The scaling policy: a pure function of (queue status, node table, now, settings) -> decision.

It never does anything itself. The engine carries out `Decision.actions` and
keeps `Decision.records` (the node table with the policy's bookkeeping: idle
clocks, nodes seen to have joined). The rules:

- launch as many nodes as runnable pending jobs need, minus nodes already
  requested, booting or idle, up to the caps (free names in hosts.json,
  `max_nodes`, the daily node-hour budget), all in the same step;
- a node that has not joined within `boot_timeout` is terminated, freeing its name;
- a joined node is removed once it has had no job for `idle_timeout`, never while it
  has one, and not while runnable jobs still wait (they are about to land on it);
- a draining node is terminated once its last job ended;
- when the scheduler could not be read (`status is None`) nothing is decided at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from mint_burst.model import (
    BOOTING,
    DRAINING,
    JOINABLE_STATES,
    JOINED,
    REQUESTED,
    Action,
    Host,
    NodeRecord,
    NodeTable,
    QueueStatus,
    utc_day,
)


@dataclass(frozen=True)
class PolicySettings:
    """The part of the configuration the policy needs."""

    hosts: tuple[Host, ...]
    max_nodes: int
    idle_timeout: float = 600.0
    boot_timeout: float = 900.0
    max_node_hours_per_day: Optional[float] = None

    @property
    def node_cap(self) -> int:
        return min(self.max_nodes, len(self.hosts))


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    records: dict[str, NodeRecord]
    notes: tuple[str, ...] = ()


def decide(
    status: Optional[QueueStatus], table: NodeTable, now: float, settings: PolicySettings
) -> Decision:
    records = {name: dataclasses.replace(r) for name, r in table.records.items()}
    if status is None:
        return Decision((), records, ("scheduler not readable: no scaling decision this step",))
    busy = status.busy_nodes()
    actions: list[Action] = []
    retiring: set[str] = set()
    for record in records.values():
        action = _observe(record, status, busy, now, settings)
        if action is not None:
            actions.append(action)
            if action.kind in ("remove", "terminate"):
                retiring.add(record.name)
    need = status.nodes_needed()
    spare = _spare_nodes(records, busy, retiring)
    notes: list[str] = []
    if need > spare:
        launches, note = _launches(need - spare, records, table, now, settings)
        actions.extend(launches)
        if note:
            notes.append(note)
    elif need == 0:
        actions.extend(_idle_removals(records, busy, retiring, now, settings))
    return Decision(tuple(actions), records, tuple(notes))


def _observe(
    record: NodeRecord,
    status: QueueStatus,
    busy: frozenset[str],
    now: float,
    settings: PolicySettings,
) -> Optional[Action]:
    """Update one record from what the scheduler says; return the action it needs, if any."""
    node_state = status.nodes.get(record.name)
    has_job = record.name in busy
    if record.phase in (REQUESTED, BOOTING):
        if has_job or (node_state is not None and node_state.ready):
            record.enter(JOINED, now)
            record.joined_at = now
        elif now - record.launched_at > settings.boot_timeout:
            return Action(
                "terminate",
                record.name,
                f"not joined within boot_timeout ({settings.boot_timeout:g} s)",
            )
        elif (
            record.phase == BOOTING
            and node_state is not None
            and node_state.responding
            and node_state.state in JOINABLE_STATES
        ):
            return Action("join", record.name, f"booted; scheduler shows it {node_state.state}")
    if record.phase == JOINED:
        record.idle_since = None if has_job else (record.idle_since or now)
    if record.phase == DRAINING and not has_job:
        return Action("terminate", record.name, "drained and its last job has ended")
    return None


def _spare_nodes(records: dict[str, NodeRecord], busy: frozenset[str], retiring: set[str]) -> int:
    """Nodes that will be able to take a pending job: coming up, or joined and idle."""
    count = 0
    for record in records.values():
        if record.name in retiring:
            continue
        if record.phase in (REQUESTED, BOOTING) or (
            record.phase == JOINED and record.name not in busy
        ):
            count += 1
    return count


def _launches(
    shortfall: int,
    records: dict[str, NodeRecord],
    table: NodeTable,
    now: float,
    settings: PolicySettings,
) -> tuple[list[Action], str]:
    taken = set(records) | {o.node for o in table.orphans}
    free = [h for h in settings.hosts if h.name not in taken]
    room = settings.node_cap - len(records) - len(table.orphans)
    count = max(0, min(shortfall, room, len(free)))
    note = ""
    budget = settings.max_node_hours_per_day
    if budget is not None and count and table.node_hours_on(utc_day(now)) >= budget:
        note = f"daily budget of {budget:g} node-hours used up: not launching"
        count = 0
    elif count < shortfall:
        note = (
            f"jobs need {shortfall} more node(s); launching {count}"
            f" (cap {settings.node_cap}, {len(free)} free name(s) in hosts.json)"
        )
    reason = f"{shortfall} node(s) short for pending jobs"
    return [Action("launch", h.name, reason, ip=h.ip) for h in free[:count]], note


def _idle_removals(
    records: dict[str, NodeRecord],
    busy: frozenset[str],
    retiring: set[str],
    now: float,
    settings: PolicySettings,
) -> list[Action]:
    idle: Sequence[NodeRecord] = sorted(
        (
            r
            for r in records.values()
            if r.phase == JOINED
            and r.name not in busy
            and r.name not in retiring
            and r.idle_since is not None
            and now - r.idle_since >= settings.idle_timeout
        ),
        key=lambda r: (r.idle_since, r.name),
    )
    return [Action("remove", r.name, f"idle for {now - (r.idle_since or now):.0f} s") for r in idle]
