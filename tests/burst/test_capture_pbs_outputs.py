"""scripts/capture-pbs-outputs against the fake qstat/pbsnodes of tests/burst/fakes.

No Torque or PBS Pro package exists to run the real commands here, so the fakes stand
in: the test proves the script writes the recorded-output files the adapter's parsers
read, keeps other samples' index lines, and runs only read-only commands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from mint_burst.pbs import parse_pbsnodes_json, parse_pbsnodes_xml, parse_qstat_xml
from tests.burst.conftest import FakeScheduler

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "capture-pbs-outputs"
STATE_CHANGING = {"-o", "-c", "-r", "-N"}


def capture(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def calls(fake: FakeScheduler) -> list[list[str]]:
    return [c.split() for c in fake.read().get("calls", [])]


def sample(out: Path, name: str) -> tuple[str, str, str]:
    """(stdout, stderr, rc) of one captured command."""
    stdout, stderr, rc = (
        (out / f"{name}.{part}").read_text() for part in ("stdout", "stderr", "rc")
    )
    return stdout, stderr, rc


@pytest.fixture
def busy_queue(fake_scheduler: FakeScheduler) -> FakeScheduler:
    fake_scheduler.update(
        jobs=[
            {"id": "11", "state": "PENDING", "nodes": 2},
            {"id": "12", "state": "RUNNING", "nodes": 1, "nodelist": "c3"},
        ]
    )
    fake_scheduler.set_node("c3", "job-exclusive")
    return fake_scheduler


def test_torque_capture_writes_the_adapters_commands_and_their_errors(
    busy_queue: FakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "captured"
    out.mkdir()
    (out / "commands.txt").write_text("slurm_sinfo                   sinfo --noheader\n")
    done = capture("--queue", "cloud", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "torque samples written" in done.stderr
    stdout, stderr, rc = sample(out, "torque_qstat_x")
    jobs = parse_qstat_xml(stdout, "cloud")
    assert [(j.job_id, j.state, j.nodes) for j in jobs] == [
        ("11.head", "pending", 2),
        ("12.head", "running", 1),
    ]
    assert (stderr, rc) == ("", "0\n")
    nodes = parse_pbsnodes_xml(sample(out, "torque_pbsnodes_x")[0])
    assert nodes["c3"][1] == ["12.head"]
    assert list(parse_pbsnodes_xml(sample(out, "torque_pbsnodes_x_node")[0])) == ["c1"]
    _, stderr, rc = sample(out, "torque_qstat_q_unknown_queue")
    assert rc == "170\n" and "Unknown queue" in stderr
    index = (out / "commands.txt").read_text().splitlines()
    assert "slurm_sinfo                   sinfo --noheader" in index
    assert "torque_qstat_x                qstat -x cloud" in index
    assert len(index) == 1 + len(list(out.glob("torque_*.rc")))
    ran = calls(busy_queue)
    assert ["qstat", "-Q", "cloud"] in ran and ["pbsnodes", "-x", "c1"] in ran
    assert not [c for c in ran if STATE_CHANGING & set(c)]
    assert "log" not in busy_queue.read()  # the fake logs every state change it makes


def test_pbspro_capture_records_failures_and_a_stopped_server(
    busy_queue: FakeScheduler, tmp_path: Path
) -> None:
    out = tmp_path / "captured"
    assert capture("--flavor", "pbspro", "--node", "c2", "--out", str(out)).returncode == 0
    assert list(parse_pbsnodes_json(sample(out, "pbspro_pbsnodes_json_node")[0])) == ["c2"]
    busy_queue.update(fail={"qstat": {"rc": 15, "stderr": "Connection refused\nqstat: cannot"}})
    done = capture("--flavor", "pbspro", "--server-down", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sample(out, "pbspro_qstat_no_server") == (
        "",
        "Connection refused\nqstat: cannot\n",
        "15\n",
    )
    assert sample(out, "pbspro_pbsnodes_no_server")[2] == "0\n"
    assert len(list(out.glob("*.rc"))) == 10
    assert sample(out, "pbspro_qstat_json")[2] == "0\n"  # the server-down run left it alone
    assert ["qstat", "-f", "-F", "json", "cloud"] in calls(busy_queue)


@pytest.mark.parametrize(
    ("version", "message"),
    [(None, "qstat not found"), ("qstat 1.0 (something else)", "cannot tell Torque from PBS Pro")],
    ids=["no-qstat", "unknown-flavour"],
)
def test_refuses_without_a_pbs_qstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: Optional[str], message: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if version is not None:
        fake = bin_dir / "qstat"
        fake.write_text(f"#!/bin/sh\necho '{version}'\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    done = capture("--out", str(tmp_path / "out"))
    assert done.returncode == 69
    assert message in done.stderr
    assert not (tmp_path / "out").exists()
