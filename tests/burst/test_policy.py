"""The scaling policy: examples of each rule, and Hypothesis for its safety invariants."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_burst.model import (
    BOOTING,
    DRAINING,
    JOINED,
    REQUESTED,
    TERMINATING,
    Host,
    Instance,
    Job,
    NodeRecord,
    NodeState,
    NodeTable,
    Partition,
    QueueStatus,
)
from mint_burst.policy import PolicySettings, decide, demand

HOSTS = tuple(Host(f"10.0.1.{i}", f"c{i}") for i in range(1, 9))
NOW = 1_800_000_000.0


def settings_for(**overrides: object) -> PolicySettings:
    values: dict[str, object] = {
        "hosts": HOSTS,
        "max_nodes": 8,
        "idle_timeout": 600.0,
        "boot_timeout": 900.0,
    }
    values.update(overrides)
    return PolicySettings(**values)  # type: ignore[arg-type]


def record(
    name: str,
    phase: str,
    *,
    age: float = 1000.0,
    idle_for: Optional[float] = None,
) -> NodeRecord:
    return NodeRecord(
        name=name,
        ip=f"10.0.1.{name[1:]}",
        phase=phase,
        launched_at=NOW - age,
        phase_since=NOW - age,
        instance_id=f"i-{name}",
        idle_since=None if idle_for is None else NOW - idle_for,
    )


def pending(count: int, nodes: int = 1, reason: str = "Resources") -> tuple[Job, ...]:
    return tuple(Job(f"p{i}", "pending", nodes, reason=reason) for i in range(count))


def table_of(*records: NodeRecord) -> NodeTable:
    return NodeTable(records={r.name: r for r in records})


def kinds(decision: object) -> list[tuple[str, str]]:
    return [(a.kind, a.node) for a in decision.actions]  # type: ignore[attr-defined]


def test_launches_as_many_nodes_as_pending_jobs_need_in_one_step() -> None:
    status = QueueStatus("cloud", pending(3) + pending(1, nodes=2))
    decision = decide(status, NodeTable(), NOW, settings_for())
    assert kinds(decision) == [("launch", f"c{i}") for i in range(1, 6)]
    assert decision.actions[0].ip == "10.0.1.1"


def test_nodes_already_booting_or_idle_count_against_the_need() -> None:
    table = table_of(record("c1", BOOTING, age=60), record("c2", JOINED, idle_for=30))
    status = QueueStatus("cloud", pending(3), {"c2": NodeState("c2", "idle")})
    assert kinds(decide(status, table, NOW, settings_for())) == [("launch", "c3")]


def test_held_and_dependent_jobs_do_not_launch_nodes() -> None:
    status = QueueStatus(
        "cloud", pending(2, reason="Dependency") + pending(1, reason="JobHeldUser")
    )
    assert decide(status, NodeTable(), NOW, settings_for()).actions == ()


@pytest.mark.parametrize(
    ("cap_settings", "orphans", "expected"),
    [
        ({"max_nodes": 3}, 0, 3),
        ({"hosts": HOSTS[:2], "max_nodes": 8}, 0, 2),
        ({"max_nodes": 3}, 1, 2),
    ],
    ids=["max_nodes", "host-list-size", "orphans-count"],
)
def test_launches_stop_at_the_caps(
    cap_settings: dict[str, object], orphans: int, expected: int
) -> None:
    table = NodeTable(
        orphans=[Instance(f"i-o{i}", f"c{8 - i}", "", "running") for i in range(orphans)]
    )
    decision = decide(QueueStatus("cloud", pending(20)), table, NOW, settings_for(**cap_settings))
    assert len(decision.actions) == expected
    assert all(a.node not in {o.node for o in table.orphans} for a in decision.actions)


def test_daily_budget_used_up_stops_launches() -> None:
    table = NodeTable(node_seconds_by_day={"2027-01-15": 10 * 3600.0})
    decision = decide(
        QueueStatus("cloud", pending(2)), table, NOW, settings_for(max_node_hours_per_day=10.0)
    )
    assert decision.actions == ()
    assert "budget" in decision.notes[0]


def test_idle_node_is_removed_after_idle_timeout_only() -> None:
    table = table_of(record("c1", JOINED, idle_for=601), record("c2", JOINED, idle_for=300))
    nodes = {n: NodeState(n, "idle") for n in ("c1", "c2")}
    decision = decide(QueueStatus("cloud", (), nodes), table, NOW, settings_for())
    assert kinds(decision) == [("remove", "c1")]


def test_idle_clock_starts_when_the_node_is_first_seen_idle() -> None:
    table = table_of(record("c1", JOINED))
    decision = decide(
        QueueStatus("cloud", (), {"c1": NodeState("c1", "idle")}),
        table,
        NOW,
        settings_for(idle_timeout=0.0),
    )
    assert decision.records["c1"].idle_since == NOW


def test_node_with_a_job_is_never_removed_however_long_it_was_idle_before() -> None:
    table = table_of(record("c1", JOINED, idle_for=5000))
    status = QueueStatus(
        "cloud", (Job("7", "running", 1, ("c1",)),), {"c1": NodeState("c1", "allocated")}
    )
    decision = decide(status, table, NOW, settings_for())
    assert decision.actions == ()
    assert decision.records["c1"].idle_since is None


def test_one_long_job_does_not_keep_the_other_idle_nodes() -> None:
    table = table_of(
        record("c1", JOINED, idle_for=5000),
        record("c2", JOINED, idle_for=700),
        record("c3", JOINED, idle_for=900),
    )
    status = QueueStatus(
        "cloud",
        (Job("7", "running", 1, ("c1",)),),
        {
            "c1": NodeState("c1", "allocated"),
            "c2": NodeState("c2", "idle"),
            "c3": NodeState("c3", "idle"),
        },
    )
    assert kinds(decide(status, table, NOW, settings_for())) == [("remove", "c3"), ("remove", "c2")]


def test_no_idle_removal_while_runnable_jobs_wait() -> None:
    table = table_of(record("c1", JOINED, idle_for=5000))
    status = QueueStatus("cloud", pending(1), {"c1": NodeState("c1", "idle")})
    assert decide(status, table, NOW, settings_for()).actions == ()


def test_boot_timeout_terminates_a_node_that_never_joined() -> None:
    table = table_of(record("c1", BOOTING, age=901), record("c2", BOOTING, age=100))
    status = QueueStatus("cloud", (), {"c1": NodeState("c1", "down", "*")})
    assert kinds(decide(status, table, NOW, settings_for())) == [("terminate", "c1")]


def test_booted_node_that_slurm_shows_down_is_joined() -> None:
    table = table_of(record("c1", BOOTING, age=200))
    status = QueueStatus("cloud", pending(1), {"c1": NodeState("c1", "down")})
    assert kinds(decide(status, table, NOW, settings_for())) == [("join", "c1")]


def test_node_seen_ready_becomes_joined() -> None:
    table = table_of(record("c1", BOOTING, age=200))
    decision = decide(
        QueueStatus("cloud", (), {"c1": NodeState("c1", "idle")}), table, NOW, settings_for()
    )
    assert decision.records["c1"].phase == JOINED
    assert decision.records["c1"].joined_at == NOW


def test_draining_node_is_terminated_once_its_job_ended() -> None:
    table = table_of(record("c1", DRAINING), record("c2", DRAINING))
    status = QueueStatus(
        "cloud",
        (Job("9", "running", 1, ("c2",)),),
        {"c1": NodeState("c1", "drained"), "c2": NodeState("c2", "draining")},
    )
    assert kinds(decide(status, table, NOW, settings_for())) == [("terminate", "c1")]


def test_unreadable_scheduler_decides_nothing() -> None:
    table = table_of(record("c1", JOINED, idle_for=99999), record("c2", BOOTING, age=99999))
    decision = decide(None, table, NOW, settings_for())
    assert decision.actions == ()
    assert decision.records == table.records


# --- Hypothesis: the safety invariants hold for any queue and node table -----------------

names = st.sampled_from([h.name for h in HOSTS])
phases = st.sampled_from([REQUESTED, BOOTING, JOINED, DRAINING, TERMINATING])
node_states = st.sampled_from(["idle", "allocated", "mixed", "down", "drained", "completing"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[QueueStatus, NodeTable, PolicySettings]:
    chosen = draw(st.lists(names, unique=True, max_size=8))
    records = {}
    for name in chosen:
        idle_for = draw(st.one_of(st.none(), st.floats(0, 5000)))
        records[name] = record(name, draw(phases), age=draw(st.floats(0, 5000)), idle_for=idle_for)
    running = []
    for index, name in enumerate(draw(st.lists(names, unique=True, max_size=8))):
        running.append(Job(f"r{index}", "running", 1, (name,)))
    jobs = tuple(running) + tuple(
        Job(
            f"p{i}",
            "pending",
            draw(st.integers(1, 4)),
            reason=draw(st.sampled_from(["Resources", "Priority", "Dependency"])),
        )
        for i in range(draw(st.integers(0, 12)))
    )
    states = {
        n: NodeState(n, draw(node_states), draw(st.sampled_from(["", "*"])))
        for n in draw(st.lists(names, unique=True, max_size=8))
    }
    config = settings_for(max_nodes=draw(st.integers(1, 8)), idle_timeout=draw(st.floats(0, 2000)))
    return QueueStatus("cloud", jobs, states), NodeTable(records=records), config


@given(worlds())
@settings(max_examples=300, deadline=None)
def test_never_exceeds_the_caps(world: tuple[QueueStatus, NodeTable, PolicySettings]) -> None:
    status, table, config = world
    decision = decide(status, table, NOW, config)
    launches = [a for a in decision.actions if a.kind == "launch"]
    assert len(table.records) + len(launches) <= max(len(table.records), config.node_cap)
    assert not {a.node for a in launches} & set(table.records)
    assert len({a.node for a in launches}) == len(launches)


@given(worlds())
@settings(max_examples=300, deadline=None)
def test_never_removes_a_node_with_a_job(
    world: tuple[QueueStatus, NodeTable, PolicySettings],
) -> None:
    status, table, config = world
    busy = status.busy_nodes()
    for action in decide(status, table, NOW, config).actions:
        if action.kind in ("remove", "terminate"):
            assert action.node not in busy


@given(worlds())
@settings(max_examples=300, deadline=None)
def test_never_overshoots_the_need(world: tuple[QueueStatus, NodeTable, PolicySettings]) -> None:
    status, table, config = world
    decision = decide(status, table, NOW, config)
    launches = sum(1 for a in decision.actions if a.kind == "launch")
    if launches:
        busy = status.busy_nodes()
        retiring = {a.node for a in decision.actions if a.kind in ("remove", "terminate")}
        dead = {n for n, s in status.nodes.items() if not s.responding}
        spare = sum(
            1
            for r in decision.records.values()
            if r.name not in retiring
            and (
                r.phase in (REQUESTED, BOOTING)
                or (r.phase == JOINED and r.name not in busy and r.name not in dead)
            )
        )
        assert spare + launches <= demand(status, config, NOW).nodes


@given(worlds())
@settings(max_examples=200, deadline=None)
def test_no_decision_at_all_when_the_scheduler_read_failed(
    world: tuple[QueueStatus, NodeTable, PolicySettings],
) -> None:
    _status, table, config = world
    assert decide(None, table, NOW, config).actions == ()


def _demand_of(*jobs: Job, partition: Optional[Partition] = None, **overrides: object) -> int:
    status = QueueStatus("cloud", jobs, {}, partition)
    return demand(status, settings_for(**overrides), NOW).nodes


@pytest.mark.parametrize(
    ("job", "nodes"),
    [
        (Job("1", "pending", 2, reason="ReqNodeNotAvail, UnavailableNodes:c[1-4]"), 2),
        (Job("1", "pending", 1, reason="ReqNodeNotAvail, UnavailableNodes:s2"), 0),
        (Job("1", "pending", 1, reason="ReqNodeNotAvail, UnavailableNodes:"), 1),
        (Job("1", "pending", 1, reason="Resources", required_nodes=("s2",)), 0),
        (Job("1", "pending", 1, reason="Resources", required_nodes=("c2",)), 1),
        (
            Job(
                "1",
                "pending",
                3,
                reason="Nodes required for job are DOWN, DRAINED or reserved for jobs in"
                " higher priority partitions",
            ),
            3,
        ),
        (Job("1", "pending", 1, reason="BeginTime", start_time=NOW + 120), 1),
        (Job("1", "pending", 1, reason="BeginTime", start_time=NOW + 1200), 0),
        (Job("1", "pending", 1, reason="BeginTime"), 0),
        (Job("1", "pending", 1, reason="Priority", held=True), 0),
        (Job("1", "pending", 1, reason="Dependency", dependency="afterok:2(unfulfilled)"), 0),
        (Job("1", "pending", 1, reason="ReqNodeNotAvail", dependency="afterok:2"), 0),
        (Job("1_[2-6%2]", "pending", 2, reason="JobArrayTaskLimit", tasks=0), 0),
        (Job("1_[2-6%3]", "pending", 2, reason="Priority", tasks=2), 4),
    ],
    ids=[
        "reqnodenotavail-ours",
        "reqnodenotavail-not-ours",
        "reqnodenotavail-no-names",
        "pinned-elsewhere",
        "pinned-to-ours",
        "nodes-down-drained",
        "begins-within-boot",
        "begins-later",
        "begintime-unknown",
        "held",
        "dependency-field",
        "dependency-behind-another-reason",
        "array-throttled",
        "array-two-may-start",
    ],
)
def test_demand_rules(job: Job, nodes: int) -> None:
    assert _demand_of(job) == nodes


def test_jobs_too_big_for_the_partition_or_our_nodes_are_unservable() -> None:
    partition = Partition(("c1", "c2", "s2"), max_job_nodes=3)
    jobs = (
        Job("big", "pending", 4, reason="PartitionConfig"),
        Job("capped", "pending", 3, reason="Resources"),
        Job("fits", "pending", 2, reason="Resources"),
    )
    status = QueueStatus("cloud", jobs, {}, partition)
    wanted = demand(status, settings_for(max_nodes=1), NOW)
    assert wanted.nodes == 2
    assert set(wanted.unservable) == {"big", "capped"}
    assert "partition 'cloud' allows 3" in wanted.unservable["big"]
    assert "at most 1 burst node(s) and 1 other node(s)" in wanted.unservable["capped"]
    decision = decide(status, NodeTable(), NOW, settings_for(max_nodes=1))
    assert decision.unservable == wanted.unservable


@pytest.mark.parametrize(
    ("started", "joins"),
    [(None, True), (0.0, False), (NOW - 60, False), (float(int(NOW - 10)), True), (NOW, True)],
    ids=["not-said", "never-registered", "before-launch", "same-second", "after-launch"],
)
def test_join_only_a_node_registered_since_our_launch(
    started: Optional[float], joins: bool
) -> None:
    booting = record("c1", BOOTING, age=9.5)
    status = QueueStatus("cloud", (), {"c1": NodeState("c1", "down", "", started)})
    decision = decide(status, table_of(booting), NOW, settings_for())
    assert (("join", "c1") in kinds(decision)) is joins


def test_a_node_powering_up_for_a_job_has_not_joined() -> None:
    booting = record("c1", BOOTING, age=30)
    status = QueueStatus(
        "cloud",
        (Job("7", "running", 1, ("c1",)),),
        {"c1": NodeState("c1", "allocated", "#")},
    )
    decision = decide(status, table_of(booting), NOW, settings_for())
    assert decision.records["c1"].phase == BOOTING


def test_a_joined_node_that_stopped_answering_is_no_spare() -> None:
    dead = record("c1", JOINED, idle_for=5)
    status = QueueStatus(
        "cloud",
        pending(1, reason="ReqNodeNotAvail, UnavailableNodes:c1"),
        {"c1": NodeState("c1", "down", "*")},
    )
    decision = decide(status, table_of(dead), NOW, settings_for())
    assert ("launch", "c2") in kinds(decision)


def test_a_joined_node_silent_for_boot_timeout_is_terminated_even_while_jobs_wait() -> None:
    settings = settings_for(max_nodes=2, boot_timeout=300.0)
    dead = record("c1", JOINED)
    status = QueueStatus("cloud", pending(2), {"c1": NodeState("c1", "down", "*")})
    first = decide(status, table_of(dead), NOW, settings)
    assert ("terminate", "c1") not in kinds(first)
    assert first.records["c1"].silent_since == NOW
    later = decide(status, NodeTable(records=first.records), NOW + 300.0, settings)
    assert ("terminate", "c1") in kinds(later)


def test_a_silent_node_that_answers_again_starts_its_clock_afresh() -> None:
    settings = settings_for(boot_timeout=300.0)
    node = record("c1", JOINED)
    node.silent_since = NOW - 299.0
    status = QueueStatus("cloud", pending(1), {"c1": NodeState("c1", "idle")})
    decision = decide(status, table_of(node), NOW, settings)
    assert decision.records["c1"].silent_since is None
    assert ("terminate", "c1") not in kinds(decision)


def test_a_silent_node_still_listed_with_a_job_is_not_terminated() -> None:
    settings = settings_for(boot_timeout=300.0)
    node = record("c1", JOINED)
    node.silent_since = NOW - 1000.0
    running = Job("r1", "running", 1, ("c1",))
    status = QueueStatus("cloud", (running,), {"c1": NodeState("c1", "mixed", "*")})
    assert ("terminate", "c1") not in kinds(decide(status, table_of(node), NOW, settings))


@pytest.mark.parametrize("state", ["drained", "down", "drain"])
def test_a_joined_node_slurm_will_not_use_is_no_spare(state: str) -> None:
    """Slurm drains or downs a node by itself (failed prolog, kill task failed): a job
    waiting must get another node, not wait for ever beside it."""
    status = QueueStatus("cloud", pending(1), {"c1": NodeState("c1", state)})
    decision = decide(status, table_of(record("c1", JOINED)), NOW, settings_for())
    assert ("launch", "c2") in kinds(decision)
