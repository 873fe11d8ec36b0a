"""mint-burst's Prometheus metrics (docs/metrics.md): what each reconcile step saw and did.

`run` serves them (`metrics_port`), `once` writes them to `metrics_textfile`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mint_burst.config import TOOL, BurstConfig
from mint_burst.engine import Engine, StepReport
from mint_burst.model import JOINED, PHASES, NodeTable, utc_day
from mint_common.errors import MintError
from mint_common.metrics import Metrics, require_metrics, totals_path, write_textfile

LAUNCH_RESULTS = ("ok", "refused", "uncertain")


class BurstMetrics:
    def __init__(self, config: BurstConfig) -> None:
        self.metrics = m = Metrics("mint_burst")
        self.steps = m.counter("steps", "Reconcile steps, by result (ok, failed).", ("result",))
        self.last_step = m.gauge(
            "last_step_timestamp_seconds", "When the last reconcile step ended (Unix time)."
        )
        self.nodes = m.gauge("nodes", "Burst nodes in the node table, by phase.", ("phase",))
        self.idle_nodes = m.gauge(
            "idle_nodes", "Joined burst nodes without a job (removed after idle_timeout)."
        )
        self.orphans = m.gauge(
            "orphan_instances", "Instances tagged with our cluster that no node record owns."
        )
        self.pending_jobs = m.gauge("pending_jobs", "Pending jobs of the queue at the last read.")
        self.running_jobs = m.gauge("running_jobs", "Running jobs of the queue at the last read.")
        self.launches = m.counter(
            "launches",
            "Node launches, by result: ok, refused (nothing was created), uncertain (the"
            " instance may exist; a listing decides).",
            ("result",),
        )
        self.removals = m.counter("removals", "Burst nodes taken out and terminated.")
        self.read_failures = m.counter(
            "scheduler_read_failures", "Steps in which the scheduler could not be read."
        )
        self.node_hours = m.gauge("node_hours_today", "Node-hours billed today (UTC day).")
        budget = m.gauge("node_hours_budget", "max_node_hours_per_day (absent when unset).")
        if config.max_node_hours_per_day is not None:
            budget.set(config.max_node_hours_per_day)
        for result in LAUNCH_RESULTS:
            self.launches.inc(0, result=result)
        for result in ("ok", "failed"):
            self.steps.inc(0, result=result)
        self.removals.inc(0)
        self.read_failures.inc(0)

    def record(self, engine: Engine, report: Optional[StepReport]) -> None:
        """Count one step (`report` None: it raised) and take the gauges from the state."""
        now = engine.clock()
        self.steps.inc(result="failed" if report is None else "ok")
        self.last_step.set(now)
        if report is not None:
            self._count(report)
        try:
            table = engine.store.load()
        except MintError:
            return  # the step's own error says why; the gauges keep their last values
        self._table(table, now)

    def _count(self, report: StepReport) -> None:
        status = report.status
        if status is None:
            self.read_failures.inc()
        else:
            self.pending_jobs.set(len(status.pending))
            self.running_jobs.set(len(status.running))
        for result in report.launch_results:
            self.launches.inc(result=result)
        if report.removed:
            self.removals.inc(len(report.removed))

    def _table(self, table: NodeTable, now: float) -> None:
        phases = dict.fromkeys(PHASES, 0.0)
        for record in table.records.values():
            phases[record.phase] += 1
        self.nodes.set_all(phases)
        self.idle_nodes.set(
            sum(1 for r in table.records.values() if r.phase == JOINED and r.idle_since is not None)
        )
        self.orphans.set(len(table.orphans))
        self.node_hours.set(table.node_hours_on(utc_day(now)))


def for_daemon(config: BurstConfig) -> Optional[BurstMetrics]:
    """The daemon's metrics when `metrics_port` is set (69 without the metrics extra)."""
    if config.metrics_port is None:
        return None
    require_metrics(TOOL)
    return BurstMetrics(config)


def for_once(config: BurstConfig) -> Optional[BurstMetrics]:
    """A one-shot run's metrics when `metrics_textfile` is set (69 without the extra)."""
    if config.metrics_textfile is None:
        return None
    require_metrics(TOOL)
    return BurstMetrics(config)


def write(metrics: BurstMetrics, config: BurstConfig) -> None:
    assert config.metrics_textfile is not None
    write_textfile(metrics.metrics, config.metrics_textfile, totals(config))


def totals(config: BurstConfig) -> Path:
    return totals_path(config.state_file.parent)
