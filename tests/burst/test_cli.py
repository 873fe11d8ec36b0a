"""The mint-burst command line against the fake scheduler on PATH and a moto EC2 server.

The same commands against a real Slurm (slurmds as VMs, the command provider) are in
test_e2e_slurm.py. These stay on the fakes because they run for developers who are
not root (no Slurm daemons), because they pair the scheduler with EC2 (moto), and
because the fakes produce on demand what a real cluster cannot: garbage output, a slow
sinfo in the middle of a step, Torque and PBS Pro (no Debian package).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from mint_burst.cli import main
from mint_common.files import SingleInstanceLock
from mint_common.terminal import Terminal, terminal_override
from mint_common.timeutil import epoch_from_iso
from tests.burst.conftest import Ec2World, FakeScheduler
from tests.helpers import BIN, run_tool

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO / "examples" / "mint-burst" / "traces"


@pytest.fixture
def config_file(tmp_path: Path, hosts_file: Path, ec2_server_world: Ec2World) -> Path:
    path = tmp_path / "mint-burst.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "queue": "cloud",
                "cluster": ec2_server_world.cluster,
                "hosts_file": str(hosts_file),
                "state_file": str(tmp_path / "state" / "state.json"),
                "image": ec2_server_world.ami,
                "poll_interval": 1,
                "retry": {"max_attempts": 2},
                "ec2": {
                    "endpoint_url": ec2_server_world.endpoint_url,
                    "region": "us-east-1",
                    "subnets": [ec2_server_world.subnet],
                    "instance_types": ["t3.micro"],
                },
            }
        )
    )
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pending_jobs(count: int) -> list[dict[str, Any]]:
    return [
        {"id": str(100 + i), "state": "PENDING", "nodes": 1, "reason": "Resources"}
        for i in range(count)
    ]


def state(config_file: Path) -> dict[str, Any]:
    path = Path(yaml.safe_load(config_file.read_text())["state_file"])
    return json.loads(path.read_text())


@pytest.mark.parametrize("command", ["run", "once", "status", "check", "drain-all", "simulate"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and f"{command} [OPTIONS]" in result.output


def test_dry_run_prints_the_launches_and_changes_nothing(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    fake_scheduler.update(jobs=pending_jobs(2))
    result = invoke("once", "--dry-run", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert "would launch c1 (10.0.1.11): 2 node(s) short for pending jobs" in result.output
    assert "would launch c2 (10.0.1.12)" in result.output
    assert ec2_server_world.instances() == []
    assert not Path(yaml.safe_load(config_file.read_text())["state_file"]).exists()


def test_once_launches_then_joins_then_status_shows_it(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    fake_scheduler.update(jobs=pending_jobs(2))
    result = invoke("once", "--config", str(config_file), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pending_jobs"] == 2 and len(report["actions"]) == 2
    instances = ec2_server_world.instances()
    assert sorted(i["PrivateIpAddress"] for i in instances) == ["10.0.1.11", "10.0.1.12"]
    fake_scheduler.set_node("c1", "down")
    assert invoke("once", "--config", str(config_file)).exit_code == 0
    assert fake_scheduler.read()["log"] == ["scontrol update NodeName=c1 State=RESUME"]
    assert invoke("once", "--config", str(config_file)).exit_code == 0
    status = json.loads(invoke("status", "--json", "--config", str(config_file)).stdout)
    assert {n["name"]: n["phase"] for n in status["nodes"]} == {"c1": "joined", "c2": "booting"}
    assert status["queue"]["pending_jobs"] == 2 and not status["stale"]
    text = invoke("status", "--config", str(config_file)).output
    assert "queue 'cloud': 2 pending, 0 running" in text and "c1\t10.0.1.11\tjoined" in text
    text = invoke("status", "--no-scheduler", "--config", str(config_file)).output
    assert "queue" not in text and "nodes: 2 of at most 4" in text
    fake_scheduler.update(fail={"squeue": {"rc": 1, "stderr": "slurm_load_jobs error"}})
    text = invoke("status", "--config", str(config_file)).output
    assert "queue 'cloud': cannot read the scheduler: squeue" in text


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            {
                "fail": {
                    "squeue": {
                        "rc": 1,
                        "stderr": "slurm_load_jobs error: Unable to contact"
                        " slurm controller (connect failure)",
                    }
                }
            },
            "Unable to contact slurm controller",
        ),
        ({"garbage": {"squeue": "<html>502 Bad Gateway</html>"}}, "squeue output line 1"),
    ],
    ids=["squeue-fails", "squeue-garbage"],
)
def test_unreadable_queue_exits_69_and_keeps_every_node(
    fake_scheduler: FakeScheduler,
    config_file: Path,
    ec2_server_world: Ec2World,
    fault: dict[str, Any],
    message: str,
) -> None:
    fake_scheduler.update(jobs=pending_jobs(1))
    assert invoke("once", "--config", str(config_file)).exit_code == 0
    fake_scheduler.update(jobs=[], **fault)
    result = invoke("once", "--config", str(config_file))
    assert result.exit_code == 69
    assert message in result.output
    assert len(ec2_server_world.instances()) == 1
    document = state(config_file)
    assert message in document["last_error"] and document["heartbeat"] is not None


def test_once_exits_75_while_another_run_holds_the_lock(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    state_file = Path(yaml.safe_load(config_file.read_text())["state_file"])
    with SingleInstanceLock(state_file.with_name("state.json.lock")):
        result = invoke("once", "--config", str(config_file))
    assert result.exit_code == 75
    assert "another run holds the lock" in result.output


def test_check_passes_against_fake_slurm_and_moto(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    result = invoke("check", "--json", "--config", str(config_file))
    document = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert result.exit_code == 0, result.output
    assert statuses == {
        "config": "pass",
        "host list": "pass",
        "scheduler commands": "pass",
        "scheduler queue": "pass",
        "provider": "pass",
        "ec2 host addresses": "pass",
        "state file": "warn",
    }
    details = {c["name"]: c["detail"] for c in document["checks"]}
    assert "run_instances allowed (DryRun)" in details["provider"]
    assert details["ec2 host addresses"] == "all 4 host IPs lie in ec2.subnets"


def test_check_fails_when_a_host_ip_is_outside_the_subnets(
    fake_scheduler: FakeScheduler, config_file: Path, hosts_file: Path
) -> None:
    hosts_file.write_text(json.dumps({"10.0.1.11": "c1", "10.0.9.12": "c2"}))
    result = invoke("check", "--json", "--config", str(config_file))
    checks = json.loads(result.stdout)["checks"]
    provider = next(c for c in checks if c["name"] == "ec2 host addresses")
    assert result.exit_code == 1
    assert provider["status"] == "fail"
    assert "IP 10.0.9.12 from hosts.json lies in none of ec2.subnets" in provider["detail"]


def test_check_fails_when_squeue_is_missing(
    fake_scheduler: FakeScheduler,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = invoke("check", "--json", "--config", str(config_file))
    statuses = {c["name"]: (c["status"], c["detail"]) for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 1
    assert statuses["scheduler commands"] == ("fail", "command not found: squeue")
    assert statuses["scheduler queue"][0] == "skip"


def test_check_reports_a_bad_config_without_crashing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("idle_timout: 3\n")
    result = invoke("check", "--json", "--config", str(bad))
    checks = json.loads(result.stdout)["checks"]
    assert result.exit_code == 1
    assert checks[0]["status"] == "fail" and "did you mean 'idle_timeout'" in checks[0]["detail"]


def test_drain_all_force_terminates_every_node(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    fake_scheduler.update(jobs=pending_jobs(2))
    invoke("once", "--config", str(config_file))
    fake_scheduler.set_node("c1", "allocated")
    fake_scheduler.update(jobs=[{"id": "7", "state": "RUNNING", "nodes": 1, "nodelist": "c1"}])
    result = invoke("drain-all", "--no-wait", "--yes", "--config", str(config_file))
    assert result.exit_code == 75 and "still draining (jobs running): c1" in result.output
    assert len(ec2_server_world.instances()) == 1
    result = invoke("drain-all", "--force", "--yes", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert ec2_server_world.instances() == []
    assert "scontrol update NodeName=c1 State=DOWN" in " ".join(fake_scheduler.read()["log"])


def test_simulate_compares_both_policies_as_json() -> None:
    result = invoke(
        "simulate",
        "--trace",
        str(TRACES / "burst.sacct"),
        "--policy",
        "both",
        "--max-nodes",
        "16",
        "--boot-time",
        "3m",
        "--json",
    )
    assert result.exit_code == 0
    ours, legacy = json.loads(result.stdout)["results"]
    assert (ours["policy"], legacy["policy"]) == ("ours", "legacy")
    assert ours["jobs"] == legacy["jobs"] == 300
    assert ours["mean_wait_s"] < legacy["mean_wait_s"]


def test_simulate_table_and_outage_option() -> None:
    result = invoke(
        "simulate",
        "--trace",
        str(TRACES / "mix.sacct"),
        "--policy",
        "legacy",
        "--squeue-fail-at",
        "4h,15m",
    )
    assert result.exit_code == 0
    header, row = result.output.splitlines()[:2]
    assert header.split("\t")[-1] == "jobs killed" and row.startswith("legacy\t")
    assert int(row.split("\t")[-1]) > 0


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--trace", "/nonexistent.sacct"], 66, "does not exist"),
        (["--trace", str(TRACES / "mix.sacct"), "--squeue-fail-at", "4h"], 2, "T,DURATION"),
        (["--trace", str(TRACES / "mix.sacct"), "--boot-time", "soon"], 2, "--boot-time"),
        (["--trace", str(TRACES / "mix.sacct"), "--max-nodes", "2"], 65, "4-node job"),
    ],
    ids=["missing-trace", "bad-window", "bad-duration", "too-few-nodes"],
)
def test_simulate_bad_input(args: list[str], status: int, message: str) -> None:
    result = invoke("simulate", *args)
    assert result.exit_code == status and message in result.output


def test_sigterm_mid_step_finishes_the_step_and_exits_0(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    fake_scheduler.update(jobs=pending_jobs(1), delay={"sinfo": 2})
    process = subprocess.Popen(
        [str(BIN / "mint-burst"), "run", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not any(c.startswith("sinfo") for c in fake_scheduler.read().get("calls", [])):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "finishing the current step" in err
    document = state(config_file)
    assert [n["phase"] for n in document["nodes"]] == ["booting"]
    assert [i["InstanceId"] for i in ec2_server_world.instances()] == [
        document["nodes"][0]["instance_id"]
    ]


def test_run_as_a_process_reads_the_seed_env_file_names(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    jobs = [{**job, "partition": "burst"} for job in pending_jobs(1)]
    fake_scheduler.update(jobs=jobs, partitions=["burst"])
    env = {**os.environ, "QUEUE_NAME": "burst"}
    result = run_tool("mint-burst", "once", "--dry-run", "--config", str(config_file), env=env)
    assert result.returncode == 0, result.stderr
    assert "would launch c1" in result.stdout
    assert "--partition=burst" in " ".join(fake_scheduler.read()["calls"])


def test_without_the_burst_extra_ec2_needs_it_but_simulate_does_not(
    base_only_venv: Path, tmp_path: Path, hosts_file: Path
) -> None:
    tool = base_only_venv.parent / "mint-burst"
    config = tmp_path / "ec2.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hosts_file": str(hosts_file),
                "image": "ami-1",
                "flavor": "t3.micro",
                "ec2": {"subnets": ["subnet-1"]},
            }
        )
    )
    result = subprocess.run(
        [str(tool), "once", "--dry-run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 69
    assert "needs the 'burst' extra" in result.stderr
    assert "pip install 'mint-tools[burst]'" in result.stderr
    result = subprocess.run(
        [str(tool), "simulate", "--trace", str(TRACES / "mix.sacct")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.startswith("policy\t")


@pytest.mark.parametrize("flavor", ["torque", "pbspro"])
def test_torque_and_pbspro_queues_through_the_fake_commands(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World, flavor: str
) -> None:
    fake_scheduler.update(
        jobs=[*pending_jobs(1), {"id": "9", "state": "RUNNING", "nodes": 1, "nodelist": "c4"}]
    )
    for name in ("c1", "c2", "c3"):
        fake_scheduler.set_node(name, "down")
    fake_scheduler.set_node("c4", "job-exclusive")
    env_config = config_file.with_name(f"{flavor}.yaml")
    env_config.write_text(config_file.read_text() + f"scheduler: {flavor}\n")
    result = invoke("once", "--dry-run", "--json", "--config", str(env_config))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["pending_jobs"], report["running_jobs"]) == (1, 1)
    assert report["actions"] == ["launch c1 (10.0.1.11): 1 node(s) short for pending jobs"]
    calls = fake_scheduler.read()["calls"]
    expected = "qstat -x cloud" if flavor == "torque" else "qstat -f -F json cloud"
    assert expected in calls


def command_config(tmp_path: Path, hosts_file: Path, **settings: Any) -> Path:
    """A command-provider config whose list script answers with no instances."""
    script = tmp_path / "cloud.sh"
    script.write_text("#!/bin/sh\necho '{\"instances\": []}'\n")
    script.chmod(0o755)
    path = tmp_path / "command.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "queue": "cloud",
                "hosts_file": str(hosts_file),
                "state_file": str(tmp_path / "cmd-state" / "state.json"),
                "provider": "command",
                "command": {
                    "create": [str(script)],
                    "list": [str(script)],
                    "delete": [str(script)],
                },
                **settings,
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"create": ["/nonexistent/create-vm"]}, "/nonexistent/create-vm does not exist"),
        ({"list": ["no-such-vm-lister"]}, "no program 'no-such-vm-lister' on PATH"),
        ({"delete": ["{not_executable}"]}, "is not executable"),
    ],
    ids=["missing", "not-on-path", "not-executable"],
)
@pytest.mark.parametrize("args", [["once"], ["run"], ["drain-all", "--yes"]], ids=lambda a: a[0])
def test_a_broken_provider_command_is_a_configuration_error_at_start(
    fake_scheduler: FakeScheduler,
    tmp_path: Path,
    hosts_file: Path,
    command: dict[str, list[str]],
    message: str,
    args: list[str],
) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("#!/bin/sh\n")
    config = command_config(tmp_path, hosts_file)
    document = yaml.safe_load(config.read_text())
    for key, argv in command.items():
        document["command"][key] = [a.replace("{not_executable}", str(plain)) for a in argv]
    config.write_text(yaml.safe_dump(document))
    fake_scheduler.update(jobs=pending_jobs(1))
    result = invoke(*args, "--config", str(config))
    assert result.exit_code == 78, result.output
    assert message in result.output
    assert not (tmp_path / "cmd-state" / "state.json").exists()


def test_ec2_without_a_region_is_a_configuration_error(
    fake_scheduler: FakeScheduler, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    document = yaml.safe_load(config_file.read_text())
    del document["ec2"]["region"]
    config_file.write_text(yaml.safe_dump(document))
    for args in (["once"], ["once", "--dry-run"], ["status"], ["check"]):
        result = invoke(*args, "--config", str(config_file))
        if args == ["status"]:
            # status reads only the state file and the scheduler: no region needed.
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 78, (args, result.output)
        # The wording of mint_common.aws, the same as mint-s3job's.
        assert "no AWS region configured" in result.output, result.output
        assert "set 'ec2.region'" in result.output and "NoRegionError" not in result.output


def test_a_host_the_queue_lacks_is_a_configuration_error_at_start(
    fake_scheduler: FakeScheduler, tmp_path: Path, hosts_file: Path
) -> None:
    hosts_file.write_text(json.dumps({"10.0.1.11": "c1", "10.0.1.19": "c9"}))
    config = command_config(tmp_path, hosts_file)
    fake_scheduler.update(jobs=pending_jobs(2))
    for args in (["once"], ["once", "--dry-run"], ["run"], ["check"]):
        result = invoke(*args, "--config", str(config))
        assert result.exit_code == 78, (args, result.output)
        assert "c9 not among the nodes of queue 'cloud'" in result.output
    assert "log" not in fake_scheduler.read()


def test_once_interrupted_by_sigterm_exits_143_and_releases_the_lock(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    fake_scheduler.update(jobs=pending_jobs(1), delay={"sinfo": 10})
    process = subprocess.Popen(
        [str(BIN / "mint-burst"), "once", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not any(c.startswith("sinfo") for c in fake_scheduler.read().get("calls", [])):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    state_file = Path(yaml.safe_load(config_file.read_text())["state_file"])
    with SingleInstanceLock(state_file.with_name("state.json.lock")):
        pass


def launched(fake_scheduler: FakeScheduler, config_file: Path, count: int) -> None:
    fake_scheduler.update(jobs=pending_jobs(count))
    assert invoke("once", "--config", str(config_file)).exit_code == 0


def test_drain_all_lists_the_nodes_and_asks_on_a_terminal(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    launched(fake_scheduler, config_file, 2)
    at_terminal = Terminal(stdin_isatty=True, stdout_isatty=True, stderr_isatty=True)
    with terminal_override(at_terminal):
        declined = CliRunner().invoke(
            main, ["drain-all", "--config", str(config_file)], input="n\n"
        )
    assert declined.exit_code == 1, declined.output
    assert "c1 (i-" in declined.stderr and "c2 (i-" in declined.stderr
    assert "drain and terminate these 2 node(s)? [y/N]" in declined.stderr
    assert len(ec2_server_world.instances()) == 2
    with terminal_override(at_terminal):
        agreed = CliRunner().invoke(main, ["drain-all", "--config", str(config_file)], input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert ec2_server_world.instances() == []


def test_drain_all_without_a_terminal_needs_yes_and_dry_run_changes_nothing(
    fake_scheduler: FakeScheduler, config_file: Path, ec2_server_world: Ec2World
) -> None:
    launched(fake_scheduler, config_file, 2)
    nobody = Terminal(stdin_isatty=False, stdout_isatty=False, stderr_isatty=False)
    with terminal_override(nobody):
        refused = invoke("drain-all", "--config", str(config_file))
        shown = invoke("drain-all", "--dry-run", "--config", str(config_file))
    assert refused.exit_code == 2 and "add --yes" in refused.output
    assert shown.exit_code == 0, shown.output
    assert sorted(line.split()[4] for line in shown.stdout.splitlines()) == ["c1", "c2"]
    assert len(ec2_server_world.instances()) == 2
    assert "log" not in fake_scheduler.read()
    with terminal_override(nobody):
        forced = invoke("drain-all", "-y", "--config", str(config_file))
    assert forced.exit_code == 0, forced.output
    assert ec2_server_world.instances() == []


def config_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "effective configuration" in line]


def test_effective_configuration_is_logged_at_daemon_start_and_with_v_only(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    quiet = run_tool("mint-burst", "once", "--config", str(config_file))
    assert quiet.returncode == 0, quiet.stderr
    assert config_lines(quiet.stderr) == []
    verbose = run_tool("mint-burst", "once", "-v", "--config", str(config_file))
    [line] = config_lines(verbose.stderr)
    assert json.loads(line.split("effective configuration: ", 1)[1])["queue"] == "cloud"
    daemon = subprocess.Popen(
        [str(BIN / "mint-burst"), "run", "--config", str(config_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert daemon.stderr is not None
    first = daemon.stderr.readline()
    daemon.send_signal(signal.SIGTERM)
    rest = daemon.communicate(timeout=60)[1]
    assert daemon.returncode == 0, first + rest
    [line] = config_lines(first + rest)
    assert " INFO " in line and json.loads(line.split(": ", 2)[2])["poll_interval"] == 1.0


def test_simulate_help_keeps_the_example_lines() -> None:
    text = invoke("simulate", "--help").output
    assert "      sacct --parsable2 --noheader -S 2026-10-01 -r cloud \\\n" in text
    assert "        --format=JobID,Submit,Start,End,NNodes,Partition,State > cloud.sacct\n" in text
    assert (
        "      mint-burst simulate --trace cloud.sacct --idle-timeout 300 --policy both\n" in text
    )


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["once"], ["status"], ["check"], ["drain-all"], ["simulate"]],
    ids=lambda c: c[0] if c else "main",
)
def test_help_speaks_the_users_words(command: list[str]) -> None:
    text = invoke(*command, "--help").output.lower()
    for word in ("seed", "quirk", "shared/"):
        assert word not in text


def test_simulate_durations_accept_every_form() -> None:
    trace = str(TRACES / "mix.sacct")
    plain = invoke("simulate", "--trace", trace, "--json", "--idle-timeout", "5400")
    units = invoke("simulate", "--trace", trace, "--json", "--idle-timeout", "1h30m")
    assert plain.exit_code == units.exit_code == 0, units.output
    assert json.loads(plain.stdout) == json.loads(units.stdout)


def test_check_with_a_skipped_row_passes(
    fake_scheduler: FakeScheduler, tmp_path: Path, hosts_file: Path
) -> None:
    config = command_config(tmp_path, hosts_file)
    result = invoke("check", "--json", "--config", str(config))
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert checks["ec2 host addresses"] == "skip"
    assert "fail" not in checks.values()
    assert result.exit_code == 0, result.output


def test_status_json_times_are_iso_8601_and_nodes_newest_first(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    launched(fake_scheduler, config_file, 1)
    fake_scheduler.update(jobs=pending_jobs(2))
    assert invoke("once", "--config", str(config_file)).exit_code == 0
    document = json.loads(invoke("status", "--json", "--config", str(config_file)).stdout)
    assert [n["name"] for n in document["nodes"]] == ["c2", "c1"]
    for node in document["nodes"]:
        assert epoch_from_iso(node["launched_at_iso"]) == pytest.approx(node["launched_at"], abs=1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", node["launched_at_iso"])
        assert epoch_from_iso(node["phase_since_at"]) == pytest.approx(node["phase_since"], abs=1)
    assert epoch_from_iso(document["heartbeat_at"]) == pytest.approx(document["heartbeat"], abs=1)


def test_an_old_state_directory_is_moved_and_no_node_record_is_lost(
    fake_scheduler: FakeScheduler,
    config_file: Path,
    ec2_server_world: Ec2World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    old_dir = Path.home() / ".local" / "state" / "mint-burst"
    new_file = tmp_path / "xdg-state" / "mint" / "burst" / "state.json"
    document = yaml.safe_load(config_file.read_text())
    # The earlier release's default place, where it left two running nodes.
    document["state_file"] = str(old_dir / "state.json")
    config_file.write_text(yaml.safe_dump(document))
    launched(fake_scheduler, config_file, 2)
    del document["state_file"]
    config_file.write_text(yaml.safe_dump(document))

    with SingleInstanceLock(old_dir / "state.json.lock"):
        busy = invoke("status", "--json", "--config", str(config_file))
    assert busy.exit_code == 75, busy.output
    assert old_dir.is_dir() and not new_file.exists()

    status = json.loads(invoke("status", "--json", "--config", str(config_file)).stdout)
    assert sorted(n["name"] for n in status["nodes"]) == ["c1", "c2"]
    assert new_file.is_file() and not old_dir.exists()
    report = json.loads(
        invoke("once", "--reap-orphans", "--json", "--config", str(config_file)).stdout
    )
    assert report["orphans"] == [] and not any("reaped" in d for d in report["done"])
    assert len(ec2_server_world.instances()) == 2
