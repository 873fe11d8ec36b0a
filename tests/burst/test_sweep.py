"""What-if sweeps: the grid parser, the Pareto front, the rows and `simulate --sweep`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mint_burst.cli import main
from mint_burst.simulate import SimResult, parse_sacct, simulate
from mint_burst.sweep import combinations, describe, pareto_front, parse_sweeps, run_sweep
from mint_common.errors import UsageError
from tests.burst.test_simulate import sacct_line

# Four one-hour jobs at once: with 2 nodes half of them wait an hour, with 4 none does.
FOUR_AT_ONCE = "\n".join(sacct_line(str(i), 0, 3600) for i in range(4)) + "\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def result(hours: float, wait: float, policy: str = "ours") -> SimResult:
    return SimResult(policy, 1, hours, 0.0, wait, wait, 1, 0, 0, 1.0)


def test_sweep_values_take_durations_and_counts() -> None:
    grid = parse_sweeps(["idle_timeout=300,10m,1h30m", "max_nodes=8, 16", "poll_interval=30s"])
    assert grid == {
        "idle_timeout": (300.0, 600.0, 5400.0),
        "max_nodes": (8, 16),
        "poll_interval": (30.0,),
    }
    assert [describe(c) for c in combinations(grid)[:3]] == [
        "idle_timeout=5m max_nodes=8 poll_interval=30s",
        "idle_timeout=5m max_nodes=16 poll_interval=30s",
        "idle_timeout=10m max_nodes=8 poll_interval=30s",
    ]
    assert len(combinations(grid)) == 6
    assert parse_sweeps([]) == {}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            ["idle=300"],
            "unknown key 'idle'; use one of idle_timeout, max_nodes, boot_time, poll_interval",
        ),
        (["idle_timeout"], "expected KEY=V1,V2"),
        (["idle_timeout="], "expected KEY=V1,V2"),
        (["idle_timeout=10m,soon"], "idle_timeout: bad value 'soon'"),
        (["idle_timeout=-5"], "is negative"),
        (["poll_interval=0"], "must be above 0"),
        (["max_nodes=8,x"], "max_nodes: bad value 'x'"),
        (["max_nodes=0"], "not between 1 and 100000"),
        (["max_nodes=8,8"], "'8' is listed twice"),
        (["max_nodes=8", "max_nodes=16"], "given twice"),
        (
            [
                "max_nodes=" + ",".join(map(str, range(1, 101))),
                "idle_timeout=" + ",".join(map(str, range(11))),
            ],
            "1100 combinations; at most 1000",
        ),
    ],
    ids=[
        "unknown-key",
        "no-equals",
        "no-values",
        "bad-duration",
        "negative",
        "zero-poll",
        "bad-count",
        "zero-nodes",
        "repeated-value",
        "repeated-key",
        "too-many",
    ],
)
def test_bad_sweeps_are_usage_errors(specs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_sweeps(specs)


def test_pareto_front_by_hand() -> None:
    rows = [
        result(10, 100),  # cheapest: on the front
        result(20, 50),  # fastest: on the front
        result(15, 120),  # costs more and waits longer than the first
        result(25, 50),  # same wait as the second, more node-hours
        result(10, 100, "legacy"),  # a tie with the first: neither beats the other
        result(12, 80),  # between the two ends: on the front
        result(20, 90),  # beaten by (12, 80) on both
    ]
    assert pareto_front(rows) == [True, True, False, False, True, True, False]
    assert pareto_front([]) == []
    assert pareto_front([result(1, 1)]) == [True]


def test_sweep_rows_follow_the_grid_and_match_single_replays() -> None:
    jobs = parse_sacct(FOUR_AT_ONCE)
    grid = parse_sweeps(["max_nodes=2,4", "idle_timeout=5m,20m"])
    rows = run_sweep(jobs, grid, "both", boot_time=180.0, poll_interval=60.0)
    assert [(r.settings["max_nodes"], r.settings["idle_timeout"], r.result.policy) for r in rows] == [
        (2, 300.0, "ours"), (2, 300.0, "legacy"), (2, 1200.0, "ours"), (2, 1200.0, "legacy"),
        (4, 300.0, "ours"), (4, 300.0, "legacy"), (4, 1200.0, "ours"), (4, 1200.0, "legacy"),
    ]  # fmt: skip
    for row in rows:
        alone = simulate(
            jobs, policy=row.result.policy, boot_time=180.0, poll_interval=60.0, **row.settings
        )
        assert row.result == alone
    ours = {
        (r.settings["max_nodes"], r.settings["idle_timeout"]): r
        for r in rows
        if r.result.policy == "ours"
    }
    # Two nodes: two jobs wait a whole hour for the first two to finish.
    assert ours[2, 300.0].result.mean_wait_s > 1800 > 600 > ours[4, 300.0].result.mean_wait_s
    # Fifteen more idle minutes per node before removal: 4 nodes x 0.25 h more billed.
    extra = ours[4, 1200.0].result.node_hours_billed - ours[4, 300.0].result.node_hours_billed
    assert extra == pytest.approx(1.0, abs=4 * 60 / 3600)
    assert [r.pareto for r in rows] == pareto_front([r.result for r in rows])
    assert ours[4, 300.0].pareto and not ours[4, 1200.0].pareto


def test_cli_sweep_json_rows(tmp_path: Path) -> None:
    trace = tmp_path / "four.sacct"
    trace.write_text(FOUR_AT_ONCE)
    out = invoke(
        "simulate", "--trace", str(trace), "--sweep", "max_nodes=2,4", "--sweep",
        "idle_timeout=5m,20m", "--policy", "both", "--json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    assert document["sweep"] == {"max_nodes": [2, 4], "idle_timeout": [300.0, 1200.0]}
    results = document["results"]
    assert len(results) == 8
    first = results[0]
    assert (first["max_nodes"], first["idle_timeout"], first["policy"]) == (2, 300.0, "ours")
    expected = simulate(parse_sacct(FOUR_AT_ONCE), policy="ours", max_nodes=2, idle_timeout=300)
    assert first["node_hours_billed"] == round(expected.node_hours_billed, 3)
    assert first["mean_wait_s"] == round(expected.mean_wait_s, 3)
    front = pareto_front([result(r["node_hours_billed"], r["mean_wait_s"]) for r in results])
    assert [r["pareto"] for r in results] == front and any(front) and not all(front)


def test_cli_sweep_table_marks_the_front(tmp_path: Path) -> None:
    trace = tmp_path / "four.sacct"
    trace.write_text(FOUR_AT_ONCE)
    out = invoke(
        "simulate", "--trace", str(trace), "--sweep", "idle_timeout=5m,20m", "--max-nodes", "4"
    )
    assert out.exit_code == 0, out.output
    header, *lines = out.stdout.splitlines()
    assert header.split("\t") == [
        "policy", "idle_timeout", "jobs", "node-h billed", "idle node-h", "mean wait s",
        "p95 wait s", "jobs killed", "pareto",
    ]  # fmt: skip
    cells = [line.split("\t") for line in lines]
    assert [(c[0], c[1], c[-1]) for c in cells] == [("ours", "5m", "yes"), ("ours", "20m", "no")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "idle=5m"], "use one of idle_timeout, max_nodes, boot_time, poll_interval"),
        (["--sweep", "max_nodes=2,many"], "bad value 'many'"),
        (["--plot", "out.pdf"], "must end in .png or .svg"),
    ],
    ids=["unknown-key", "bad-value", "bad-plot-name"],
)
def test_cli_sweep_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    trace = tmp_path / "four.sacct"
    trace.write_text(FOUR_AT_ONCE)
    out = invoke("simulate", "--trace", str(trace), *args)
    assert out.exit_code == 2 and message in out.output
