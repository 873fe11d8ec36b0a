"""The scaling policy: a pure function of (queue status, node table, now, settings) -> decision.

It never does anything itself. The engine carries out `Decision.actions` and
keeps `Decision.records` (the node table with the policy's bookkeeping: idle
clocks, nodes seen to have joined). The rules:

- launch as many nodes as the demand needs, minus nodes already requested,
  booting or idle, up to the caps (free names in hosts.json, `max_nodes`, the
  daily node-hour budget), all in the same step;
- demand is read from the fields that carry it (see `job_demand`), not from the
  reason text alone: held jobs, jobs waiting on a dependency, array elements over
  the array's throttle and jobs pinned to nodes that are not ours are no demand;
  jobs that become eligible within `boot_timeout` are; jobs larger than the
  partition or than what our nodes can make of it are unservable, reported and
  ignored;
- a node that has not joined within `boot_timeout` is terminated, freeing its name;
  a node that is powering up or down is not joined yet;
- a booted node is joined (resumed) only once its slurmd has registered after our
  launch: after a controller restart a dead node shows `down` without `*` for a while;
- a joined node is removed once it has had no job for `idle_timeout`, never while it
  has one, and not while demand remains (the jobs are about to land on it);
- a joined node the scheduler has not heard from (`*`) for `boot_timeout`, with no job
  on it, is terminated whatever the demand: its VM died or hung, it is billed and holds
  a host name, and a new node boots within that time;
- a draining node is terminated once its last job ended;
- when the scheduler could not be read (`status is None`) nothing is decided at all.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from mint_burst.hostlist import expand_hostlist
from mint_burst.model import (
    BLOCKED_REASONS,
    BOOTING,
    DRAINING,
    JOIN,
    JOINABLE_STATES,
    JOINED,
    LAUNCH,
    REMOVE,
    REQUESTED,
    TERMINATE,
    Action,
    Host,
    Job,
    NodeRecord,
    NodeState,
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
    # Pending jobs no node we can add will ever serve: job id -> why.
    unservable: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Demand:
    """Nodes the pending jobs need now (or within boot_timeout), and the jobs never served."""

    nodes: int
    unservable: dict[str, str]


def demand(status: QueueStatus, settings: PolicySettings, now: float) -> Demand:
    nodes = 0
    unservable: dict[str, str] = {}
    ours = frozenset(h.name for h in settings.hosts)
    for job in status.pending:
        count, why = job_demand(job, status, settings, ours, now)
        nodes += count
        if why:
            unservable[job.job_id] = why
    return Demand(nodes, unservable)


def job_demand(
    job: Job, status: QueueStatus, settings: PolicySettings, ours: frozenset[str], now: float
) -> tuple[int, str]:
    """Nodes one pending job asks of us, and why it can never be served (if it cannot)."""
    if job.held or job.dependency:
        return 0, ""
    key = job.reason.split(",", 1)[0].strip().lower()
    if key == "begintime":
        # A job requeued after a node failure waits out a BeginTime of ~2 minutes: the
        # nodes it will need must not be removed meanwhile.
        if job.start_time is None or job.start_time - now > settings.boot_timeout:
            return 0, ""
    elif key == "reqnodenotavail":
        # Before a scale-up from zero every pending job names our down nodes here: that
        # is exactly the demand. A job waiting only for nodes that are not ours is not.
        named = _unavailable_nodes(job.reason)
        if named and not named & ours:
            return 0, ""
    elif key in BLOCKED_REASONS:
        return 0, ""
    if job.required_nodes and not set(job.required_nodes) & ours:
        return 0, ""
    why = _never_served(job, status, settings, ours)
    if why:
        return 0, why
    return job.nodes * job.tasks, ""


@functools.lru_cache(maxsize=256)
def _unavailable_nodes(reason: str) -> frozenset[str]:
    """`ReqNodeNotAvail, UnavailableNodes:c[2-4],s2` -> {c2, c3, c4, s2}.

    Cached: with a thousand pending jobs, most of them carry the same reason text.
    """
    _, found, listed = reason.partition("UnavailableNodes:")
    if not found or not listed.strip():
        return frozenset()
    try:
        return frozenset(expand_hostlist(listed.strip()))
    except ValueError:
        return frozenset()


def _never_served(
    job: Job, status: QueueStatus, settings: PolicySettings, ours: frozenset[str]
) -> str:
    partition = status.partition
    if partition is None:
        if job.nodes > settings.node_cap:
            return f"needs {job.nodes} node(s); at most {settings.node_cap} burst node(s)"
        return ""
    if job.nodes > partition.max_job_nodes:
        return (
            f"needs {job.nodes} node(s); partition {status.queue!r} allows"
            f" {partition.max_job_nodes}"
        )
    others = sum(1 for name in partition.nodes if name not in ours)
    if job.nodes > settings.node_cap + others:
        return (
            f"needs {job.nodes} node(s); at most {settings.node_cap} burst node(s)"
            f" and {others} other node(s) in partition {status.queue!r}"
        )
    return ""


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
            if action.kind in (REMOVE, TERMINATE):
                retiring.add(record.name)
    wanted = demand(status, settings, now)
    need = wanted.nodes
    spare = _spare_nodes(records, status, busy, retiring)
    notes: list[str] = []
    if need > spare:
        launches, note = _launches(need - spare, records, table, now, settings)
        actions.extend(launches)
        if note:
            notes.append(note)
    elif need == 0:
        actions.extend(_idle_removals(records, busy, retiring, now, settings))
    return Decision(tuple(actions), records, tuple(notes), wanted.unservable)


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
        action = _observe_starting(record, node_state, has_job, now, settings)
        if action is not None:
            return action
    if record.phase == JOINED:
        return _observe_joined(record, node_state, has_job, now, settings)
    if record.phase == DRAINING and not has_job:
        return Action(TERMINATE, record.name, "drained and its last job has ended")
    return None


def _observe_starting(
    record: NodeRecord,
    node_state: Optional[NodeState],
    has_job: bool,
    now: float,
    settings: PolicySettings,
) -> Optional[Action]:
    """A node coming up: joined once it runs a job or is ready; terminated past boot_timeout."""
    powering = node_state is not None and node_state.transitional
    if (has_job and not powering) or (node_state is not None and node_state.ready):
        record.enter(JOINED, now)
        record.joined_at = now
        return None
    if now - record.launched_at > settings.boot_timeout:
        return Action(
            TERMINATE,
            record.name,
            f"not joined within boot_timeout ({settings.boot_timeout:g} s)",
        )
    if record.phase == BOOTING and node_state is not None and _joinable(node_state, record):
        return Action(JOIN, record.name, f"booted; scheduler shows it {node_state.state}")
    return None


def _observe_joined(
    record: NodeRecord,
    node_state: Optional[NodeState],
    has_job: bool,
    now: float,
    settings: PolicySettings,
) -> Optional[Action]:
    """A node in service: track idle and silent time; terminate one silent past boot_timeout."""
    record.idle_since = None if has_job else (record.idle_since or now)
    silent = node_state is not None and "*" in node_state.flags
    record.silent_since = (record.silent_since or now) if silent else None
    if (
        silent
        and not has_job
        and record.silent_since is not None
        and now - record.silent_since >= settings.boot_timeout
    ):
        return Action(
            TERMINATE,
            record.name,
            f"not responding to the scheduler for {now - record.silent_since:.0f} s",
        )
    return None


def _joinable(node_state: NodeState, record: NodeRecord) -> bool:
    """Down or drained, responding, and (where the scheduler says) registered since our launch."""
    if not node_state.responding or node_state.state not in JOINABLE_STATES:
        return False
    started = node_state.slurmd_started
    # Slurm prints whole seconds: a start in the second of the launch counts as after it.
    return started is None or started >= int(record.launched_at)


def _spare_nodes(
    records: dict[str, NodeRecord], status: QueueStatus, busy: frozenset[str], retiring: set[str]
) -> int:
    """Nodes that will be able to take a pending job: coming up, or joined, idle and alive.

    A joined node the scheduler no longer hears from (`down*`: its VM died), or one it
    will not give jobs to (drained or down after a failed prolog, by an admin), is no
    spare: the jobs waiting need another node.
    """
    count = 0
    for record in records.values():
        if record.name in retiring:
            continue
        node_state = status.nodes.get(record.name)
        alive = node_state is None or node_state.ready
        if record.phase in (REQUESTED, BOOTING) or (
            record.phase == JOINED and record.name not in busy and alive
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
    return [Action(LAUNCH, h.name, reason, ip=h.ip) for h in free[:count]], note


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
    return [Action(REMOVE, r.name, f"idle for {now - (r.idle_since or now):.0f} s") for r in idle]
