"""Torque and PBS Pro adapter: qstat / pbsnodes in machine-readable form.

Torque:  `qstat -x <queue>` and `pbsnodes -x [node]` (XML).
PBS Pro: `qstat -f -F json <queue>` and `pbsnodes -a -F json` / `pbsnodes -F json <node>`.
A node leaves with `pbsnodes -o` (offline: running jobs go on, no new ones start)
and joins with `pbsnodes -c` (Torque) or `pbsnodes -r` (PBS Pro).
A queue that does not exist: both print the PBSE_UNKQUE text `Unknown queue` and fail
(`qstat -Q NAME` before anything is decided, and the step's own qstat): a ConfigError.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Literal

from mint_burst.model import JOB_PENDING, JOB_RUNNING, Job, NodeState, QueueStatus
from mint_burst.scheduler import (
    MAX_JSON_VALUES,
    CommandRunner,
    UnknownNode,
    check_json_size,
    message,
)
from mint_common.errors import ConfigError, InputError

PENDING = {"Q": "", "H": "held", "W": "begintime", "T": ""}
RUNNING = {"R", "E", "S", "B", "U"}
LEAVE_NOTE = "mint-burst: leaving the cluster"
UNKNOWN_QUEUE = "Unknown queue"
_NODES_SPEC = re.compile(r"^(\d+)")
_VERSION = re.compile(r"(?:Version:|pbs_version\s*=)\s*(\S+)")
# The most `<` a Torque XML answer may hold, counted before it is parsed (each element
# costs about 100 bytes parsed): some 6,000 jobs of `qstat -x`, which is also about what
# fits in MAX_OUTPUT_BYTES.
MAX_XML_TAGS = 600_000
Flavor = Literal["torque", "pbspro"]


def _node_count(resources: Mapping[str, Any]) -> int:
    if "nodect" in resources:
        return int(str(resources["nodect"]))
    spec = str(resources.get("nodes") or resources.get("select") or "1")
    total = 0
    for chunk in spec.split("+"):
        match = _NODES_SPEC.match(chunk)
        total += int(match.group(1)) if match else 1
    return max(total, 1)


def exec_hosts(text: str) -> tuple[str, ...]:
    """`c1/0+c1/1+c2/0-3` or `(c1:ncpus=1)+(c2:ncpus=1)` -> ("c1", "c2")."""
    # A dict keeps the order and makes a repeated name cheap (one exec_host can list
    # every core of a node).
    names: dict[str, None] = {}
    for chunk in text.split("+"):
        name = chunk.strip().strip("()").split("/")[0].split(":")[0].strip()
        if name:
            names[name] = None
    return tuple(names)


def _job(
    job_id: str, state: str, queue_of_job: str, resources: Mapping[str, Any], hosts: str, queue: str
) -> Job | None:
    if queue_of_job and queue_of_job != queue:
        return None
    try:
        count = _node_count(resources)
    except ValueError:
        raise InputError(f"qstat: job {job_id}: bad node count in {dict(resources)!r}") from None
    if state in PENDING:
        return Job(job_id, JOB_PENDING, count, reason=PENDING[state])
    if state in RUNNING:
        return Job(job_id, JOB_RUNNING, count, exec_hosts(hosts))
    if state == "C" or state == "F" or state == "X":
        return None
    raise InputError(f"qstat: job {job_id}: unknown job state {state!r}")


def _check_xml_size(text: str, what: str, max_tags: int) -> None:
    if text.count("<") > max_tags:
        raise InputError(
            f"{what} output has more than {max_tags:,} XML tags; refused (the bound is"
            " mint_burst.pbs.MAX_XML_TAGS)"
        )


def parse_qstat_xml(text: str, queue: str, *, max_tags: int = MAX_XML_TAGS) -> tuple[Job, ...]:
    if not text.strip():
        return ()
    _check_xml_size(text, "qstat -x", max_tags)
    try:
        root = ET.fromstring(text)  # noqa: S314 - trusted local command output
    except ET.ParseError as exc:
        raise InputError(f"qstat -x output is not valid XML: {exc}") from None
    if root.tag != "Data":
        raise InputError(f"qstat -x output: expected <Data>, got <{root.tag}>")
    jobs: list[Job] = []
    for element in root.findall("Job"):
        job_id = (element.findtext("Job_Id") or "").strip()
        state = (element.findtext("job_state") or "").strip()
        if not job_id or not state:
            raise InputError("qstat -x output: a <Job> without Job_Id or job_state")
        resources_el = element.find("Resource_List")
        resources = (
            {c.tag: (c.text or "") for c in resources_el} if resources_el is not None else {}
        )
        job = _job(
            job_id,
            state,
            (element.findtext("queue") or "").strip(),
            resources,
            element.findtext("exec_host") or "",
            queue,
        )
        if job is not None:
            jobs.append(job)
    return tuple(jobs)


def _load_json(text: str, what: str, max_values: int) -> dict[str, Any]:
    check_json_size(text, what, max_values=max_values)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} output is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    except RecursionError:
        raise InputError(f"{what} output: JSON nested too deeply") from None
    except ValueError as exc:  # an integer literal of more than 4,300 digits
        raise InputError(f"{what} output: unusable JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InputError(f"{what} output: expected a JSON object")
    return document


def parse_qstat_json(
    text: str, queue: str, *, max_values: int = MAX_JSON_VALUES
) -> tuple[Job, ...]:
    document = _load_json(text, "qstat -F json", max_values)
    jobs: list[Job] = []
    entries = document.get("Jobs", {})
    if not isinstance(entries, dict):
        raise InputError("qstat -F json output: 'Jobs' is not an object")
    for job_id, info in entries.items():
        if not isinstance(info, dict) or "job_state" not in info:
            raise InputError(f"qstat -F json output: job {job_id} has no job_state")
        job = _job(
            job_id,
            str(info["job_state"]),
            str(info.get("queue", "")),
            info.get("Resource_List") or {},
            str(info.get("exec_host", "")),
            queue,
        )
        if job is not None:
            jobs.append(job)
    return tuple(jobs)


def node_state_from_pbs(name: str, state_text: str, has_jobs: bool) -> NodeState:
    """Map `free`, `job-exclusive`, `offline`, `down,offline`, `state-unknown,down` ..."""
    states = {s.strip() for s in state_text.split(",") if s.strip()}
    if not states:
        raise InputError(f"pbsnodes: node {name} has no state")
    if states & {"down", "state-unknown", "stale", "unknown"}:
        return NodeState(name, "down", "*")
    if "offline" in states:
        return NodeState(name, "offline")
    if states & {"job-exclusive", "job-busy", "busy", "resv-exclusive"}:
        return NodeState(name, "job-exclusive")
    if "free" in states:
        return NodeState(name, "mixed" if has_jobs else "free")
    return NodeState(name, sorted(states)[0])


def _torque_jobs_field(text: str) -> list[str]:
    """`0/12.head,1/12.head` or `0-3/12.head` -> ["12.head"]."""
    ids: list[str] = []
    for chunk in text.split(","):
        job = chunk.split("/", 1)[-1].strip()
        if job and job not in ids:
            ids.append(job)
    return ids


def parse_pbsnodes_xml(
    text: str, *, max_tags: int = MAX_XML_TAGS
) -> dict[str, tuple[NodeState, list[str]]]:
    _check_xml_size(text, "pbsnodes -x", max_tags)
    try:
        root = ET.fromstring(text)  # noqa: S314 - trusted local command output
    except ET.ParseError as exc:
        raise InputError(f"pbsnodes -x output is not valid XML: {exc}") from None
    nodes: dict[str, tuple[NodeState, list[str]]] = {}
    for element in root.findall("Node"):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise InputError("pbsnodes -x output: a <Node> without a name")
        jobs = _torque_jobs_field(element.findtext("jobs") or "")
        nodes[name] = (node_state_from_pbs(name, element.findtext("state") or "", bool(jobs)), jobs)
    return nodes


def parse_pbsnodes_json(
    text: str, *, max_values: int = MAX_JSON_VALUES
) -> dict[str, tuple[NodeState, list[str]]]:
    document = _load_json(text, "pbsnodes -F json", max_values)
    entries = document.get("nodes", {})
    if not isinstance(entries, dict):
        raise InputError("pbsnodes -F json output: 'nodes' is not an object")
    nodes: dict[str, tuple[NodeState, list[str]]] = {}
    for name, info in entries.items():
        if not isinstance(info, dict) or "state" not in info:
            raise InputError(f"pbsnodes -F json output: node {name} has no state")
        raw_jobs = info.get("jobs") or []
        jobs: list[str] = []
        for entry in raw_jobs if isinstance(raw_jobs, list) else [raw_jobs]:
            job = str(entry).split("/")[0].strip()
            if job and job not in jobs:
                jobs.append(job)
        nodes[name] = (node_state_from_pbs(name, str(info["state"]), bool(jobs)), jobs)
    return nodes


class PbsScheduler:
    """The Scheduler protocol for Torque (`flavor="torque"`) and PBS Pro (`"pbspro"`)."""

    def __init__(self, queue: str, runner: CommandRunner, flavor: Flavor = "torque") -> None:
        self.queue = queue
        self.runner = runner
        self.flavor = flavor

    def _nodes(self, node: str | None = None) -> dict[str, tuple[NodeState, list[str]]]:
        if self.flavor == "torque":
            return parse_pbsnodes_xml(
                self.runner.run(["pbsnodes", "-x", *([node] if node else [])])
            )
        argv = ["pbsnodes", "-F", "json", node] if node else ["pbsnodes", "-a", "-F", "json"]
        return parse_pbsnodes_json(self.runner.run(argv))

    def check_queue(self) -> tuple[str, ...]:
        self._qstat(["qstat", "-Q", self.queue])
        # PBS binds nodes to queues loosely (queue resources, node properties): every
        # node the server knows may serve the queue.
        return tuple(self._nodes())

    def _qstat(self, argv: list[str]) -> str:
        result = self.runner.call(argv)
        if result.failed and UNKNOWN_QUEUE in result.stdout + result.stderr:
            raise ConfigError(
                f"queue {self.queue!r}: {self.flavor} has no such queue ({message(result)})"
            )
        return self.runner.checked(argv, result)

    def get_status(self) -> QueueStatus:
        if self.flavor == "torque":
            jobs = parse_qstat_xml(self._qstat(["qstat", "-x", self.queue]), self.queue)
        else:
            jobs = parse_qstat_json(
                self._qstat(["qstat", "-f", "-F", "json", self.queue]), self.queue
            )
        nodes = {name: state for name, (state, _jobs) in self._nodes().items()}
        return QueueStatus(self.queue, jobs, nodes)

    def _node(self, node: str) -> tuple[NodeState, list[str]]:
        nodes = self._nodes(node)
        if node not in nodes:
            raise UnknownNode(f"pbsnodes does not know node {node!r}")
        return nodes[node]

    def join_cluster(self, node: str) -> None:
        state, _jobs = self._node(node)
        if state.state == "offline":
            self.runner.run(
                ["pbsnodes", "-c" if self.flavor == "torque" else "-r", node], admin=True
            )

    def leave_cluster(self, node: str, *, force: bool = False) -> bool:
        self.runner.run(["pbsnodes", "-o", "-N", LEAVE_NOTE, node], admin=True)
        return force or not self.node_jobs(node)

    def node_jobs(self, node: str) -> list[str]:
        return self._node(node)[1]

    def check_version(self) -> str:
        text = self.runner.run(["qstat", "--version"])
        match = _VERSION.search(text)
        if not match:
            raise InputError(f"unexpected qstat --version output {text.strip()[:80]!r}")
        self._nodes()
        return f"{self.flavor} {match.group(1)} (qstat and pbsnodes answer)"
