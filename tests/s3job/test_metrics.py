"""mint-s3job's metrics: `dispatch --watch` scraped over HTTP while jobs pass through
(moto S3 on loopback, the fake sbatch on PATH), the one-shot textfile's running totals,
a taken port, and the missing extra.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from mint_s3job.cli import main
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
from tests.helpers import BIN, run_tool

from .conftest import FakeSlurm
from .jobhelpers import make_job

SUBMITTED = "mint_s3job_jobs_dispatched_total"
LATENCY = "mint_s3job_dispatch_latency_seconds"


def submit(env: dict[str, str], tmp_path: Path, prefix: str, failing: bool = False) -> None:
    script, inputs = make_job(tmp_path / f"src-{prefix}", failing=failing)
    result = run_tool(
        "mint-s3job",
        "submit",
        "--script",
        str(script),
        "--prefix",
        prefix,
        str(inputs),
        env=env,
    )
    assert result.returncode == 0, result.stderr


def latency_buckets(samples: Samples) -> list[float]:
    edges = ("1.0", "5.0", "15.0", "30.0", "60.0", "120.0", "300.0", "+Inf")
    return [value(samples, f"{LATENCY}_bucket", le=le) for le in edges]


@pytest.fixture
def daemon(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        argv = [str(BIN / "mint-s3job"), "dispatch", "--watch", "--poll-interval", "0.2", *args]
        log = tmp_path / f"dispatch-{len(started)}.log"
        started.append(
            Daemon([*argv, "--workdir", str(tmp_path / "w")], log, {**cli_env, **(env or {})})
        )
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_dispatch_watch_serves_the_metrics_as_jobs_pass_through(
    cli_env: dict[str, str],
    tmp_path: Path,
    fake_slurm: FakeSlurm,
    daemon: Callable[..., Daemon],
) -> None:
    began = time.time()
    submit(cli_env, tmp_path, "job-a")
    submit(cli_env, tmp_path, "job-bad", failing=True)
    dispatcher = daemon("--metrics-port", "0")
    port = dispatcher.metrics_port()
    dispatcher.wait_for(lambda: scraped(port, SUBMITTED, result="submitted") == 1, "job-a")
    samples = scrape(port)
    assert value(samples, SUBMITTED, result="error") == 1  # job-bad: sbatch refused it
    assert value(samples, SUBMITTED, result="waiting") == 0
    assert value(samples, f"{LATENCY}_count") == 1  # only a queued job has a latency
    assert 0 <= value(samples, f"{LATENCY}_sum") <= time.time() - began + 1

    submit(cli_env, tmp_path, "job-b")
    dispatcher.wait_for(lambda: scraped(port, SUBMITTED, result="submitted") == 2, "job-b")
    samples = scrape(port)
    assert value(samples, f"{LATENCY}_count") == 2
    buckets = latency_buckets(samples)
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert value(samples, "mint_s3job_runs_total", result="ok") >= 2
    assert value(samples, "mint_s3job_runs_total", result="failed") == 0
    assert value(samples, "mint_s3job_last_scan_timestamp_seconds") >= began
    log = dispatcher.stop()
    assert "serving metrics on http://127.0.0.1:" in log
    assert [c["job_id"] for c in fake_slurm.calls()] == ["4242", None, "4244"]


def test_one_shot_dispatch_writes_running_totals(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm
) -> None:
    textfile = tmp_path / "node-exporter" / "mint-s3job.prom"
    env = {**cli_env, "MINT_S3JOB_METRICS_TEXTFILE": str(textfile)}
    workdir = str(tmp_path / "w")
    submit(env, tmp_path, "job-a")
    assert run_tool("mint-s3job", "dispatch", "--workdir", workdir, env=env).returncode == 0
    first = parse(textfile.read_text())
    assert value(first, SUBMITTED, result="submitted") == 1
    assert value(first, f"{LATENCY}_count") == 1

    submit(env, tmp_path, "job-b")
    submit(env, tmp_path, "job-bad", failing=True)
    assert run_tool("mint-s3job", "dispatch", "--workdir", workdir, env=env).returncode == 1
    last = parse(textfile.read_text())
    assert value(last, SUBMITTED, result="submitted") == 2
    assert value(last, SUBMITTED, result="error") == 1
    assert value(last, f"{LATENCY}_count") == 2
    assert latency_buckets(last)[-1] == 2
    assert value(last, f"{LATENCY}_sum") >= value(first, f"{LATENCY}_sum")
    assert value(last, "mint_s3job_runs_total", result="ok") == 2
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert (tmp_path / "w" / ".mint-s3job" / "metrics-totals.json").is_file()


def test_dispatch_watch_on_a_taken_port_logs_it_and_goes_on(
    cli_env: dict[str, str], tmp_path: Path, fake_slurm: FakeSlurm, daemon: Callable[..., Daemon]
) -> None:
    submit(cli_env, tmp_path, "job-a")
    with port_taken() as port:
        dispatcher = daemon(env={"MINT_S3JOB_METRICS_PORT": str(port)})
        dispatcher.wait_for(lambda: len(fake_slurm.calls()) == 1, "the sbatch of job-a")
        log = dispatcher.stop()
    assert f"cannot serve metrics on 127.0.0.1 port {port}" in log


def test_metrics_port_without_watch_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["dispatch", "--metrics-port", "9100"], env=cli_env)
    assert result.exit_code == 2 and "--metrics-port needs --watch" in result.output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--watch", "--metrics-port", "0"], {}),
        ([], {"MINT_S3JOB_METRICS_TEXTFILE": "/tmp/mint-s3job.prom"}),
    ],
    ids=["watch", "one-shot"],
)
def test_without_the_metrics_extra_dispatch_exits_69(
    cli_env: dict[str, str],
    tmp_path: Path,
    fake_slurm: FakeSlurm,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
) -> None:
    submit(cli_env, tmp_path, "job-a")
    hide_prometheus_client(monkeypatch)
    result = CliRunner().invoke(
        main, ["dispatch", *args, "--workdir", str(tmp_path / "w")], env={**cli_env, **env}
    )
    assert result.exit_code == 69, result.output
    assert "pip install 'mint-tools[metrics]'" in result.output
    assert fake_slurm.calls() == []  # refused before any work
