"""The data mint-burst reasons about: queue status, node records, the node table, actions.

Everything here is plain data with no I/O, so the policy that works on it is a
pure function that tests (and the simulator) can drive with any clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Optional

from mint_common.errors import InputError
from mint_common.heartbeat import Heartbeat

REQUESTED, BOOTING, JOINED, DRAINING, TERMINATING = (
    "requested",
    "booting",
    "joined",
    "draining",
    "terminating",
)
PHASES = (REQUESTED, BOOTING, JOINED, DRAINING, TERMINATING)

# A job's state as the policy sees it (Job.state).
JOB_PENDING: Final = "pending"
JOB_RUNNING: Final = "running"

# What the policy can ask the engine to do with a node (Action.kind).
LAUNCH: Final = "launch"
JOIN: Final = "join"
REMOVE: Final = "remove"
TERMINATE: Final = "terminate"
ActionKind = Literal["launch", "join", "remove", "terminate"]

# Pending reasons that more nodes cannot cure (Slurm reason codes, Torque job states).
# `BeginTime` and `ReqNodeNotAvail` are not here: the policy weighs them (mint_burst.policy).
BLOCKED_REASONS = frozenset(
    {
        "dependency",
        "dependencyneversatisfied",
        "jobheldadmin",
        "jobhelduser",
        "held",
        "partitiondown",
        "partitioninactive",
        "assocgrpjobslimit",
        "qosmaxjobsperuserlimit",
        "invalidaccount",
        "invalidqos",
    }
)

# Scheduler node states in which a node is part of the cluster and can take or holds jobs.
# `planned`: backfill holds the idle node for a waiting job.
READY_STATES = frozenset(
    {"idle", "planned", "allocated", "mixed", "completing", "free", "job-exclusive"}
)
BUSY_STATES = frozenset({"allocated", "mixed", "completing", "job-exclusive", "job-busy"})
# States a freshly booted node may show until `join_cluster` puts it into service.
JOINABLE_STATES = frozenset({"down", "drained", "draining", "drain", "fail", "offline"})
# Slurm's state suffixes for a node on its way somewhere: powered off (~), powering up (#),
# pending power down (!), powering down (%), pending reboot (@), reboot issued (^).
TRANSITIONAL_FLAGS = frozenset("~#!%@^")


@dataclass(frozen=True)
class Job:
    """A pending or running job (or a line of a pending job array) of the burst queue.

    `tasks` is how many elements of a job array this line stands for that may start now
    (the array's throttle already applied); `start_time` is the scheduler's start estimate,
    for a `BeginTime` job the time it becomes eligible.
    """

    job_id: str
    state: Literal["pending", "running"]
    nodes: int
    node_names: tuple[str, ...] = ()
    reason: str = ""
    held: bool = False
    dependency: str = ""
    start_time: Optional[float] = None
    required_nodes: tuple[str, ...] = ()
    tasks: int = 1


@dataclass(frozen=True)
class NodeState:
    """One node as the scheduler sees it: base state plus Slurm's suffix flags (`*`, `~`, ...).

    `slurmd_started` is when the node's daemon last registered (0.0: not since the
    controller started), read only for nodes that a join could be meant for; None when
    the scheduler does not say.
    """

    name: str
    state: str
    flags: str = ""
    slurmd_started: Optional[float] = None

    @property
    def transitional(self) -> bool:
        return any(flag in TRANSITIONAL_FLAGS for flag in self.flags)

    @property
    def responding(self) -> bool:
        return "*" not in self.flags and not self.transitional

    @property
    def ready(self) -> bool:
        return self.responding and self.state in READY_STATES

    @property
    def busy(self) -> bool:
        return self.state in BUSY_STATES


@dataclass(frozen=True)
class Partition:
    """The queue as the scheduler defines it: its nodes and the most nodes one job may use."""

    nodes: tuple[str, ...]
    max_job_nodes: int


@dataclass(frozen=True)
class QueueStatus:
    """What the scheduler said about the queue and its nodes in one read."""

    queue: str
    jobs: tuple[Job, ...] = ()
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    partition: Optional[Partition] = None

    @property
    def pending(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if j.state == JOB_PENDING)

    @property
    def running(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if j.state == JOB_RUNNING)

    def busy_nodes(self) -> frozenset[str]:
        """Nodes running a job, by the job list or by the node's own state."""
        names = {n for j in self.running for n in j.node_names}
        names.update(n.name for n in self.nodes.values() if n.busy)
        return frozenset(names)


