"""Torque (XML) and PBS Pro (JSON) adapter on recorded outputs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_burst.model import Host
from mint_burst.pbs import (
    PbsScheduler,
    exec_hosts,
    parse_pbsnodes_json,
    parse_pbsnodes_xml,
    parse_qstat_json,
    parse_qstat_xml,
)
from mint_burst.policy import PolicySettings, demand
from mint_burst.scheduler import CommandRunner
from mint_common.errors import ConfigError, InputError, UnavailableError
from tests.burst.conftest import recorded


def test_torque_qstat_xml_sample() -> None:
    jobs = {j.job_id: j for j in parse_qstat_xml(recorded("torque_qstat_x").stdout, "cloud")}
    assert set(jobs) == {"101.head", "102.head", "103.head", "105.head"}
    assert jobs["101.head"].state == "running"
    assert jobs["101.head"].node_names == ("c1", "c2")
    assert jobs["101.head"].nodes == 2
    assert jobs["105.head"].nodes == 3
    assert jobs["103.head"].reason == "held" and jobs["102.head"].reason == ""


def test_torque_pbsnodes_xml_sample() -> None:
    nodes = parse_pbsnodes_xml(recorded("torque_pbsnodes_x").stdout)
    assert nodes["c1"][0].busy and nodes["c1"][1] == ["101.head"]
    assert nodes["c2"][0].state == "mixed" and nodes["c2"][0].busy
    assert nodes["c3"][0].ready and not nodes["c3"][0].busy
    assert not nodes["c4"][0].responding
    assert nodes["c5"][0].state == "offline" and nodes["c5"][0].responding
    assert not nodes["c6"][0].responding and not nodes["c7"][0].responding


def test_pbspro_json_samples() -> None:
    jobs = {j.job_id: j for j in parse_qstat_json(recorded("pbspro_qstat_json").stdout, "cloud")}
    assert set(jobs) == {"201.head", "202.head", "203.head"}
    assert jobs["201.head"].node_names == ("c1", "c2")
    assert jobs["202.head"].nodes == 4
    assert parse_qstat_json(recorded("pbspro_qstat_json_empty").stdout, "cloud") == ()
    nodes = parse_pbsnodes_json(recorded("pbspro_pbsnodes_json").stdout)
    assert nodes["c1"][0].busy and nodes["c1"][1] == ["201.head"]
    assert nodes["c2"][0].busy and not nodes["c3"][0].busy
    assert not nodes["c4"][0].responding


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (lambda t: parse_qstat_xml(t, "cloud"), "<Data><Job><Job_Id>1"),
        (lambda t: parse_qstat_xml(t, "cloud"), "<Data><Job><job_state>Q</job_state></Job></Data>"),
        (
            lambda t: parse_qstat_xml(t, "cloud"),
            "<Data><Job><Job_Id>1</Job_Id><job_state>Z</job_state></Job></Data>",
        ),
        (lambda t: parse_qstat_json(t, "cloud"), '{"Jobs": {"1": {}}}'),
        (lambda t: parse_qstat_json(t, "cloud"), "qstat: not json"),
        (parse_pbsnodes_json, '{"nodes": {"c1": {}}}'),
        (parse_pbsnodes_xml, "<Data><Node><state>free</state></Node></Data>"),
    ],
    ids=[
        "truncated-xml",
        "no-job-id",
        "unknown-state",
        "json-no-state",
        "not-json",
        "node-no-state",
        "node-no-name",
    ],
)
def test_malformed_outputs_raise(parser: Any, text: str) -> None:
    with pytest.raises(InputError):
        parser(text)


def _scheduler(recorded_runner: Any, flavor: str, table: dict[str, str]) -> tuple[Any, Any]:
    def choose(argv: list[str]) -> str:
        for prefix, name in table.items():
            if " ".join(argv).startswith(prefix):
                return name
        raise AssertionError(f"unexpected command {argv}")

    runner = recorded_runner(choose)
    return PbsScheduler("cloud", CommandRunner(timeout=5, runner=runner), flavor), runner


def test_torque_status_and_leave(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner,
        "torque",
        {
            "qstat -x": "torque_qstat_x",
            "pbsnodes -x": "torque_pbsnodes_x",
            "pbsnodes -o": "torque_qstat_x_empty",
        },
    )
    status = scheduler.get_status()
    hosts = tuple(Host(f"10.0.1.{i}", f"c{i}") for i in range(1, 9))
    assert demand(status, PolicySettings(hosts, max_nodes=8), 0.0).nodes == 4
    assert "c1" in status.busy_nodes()
    assert scheduler.leave_cluster("c1") is False
    assert scheduler.leave_cluster("c3") is True
    assert ["pbsnodes", "-o", "-N", "mint-burst: leaving the cluster", "c3"] in runner.calls


def test_torque_server_down_is_unavailable(recorded_runner: Any) -> None:
    scheduler, _runner = _scheduler(recorded_runner, "torque", {"qstat": "torque_qstat_no_server"})
    with pytest.raises(UnavailableError, match="qstat -x cloud exited with status 111"):
        scheduler.get_status()


@pytest.mark.parametrize("flavor", ["torque", "pbspro"])
def test_unknown_queue_is_a_configuration_error(recorded_runner: Any, flavor: Any) -> None:
    """Samples written from documentation (PBSE_UNKQUE): no Torque or PBS package runs here."""
    scheduler, runner = _scheduler(
        recorded_runner,
        flavor,
        {"qstat -Q": "torque_qstat_q_unknown_queue", "qstat": "torque_qstat_unknown_queue"},
    )
    with pytest.raises(ConfigError, match="no such queue"):
        scheduler.check_queue()
    with pytest.raises(ConfigError, match="Unknown queue"):
        scheduler.get_status()
    assert runner.calls[0] == ["qstat", "-Q", "cloud"]


def test_pbspro_join_clears_offline_with_r(recorded_runner: Any) -> None:
    scheduler, runner = _scheduler(
        recorded_runner,
        "pbspro",
        {"pbsnodes -F json": "pbspro_pbsnodes_json", "pbsnodes -r": "pbspro_qstat_json_empty"},
    )
    scheduler.join_cluster("c5")
    scheduler.join_cluster("c3")
    assert [c for c in runner.calls if "-r" in c] == [["pbsnodes", "-r", "c5"]]


@pytest.mark.parametrize(
    ("flavor", "sample", "expected"),
    [("torque", "torque_version", "torque 6.1.3"), ("pbspro", "pbspro_version", "pbspro 2022.1.1")],
    ids=["torque", "pbspro"],
)
def test_check_version(recorded_runner: Any, flavor: str, sample: str, expected: str) -> None:
    nodes = "torque_pbsnodes_x" if flavor == "torque" else "pbspro_pbsnodes_json"
    scheduler, _runner = _scheduler(
        recorded_runner, flavor, {"qstat --version": sample, "pbsnodes": nodes}
    )
    assert scheduler.check_version().startswith(expected)


@given(
    st.lists(
        st.tuples(st.sampled_from(["c1", "c2", "gpu-3"]), st.integers(0, 63)),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_exec_host_parser(slots: list[tuple[str, int]]) -> None:
    text = "+".join(f"{name}/{slot}" for name, slot in slots)
    assert exec_hosts(text) == tuple(dict.fromkeys(name for name, _slot in slots))
