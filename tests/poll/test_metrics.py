"""mint-poll's metrics: `run` scraped over HTTP while calculations pass through the loopback
rehearsal server (and, with the batch runner, jobs of the real one-host Slurm), `once`'s
textfile with running totals, a taken port, and the missing extra.
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from mint_poll.api import DistcompApi
from mint_poll.cli import main
from mint_poll.server import DistcompServer
from tests.common.test_metrics import (
    Daemon,
    Samples,
    hide_prometheus_client,
    parse,
    port_taken,
    scrape,
    scraped,
    value,
)
from tests.helpers import BIN
from tests.poll.conftest import fetch, poll_env, register, write_config
from tests.poll.test_batch_agent import Site
from tests.poll.test_cli import poll
from tests.slurm_support import SlurmCluster

CALCS = "mint_poll_calculations_total"
DURATION = "mint_poll_calculation_duration_seconds"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
        argv = [str(BIN / "mint-poll"), "--config", str(config), "run", *args]
        log = tmp_path / f"agent-{len(started)}.log"
        started.append(Daemon(argv, log, {**poll_env(), **(env or {})}))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def delivered_bytes(workflow: DistcompApi, accept_ids: list[str], tmp_path: Path) -> int:
    return sum(len(data) for a in accept_ids for data in fetch(workflow, a, tmp_path / a).values())


def test_run_serves_the_metrics_as_calculations_pass_through(
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
    daemon: Callable[..., Daemon],
) -> None:
    began = time.time()
    good = register(workflow, tmp_path, files={"input.txt": b"hello\n"})
    bad = register(workflow, tmp_path, command="fail.sh", files={"input.txt": b"0123456789"})
    agent = daemon(write_config(tmp_path, server.url), "--metrics-port", "0")
    port = agent.metrics_port()
    agent.wait_for(lambda: scraped(port, f"{DURATION}_count") == 2, "two calculations")
    samples = scrape(port)
    assert value(samples, CALCS, outcome="completed") == 1
    assert value(samples, CALCS, outcome="abnormal") == 1
    assert value(samples, "mint_poll_received_bytes_total") == 6 + 10
    assert value(samples, "mint_poll_polls_total") >= 2
    assert value(samples, "mint_poll_poll_errors_total") == 0
    assert value(samples, "mint_poll_last_successful_poll_timestamp_seconds") >= began
    assert value(samples, "mint_poll_jobs_in_flight") == 0  # the local runner has no jobs
    assert value(samples, f"{DURATION}_bucket", le="+Inf") == 2
    agent.stop()
    # What the workflow side got back is what the agent counted as sent.
    sent = value(samples, "mint_poll_sent_bytes_total")
    assert sent == delivered_bytes(workflow, [good, bad], tmp_path) and sent > 0


def test_once_writes_running_totals_to_the_textfile(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path
) -> None:
    textfile = tmp_path / "node-exporter" / "mint-poll.prom"
    config = write_config(tmp_path, server.url, metrics_textfile=str(textfile))
    register(workflow, tmp_path, files={"input.txt": b"hello\n"})
    assert poll(config, "once").returncode == 0
    first = parse(textfile.read_text())
    assert value(first, CALCS, outcome="completed") == 1
    assert value(first, "mint_poll_received_bytes_total") == 6
    assert poll(config, "once").returncode == 0  # nothing to do

    document = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**document, "url": "http://127.0.0.1:9/"}))
    assert poll(config, "once").returncode == 69  # the server is gone
    last = parse(textfile.read_text())
    assert value(last, "mint_poll_polls_total") == 3
    assert value(last, "mint_poll_poll_errors_total") == 1
    assert value(last, CALCS, outcome="completed") == 1
    assert value(last, f"{DURATION}_count") == 1
    assert value(last, "mint_poll_last_successful_poll_timestamp_seconds") >= value(
        first, "mint_poll_last_successful_poll_timestamp_seconds"
    )
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert (tmp_path / "state" / "metrics-totals.json").is_file()


def test_run_on_a_taken_port_logs_it_and_goes_on(
    server: DistcompServer, workflow: DistcompApi, tmp_path: Path, daemon: Callable[..., Daemon]
) -> None:
    accept_id = register(workflow, tmp_path)
    config = write_config(tmp_path, server.url)
    with port_taken() as port:
        agent = daemon(config, env={"MINT_POLL_METRICS_PORT": str(port)})
        agent.wait_for(lambda: workflow.calc_progress(accept_id) == "got return", "a delivery")
        log = agent.stop()
    assert f"cannot serve metrics on 127.0.0.1 port {port}" in log


@pytest.mark.parametrize(
    ("args", "settings"),
    [(["run", "--metrics-port", "0"], {}), (["once"], {"metrics_textfile": "/tmp/poll.prom"})],
    ids=["run", "once"],
)
def test_without_the_metrics_extra_run_and_once_exit_69(
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    settings: dict[str, Any],
) -> None:
    accept_id = register(workflow, tmp_path)
    config = write_config(tmp_path, server.url, **settings)
    hide_prometheus_client(monkeypatch)
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 69, result.output
    assert "pip install 'mint-tools[metrics]'" in result.output
    assert workflow.calc_progress(accept_id) == "not start"  # refused before any poll


@pytest.mark.slurm
def test_jobs_in_flight_with_the_batch_runner(
    slurm_cluster: Callable[..., SlurmCluster],
    server: DistcompServer,
    workflow: DistcompApi,
    tmp_path: Path,
) -> None:
    site = Site(slurm_cluster(start=("c1", "c2")), tmp_path, server)
    site.write(max_parallel=2, metrics_port=0)
    calcs = [register(workflow, tmp_path) for _ in range(2)]
    with site.agent():
        found: list[int] = []

        def listening() -> bool:
            match = re.search(
                r"serving metrics on http://127\.0\.0\.1:(\d+)/", site.log.read_text()
            )
            found.extend([int(match.group(1))] if match else [])
            return bool(match)

        site.cluster.wait_for(listening, "the metrics endpoint", 60.0, 0.2)
        port = found[0]
        for accept_id in calcs:
            site.wait_job(accept_id, "RUNNING")  # gated: the job runs until the gate opens
        assert scraped(port, "mint_poll_jobs_in_flight") == 2
        for accept_id in calcs:
            site.open_gate(accept_id)
        site.wait_delivered(*calcs)
        samples: Samples = scrape(port)
    assert value(samples, "mint_poll_jobs_in_flight") == 0
    assert value(samples, CALCS, outcome="completed") == 2
    assert value(samples, f"{DURATION}_count") == 2
