"""mint-burst: wall time of a 3x3 what-if sweep on the trickle trace.

    python benchmarks/burst_sweep.py [--policy ours|legacy|both] [--repeat N]

The grid of issue 16: idle_timeout 300, 600, 1200 s by max_nodes 8, 16, 32 (boot 180 s,
one step a minute), the same work as
`mint-burst simulate --trace trickle.sacct --sweep idle_timeout=300,600,1200
--sweep max_nodes=8,16,32`. Prints the rows, then the best and median wall time of
N repeats (the trace is parsed once, outside the timing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Literal, cast

from mint_burst.simulate import parse_sacct
from mint_burst.sweep import parse_sweeps, run_sweep

TRACE = (
    Path(__file__).resolve().parent.parent / "examples" / "mint-burst" / "traces" / "trickle.sacct"
)
GRID = ["idle_timeout=300,600,1200", "max_nodes=8,16,32"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("ours", "legacy", "both"), default="ours")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    policy = cast(Literal["ours", "legacy", "both"], args.policy)
    jobs = parse_sacct(TRACE.read_text(), TRACE.name)
    grid = parse_sweeps(GRID)
    timings: list[float] = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        rows = run_sweep(jobs, grid, policy, boot_time=180.0, poll_interval=60.0)
        timings.append(time.perf_counter() - started)
    print(f"{'policy':<7} {'settings':<30} {'node-h':>7} {'idle-h':>7} {'mean-w':>7} front")
    for row in rows:
        r = row.result
        print(
            f"{r.policy:<7} {row.label:<30} {r.node_hours_billed:>7.1f} {r.idle_node_hours:>7.1f}"
            f" {r.mean_wait_s:>7.0f} {'*' if row.pareto else ''}"
        )
    print(
        f"\n{len(rows)} replays of {TRACE.name} ({len(jobs)} jobs), policy {policy}:"
        f" best {min(timings):.2f} s, median {statistics.median(timings):.2f} s"
        f" of {args.repeat} runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
