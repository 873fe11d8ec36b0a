"""mint-poll's Prometheus metrics (docs/metrics.md): polls, calculations, bytes, batch jobs.

The agent records them always (a dictionary update each); `run` serves them
(`metrics_port`), `once` writes them to `metrics_textfile`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Optional

from mint_common.metrics import Metrics, require_metrics, totals_path, write_textfile
from mint_common.timeutil import epoch_from_iso

if TYPE_CHECKING:
    from mint_poll.api import OutgoingResult, ParameterFile
    from mint_poll.config import PollConfig
    from mint_poll.state import CalcRecord

TOOL = "mint-poll"
# Seconds a calculation's command runs: from a second to a day and more.
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 86400)


class PollMetrics:
    def __init__(self) -> None:
        self.metrics = m = Metrics("mint_poll")
        self.polls = m.counter("polls", "calc-request calls to the WebAPI.")
        self.poll_errors = m.counter(
            "poll_errors",
            "calc-request calls that failed (after the retries) or named an unknown site.",
        )
        self.last_poll = m.gauge(
            "last_successful_poll_timestamp_seconds", "When a calc-request last succeeded."
        )
        self.calculations = m.counter(
            "calculations",
            "Calculations that came to an end, by outcome: completed and abnormal (delivered),"
            " lost, failed, released, taken (not delivered).",
            ("outcome",),
        )
        self.duration = m.histogram(
            "calculation_duration_seconds",
            "How long the command of a delivered calculation ran (its start to its end).",
            DURATION_BUCKETS,
        )
        self.received = m.counter(
            "received_bytes", "Bytes of parameter files received (decoded from base64)."
        )
        self.sent = m.counter("sent_bytes", "Bytes of result files sent (before base64).")
        self.jobs_in_flight = m.gauge(
            "jobs_in_flight",
            "Calculations running as batch jobs (runner slurm or pbs): submitted, not ended.",
        )
        self.jobs_in_flight.set(0)
        for counter in (self.polls, self.poll_errors, self.received, self.sent):
            counter.inc(0)

    def poll(self, *, ok: bool) -> None:
        self.polls.inc()
        if ok:
            self.last_poll.set(time.time())
        else:
            self.poll_errors.inc()

    def ended(self, record: CalcRecord) -> None:
        """Count a calculation that came to an end (a delivered one by its outcome)."""
        from mint_poll.state import Step

        delivered = record.step == Step.DONE
        self.calculations.inc(outcome=(record.outcome or "unknown") if delivered else record.step)
        if delivered and record.started_at and record.finished_at:
            seconds = epoch_from_iso(record.finished_at) - epoch_from_iso(record.started_at)
            self.duration.observe(max(0.0, seconds))

    def received_files(self, files: Sequence[ParameterFile]) -> None:
        self.received.inc(sum(f.size for f in files if f.path is not None))

    def sent_files(self, files: Sequence[OutgoingResult]) -> None:
        total = 0
        for item in files:
            if item.path is not None:
                with contextlib.suppress(OSError):
                    total += item.path.stat().st_size
        self.sent.inc(total)


def for_run(config: PollConfig, *, daemon: bool) -> Optional[PollMetrics]:
    """The metrics the configuration asks for: served by `run` (`metrics_port`), written by
    `once` (`metrics_textfile`); exit 69 without the metrics extra."""
    wanted = config.metrics_port if daemon else config.metrics_textfile
    if wanted is None:
        return None
    require_metrics(TOOL)
    return PollMetrics()


@contextlib.contextmanager
def textfile_written(metrics: Optional[PollMetrics], config: PollConfig) -> Iterator[None]:
    """Write a one-shot run's metrics at its end, whatever the outcome."""
    try:
        yield
    finally:
        if metrics is not None and config.metrics_textfile is not None:
            write_textfile(metrics.metrics, config.metrics_textfile, totals_path(config.state_dir))
