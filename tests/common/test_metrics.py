"""mint_common.metrics: values exposed through prometheus_client, the HTTP endpoint on
loopback, the textfile with running totals, and the missing-extra message.

Every exposition is read back with prometheus_client's own parser, as Prometheus would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from mint_common.config import load_config
from mint_common.errors import ConfigError, MissingExtraError
from mint_common.metrics import (
    TEXTFILE_FIELD,
    Counter,
    Gauge,
    Histogram,
    Metrics,
    require_metrics,
    serving,
    tool_version,
    totals_path,
    write_textfile,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return parse(answer.read().decode("utf-8"))


def scraped(port: int, name: str, **labels: str) -> float:
    """One value from the endpoint; -1 while it does not answer or lacks that sample."""
    try:
        return value(scrape(port), name, **labels)
    except (OSError, KeyError):
        return -1


@contextlib.contextmanager
def port_taken() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


class Daemon:
    """A daemon (`mint-burst run`, ...) as a process, its log in a file the test can read
    while it runs."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **env},
            )

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited ({self.process.returncode}): {self.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {self.log_text()}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log.read_text()

    def metrics_port(self) -> int:
        """The port it listens on, from its log (started with port 0: any free one)."""
        found: list[int] = []

        def logged() -> bool:
            match = re.search(r"serving metrics on http://127\.0\.0\.1:(\d+)/", self.log_text())
            found.extend([int(match.group(1))] if match else [])
            return bool(match)

        self.wait_for(logged, "the metrics endpoint")
        return found[0]

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        assert self.process.returncode == 0, self.log_text()
        return self.log_text()


def hide_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like an install without the metrics extra: a None entry in
    sys.modules makes both `find_spec` and `import` fail for that name."""
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)


@dataclass
class SampleSet:
    metrics: Metrics
    runs: Counter
    queue: Gauge
    last: Gauge
    latency: Histogram


def sample_set() -> SampleSet:
    metrics = Metrics("mint_test")
    return SampleSet(
        metrics,
        metrics.counter("runs", "Runs by result.", ("result",)),
        metrics.gauge("queue", "Jobs by state.", ("state",)),
        metrics.gauge("last_timestamp_seconds", "Last run."),
        metrics.histogram("latency_seconds", "Latency.", (1, 10, 100)),
    )


def exposition(metrics: Metrics) -> Samples:
    from prometheus_client import generate_latest

    return parse(generate_latest(metrics.registry()).decode())


def test_counters_gauges_and_histograms_reach_prometheus_as_recorded() -> None:
    metrics = Metrics("mint_test")
    runs = metrics.counter("runs", "Runs by result.", ("result",))
    queue = metrics.gauge("queue", "Jobs by state.", ("state",))
    latency = metrics.histogram("latency_seconds", "Latency.", (1, 10, 100))
    runs.inc(result="ok")
    runs.inc(2, result="ok")
    runs.inc(result="failed")
    queue.set_all({"pending": 3, "running": 1})
    queue.set_all({"pending": 2})
    for seconds in (0.5, 1, 7, 250):
        latency.observe(seconds)

    samples = exposition(metrics)
    assert value(samples, "mint_test_runs_total", result="ok") == 3
    assert value(samples, "mint_test_runs_total", result="failed") == 1
    assert value(samples, "mint_test_queue", state="pending") == 2
    assert ("mint_test_queue", frozenset({("state", "running")})) not in samples
    assert [value(samples, "mint_test_latency_seconds_bucket", le=le) for le in
            ("1.0", "10.0", "100.0", "+Inf")] == [2, 3, 3, 4]  # fmt: skip
    assert value(samples, "mint_test_latency_seconds_count") == 4
    assert value(samples, "mint_test_latency_seconds_sum") == 258.5
    assert value(samples, "mint_test_build_info", version=tool_version()) == 1


def test_wrong_labels_and_a_falling_counter_are_refused() -> None:
    metrics = Metrics("mint_test")
    runs = metrics.counter("runs", "Runs by result.", ("result",))
    with pytest.raises(ValueError, match="expected"):
        runs.inc(state="ok")
    with pytest.raises(ValueError, match="only goes up"):
        runs.inc(-1, result="ok")
    with pytest.raises(ValueError, match="declared twice"):
        metrics.gauge("runs", "again")


def test_the_endpoint_serves_over_http_on_loopback_and_stops() -> None:
    metrics = Metrics("mint_test")
    runs = metrics.counter("runs", "Runs.")
    with serving(metrics, port=0) as port:
        assert port is not None
        runs.inc(5)
        samples = scrape(port)
        assert value(samples, "mint_test_runs_total") == 5
        assert "process_start_time_seconds" in {name for name, _ in samples}
        runs.inc()
        assert value(scrape(port), "mint_test_runs_total") == 6
    with pytest.raises(OSError):
        scrape(port)


def test_a_port_already_taken_is_logged_and_the_caller_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with port_taken() as port, serving(Metrics("mint_test"), port=port) as bound:
        assert bound is None
    [record] = [r for r in caplog.records if "cannot serve metrics" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert f"127.0.0.1 port {port}" in record.getMessage()
    assert "going on without the metrics endpoint" in record.getMessage()


def test_nothing_is_served_without_a_port() -> None:
    with serving(Metrics("mint_test"), port=None) as bound:
        assert bound is None


def test_the_textfile_keeps_running_totals_across_runs(tmp_path: Path) -> None:
    textfile, totals = tmp_path / "prom" / "test.prom", totals_path(tmp_path / "state")
    first = sample_set()
    first.runs.inc(result="ok")
    first.queue.set(4, state="pending")
    first.last.set(1000)
    first.latency.observe(5)
    write_textfile(first.metrics, textfile, totals)

    second = sample_set()
    second.runs.inc(result="ok")
    second.runs.inc(result="failed")
    second.queue.set(1, state="pending")
    second.latency.observe(50)
    write_textfile(second.metrics, textfile, totals)

    samples = parse(textfile.read_text())
    assert value(samples, "mint_test_runs_total", result="ok") == 2
    assert value(samples, "mint_test_runs_total", result="failed") == 1
    assert value(samples, "mint_test_queue", state="pending") == 1  # this run's gauge
    assert value(samples, "mint_test_last_timestamp_seconds") == 1000  # kept: not set this run
    assert value(samples, "mint_test_latency_seconds_count") == 2
    assert value(samples, "mint_test_latency_seconds_sum") == 55
    assert value(samples, "mint_test_latency_seconds_bucket", le="10.0") == 1
    assert value(samples, "mint_test_latency_seconds_bucket", le="100.0") == 2
    assert [p.name for p in textfile.parent.iterdir()] == ["test.prom"]  # no temp file left


def test_the_textfile_is_readable_by_the_collector_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_textfile(sample_set().metrics, tmp_path / "test.prom", totals_path(tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "test.prom").stat().st_mode) == 0o644
    assert stat.S_IMODE(totals_path(tmp_path).stat().st_mode) == 0o600


def test_unreadable_totals_start_again_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    totals = totals_path(tmp_path)
    totals.write_text("{not json")
    run = sample_set()
    run.runs.inc(result="ok")
    write_textfile(run.metrics, tmp_path / "test.prom", totals)
    assert value(parse((tmp_path / "test.prom").read_text()), "mint_test_runs_total", result="ok")
    assert "start again from zero" in caplog.text
    assert json.loads(totals.read_text())["version"] == 1


def test_a_histogram_whose_buckets_changed_starts_over(tmp_path: Path) -> None:
    totals = totals_path(tmp_path)
    old = Metrics("mint_test")
    old.histogram("latency_seconds", "Latency.", (1, 2)).observe(1.5)
    old.counter("gone", "A metric a later release dropped.").inc()
    write_textfile(old, tmp_path / "test.prom", totals)
    new = sample_set()
    new.latency.observe(5)
    write_textfile(new.metrics, tmp_path / "test.prom", totals)
    samples = parse((tmp_path / "test.prom").read_text())
    assert value(samples, "mint_test_latency_seconds_count") == 1
    assert not any(name.startswith("mint_test_gone") for name, _ in samples)


def test_a_textfile_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    write_textfile(sample_set().metrics, blocker / "test.prom", totals_path(tmp_path))
    assert f"cannot write the metrics file {blocker / 'test.prom'}" in caplog.text


@dataclasses.dataclass(frozen=True)
class WithTextfile:
    metrics_textfile: Optional[Path] = dataclasses.field(default=None, metadata=TEXTFILE_FIELD)


def test_a_textfile_name_the_collector_ignores_is_a_config_error_naming_its_source(
    tmp_path: Path,
) -> None:
    def load(env: dict[str, str]) -> WithTextfile:
        return load_config(
            WithTextfile, "mint-demo", environ=env, system_dir=tmp_path, user_dir=tmp_path
        )

    good = load({"MINT_DEMO_METRICS_TEXTFILE": "/var/lib/node_exporter/mint.prom"})
    assert good.metrics_textfile == Path("/var/lib/node_exporter/mint.prom")
    assert load({}).metrics_textfile is None
    with pytest.raises(ConfigError) as caught:
        load({"MINT_DEMO_METRICS_TEXTFILE": "/var/lib/node_exporter/mint.txt"})
    assert str(caught.value) == (
        "environment variable MINT_DEMO_METRICS_TEXTFILE: key 'metrics_textfile':"
        " /var/lib/node_exporter/mint.txt does not end in .prom, so node_exporter's textfile"
        " collector would not read it"
    )


def test_without_prometheus_client_the_message_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_prometheus_client(monkeypatch)
    with pytest.raises(MissingExtraError) as caught:
        require_metrics("mint-test")
    assert caught.value.exit_status == 69
    assert caught.value.hint == "pip install 'mint-tools[metrics]'"
    assert "needs the 'metrics' extra" in caught.value.message


def test_the_tools_do_not_import_prometheus_client_unless_asked() -> None:
    code = (
        "import sys, mint_burst.cli, mint_burst.service, mint_s3job.cli, mint_s3job.dispatch,"
        " mint_poll.cli, mint_poll.agent;"
        "print(sorted(m for m in sys.modules if m.startswith('prometheus')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