@dataclass(frozen=True)
class Host:
    """One entry of hosts.json: a node name and the private IP it must have."""

    ip: str
    name: str


@dataclass
class NodeRecord:
    """One burst node we launched (or are launching), with the times its phases began."""

    name: str
    ip: str
    phase: str
    launched_at: float
    phase_since: float
    instance_id: Optional[str] = None
    launch_token: str = ""
    joined_at: Optional[float] = None
    idle_since: Optional[float] = None
    silent_since: Optional[float] = None
    note: str = ""
    # Set when the launch call failed in a way that may still have created the VM (a
    # timeout, a lost answer, a script that died after creating it): the record stays
    # until a listing adopts the instance, or launch_grace passes without one showing it.
    launch_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if record.phase not in PHASES:
            raise ValueError(f"node {record.name!r}: unknown phase {record.phase!r}")
        return record

    def enter(self, phase: str, now: float, note: str = "") -> None:
        self.phase = phase
        self.phase_since = now
        self.note = note


@dataclass(frozen=True)
class Instance:
    """A cloud instance carrying our cluster tag, as the provider lists it."""

    instance_id: str
    node: str
    ip: str
    state: str
    launched_at: Optional[float] = None
    # The client token the instance was launched with, when the provider reports it.
    token: str = ""


@dataclass
class NodeTable:
    """The state file's content: our nodes, unknown tagged instances, usage, heartbeat."""

    records: dict[str, NodeRecord] = field(default_factory=dict)
    orphans: list[Instance] = field(default_factory=list)
    node_seconds_by_day: dict[str, float] = field(default_factory=dict)
    accounted_until: Optional[float] = None
    heartbeat: Optional[Heartbeat] = None
    backoffs: dict[str, float] = field(default_factory=dict)
    last_error: str = ""
    # Jobs no node we can add will ever serve, already logged (job id -> why).
    unservable: dict[str, str] = field(default_factory=dict)

    def billed_count(self) -> int:
        return len(self.records) + len(self.orphans)

    def node_hours_on(self, day: str) -> float:
        return self.node_seconds_by_day.get(day, 0.0) / 3600.0

    def account(self, now: float) -> None:
        """Add node-seconds since the last call to the UTC day(s) they fell in."""
        start = self.accounted_until if self.accounted_until is not None else now
        count = self.billed_count()
        while start < now and count:
            day_end = _next_midnight(start)
            end = min(now, day_end)
            key = utc_day(start)
            self.node_seconds_by_day[key] = (
                self.node_seconds_by_day.get(key, 0.0) + (end - start) * count
            )
            start = end
        self.accounted_until = now
        for old in sorted(self.node_seconds_by_day)[:-7]:
            del self.node_seconds_by_day[old]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "heartbeat": None if self.heartbeat is None else self.heartbeat.to_json(),
            "accounted_until": self.accounted_until,
            "node_seconds_by_day": self.node_seconds_by_day,
            "backoffs": self.backoffs,
            "last_error": self.last_error,
            "unservable": self.unservable,
            "nodes": [r.to_json() for r in sorted(self.records.values(), key=lambda r: r.name)],
            "orphans": [dataclasses.asdict(o) for o in self.orphans],
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> NodeTable:
        if not isinstance(data, dict) or data.get("version") != 1:
            raise InputError(f"state file {source}: not a mint-burst state (version 1) document")
        try:
            records = [NodeRecord.from_json(r) for r in data.get("nodes", [])]
            return cls(
                records={r.name: r for r in records},
                orphans=[Instance(**o) for o in data.get("orphans", [])],
                node_seconds_by_day={
                    str(k): float(v) for k, v in data.get("node_seconds_by_day", {}).items()
                },
                accounted_until=data.get("accounted_until"),
                # Releases before the shared heartbeat stored epoch seconds.
                heartbeat=Heartbeat.from_json(data.get("heartbeat")),
                backoffs={str(k): float(v) for k, v in data.get("backoffs", {}).items()},
                last_error=str(data.get("last_error", "")),
                unservable={str(k): str(v) for k, v in data.get("unservable", {}).items()},
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"state file {source}: malformed content: {exc}") from exc


@dataclass(frozen=True)
class Action:
    """One thing the policy wants done; the engine does it (or prints it on --dry-run)."""

    kind: ActionKind
    node: str
    reason: str
    ip: str = ""

    def describe(self) -> str:
        where = f" ({self.ip})" if self.ip else ""
        return f"{self.kind} {self.node}{where}: {self.reason}"


def utc_day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")


def _next_midnight(timestamp: float) -> float:
    day = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).date()
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return midnight.timestamp()
