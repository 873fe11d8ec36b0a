"""Slurm adapter: parsers on recorded outputs (errors included), and the commands it runs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_burst.hostlist import expand_hostlist
from mint_burst.scheduler import CommandRunner
from mint_burst.slurm import SlurmScheduler, parse_node_state, parse_sinfo, parse_squeue
from mint_common.errors import InputError, UnavailableError
from tests.burst.conftest import recorded


def test_squeue_sample_parses_pending_running_and_nodes() -> None:
    jobs = parse_squeue(recorded("slurm_squeue_mixed").stdout)
    pending = {j.job_id: j for j in jobs if j.state == "pending"}
    running = {j.job_id: j for j in jobs if j.state == "running"}
    assert set(pending) == {"18", "19", "20", "23_4", "23_5", "24", "25", "27"}
    assert {k: v.node_names for k, v in running.items()} == {
        "17": ("c1",),
        "21": ("c2", "c3", "c5"),
        "22": ("c4",),
        "26": ("c6",),
    }
    assert pending["20"].nodes == 2
    assert not pending["24"].runnable and not pending["25"].runnable
    assert not pending["27"].runnable
    assert pending["18"].runnable


def test_sinfo_sample_parses_states_and_flags() -> None:
    nodes = parse_sinfo(recorded("slurm_sinfo_nodes").stdout)
    assert (nodes["c8"].state, nodes["c8"].flags) == ("down", "*")
    assert not nodes["c8"].responding and not nodes["c7"].responding
    assert nodes["c2"].busy and nodes["c4"].busy
    assert nodes["c11"].ready and not nodes["c13"].ready
    assert nodes["c6"].busy and nodes["c6"].flags == "#"
    assert nodes["c9"].state == "drained" and not nodes["c9"].busy


@pytest.mark.parametrize(
    "text",
    [
        "17|RUNNING|1|None",
        "17|RUNNING|one|None|c1",
        "17|SLEEPING|1|None|c1",
        "17|RUNNING|1|None|c[1-",
        "<html>proxy error</html>",
    ],
    ids=["missing-field", "bad-count", "unknown-state", "bad-hostlist", "garbage"],
)
def test_squeue_garbage_raises_instead_of_reading_as_no_jobs(text: str) -> None:
    with pytest.raises(InputError, match="squeue output line 1"):
        parse_squeue(text + "\n")


def test_sinfo_garbage_raises() -> None:
    with pytest.raises(InputError, match="sinfo output line 2"):
        parse_sinfo("c1|idle\nc2 idle\n")


def _scheduler(recorded_runner: Any, table: dict[str, str]) -> tuple[SlurmScheduler, Any]:
    def choose(argv: list[str]) -> str:
        for prefix, name in table.items():
            if " ".join(argv).startswith(prefix):
                return name
        raise AssertionError(f"unexpected command {argv}")

    runner = recorded_runner(choose)
    return SlurmScheduler("cloud", CommandRunner(timeout=5, runner=runner)), runner


def test_get_status_runs_machine_readable_commands(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner, {"squeue": "slurm_squeue_mixed", "sinfo": "slurm_sinfo_nodes"}
    )
    status = scheduler.get_status()
    assert runner.calls == [
        ["squeue", "--noheader", "--array", "--partition=cloud", "--format=%i|%T|%D|%r|%N"],
        ["sinfo", "--noheader", "--Node", "--partition=cloud", "--format=%N|%T"],
    ]
    assert len(status.pending) == 8 and len(status.running) == 4
    assert status.nodes_needed() == 6
    assert {"c1", "c2", "c4", "c5", "c6"} <= status.busy_nodes()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"squeue": "slurm_squeue_controller_down"}, "Unable to contact slurm controller"),
        ({"squeue": "slurm_squeue_bad_partition"}, "Invalid partition name"),
        (
            {"squeue": "slurm_squeue_empty", "sinfo": "slurm_sinfo_controller_down"},
            "slurm_load_partitions",
        ),
    ],
    ids=["controller-down", "bad-partition", "sinfo-fails"],
)
def test_command_failure_raises_unavailable(
    recorded_runner: Any, table: dict[str, str], message: str
) -> None:
    scheduler, _runner = _scheduler(recorded_runner, table)
    with pytest.raises(UnavailableError, match=message):
        scheduler.get_status()


def test_empty_queue_is_a_real_empty_queue(recorded_runner: Any) -> None:
    scheduler, _runner = _scheduler(
        recorded_runner, {"squeue": "slurm_squeue_empty", "sinfo": "slurm_sinfo_nodes"}
    )
    assert scheduler.get_status().jobs == ()


def test_leave_cluster_drains_and_keeps_a_node_with_a_job(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner,
        {
            "scontrol update": "slurm_squeue_empty",
            "squeue --noheader --nodelist": "slurm_squeue_node_jobs",
        },
    )
    assert scheduler.leave_cluster("c1") is False
    assert runner.calls[0] == [
        "scontrol",
        "update",
        "NodeName=c1",
        "State=DRAIN",
        "Reason=mint-burst: leaving the cluster",
    ]
    assert not any("State=DOWN" in " ".join(c) for c in runner.calls)


def test_leave_cluster_downs_an_idle_node_with_the_admin_prefix(recorded_runner: Any) -> None:
    runner = recorded_runner(lambda argv: "slurm_squeue_empty")
    scheduler = SlurmScheduler(
        "cloud", CommandRunner(timeout=5, admin_prefix=["sudo", "-n"], runner=runner)
    )
    assert scheduler.leave_cluster("c11") is True
    assert runner.calls[-1] == [
        "sudo",
        "-n",
        "scontrol",
        "update",
        "NodeName=c11",
        "State=DOWN",
        "Reason=mint-burst: leaving the cluster",
    ]
    assert runner.calls[1][0] == "squeue"


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("slurm_scontrol_invalid_node", "Invalid node name specified"),
        ("slurm_scontrol_invalid_state", "Invalid node state specified"),
    ],
    ids=["unknown-node", "bad-state"],
)
def test_scontrol_error_is_reported_with_its_message(
    recorded_runner: Any, sample: str, message: str
) -> None:
    scheduler, _runner = _scheduler(recorded_runner, {"scontrol": sample})
    with pytest.raises(UnavailableError, match=message):
        scheduler.leave_cluster("zz9")


def test_join_resumes_only_a_down_node(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner, {"sinfo": "slurm_sinfo_nodes", "scontrol": "slurm_squeue_empty"}
    )
    scheduler.join_cluster("c12")
    scheduler.join_cluster("c11")
    updates = [c for c in runner.calls if c[0] == "scontrol"]
    assert updates == [["scontrol", "update", "NodeName=c12", "State=RESUME"]]


@pytest.mark.parametrize(
    "sample", ["slurm_version_23", "slurm_version_ubuntu"], ids=["upstream", "ubuntu-package"]
)
def test_check_version_reads_every_tool(recorded_runner: Any, sample: str) -> None:
    scheduler, runner = _scheduler(recorded_runner, {"": sample})
    assert scheduler.check_version().startswith("slurm ")
    assert [c[0] for c in runner.calls] == ["squeue", "sinfo", "scontrol"]


def test_node_state_parser_rejects_nonsense() -> None:
    assert parse_node_state("IDLE+CLOUD~") == ("idle", "~")
    with pytest.raises(ValueError, match="unexpected node state"):
        parse_node_state("idle down")


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("c1", ["c1"]),
        ("c[1-3,7]", ["c1", "c2", "c3", "c7"]),
        ("gpu-[08-10],c5", ["gpu-08", "gpu-09", "gpu-10", "c5"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ],
    ids=["single", "ranges", "zero-padded", "two-dimensions"],
)
def test_hostlist_expansion(expression: str, names: list[str]) -> None:
    assert expand_hostlist(expression) == names


@pytest.mark.parametrize(
    "bad", ["c[1-", "c1]", "c[3-1]", "c[a-b]"], ids=["open", "close", "reversed", "letters"]
)
def test_hostlist_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        expand_hostlist(bad)


def _compress(names: list[int], prefix: str) -> str:
    return f"{prefix}[{','.join(str(n) for n in names)}]"


@given(
    st.lists(st.integers(0, 999), min_size=1, max_size=30, unique=True),
    st.sampled_from(["c", "node-", "cloud"]),
)
@settings(max_examples=200, deadline=None)
def test_hostlist_round_trips(numbers: list[int], prefix: str) -> None:
    assert expand_hostlist(_compress(numbers, prefix)) == [f"{prefix}{n}" for n in numbers]


job_states = st.sampled_from(["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "COMPLETED"])


@given(
    st.lists(
        st.tuples(
            st.integers(1, 10**7),
            job_states,
            st.integers(1, 64),
            st.sampled_from(["None", "Resources", "Priority", "Dependency"]),
            st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True),
        ),
        max_size=40,
    )
)
@settings(max_examples=200, deadline=None)
def test_squeue_parser_round_trips_generated_output(rows: list[Any]) -> None:
    lines = []
    for job_id, state, count, reason, nodes in rows:
        nodelist = _compress(nodes, "c") if state != "PENDING" else ""
        lines.append(f"{job_id}|{state}|{count}|{reason}|{nodelist}")
    jobs = parse_squeue("\n".join(lines))
    expected = [r for r in rows if r[1] != "COMPLETED"]
    assert [j.job_id for j in jobs] == [str(r[0]) for r in expected]
    for job, row in zip(jobs, expected):
        assert job.nodes == row[2]
        assert job.state == ("pending" if row[1] == "PENDING" else "running")
        if job.state == "running":
            assert job.node_names == tuple(f"c{n}" for n in row[4])
