"""mint-s3job's Prometheus metrics (docs/metrics.md): what each dispatch run did.

`dispatch --watch` serves them (`metrics_port`); a one-shot `dispatch` writes them to
`metrics_textfile`, its counts added to the totals kept in the work dir's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from mint_common.metrics import Metrics, require_metrics, totals_path, write_textfile
from mint_s3job.config import S3JobConfig

if TYPE_CHECKING:
    from mint_s3job.dispatch import Dispatcher, DispatchReport

TOOL = "mint-s3job"
# Seconds from FILE_UPLOAD to sbatch: a run every minute by default, or a timer's period.
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
RESULTS = ("submitted", "error", "cancelled", "waiting", "retry", "lost")


class DispatchMetrics:
    def __init__(self) -> None:
        self.metrics = m = Metrics("mint_s3job")
        self.jobs = m.counter(
            "jobs_dispatched",
            "Jobs a dispatch run dealt with, by result: submitted, error (made JOB_ERROR),"
            " cancelled, waiting (slurmctld unreachable), retry (a failure tried again next"
            " run), lost (another dispatcher claimed it).",
            ("result",),
        )
        self.latency = m.histogram(
            "dispatch_latency_seconds",
            "From the write of a job's FILE_UPLOAD state object to the sbatch call that queued it.",
            LATENCY_BUCKETS,
        )
        self.runs = m.counter("runs", "Dispatch runs, by result (ok, failed).", ("result",))
        self.last_scan = m.gauge(
            "last_scan_timestamp_seconds",
            "When the last dispatch run that read the bucket ended (Unix time).",
        )
        self.examined = m.gauge(
            "jobs_examined", "Jobs the last run looked at (new or not finished)."
        )
        for result in RESULTS:
            self.jobs.inc(0, result=result)
        for result in ("ok", "failed"):
            self.runs.inc(0, result=result)

    def record(self, report: Optional[DispatchReport], now: float) -> None:
        """Count one run (`report` None: it raised)."""
        self.runs.inc(result="failed" if report is None else "ok")
        if report is None:
            return
        self.last_scan.set(now)
        self.examined.set(report.examined)
        counted = (
            ("submitted", len(report.submitted)),
            ("error", len(report.errors)),
            ("cancelled", len(report.cancelled)),
            ("waiting", len(report.waiting)),
            ("retry", len(report.failed)),
            ("lost", len(report.lost)),
        )
        for result, count in counted:
            self.jobs.inc(count, result=result)
        for seconds in report.dispatch_latency_s.values():
            self.latency.observe(seconds)


def for_dispatch(config: S3JobConfig, *, watch: bool) -> Optional[DispatchMetrics]:
    """The metrics the configuration asks for: served with --watch (`metrics_port`), written
    by a one-shot run (`metrics_textfile`); exit 69 without the metrics extra."""
    wanted = config.metrics_port if watch else config.metrics_textfile
    if wanted is None:
        return None
    require_metrics(TOOL)
    return DispatchMetrics()


def dispatch_once(dispatcher: Dispatcher, metrics: Optional[DispatchMetrics]) -> DispatchReport:
    """One dispatch run; its metrics written to `metrics_textfile` whatever its outcome."""
    if metrics is None:
        return dispatcher.run_once()
    from mint_s3job.dispatch import state_dir

    report: Optional[DispatchReport] = None
    try:
        report = dispatcher.run_once()
    finally:
        metrics.record(report, dispatcher.clock())
        textfile = dispatcher.config.metrics_textfile
        assert textfile is not None
        write_textfile(metrics.metrics, textfile, totals_path(state_dir(dispatcher.workdir)))
    return report
