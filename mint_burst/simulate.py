"""What-if replay of a job trace (sacct --parsable2) through the real policy and engine.

A simulated clock, Slurm-like scheduler (strict FIFO onto idle joined nodes;
a job killed by a node removal is requeued and rerun from the start) and cloud
provider stand in for the world. `ours` runs the real Engine (and so the real
policy) every `poll_interval`; `legacy` models the earlier burst agent's loop: read
pending/running counts (a failed read counts as 0/0), add one node and block
until it has booted, or wait CLEANUP_NODE_WAIT_TIME and then delete every node
if the queue still looks empty.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from mint_burst.engine import Engine
from mint_burst.model import JOB_PENDING, JOB_RUNNING, Host, Instance, Job, NodeState, QueueStatus
from mint_burst.policy import PolicySettings
from mint_burst.provider import LaunchRequest
from mint_burst.state import MemoryStore
from mint_common.checks import SKIP, CheckResult
from mint_common.errors import InputError, NoInputError, UnavailableError, UsageError
from mint_common.timeutil import parse_duration

Policy = Literal["ours", "legacy"]
TICK = 5.0
MAX_TRACE_JOBS = 1_000_000


@dataclass(frozen=True)
class TraceJob:
    job_id: str
    submit: float
    runtime: float
    nodes: int


def _timestamp(text: str) -> Optional[float]:
    if text in ("", "Unknown", "None", "N/A"):
        return None
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def read_trace(path: Path) -> list[TraceJob]:
    """The jobs of a trace file (see parse_sacct); 66 if it is missing, 65 if unreadable."""
    if not path.is_file():
        raise NoInputError(f"trace file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"trace file {path} is not UTF-8 text: {exc}") from None
    return parse_sacct(text, str(path))


def parse_fail_window(text: str) -> tuple[float, float]:
    """`T,DURATION` (e.g. `2h,15m`): the scheduler does not answer from T for DURATION."""
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"expected T,DURATION, got {text!r}")
    return parse_duration(parts[0]), parse_duration(parts[1])


def parse_sacct(text: str, source: str = "trace") -> list[TraceJob]:
    """`sacct --parsable2 --noheader --format=JobID,Submit,Start,End,NNodes,Partition,State`.

    Job steps (`123.batch`) and jobs that never started are skipped; submit
    times become seconds from the first submission.
    """
    rows: list[tuple[str, float, float, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("JobID|"):
            continue
        row = _sacct_row(line, f"{source} line {number}")
        if row is None:
            continue
        rows.append(row)
        if len(rows) > MAX_TRACE_JOBS:
            raise InputError(f"{source}: more than {MAX_TRACE_JOBS} jobs")
    if not rows:
        raise InputError(f"{source}: no job with a start and an end time")
    origin = min(r[1] for r in rows)
    jobs = [TraceJob(j, s - origin, rt, n) for j, s, rt, n in rows]
    return sorted(jobs, key=lambda j: (j.submit, j.job_id))


def _sacct_row(line: str, where: str) -> Optional[tuple[str, float, float, int]]:
    """(job id, submit time, runtime, nodes) of one sacct line; None for a step or an unrun job."""
    fields = line.split("|")
    if len(fields) != 7:
        raise InputError(f"{where}: expected 7 '|'-separated fields, got {line!r}")
    job_id, submit, start, end, nnodes = fields[:5]
    if "." in job_id:
        return None
    try:
        submitted, started, ended = _timestamp(submit), _timestamp(start), _timestamp(end)
        nodes = int(nnodes)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    if submitted is None:
        raise InputError(f"{where}: job {job_id} has no submit time")
    if started is None or ended is None:
        return None
    if ended < started or nodes < 1:
        raise InputError(f"{where}: job {job_id} ends before it starts or uses no node")
    return job_id, submitted, ended - started, nodes


@dataclass
class _SimJob:
    trace: TraceJob
    order: int
    start: Optional[float] = None
    end: Optional[float] = None
    nodes: tuple[str, ...] = ()
    killed: int = 0


@dataclass
class _SimNode:
    name: str
    instance_id: str
    launched_at: float
    ready_at: float
    joined: bool = False
    drained: bool = False
    job: Optional[_SimJob] = None


@dataclass
class Timeline:
    """Nodes billed (booting or up) and jobs pending, sampled whenever either changes."""

    hours: list[float] = field(default_factory=lambda: [0.0])
    nodes: list[int] = field(default_factory=lambda: [0])
    pending: list[int] = field(default_factory=lambda: [0])

    def sample(self, now: float, nodes: int, pending: int) -> None:
        if (self.nodes[-1], self.pending[-1]) == (nodes, pending):
            return
        self.hours.append(now / 3600)
        self.nodes.append(nodes)
        self.pending.append(pending)

    def close(self, now: float) -> None:
        """A last point at the end, so a step plot reaches the end of the replay."""
        if self.hours[-1] < now / 3600:
            self.hours.append(now / 3600)
            self.nodes.append(self.nodes[-1])
            self.pending.append(self.pending[-1])


@dataclass
class SimResult:
    policy: str
    jobs: int
    node_hours_billed: float
    idle_node_hours: float
    mean_wait_s: float
    p95_wait_s: float
    max_nodes: int
    scale_events: int
    jobs_killed: int
    makespan_h: float
    timeline: Optional[Timeline] = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, object]:
        return {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in vars(self).items()
            if k != "timeline"
        }


@dataclass
class World:
    """The simulated cluster: clock, FIFO scheduler, instances, billing."""

    jobs: list[TraceJob]
    boot_time: float
    fail_window: Optional[tuple[float, float]] = None
    now: float = 0.0
    pending: list[tuple[int, _SimJob]] = field(default_factory=list)
    running: list[tuple[float, int, _SimJob]] = field(default_factory=list)
    nodes: dict[str, _SimNode] = field(default_factory=dict)
    done: list[_SimJob] = field(default_factory=list)
    billed_seconds: float = 0.0
    busy_seconds: float = 0.0
    launches: int = 0
    terminations: int = 0
    killed: int = 0
    max_nodes: int = 0
    timeline: Optional[Timeline] = None
    _next_submit: int = 0
    _serial: int = 0

    def advance(self, until: float) -> None:
        while self.now < until:
            self.now = min(until, self.now + TICK)
            self._finish_jobs()
            self._submit_jobs()
            for node in self.nodes.values():
                self.billed_seconds += TICK
                if node.job is not None:
                    self.busy_seconds += TICK
            self._schedule()
            if self.timeline is not None:
                self.timeline.sample(self.now, len(self.nodes), len(self.pending))

    def _finish_jobs(self) -> None:
        while self.running and self.running[0][0] <= self.now:
            _end, _order, job = heapq.heappop(self.running)
            job.end = self.now
            for name in job.nodes:
                self.nodes[name].job = None
            self.done.append(job)

    def _submit_jobs(self) -> None:
        while (
            self._next_submit < len(self.jobs) and self.jobs[self._next_submit].submit <= self.now
        ):
            job = _SimJob(self.jobs[self._next_submit], self._next_submit)
            bisect.insort(self.pending, (job.order, job))
            self._next_submit += 1

    def _schedule(self) -> None:
        while self.pending:
            job = self.pending[0][1]
            free = [n for n in self.nodes.values() if self._usable(n)]
            if len(free) < job.trace.nodes:
                return
            self.pending.pop(0)
            chosen = sorted(free, key=lambda n: n.name)[: job.trace.nodes]
            job.start, job.nodes = self.now, tuple(n.name for n in chosen)
            for node in chosen:
                node.job = job
            heapq.heappush(self.running, (self.now + job.trace.runtime, job.order, job))

    def _usable(self, node: _SimNode) -> bool:
        return node.joined and not node.drained and node.job is None and node.ready_at <= self.now

    def finished(self) -> bool:
        return (
            self._next_submit == len(self.jobs)
            and not self.pending
            and not self.running
            and not self.nodes
        )

    def scheduler_down(self) -> bool:
        return self.fail_window is not None and (
            self.fail_window[0] <= self.now < self.fail_window[0] + self.fail_window[1]
        )

    # provider side
    def launch(self, name: str) -> str:
        self._serial += 1
        instance_id = f"i-sim{self._serial:08d}"
        self.nodes[name] = _SimNode(name, instance_id, self.now, self.now + self.boot_time)
        self.launches += 1
        self.max_nodes = max(self.max_nodes, len(self.nodes))
        return instance_id

    def terminate(self, name: str) -> None:
        node = self.nodes.pop(name, None)
        if node is None:
            return
        self.terminations += 1
        if node.job is not None:
            self._kill(node.job)

    def _kill(self, job: _SimJob) -> None:
        """A node under the job vanished: Slurm requeues the job; it reruns from the start."""
        self.running = [r for r in self.running if r[2] is not job]
        heapq.heapify(self.running)
        for name in job.nodes:
            if name in self.nodes:
                self.nodes[name].job = None
        job.start, job.nodes = None, ()
        job.killed += 1
        self.killed += 1
        bisect.insort(self.pending, (job.order, job))

    def node_state(self, name: str) -> NodeState:
        node = self.nodes.get(name)
        if node is None or node.ready_at > self.now:
            return NodeState(name, "down", "*")
        if not node.joined:
            return NodeState(name, "down")
        if node.job is not None:
            return NodeState(name, "allocated")
        return NodeState(name, "drained" if node.drained else "idle")


class SimScheduler:
    def __init__(self, world: World, hosts: Sequence[Host]) -> None:
        self.world = world
        self.hosts = hosts

    def get_status(self) -> QueueStatus:
        if self.world.scheduler_down():
            raise UnavailableError(
                "squeue exited with status 1: slurm_load_jobs error:"
                " Unable to contact slurm controller (connect failure)"
            )
        jobs = [
            Job(j.trace.job_id, JOB_PENDING, j.trace.nodes, reason="Resources")
            for _o, j in self.world.pending
        ]
        jobs.extend(
            Job(j.trace.job_id, JOB_RUNNING, j.trace.nodes, j.nodes)
            for _e, _o, j in self.world.running
        )
        nodes = {h.name: self.world.node_state(h.name) for h in self.hosts}
        return QueueStatus("cloud", tuple(jobs), nodes)

    def join_cluster(self, node: str) -> None:
        sim = self.world.nodes.get(node)
        if sim is None or sim.ready_at > self.world.now:
            raise UnavailableError(f"node {node} is not responding")
        sim.joined, sim.drained = True, False

    def leave_cluster(self, node: str, *, force: bool = False) -> bool:
        sim = self.world.nodes.get(node)
        if sim is None:
            return True
        sim.drained = True
        return force or sim.job is None

    def node_jobs(self, node: str) -> list[str]:
        sim = self.world.nodes.get(node)
        return [sim.job.trace.job_id] if sim is not None and sim.job is not None else []

    def check_version(self) -> str:
        return "simulated slurm"


class SimProvider:
    def __init__(self, world: World) -> None:
        self.world = world
        self.backoffs: dict[str, float] = {}
        self._ids: dict[str, str] = {}

    def launch(self, request: LaunchRequest) -> str:
        instance_id = self.world.launch(request.node)
        self._ids[instance_id] = request.node
        return instance_id

    def list_instances(self) -> list[Instance]:
        return [
            Instance(n.instance_id, n.name, "", "running", n.launched_at)
            for n in self.world.nodes.values()
        ]

    def terminate(self, instance_ids: Sequence[str]) -> None:
        for instance_id in instance_ids:
            name = self._ids.pop(instance_id, None)
            if name is not None:
                self.world.terminate(name)

    def check(self) -> list[tuple[str, str]]:
        return [("simulated provider", "ok")]

    def check_hosts(self, name: str, hosts: Sequence[Host]) -> CheckResult:
        return CheckResult(name, SKIP, "simulated provider: every host fits")


def sim_hosts(count: int) -> tuple[Host, ...]:
    return tuple(
        Host(f"10.200.{i // 250}.{i % 250 + 1}", f"burst{i + 1:03d}") for i in range(count)
    )


def _run_ours(
    world: World, hosts: tuple[Host, ...], idle_timeout: float, poll: float, horizon: float
) -> None:
    settings = PolicySettings(
        hosts=hosts,
        max_nodes=len(hosts),
        idle_timeout=idle_timeout,
        boot_timeout=max(900.0, 3 * world.boot_time),
    )
    engine = Engine(
        scheduler=SimScheduler(world, hosts),
        provider=SimProvider(world),
        store=MemoryStore(),
        settings=settings,
        user_data=lambda _h: "",
        clock=lambda: world.now,
    )
    while not world.finished() and world.now < horizon:
        engine.step()
        world.advance(world.now + poll)


def _run_legacy(
    world: World, hosts: tuple[Host, ...], idle_timeout: float, poll: float, horizon: float
) -> None:
    scheduler = SimScheduler(world, hosts)

    def counts() -> tuple[int, int]:
        try:
            status = scheduler.get_status()
        except UnavailableError:
            return 0, 0  # the earlier agent's get_status counts lines of a failed squeue: none
        return len(status.pending), len(status.running)

    while not world.finished() and world.now < horizon:
        pending, _running = counts()
        if pending > 0:
            free = [h for h in hosts if h.name not in world.nodes]
            if free:
                name = free[0].name
                world.launch(name)
                world.advance(world.now + world.boot_time)  # create_unit blocks until booted
                world.nodes[name].joined = True
        else:
            world.advance(world.now + idle_timeout)
            pending, running = counts()
            if pending == 0 and running == 0:
                for name in list(world.nodes):
                    world.terminate(name)
        world.advance(world.now + poll)


def compare(
    jobs: list[TraceJob],
    policies: Literal["ours", "legacy", "both"],
    **settings: Any,
) -> list[SimResult]:
    """One replay per policy: `both` runs ours and then the legacy loop on the same trace."""
    chosen: tuple[Policy, ...] = ("ours", "legacy") if policies == "both" else (policies,)
    return [simulate(jobs, policy=name, **settings) for name in chosen]


def simulate(
    jobs: list[TraceJob],
    *,
    policy: Policy,
    boot_time: float = 180.0,
    max_nodes: int = 16,
    idle_timeout: float = 600.0,
    poll_interval: float = 60.0,
    squeue_fail: Optional[tuple[float, float]] = None,
    record: bool = False,
) -> SimResult:
    """Replay `jobs` under `policy`; with `record`, the result carries its Timeline."""
    _check_settings(boot_time=boot_time, idle_timeout=idle_timeout, poll_interval=poll_interval)
    widest = max(j.nodes for j in jobs)
    if widest > max_nodes:
        raise InputError(f"the trace has a {widest}-node job but --max-nodes is {max_nodes}")
    world = World(
        jobs=jobs,
        boot_time=boot_time,
        fail_window=squeue_fail,
        timeline=Timeline() if record else None,
    )
    hosts = sim_hosts(max_nodes)
    horizon = jobs[-1].submit + sum(j.runtime for j in jobs) + 48 * 3600
    runner = _run_ours if policy == "ours" else _run_legacy
    # The engine logs every unreadable queue and every launch; a replay would drown in them.
    engine_log = logging.getLogger("mint_burst.engine")
    was_disabled, engine_log.disabled = engine_log.disabled, True
    try:
        runner(world, hosts, idle_timeout, poll_interval, horizon)
    finally:
        engine_log.disabled = was_disabled
    for name in list(world.nodes):
        world.terminate(name)
    if world.timeline is not None:
        world.timeline.sample(world.now, 0, len(world.pending))
        world.timeline.close(world.now)
    waits = sorted((j.start or world.now) - j.trace.submit for j in world.done)
    return SimResult(
        policy=policy,
        jobs=len(world.done),
        node_hours_billed=world.billed_seconds / 3600,
        idle_node_hours=(world.billed_seconds - world.busy_seconds) / 3600,
        mean_wait_s=sum(waits) / len(waits) if waits else 0.0,
        p95_wait_s=_percentile(waits, 0.95),
        max_nodes=world.max_nodes,
        scale_events=world.launches + world.terminations,
        jobs_killed=world.killed,
        makespan_h=world.now / 3600,
        timeline=world.timeline,
    )


def _check_settings(**durations: float) -> None:
    # A zero poll interval would never move the clock: the replay would not end.
    for name, seconds in durations.items():
        flag = "--" + name.replace("_", "-")
        if seconds < 0:
            raise UsageError(f"{flag} must not be negative, got {seconds:g}")
        if name == "poll_interval" and seconds == 0:
            raise UsageError(f"{flag} must be above 0")


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]
