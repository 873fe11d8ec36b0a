"""mint-burst: time of one policy step with 1,000 nodes and 10,000 pending jobs.

    python benchmarks/burst_policy_step.py

The node table holds 1,000 records in every phase (mostly joined, half of them
busy); the queue holds 10,000 pending jobs of 1 to 4 nodes and 500 running ones.
Prints the median, p95 and worst of 50 timed calls of `decide` (target: < 50 ms).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from mint_burst.model import (
    BOOTING,
    DRAINING,
    JOINED,
    Job,
    NodeRecord,
    NodeState,
    NodeTable,
    QueueStatus,
)
from mint_burst.policy import PolicySettings, decide
from mint_burst.simulate import sim_hosts

NODES, PENDING, RUNS = 1000, 10_000, 50


def world(rng: random.Random) -> tuple[QueueStatus, NodeTable, PolicySettings, float]:
    now = 1_800_000_000.0
    hosts = sim_hosts(1200)
    records: dict[str, NodeRecord] = {}
    states: dict[str, NodeState] = {}
    running: list[Job] = []
    for index, host in enumerate(hosts[:NODES]):
        phase = JOINED if index % 10 else rng.choice([BOOTING, DRAINING])
        records[host.name] = NodeRecord(
            host.name,
            host.ip,
            phase,
            now - 3000,
            now - 3000,
            f"i-{index:08x}",
            idle_since=now - rng.uniform(0, 900),
        )
        busy = index % 2 == 0
        states[host.name] = NodeState(host.name, "allocated" if busy else "idle")
        if busy and len(running) < 500:
            running.append(Job(f"r{index}", "running", 1, (host.name,)))
    pending = [
        Job(f"p{i}", "pending", rng.choice([1, 1, 2, 4]), reason="Resources")
        for i in range(PENDING)
    ]
    status = QueueStatus("cloud", tuple(pending + running), states)
    settings = PolicySettings(hosts=hosts, max_nodes=1200, idle_timeout=600, boot_timeout=900)
    return status, NodeTable(records=records), settings, now


def main() -> int:
    status, table, settings, now = world(random.Random(7))
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        decision = decide(status, table, now, settings)
        timings.append((time.perf_counter() - started) * 1000)
    launches = sum(1 for a in decision.actions if a.kind == "launch")
    ordered = sorted(timings)
    median, p95, worst = statistics.median(ordered), ordered[int(0.95 * RUNS) - 1], ordered[-1]
    print(
        f"one policy step, {NODES} nodes, {PENDING} pending jobs: median {median:.1f} ms,"
        f" p95 {p95:.1f} ms, worst {worst:.1f} ms (first call {timings[0]:.1f} ms) over"
        f" {RUNS} runs ({len(decision.actions)} actions, {launches} launches)"
    )
    ok = p95 < 50
    print(f"{'PASS' if ok else 'FAIL'}  p95 {p95:.1f} ms < 50 ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
