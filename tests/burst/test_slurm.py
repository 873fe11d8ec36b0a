"""Slurm adapter: parsers on outputs recorded from a real Slurm 22.05 (errors included), and
the commands it runs. tests/burst/recorded/README.md says how the samples were captured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_burst.hostlist import expand_hostlist
from mint_burst.model import Host, QueueStatus
from mint_burst.policy import PolicySettings, demand
from mint_burst.scheduler import CommandRunner, UnknownNode
from mint_burst.slurm import (
    SQUEUE_FORMAT,
    SlurmScheduler,
    parse_node_state,
    parse_partition,
    parse_sinfo,
    parse_squeue,
    parse_version,
)
from mint_common.errors import ConfigError, InputError, UnavailableError
from tests.burst.conftest import RECORDED as RECORDED_DIR
from tests.burst.conftest import recorded

STATUS_TABLE = {
    "scontrol --oneliner show partition": "slurm_partition",
    "scontrol --oneliner show node": "slurm_show_node",
    "squeue": "slurm_squeue",
    "sinfo": "slurm_sinfo",
}


def _sample_jobs() -> dict[str, Any]:
    return {j.job_id: j for j in parse_squeue(recorded("slurm_squeue").stdout)}


def test_squeue_sample_parses_every_field_that_carries_demand() -> None:
    jobs = _sample_jobs()
    running = {k: v.node_names for k, v in jobs.items() if v.state == "running"}
    assert running == {"2": ("c1",), "3_1": ("c2",), "3_2": ("c3",)}
    assert jobs["3_[3-6%2]"].tasks == 0  # throttle 2, two elements running
    assert jobs["5"].dependency == "afterok:4(unfulfilled)"
    assert jobs["1"].held and jobs["1"].reason == "job requeued in held state"
    assert jobs["4"].held and not jobs["11"].held
    assert jobs["9"].reason == "BeginTime" and jobs["9"].start_time is not None
    assert jobs["10"].required_nodes == ("s2",)
    assert (jobs["8"].nodes, jobs["11"].nodes) == (8, 3)


def test_demand_of_the_recorded_queue() -> None:
    """Only the three-node job (waiting for down nodes) and the job beginning within a
    boot are demand; the eight-node job can never run in the five-node partition."""
    jobs = _sample_jobs()
    queue = QueueStatus(
        "cloud",
        tuple(jobs.values()),
        parse_sinfo(recorded("slurm_sinfo").stdout),
        parse_partition(recorded("slurm_partition").stdout, "cloud"),
    )
    policy = PolicySettings(
        hosts=tuple(Host(f"10.0.1.{i}", f"c{i}") for i in range(1, 5)),
        max_nodes=4,
        boot_timeout=300.0,
    )
    begins = jobs["9"].start_time
    wanted = demand(queue, policy, begins - 60)
    assert wanted.nodes == 3 + 1
    assert list(wanted.unservable) == ["8"]
    assert demand(queue, policy, begins - 3600).nodes == 3


def test_partition_sample() -> None:
    partition = parse_partition(recorded("slurm_partition").stdout, "cloud")
    assert partition.nodes == ("c1", "c2", "c3", "c4", "s2")
    assert partition.max_job_nodes == 5


def test_sinfo_sample_parses_states_and_flags() -> None:
    nodes = parse_sinfo(recorded("slurm_sinfo").stdout)
    assert (nodes["c4"].state, nodes["c4"].flags) == ("unknown", "*")
    assert not nodes["c4"].responding and nodes["c3"].responding
    assert nodes["c1"].busy and nodes["c1"].ready
    assert nodes["c3"].state == "draining" and not nodes["c3"].ready


@pytest.mark.parametrize(
    ("text", "flags", "ready"),
    [
        ("idle", "", True),
        ("planned", "", True),
        ("idle%", "%", False),
        ("allocated#", "#", False),
        ("idle~", "~", False),
        ("idle!", "!", False),
        ("idle@", "@", False),
        ("down*", "*", False),
    ],
    ids=[
        "idle",
        "planned",
        "powering-down",
        "powering-up",
        "powered-off",
        "pending-down",
        "pending-reboot",
        "not-responding",
    ],
)
def test_power_saving_flags_are_transitional(text: str, flags: str, ready: bool) -> None:
    """`planned`, `%`, `#` and `~` also come from the real cluster in test_slurm_real.py;
    `!` and `@` cannot be produced there on demand, so they are only tested here."""
    node = parse_sinfo(f"c1|{text}\n")["c1"]
    assert node.flags == flags and node.ready is ready
    assert node.responding is (flags == "")


def _line(
    job: str,
    state: str = "PENDING",
    nodes: int = 1,
    tasks: str = "N/A",
    nodelist: str = "",
    reason: str = "Priority",
    array: str = "",
    start: str = "N/A",
) -> str:
    return f"{job}|{state}|{nodes}|100|{array or job}|{tasks}|{start}|{nodelist}||(null)|{reason}"


def test_array_throttle_limits_the_pending_elements() -> None:
    jobs = parse_squeue(
        "\n".join(
            [
                _line("4_[2-6%3]", tasks="2-6%3", array="4"),
                _line("4_1", "RUNNING", tasks="1", nodelist="c1", reason="None", array="4"),
                _line("5_[1-9:2]", tasks="1-9:2", array="5"),
            ]
        )
    )
    tasks = {j.job_id: j.tasks for j in jobs}
    assert tasks == {"4_[2-6%3]": 2, "4_1": 1, "5_[1-9:2]": 5}


@pytest.mark.parametrize(
    "text",
    [
        "17|RUNNING|1|None",
        _line("17", nodes=0),
        _line("17", "SLEEPING"),
        _line("17", "RUNNING", nodelist="c[1-"),
        _line("17", tasks="x-y"),
        "<html>proxy error</html>",
    ],
    ids=["missing-field", "bad-count", "unknown-state", "bad-hostlist", "bad-tasks", "garbage"],
)
def test_squeue_garbage_raises_instead_of_reading_as_no_jobs(text: str) -> None:
    with pytest.raises(InputError, match="squeue output line 1"):
        parse_squeue(text + "\n")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Partition cloud not found",
        "PartitionName=other TotalNodes=4 Nodes=c[1-4]",
        "PartitionName=cloud TotalNodes=four Nodes=c[1-4]",
        "PartitionName=cloud TotalNodes=4 Nodes=c[1-",
        "PartitionName=cloud TotalNodes=4 MaxNodes=lots Nodes=c[1-4]",
        "PartitionName=cloud TotalNodes=4 Nodes=c[1-999999999]",
    ],
    ids=[
        "empty",
        "message",
        "other-partition",
        "bad-count",
        "bad-hostlist",
        "bad-max",
        "absurd-hostlist",
    ],
)
def test_partition_garbage_raises(text: str) -> None:
    with pytest.raises(InputError, match="scontrol show partition cloud"):
        parse_partition(text, "cloud")


@pytest.mark.parametrize(
    "start", ["yesterday", "2026-13-45T99:00:00", "\udcff"], ids=["word", "bad-date", "not-utf8"]
)
def test_squeue_time_garbage_raises(start: str) -> None:
    line = _line("17", start=start)
    with pytest.raises(InputError, match="squeue output line 1: unexpected Slurm time"):
        parse_squeue(line)


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
    scheduler, runner = _scheduler(recorded_runner, STATUS_TABLE)
    status = scheduler.get_status()
    assert runner.calls == [
        ["scontrol", "--oneliner", "show", "partition", "cloud"],
        ["squeue", "--noheader", "--partition=cloud", f"--format={SQUEUE_FORMAT}"],
        ["sinfo", "--noheader", "--Node", "--partition=cloud", "--format=%N|%T"],
        # Only the node a join could be meant for (draining, responding) is asked about.
        ["scontrol", "--oneliner", "show", "node", "c3"],
    ]
    assert len(status.pending) == 8 and len(status.running) == 3
    assert {"c1", "c2", "c3"} <= status.busy_nodes()
    started = status.nodes["c3"].slurmd_started
    assert started is not None and started > time.time() - 10 * 365 * 86400
    assert status.nodes["c1"].slurmd_started is None


def test_a_partition_that_does_not_exist_is_a_configuration_error(recorded_runner: Any) -> None:
    """squeue and sinfo answer an unknown partition with nothing and exit 0."""
    assert recorded("slurm_squeue_unknown_partition").stdout == ""
    scheduler, runner = _scheduler(
        recorded_runner, {"scontrol --oneliner show partition": "slurm_partition_unknown"}
    )
    with pytest.raises(ConfigError, match="no such partition"):
        scheduler.get_status()
    with pytest.raises(ConfigError):
        scheduler.check_queue()
    assert [c[0] for c in runner.calls] == ["scontrol", "scontrol"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"scontrol": "slurm_partition_controller_down"}, "Unable to contact slurm controller"),
        (
            {**STATUS_TABLE, "squeue": "slurm_squeue_controller_down"},
            "Unable to contact slurm controller",
        ),
        ({**STATUS_TABLE, "sinfo": "slurm_sinfo_controller_down"}, "slurm_load_partitions"),
        ({**STATUS_TABLE, "scontrol --oneliner show node": "slurm_show_node_unknown"}, "not found"),
    ],
    ids=["controller-down", "squeue-fails", "sinfo-fails", "show-node-fails"],
)
def test_command_failure_raises_unavailable(
    recorded_runner: Any, table: dict[str, str], message: str
) -> None:
    scheduler, _runner = _scheduler(recorded_runner, table)
    with pytest.raises(UnavailableError, match=message):
        scheduler.get_status()


def test_leave_cluster_drains_and_keeps_a_node_with_a_job(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner,
        {
            "scontrol update": "slurm_update_drain",
            "squeue --noheader --nodelist": "slurm_node_jobs",
        },
    )
    assert scheduler.leave_cluster("c3") is False
    assert runner.calls[0] == [
        "scontrol",
        "update",
        "NodeName=c3",
        "State=DRAIN",
        "Reason=mint-burst: leaving the cluster",
    ]
    assert not any("State=DOWN" in " ".join(c) for c in runner.calls)


def test_leave_cluster_downs_an_idle_node_with_the_admin_prefix(recorded_runner: Any) -> None:
    runner = recorded_runner(lambda argv: "slurm_update_drain")
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
    ("sample", "error", "message"),
    [
        ("slurm_update_unknown_node", UnknownNode, "Invalid node name specified"),
        ("slurm_update_resume_busy", UnavailableError, "Invalid node state specified"),
    ],
    ids=["unknown-node", "bad-state"],
)
def test_scontrol_error_is_reported_with_its_message(
    recorded_runner: Any, sample: str, error: type[Exception], message: str
) -> None:
    scheduler, _runner = _scheduler(recorded_runner, {"scontrol": sample})
    with pytest.raises(error, match=message):
        scheduler.leave_cluster("zz9")


def test_join_resumes_only_a_down_or_drained_node(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner, {"sinfo": "slurm_sinfo", "scontrol": "slurm_update_drain"}
    )
    scheduler.join_cluster("c3")
    scheduler.join_cluster("c1")
    updates = [c for c in runner.calls if c[0] == "scontrol"]
    assert updates == [["scontrol", "update", "NodeName=c3", "State=RESUME"]]


def test_check_version_reads_every_tool(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(recorded_runner, {"": "slurm_version"})
    assert scheduler.check_version() == "slurm 22.05.8 (squeue, sinfo and scontrol answer)"
    assert [c[0] for c in runner.calls] == ["squeue", "sinfo", "scontrol"]


@pytest.mark.parametrize(
    ("text", "version"),
    [("slurm 23.02.7\n", "23.02.7"), ("slurm-wlm 21.08.5\n", "21.08.5")],
    ids=["upstream", "ubuntu-package"],
)
def test_version_forms_of_other_builds(text: str, version: str) -> None:
    assert parse_version(text) == version


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
            st.sampled_from(["None", "Resources", "Priority", "Dependency", "a|b"]),
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
        lines.append(_line(str(job_id), state, count, nodelist=nodelist, reason=reason))
    jobs = parse_squeue("\n".join(lines))
    expected = [r for r in rows if r[1] != "COMPLETED"]
    assert [j.job_id for j in jobs] == [str(r[0]) for r in expected]
    for job, row in zip(jobs, expected):
        assert job.nodes == row[2] and job.reason == row[3]
        assert job.state == ("pending" if row[1] == "PENDING" else "running")
        if job.state == "running":
            assert job.node_names == tuple(f"c{n}" for n in row[4])


def test_capture_script_runs_the_adapters_exact_formats() -> None:
    """scripts/capture-slurm-outputs copies the formats to run without mint-tools installed."""
    import importlib.machinery
    import importlib.util

    from mint_burst import slurm

    path = str(Path(__file__).resolve().parents[2] / "scripts" / "capture-slurm-outputs")
    loader = importlib.machinery.SourceFileLoader("capture_slurm_outputs", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    script = importlib.util.module_from_spec(spec)
    loader.exec_module(script)
    assert (script.SQUEUE_FORMAT, script.SINFO_FORMAT, script.LEAVE_REASON) == (
        slurm.SQUEUE_FORMAT,
        slurm.SINFO_FORMAT,
        slurm.LEAVE_REASON,
    )
    names = {name for name, _argv in script.commands("cloud", ["c1"])}
    recorded_names = {p.stem for p in RECORDED_DIR.glob("*.stdout")}
    assert names <= recorded_names
