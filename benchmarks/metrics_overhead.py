"""What the Prometheus metrics cost a daemon step (figures for docs/benchmarks.md).

    .venv/bin/python benchmarks/metrics_overhead.py [--runs 15] [--nodes 64] [--scrapes 300]

Three figures, all with mint-burst (mint-s3job and mint-poll record the same way):

1. `mint-burst once` as a process, with and without `metrics_textfile`, RUNS times each
   (after one warm-up, alternating): the fake scheduler commands of tests/burst/fakes on
   PATH (a queue of NODES nodes, one pending job) and a command provider whose list answers
   with no instance. The difference is what a timer run pays: importing prometheus_client,
   merging the totals under their lock, writing the .prom file.
2. In process, `BurstMetrics.record` after a step, against a state file of NODES nodes:
   what the daemon pays per step (it reloads the state file for the node gauges).
3. A scrape of the daemon's endpoint (`serving`, with the process collector) over HTTP on
   127.0.0.1, SCRAPES times: the latency a Prometheus server sees, and the CPU time it
   costs the daemon's process (the endpoint runs on a thread of it).

Prints medians (and p95 for the scrape); asserts nothing. Everything lives in a /tmp dir
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast

from mint_burst.config import BurstConfig
from mint_burst.engine import Engine, StepReport
from mint_burst.metrics import BurstMetrics
from mint_burst.model import JOINED, NodeRecord, NodeTable, QueueStatus
from mint_burst.state import FileStore
from mint_common.metrics import serving

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "burst" / "fakes"
TOOL = Path(sys.executable).parent / "mint-burst"


def write_world(root: Path, nodes: int) -> tuple[Path, Path, dict[str, str]]:
    """The fake scheduler's state, a hosts file, a provider script; two configs."""
    names = [f"c{i}" for i in range(1, nodes + 1)]
    sched = root / "fake-sched.json"
    job = {"id": "100", "state": "PENDING", "nodes": 1, "reason": "BeginTime"}
    sched.write_text(
        json.dumps(
            {
                "partitions": ["cloud"],
                "jobs": [job],
                "nodes": {n: {"state": "idle", "flags": "~"} for n in names},
            }
        )
    )
    hosts = root / "hosts.json"
    hosts.write_text(json.dumps({f"10.0.{i // 250}.{i % 250 + 1}": n for i, n in enumerate(names)}))
    provider = root / "cloud.sh"
    provider.write_text("#!/bin/sh\necho '{\"instances\": []}'\n")
    provider.chmod(0o755)
    base = {
        "queue": "cloud",
        "hosts_file": str(hosts),
        "provider": "command",
        "command": {"create": [str(provider)], "list": [str(provider)], "delete": [str(provider)]},
    }
    plain, metered = root / "plain.yaml", root / "metered.yaml"
    plain.write_text(json.dumps({**base, "state_file": str(root / "plain" / "state.json")}))
    metered.write_text(
        json.dumps(
            {
                **base,
                "state_file": str(root / "metered" / "state.json"),
                "metrics_textfile": str(root / "textfile" / "mint-burst.prom"),
            }
        )
    )
    env = {
        **os.environ,
        "FAKE_SCHED_STATE": str(sched),
        "FAKE_SCHED_PYTHON": sys.executable,
        "PATH": f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    return plain, metered, env


def once_seconds(config: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [str(TOOL), "once", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"mint-burst once failed ({result.returncode}): {result.stderr}")
    return elapsed


def bench_once(root: Path, runs: int, nodes: int) -> None:
    plain, metered, env = write_world(root, nodes)
    once_seconds(plain, env)
    once_seconds(metered, env)
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(runs):
        times["without"].append(once_seconds(plain, env))
        times["with"].append(once_seconds(metered, env))
    without, with_ = (statistics.median(times[k]) * 1000 for k in ("without", "with"))
    print(f"mint-burst once, {nodes}-node queue, {runs} runs each (median wall time):")
    print(f"  without metrics:             {without:7.1f} ms")
    print(f"  with metrics_textfile:       {with_:7.1f} ms  (+{with_ - without:.1f} ms)")


@dataclass
class SteppedEngine:
    """What `BurstMetrics.record` reads of the engine: its clock and its state store."""

    store: FileStore
    clock: Callable[[], float] = time.time


def bench_record(root: Path, nodes: int, repeats: int = 2000) -> BurstMetrics:
    store = FileStore(root / "bench-state.json")
    table = NodeTable()
    now = time.time()
    for i in range(nodes):
        name = f"c{i}"
        table.records[name] = NodeRecord(name, f"10.1.0.{i}", JOINED, now, now, f"i-{i}")
    table.account(now)
    store.save(table)
    engine = cast(Engine, SteppedEngine(store))
    report = StepReport(status=QueueStatus("cloud"), launch_results=["ok"], removed=["c1"])
    metrics = BurstMetrics(BurstConfig(max_node_hours_per_day=100))
    started = time.perf_counter()
    for _ in range(repeats):
        metrics.record(engine, report)
    per_step = (time.perf_counter() - started) / repeats * 1e6
    print(f"BurstMetrics.record per step, {nodes}-node state file: {per_step:7.1f} us")
    return metrics


def bench_scrape(metrics: BurstMetrics, scrapes: int) -> None:
    latencies = []
    with serving(metrics.metrics, port=0) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as first:
            size = len(first.read())
        cpu_before = time.process_time()
        for _ in range(scrapes):
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()
            latencies.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu_before
    latencies.sort()
    median = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(f"scrape of the endpoint ({size} bytes), {scrapes} scrapes:")
    print(f"  latency median {median:.2f} ms, p95 {p95:.2f} ms")
    print(f"  CPU per scrape (server and client, one process): {cpu / scrapes * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mint-metrics-bench-") as tmp:
        root = Path(tmp)
        bench_once(root, args.runs, args.nodes)
        metrics = bench_record(root, args.nodes)
        bench_scrape(metrics, args.scrapes)


if __name__ == "__main__":
    main()
