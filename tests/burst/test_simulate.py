"""Trace parsing and the what-if simulator (the real engine and policy on a simulated world)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mint_burst.simulate import parse_sacct, simulate
from mint_common.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[2]


def sacct_line(job: str, submit_s: int, runtime_s: int, nodes: int = 1) -> str:
    def iso(seconds: int) -> str:
        return f"2026-11-02T{8 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    return (
        f"{job}|{iso(submit_s)}|{iso(submit_s)}|{iso(submit_s + runtime_s)}|{nodes}|cloud|COMPLETED"
    )


def test_sacct_parser_skips_steps_and_jobs_that_never_ran() -> None:
    text = "\n".join(
        [
            "JobID|Submit|Start|End|NNodes|Partition|State",
            "10|2026-11-02T08:00:00|2026-11-02T08:01:00|2026-11-02T08:11:00|2|cloud|COMPLETED",
            "10.batch|2026-11-02T08:01:00|2026-11-02T08:01:00|2026-11-02T08:11:00|1||COMPLETED",
            "11|2026-11-02T08:05:00|Unknown|Unknown|1|cloud|CANCELLED by 1000",
            "12|2026-11-02T08:02:30|2026-11-02T08:30:00|2026-11-02T08:31:00|1|cloud|FAILED",
        ]
    )
    jobs = parse_sacct(text)
    assert [(j.job_id, j.submit, j.runtime, j.nodes) for j in jobs] == [
        ("10", 0.0, 600.0, 2),
        ("12", 150.0, 60.0, 1),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10|2026-11-02T08:00:00|x\n", "expected 7"),
        (
            "10|yesterday|2026-11-02T08:00:00|2026-11-02T08:01:00|1|cloud|COMPLETED\n",
            "Invalid isoformat",
        ),
        (
            "10|2026-11-02T08:00:00|2026-11-02T08:05:00|2026-11-02T08:01:00|1|cloud|COMPLETED\n",
            "ends before it starts",
        ),
        ("10|2026-11-02T08:00:00|Unknown|Unknown|1|cloud|PENDING\n", "no job with a start"),
    ],
    ids=["fields", "time", "negative-runtime", "nothing-ran"],
)
def test_sacct_parser_refuses_bad_lines(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_sacct(text)


def test_every_job_runs_and_nodes_are_removed_afterwards() -> None:
    jobs = parse_sacct("\n".join(sacct_line(str(i), i * 60, 900) for i in range(6)))
    result = simulate(jobs, policy="ours", max_nodes=8, boot_time=180)
    assert result.jobs == 6 and result.jobs_killed == 0
    assert result.max_nodes == 6
    # Six 15-minute jobs, 3 min boot each, and the 10 min idle tail per node at most.
    assert 6 * 0.25 < result.node_hours_billed < 6 * (0.25 + 0.05 + 0.2 + 0.05)


def test_squeue_outage_kills_jobs_under_legacy_but_not_ours() -> None:
    jobs = parse_sacct("\n".join(sacct_line(str(i), i * 30, 3 * 3600) for i in range(4)))
    outage = (1800.0, 900.0)
    ours = simulate(jobs, policy="ours", max_nodes=4, squeue_fail=outage)
    legacy = simulate(jobs, policy="legacy", max_nodes=4, squeue_fail=outage)
    assert ours.jobs_killed == 0
    assert legacy.jobs_killed == 4
    assert ours.jobs == legacy.jobs == 4


def test_burst_ramps_up_in_parallel_not_one_node_per_boot() -> None:
    jobs = parse_sacct("\n".join(sacct_line(str(i), i, 600) for i in range(16)))
    ours = simulate(jobs, policy="ours", max_nodes=8)
    legacy = simulate(jobs, policy="legacy", max_nodes=8)
    assert ours.max_nodes == legacy.max_nodes == 8
    assert ours.mean_wait_s < 0.6 * legacy.mean_wait_s


def test_wide_job_beyond_max_nodes_is_refused() -> None:
    jobs = parse_sacct(sacct_line("1", 0, 60, nodes=4))
    with pytest.raises(InputError, match="4-node job but --max-nodes is 2"):
        simulate(jobs, policy="ours", max_nodes=2)


@pytest.mark.parametrize("name", ["burst", "trickle", "mix"], ids=["burst", "trickle", "mix"])
def test_example_traces_replay_completely(name: str) -> None:
    jobs = parse_sacct((REPO / "examples/mint-burst/traces" / f"{name}.sacct").read_text())
    result = simulate(jobs, policy="ours")
    assert result.jobs == len(jobs) and result.jobs_killed == 0
    assert result.max_nodes <= 16


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"poll_interval": 0.0}, "--poll-interval must be above 0"),
        ({"idle_timeout": -5.0}, "--idle-timeout must not be negative, got -5"),
        ({"boot_time": -1.0}, "--boot-time must not be negative"),
    ],
    ids=["zero-poll", "negative-idle", "negative-boot"],
)
def test_settings_that_would_stall_or_make_no_sense_are_refused(
    settings: dict[str, float], message: str
) -> None:
    jobs = parse_sacct(sacct_line("1", 0, 60))
    with pytest.raises(UsageError, match=message):
        simulate(jobs, policy="ours", **settings)


def test_a_zero_idle_timeout_is_a_valid_setting() -> None:
    jobs = parse_sacct(sacct_line("1", 0, 600))
    assert simulate(jobs, policy="ours", idle_timeout=0.0).jobs == 1
