"""Slurm adapter: scontrol / squeue / sinfo with fixed machine-readable formats.

One step reads (Slurm 22.05.8 on Debian 12 is the tested release):
scontrol --oneliner show partition Q   the queue exists (rc 1 "Partition Q not found"
                                        otherwise), its nodes and its per-job node limit
squeue --noheader --partition=Q --format=%i|%T|%D|%Q|%F|%K|%S|%N|%n|%E|%r
                                        one line per job; a pending job array stays one
                                        line (`4_[2-6%2]`, %K `2-6%2`), so its throttle
                                        is visible and 1,000 elements cost one line
sinfo --noheader --Node --partition=Q --format=%N|%T
scontrol --oneliner show node A,B      only for nodes a join could be meant for:
                                        SlurmdStartTime says whether slurmd has really
                                        registered since our launch
scontrol update NodeName=X State=RESUME | DRAIN | DOWN Reason=...
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Optional

from mint_burst.hostlist import MAX_NAMES_PER_ANSWER, NameBudget, expand_hostlist
from mint_burst.model import (
    JOB_PENDING,
    JOB_RUNNING,
    JOINABLE_STATES,
    Job,
    NodeState,
    Partition,
    QueueStatus,
)
from mint_burst.scheduler import MAX_LINES, CommandRunner, UnknownNode, iter_lines, message
from mint_common.errors import ConfigError, InputError

SQUEUE_FORMAT = "%i|%T|%D|%Q|%F|%K|%S|%N|%n|%E|%r"
SQUEUE_FIELDS = SQUEUE_FORMAT.count("|") + 1
SINFO_FORMAT = "%N|%T"
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
HELD_STATES = frozenset({"REQUEUE_HOLD", "RESV_DEL_HOLD"})
HELD_REASONS = ("jobhelduser", "jobheldadmin", "job requeued in held state")
RUNNING_STATES = frozenset(
    {
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESIZING",
    }
)
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)
NO_VALUE = frozenset({"", "(null)", "N/A", "None", "Unknown"})
_NODE_STATE = re.compile(r"^([a-z_]+)((?:\+[a-z_]+)*)([*~#!%$@^+-]*)$")
_VERSION = re.compile(r"^slurm(?:-wlm)?\s+(\S+)\s*$")
_PARTITION_NOT_FOUND = re.compile(r"^Partition \S+ not found$", re.MULTILINE)
_INVALID_NODE = re.compile(r"Invalid node name specified")
_TASKS = re.compile(r"^([0-9]{1,9})(?:-([0-9]{1,9}))?(?::([0-9]{1,9}))?$")
_COUNT = re.compile(r"^[0-9]{1,9}$")
LEAVE_REASON = "mint-burst: leaving the cluster"


def slurm_time(text: str) -> Optional[float]:
    """`2026-11-29T21:58:18` (Slurm prints local time) -> epoch seconds; N/A, None -> None."""
    text = text.strip()
    if text in NO_VALUE:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        raise InputError(f"unexpected Slurm time {text[:40]!r}") from None


def key_values(line: str) -> dict[str, str]:
    """One `scontrol --oneliner show` record -> {Key: value} (values have no spaces we need)."""
    found: dict[str, str] = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep and key not in found:
            found[key] = value
    return found


def parse_partition(text: str, queue: str) -> Partition:
    """`scontrol --oneliner show partition Q` -> its nodes and the most nodes a job may use."""
    first = next(iter_lines(text, "scontrol show partition"), (0, ""))[1]
    fields = key_values(first)
    if fields.get("PartitionName") != queue or "TotalNodes" not in fields:
        raise InputError(f"scontrol show partition {queue}: unexpected output {text[:80]!r}")
    try:
        nodes = () if fields.get("Nodes") in NO_VALUE else tuple(expand_hostlist(fields["Nodes"]))
        total = int(fields["TotalNodes"])
        limit = fields.get("MaxNodes", "UNLIMITED")
        max_job = total if limit == "UNLIMITED" else min(total, int(limit))
    except ValueError as exc:
        raise InputError(f"scontrol show partition {queue}: {exc}") from None
    return Partition(nodes, max_job)


def parse_slurmd_started(text: str) -> dict[str, float]:
    """`scontrol --oneliner show node A,B` -> name -> SlurmdStartTime (0.0 when `None`)."""
    started: dict[str, float] = {}
    for _number, line in iter_lines(text, "scontrol show node"):
        fields = key_values(line)
        if "NodeName" in fields:
            started[fields["NodeName"]] = slurm_time(fields.get("SlurmdStartTime", "None")) or 0.0
    return started


@dataclass(frozen=True)
class _Line:
    job: Job
    array_id: str
    tasks: tuple[int, int]  # (pending elements on this line, the array's throttle or 0)


def _array_tasks(text: str) -> tuple[int, int]:
    """%K of a pending array line: `2-6%2` -> (5, 2); `1,3,5-7` -> (5, 0); `N/A` -> (1, 0)."""
    if text in NO_VALUE:
        return 1, 0
    spec, _, throttle = text.partition("%")
    count = 0
    for part in spec.split(","):
        match = _TASKS.match(part.strip())
        if not match:
            raise ValueError(f"bad array task list {text!r}")
        first, last, step = match.group(1), match.group(2) or match.group(1), match.group(3) or "1"
        count += len(range(int(first), int(last) + 1, max(int(step), 1)))
    return count, int(throttle) if _COUNT.match(throttle) else 0


def _hosts(text: str, budget: NameBudget) -> tuple[str, ...]:
    return () if text in NO_VALUE else tuple(budget.expand(text))


def _squeue_line(number: int, line: str, budget: NameBudget) -> Optional[_Line]:
    fields = [f.strip() for f in line.strip().split("|", SQUEUE_FIELDS - 1)]
    if len(fields) != SQUEUE_FIELDS:
        raise InputError(
            f"squeue output line {number}: expected {SQUEUE_FIELDS} fields, got {line!r}"
        )
    job_id, state, count, priority, array_id, tasks, start, nodelist, required, depend, reason = (
        fields
    )
    state = state.upper()
    if state in FINISHED_STATES:
        return None
    if state not in PENDING_STATES and state not in RUNNING_STATES:
        raise InputError(f"squeue output line {number}: unknown job state {state!r}")
    if not job_id or not _COUNT.match(count) or int(count) < 1:
        raise InputError(f"squeue output line {number}: bad job id or node count in {line!r}")
    try:
        if state in RUNNING_STATES:
            job = Job(job_id, JOB_RUNNING, int(count), _hosts(nodelist, budget), reason)
            return _Line(job, array_id, (0, 0) if tasks in NO_VALUE else (1, 0))
        held = state in HELD_STATES or priority == "0" or reason.lower().startswith(HELD_REASONS)
        job = Job(
            job_id,
            JOB_PENDING,
            int(count),
            reason=reason,
            held=held,
            dependency=_open_dependency(depend),
            start_time=slurm_time(start),
            required_nodes=_hosts(required, budget),
        )
        return _Line(job, array_id, _array_tasks(tasks))
    except (ValueError, InputError) as exc:
        detail = exc.message if isinstance(exc, InputError) else str(exc)
        raise InputError(f"squeue output line {number}: {detail}") from None


def _open_dependency(text: str) -> str:
    """`afterok:1(unfulfilled)` -> itself; `(null)` or only fulfilled parts -> ``."""
    if text in NO_VALUE:
        return ""
    parts = [p for p in re.split(r"[,?]", text) if p]
    return "" if all(p.endswith("(fulfilled)") for p in parts) else text


def parse_squeue(
    text: str, *, max_names: int = MAX_NAMES_PER_ANSWER, max_lines: int = MAX_LINES
) -> tuple[Job, ...]:
    """Parse `squeue --format=SQUEUE_FORMAT` output; any unexpected line raises InputError.

    A pending job array line stands for as many elements as its throttle still lets
    start beside the array's running elements (`Job.tasks`). The node lists of all
    lines together expand to at most `max_names` names; at most `max_lines` lines are read.
    Lines are taken one at a time, so the first bad one stops the parse.
    """
    budget = NameBudget(max_names)
    lines = [
        parsed
        for number, line in iter_lines(text, "squeue", max_lines=max_lines)
        if (parsed := _squeue_line(number, line, budget)) is not None
    ]
    running: dict[str, int] = {}
    for line in lines:
        if line.job.state == JOB_RUNNING:
            running[line.array_id] = running.get(line.array_id, 0) + line.tasks[0]
    allowed: dict[str, int] = {}
    jobs: list[Job] = []
    for line in lines:
        pending, throttle = line.tasks
        if line.job.state == JOB_RUNNING or (pending == 1 and not throttle):
            jobs.append(line.job)
            continue
        if throttle:
            left = allowed.setdefault(
                line.array_id, max(0, throttle - running.get(line.array_id, 0))
            )
            pending = min(pending, left)
            allowed[line.array_id] = left - pending
        jobs.append(replace(line.job, tasks=pending))
    return tuple(jobs)


def parse_node_state(text: str) -> tuple[str, str]:
    """`down*` -> ("down", "*"); `idle+cloud~` -> ("idle", "~"); raise ValueError otherwise."""
    match = _NODE_STATE.match(text.strip().lower())
    if not match:
        raise ValueError(f"unexpected node state {text!r}")
    return match.group(1), match.group(3)


def parse_sinfo(text: str, *, max_lines: int = MAX_LINES) -> dict[str, NodeState]:
    """Parse `sinfo --Node --format=%N|%T` output into node name -> state, line by line."""
    nodes: dict[str, NodeState] = {}
    for number, line in iter_lines(text, "sinfo", max_lines=max_lines):
        fields = line.strip().split("|")
        if len(fields) != 2 or not fields[0].strip():
            raise InputError(f"sinfo output line {number}: expected NODE|STATE, got {line!r}")
        try:
            state, flags = parse_node_state(fields[1])
        except ValueError as exc:
            raise InputError(f"sinfo output line {number}: {exc}") from None
        name = fields[0].strip()
        nodes[name] = NodeState(name, state, flags)
    return nodes


def parse_version(text: str) -> str:
    match = _VERSION.match(text.strip())
    if not match:
        raise InputError(f"unexpected version output {text.strip()[:80]!r}")
    return match.group(1)


class SlurmScheduler:
    """The Scheduler protocol for Slurm."""

    def __init__(self, queue: str, runner: CommandRunner) -> None:
        self.queue = queue
        self.runner = runner

    def check_queue(self) -> tuple[str, ...]:
        return self._partition().nodes

    def _partition(self) -> Partition:
        argv = ["scontrol", "--oneliner", "show", "partition", self.queue]
        result = self.runner.call(argv)
        if result.failed and _PARTITION_NOT_FOUND.search(result.stdout + result.stderr):
            # squeue and sinfo answer an unknown partition with an empty list, exit 0.
            raise ConfigError(
                f"queue {self.queue!r}: Slurm has no such partition ({message(result)})"
            )
        return parse_partition(self.runner.checked(argv, result), self.queue)

    def get_status(self) -> QueueStatus:
        partition = self._partition()
        jobs = parse_squeue(
            self.runner.run(
                [
                    "squeue",
                    "--noheader",
                    f"--partition={self.queue}",
                    f"--format={SQUEUE_FORMAT}",
                ]
            )
        )
        nodes = parse_sinfo(
            self.runner.run(
                [
                    "sinfo",
                    "--noheader",
                    "--Node",
                    f"--partition={self.queue}",
                    f"--format={SINFO_FORMAT}",
                ]
            )
        )
        return QueueStatus(self.queue, jobs, self._with_start_times(nodes), partition)

    def _with_start_times(self, nodes: dict[str, NodeState]) -> dict[str, NodeState]:
        """Add SlurmdStartTime to the nodes a join could be meant for (down or drained)."""
        candidates = sorted(
            n.name for n in nodes.values() if n.responding and n.state in JOINABLE_STATES
        )
        if not candidates:
            return nodes
        started = parse_slurmd_started(
            self.runner.run(["scontrol", "--oneliner", "show", "node", ",".join(candidates)])
        )
        return {
            name: replace(node, slurmd_started=started.get(name, 0.0))
            if name in candidates
            else node
            for name, node in nodes.items()
        }

    def node_state(self, node: str) -> NodeState:
        nodes: Mapping[str, NodeState] = parse_sinfo(
            self.runner.run(
                ["sinfo", "--noheader", "--Node", f"--nodes={node}", f"--format={SINFO_FORMAT}"]
            )
        )
        if node not in nodes:
            raise UnknownNode(f"slurm does not know node {node!r} (is it in slurm.conf?)")
        return nodes[node]

    def join_cluster(self, node: str) -> None:
        if self.node_state(node).state in JOINABLE_STATES:
            self._update(node, "RESUME")

    def leave_cluster(self, node: str, *, force: bool = False) -> bool:
        self._update(node, "DRAIN", LEAVE_REASON)
        if self.node_jobs(node) and not force:
            return False
        self._update(node, "DOWN", LEAVE_REASON)
        return True

    def node_jobs(self, node: str) -> list[str]:
        text = self.runner.run(
            [
                "squeue",
                "--noheader",
                f"--nodelist={node}",
                "--states=RUNNING,COMPLETING,CONFIGURING,SUSPENDED,STOPPED",
                "--format=%i",
            ]
        )
        return [line.strip() for _number, line in iter_lines(text, "squeue --nodelist")]

    def check_version(self) -> str:
        versions = {
            tool: parse_version(self.runner.run([tool, "--version"]))
            for tool in ("squeue", "sinfo", "scontrol")
        }
        return f"slurm {versions['sinfo']} (squeue, sinfo and scontrol answer)"

    def _update(self, node: str, state: str, reason: str = "") -> None:
        argv = ["scontrol", "update", f"NodeName={node}", f"State={state}"]
        if reason:
            argv.append(f"Reason={reason}")
        result = self.runner.call(argv, admin=True)
        if result.failed and _INVALID_NODE.search(result.stdout + result.stderr):
            raise UnknownNode(
                f"slurm does not know node {node!r}: {message(result)} (is it in slurm.conf?)"
            )
        self.runner.checked(argv, result)
