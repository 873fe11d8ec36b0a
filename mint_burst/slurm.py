"""Slurm adapter: squeue / sinfo / scontrol with fixed machine-readable formats.

squeue:  --noheader --array --format=%i|%T|%D|%r|%N  (job id, state, node count,
         reason, node list), one job array element per line.
sinfo:   --noheader --Node --format=%N|%T  (one line per node and partition).
scontrol update NodeName=X State=RESUME | DRAIN | DOWN Reason=...
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mint_burst.hostlist import expand_hostlist
from mint_burst.model import JOINABLE_STATES, Job, NodeState, QueueStatus
from mint_burst.scheduler import CommandRunner
from mint_common.errors import InputError, UnavailableError

SQUEUE_FORMAT = "%i|%T|%D|%r|%N"
SINFO_FORMAT = "%N|%T"
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
HELD_STATES = frozenset({"REQUEUE_HOLD", "RESV_DEL_HOLD"})
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
_NODE_STATE = re.compile(r"^([a-z_]+)((?:\+[a-z_]+)*)([*~#!%$@^+-]*)$")
_VERSION = re.compile(r"^slurm(?:-wlm)?\s+(\S+)\s*$")
LEAVE_REASON = "mint-burst: leaving the cluster"


def parse_squeue(text: str) -> tuple[Job, ...]:
    """Parse `squeue --format=%i|%T|%D|%r|%N` output; any unexpected line raises InputError."""
    jobs: list[Job] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 5:
            raise InputError(f"squeue output line {number}: expected 5 fields, got {line!r}")
        job_id, state, count, reason, nodelist = (f.strip() for f in fields)
        state = state.upper()
        if state in FINISHED_STATES:
            continue
        if state not in PENDING_STATES and state not in RUNNING_STATES:
            raise InputError(f"squeue output line {number}: unknown job state {state!r}")
        if not job_id or not count.isdigit() or int(count) < 1:
            raise InputError(f"squeue output line {number}: bad job id or node count in {line!r}")
        if state in PENDING_STATES:
            jobs.append(
                Job(
                    job_id, "pending", int(count), reason="held" if state in HELD_STATES else reason
                )
            )
            continue
        try:
            names = tuple(expand_hostlist(nodelist)) if nodelist and nodelist != "(null)" else ()
        except ValueError as exc:
            raise InputError(f"squeue output line {number}: {exc}") from None
        jobs.append(Job(job_id, "running", int(count), names, reason))
    return tuple(jobs)


def parse_node_state(text: str) -> tuple[str, str]:
    """`down*` -> ("down", "*"); `idle+cloud~` -> ("idle", "~"); raise ValueError otherwise."""
    match = _NODE_STATE.match(text.strip().lower())
    if not match:
        raise ValueError(f"unexpected node state {text!r}")
    return match.group(1), match.group(3)


def parse_sinfo(text: str) -> dict[str, NodeState]:
    """Parse `sinfo --Node --format=%N|%T` output into node name -> state."""
    nodes: dict[str, NodeState] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
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

    def get_status(self) -> QueueStatus:
        jobs = parse_squeue(
            self.runner.run(
                [
                    "squeue",
                    "--noheader",
                    "--array",
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
        return QueueStatus(self.queue, jobs, nodes)

    def node_state(self, node: str) -> NodeState:
        nodes: Mapping[str, NodeState] = parse_sinfo(
            self.runner.run(
                ["sinfo", "--noheader", "--Node", f"--nodes={node}", f"--format={SINFO_FORMAT}"]
            )
        )
        if node not in nodes:
            raise UnavailableError(f"slurm does not know node {node!r} (is it in slurm.conf?)")
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
        return [line.strip() for line in text.splitlines() if line.strip()]

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
        self.runner.run(argv, admin=True)
