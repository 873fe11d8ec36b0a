"""mint-burst's metrics: the `run` endpoint scraped over HTTP while the daemon works, the
`once` textfile's running totals, a taken port, and the missing extra.

The scheduler is the fake command set on PATH (tests/burst/fakes): the test changes what
it answers between steps (a node that boots, a squeue that fails), which a real Slurm
does not do on demand. The cloud is the command provider with a small script.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from click.testing import CliRunner, Result

from mint_burst.cli import main
from tests.burst.conftest import FakeScheduler
from tests.burst.test_command_provider import CLOUD_SCRIPT, script
from tests.common.test_metrics import (
    Daemon,
    Samples,
    parse,
    port_taken,
    scrape,
    scraped,
    value,
)
from tests.helpers import BIN

SQUEUE_DOWN = {"squeue": {"rc": 1, "stderr": "slurm_load_jobs error: Unable to contact"}}


def pending_jobs(count: int) -> list[dict[str, Any]]:
    return [
        {"id": str(100 + i), "state": "PENDING", "nodes": 1, "reason": "Resources"}
        for i in range(count)
    ]


@pytest.fixture
def config_file(
    tmp_path: Path, hosts_file: Path, fake_scheduler: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("CLOUD_DB", str(tmp_path / "cloud.json"))
    cloud = script(tmp_path, "cloud.py", CLOUD_SCRIPT)
    path = tmp_path / "mint-burst.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "queue": "cloud",
                "hosts_file": str(hosts_file),
                "state_file": str(tmp_path / "state" / "state.json"),
                "provider": "command",
                "command": {"create": [cloud], "list": [cloud], "delete": [cloud]},
                "idle_timeout": 0,
                "poll_interval": 0.2,
                "max_node_hours_per_day": 40,
                "metrics_textfile": str(tmp_path / "textfile" / "mint-burst.prom"),
            }
        )
    )
    return path


def once(config_file: Path) -> Result:
    return CliRunner().invoke(main, ["once", "--config", str(config_file)], catch_exceptions=False)


def textfile(config_file: Path) -> Samples:
    path = Path(yaml.safe_load(config_file.read_text())["metrics_textfile"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    return parse(path.read_text())


def test_once_writes_running_totals_to_the_textfile(
    fake_scheduler: FakeScheduler, config_file: Path
) -> None:
    fake_scheduler.update(jobs=pending_jobs(2))
    assert once(config_file).exit_code == 0
    first = textfile(config_file)
    assert value(first, "mint_burst_launches_total", result="ok") == 2
    assert value(first, "mint_burst_launches_total", result="refused") == 0
    assert value(first, "mint_burst_nodes", phase="booting") == 2
    assert value(first, "mint_burst_pending_jobs") == 2
    assert value(first, "mint_burst_steps_total", result="ok") == 1
    assert value(first, "mint_burst_node_hours_budget") == 40

    fake_scheduler.set_node("c1", "down")  # booted: joined at the next step
    assert once(config_file).exit_code == 0
    fake_scheduler.update(jobs=[])
    fake_scheduler.set_node("c1", "idle")  # no job and idle_timeout 0: removed
    assert once(config_file).exit_code == 0
    fake_scheduler.update(fail=SQUEUE_DOWN)
    assert once(config_file).exit_code == 69

    last = textfile(config_file)
    assert value(last, "mint_burst_steps_total", result="ok") == 4
    assert value(last, "mint_burst_launches_total", result="ok") == 2  # a total, not this run's
    assert value(last, "mint_burst_removals_total") == 1
    assert value(last, "mint_burst_scheduler_read_failures_total") == 1
    assert value(last, "mint_burst_pending_jobs") == 0  # the last read's, kept
    # c1 was terminated and, gone from the listing, freed at the last step; c2 still boots.
    assert value(last, "mint_burst_nodes", phase="booting") == 1
    assert value(last, "mint_burst_nodes", phase="terminating") == 0
    assert value(last, "mint_burst_last_step_timestamp_seconds") > value(
        first, "mint_burst_last_step_timestamp_seconds"
    )


def test_a_dry_run_writes_no_metrics(fake_scheduler: FakeScheduler, config_file: Path) -> None:
    fake_scheduler.update(jobs=pending_jobs(1))
    result = CliRunner().invoke(main, ["once", "--dry-run", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert not Path(yaml.safe_load(config_file.read_text())["metrics_textfile"]).exists()


def test_a_textfile_not_named_prom_is_a_config_error(config_file: Path) -> None:
    document = yaml.safe_load(config_file.read_text())
    config_file.write_text(yaml.safe_dump({**document, "metrics_textfile": "/tmp/burst.txt"}))
    result = CliRunner().invoke(main, ["once", "--config", str(config_file)])
    assert result.exit_code == 78 and "does not end in .prom" in result.output


@pytest.fixture
def daemon(config_file: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, env: Optional[dict[str, str]] = None) -> Daemon:
        argv = [str(BIN / "mint-burst"), "run", "--config", str(config_file), *args]
        started.append(Daemon(argv, tmp_path / f"daemon-{len(started)}.log", env or {}))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_run_serves_the_metrics_over_http_while_it_works(
    fake_scheduler: FakeScheduler, config_file: Path, daemon: Callable[..., Daemon]
) -> None:
    fake_scheduler.update(jobs=pending_jobs(2))
    burst = daemon("--metrics-port", "0")
    port = burst.metrics_port()
    launched = "mint_burst_launches_total"
    burst.wait_for(lambda: scraped(port, launched, result="ok") == 2, "two launches")
    samples = scrape(port)
    assert value(samples, "mint_burst_nodes", phase="booting") == 2
    assert value(samples, "mint_burst_nodes", phase="joined") == 0
    assert value(samples, "mint_burst_pending_jobs") == 2
    assert value(samples, "mint_burst_scheduler_read_failures_total") == 0
    assert value(samples, "mint_burst_build_info", version=_version()) == 1

    fake_scheduler.update(fail=SQUEUE_DOWN)
    failures = "mint_burst_scheduler_read_failures_total"
    burst.wait_for(lambda: scraped(port, failures) >= 1, "a failed scheduler read")
    samples = scrape(port)
    assert value(samples, "mint_burst_steps_total", result="ok") >= 2
    assert value(samples, launched, result="ok") == 2  # nothing launched blind
    assert value(samples, "mint_burst_last_step_timestamp_seconds") > time.time() - 600
    err = burst.stop()
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in err
    assert scraped(port, launched, result="ok") == -1  # the endpoint stopped with the daemon
    assert not Path(yaml.safe_load(config_file.read_text())["metrics_textfile"]).exists()


def test_run_on_a_taken_port_logs_it_and_goes_on(
    fake_scheduler: FakeScheduler, config_file: Path, daemon: Callable[..., Daemon]
) -> None:
    fake_scheduler.update(jobs=pending_jobs(1))
    cloud_db = Path(os.environ["CLOUD_DB"])
    with port_taken() as port:
        burst = daemon(env={"MINT_BURST_METRICS_PORT": str(port)})
        burst.wait_for(lambda: cloud_db.exists() and "vm-1" in cloud_db.read_text(), "a launch")
        err = burst.stop()
    assert f"cannot serve metrics on 127.0.0.1 port {port}" in err
    assert "going on without the metrics endpoint" in err


def test_without_the_metrics_extra_run_and_once_exit_69(
    base_only_venv: Path, config_file: Path, fake_scheduler: FakeScheduler
) -> None:
    tool = base_only_venv.parent / "mint-burst"
    for args in (["run", "--metrics-port", "0"], ["once"]):
        result = subprocess.run(
            [str(tool), *args, "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 69, result.stderr
        assert "needs the 'metrics' extra" in result.stderr
        assert "pip install 'mint-tools[metrics]'" in result.stderr
    assert not fake_scheduler.read().get("calls")  # refused before any work


def _version() -> str:
    from mint_common.metrics import tool_version

    return tool_version()
