"""mint-burst: our policy against the seed agent's loop, on the three example traces.

    python benchmarks/burst_simulate.py

Max 16 nodes, 180 s boot, idle timeout 600 s, one step a minute, as in issue 7. Prints
node-hours billed, idle node-hours, mean and p95 wait, max nodes, scale events and
jobs killed for each trace and policy, then the same with `squeue` failing for 15
minutes while jobs run, and the pass/fail of each target.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mint_burst.simulate import SimResult, parse_sacct, simulate

TRACES = Path(__file__).resolve().parent.parent / "examples" / "mint-burst" / "traces"
# An outage mid-trace, while jobs run: 15 minutes starting at T seconds.
OUTAGES = {"burst": 1800.0, "trickle": 7.5 * 3600, "mix": 4 * 3600.0}


def row(name: str, result: SimResult) -> str:
    return (
        f"{name:<8} {result.policy:<7} {result.jobs:>4} {result.node_hours_billed:>8.1f}"
        f" {result.idle_node_hours:>8.1f} {result.mean_wait_s:>8.0f} {result.p95_wait_s:>8.0f}"
        f" {result.max_nodes:>4} {result.scale_events:>6} {result.jobs_killed:>6}"
    )


def main() -> int:
    header = (
        f"{'trace':<8} {'policy':<7} {'jobs':>4} {'node-h':>8} {'idle-h':>8} {'mean-w':>8}"
        f" {'p95-w':>8} {'max':>4} {'events':>6} {'killed':>6}"
    )
    checks: list[tuple[str, bool]] = []
    started = time.perf_counter()
    print("normal operation (waits in seconds)")
    print(header)
    for name in ("burst", "trickle", "mix"):
        jobs = parse_sacct((TRACES / f"{name}.sacct").read_text(), name)
        ours = simulate(jobs, policy="ours", max_nodes=16, boot_time=180)
        legacy = simulate(jobs, policy="legacy", max_nodes=16, boot_time=180)
        print(row(name, ours))
        print(row(name, legacy))
        checks.append(
            (
                f"{name}: p95 wait ours {ours.p95_wait_s:.0f} s <= legacy"
                f" {legacy.p95_wait_s:.0f} s + 60 s",
                ours.p95_wait_s <= legacy.p95_wait_s + 60,
            )
        )
        if name == "trickle":
            ratio = ours.node_hours_billed / legacy.node_hours_billed
            checks.append((f"trickle: node-hours ours/legacy = {ratio:.2f} <= 0.70", ratio <= 0.7))
        if name == "burst":
            ratio = ours.mean_wait_s / legacy.mean_wait_s
            checks.append((f"burst: mean wait ours/legacy = {ratio:.2f} <= 0.80", ratio <= 0.8))
    print("\nsqueue fails for 15 minutes mid-trace")
    print(header)
    for name, at in OUTAGES.items():
        jobs = parse_sacct((TRACES / f"{name}.sacct").read_text(), name)
        outage = (at, 900.0)
        ours = simulate(jobs, policy="ours", max_nodes=16, boot_time=180, squeue_fail=outage)
        legacy = simulate(jobs, policy="legacy", max_nodes=16, boot_time=180, squeue_fail=outage)
        print(row(name, ours))
        print(row(name, legacy))
        checks.append(
            (
                f"{name} outage at {at / 3600:g} h: ours killed {ours.jobs_killed}"
                f" (legacy {legacy.jobs_killed})",
                ours.jobs_killed == 0,
            )
        )
    print(f"\n(12 simulations in {time.perf_counter() - started:.1f} s)")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _t, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
