"""Prometheus metrics of the daemons, and of their one-shot runs under timers.

Each tool declares its metrics on a `Metrics` set. The values are kept here in plain
Python, so recording them costs a dict update and needs no third-party module;
prometheus_client is imported only when metrics are served or written, and it does
the exposition format (a custom collector hands it the values).

- A daemon with `metrics_port` serves them over HTTP (`serving`), on 127.0.0.1 unless
  `metrics_address` says otherwise. A port already taken is logged and the daemon goes on.
- A one-shot run with `metrics_textfile` writes them for node_exporter's textfile
  collector (`write_textfile`). Its counters and histograms are added to totals kept in
  a JSON file in the state directory, so the file shows running totals across runs, as
  a counter must; a gauge this run did not set keeps its last written value.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mint_common.errors import MintError
from mint_common.extras import require_extra
from mint_common.files import JsonState, atomic_write

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

# Config field metadata for `metrics_port` (0: any free port, logged at start).
PORT_RANGE = {"min": 0, "max": 65535}
DEFAULT_ADDRESS = "127.0.0.1"
# node_exporter's textfile collector reads *.prom only; it runs as its own user.
TEXTFILE_SUFFIX = ".prom"
#: Field metadata for a `metrics_textfile` setting: the collector reads only `.prom` files.
TEXTFILE_FIELD = {
    "suffix": TEXTFILE_SUFFIX,
    "suffix_why": "node_exporter's textfile collector would not read it",
}
TEXTFILE_MODE = 0o644
TOTALS_VERSION = 1

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
LabelValues = tuple[str, ...]


def require_metrics(tool: str) -> None:
    """Exit 69 naming `pip install 'mint-tools[metrics]'` when prometheus_client is absent."""
    require_extra(tool, "metrics", ("prometheus_client",))


def tool_version() -> str:
    import mint_common

    return str(mint_common.__version__)


class Family:
    """One metric and its values by label values; `Metrics` creates them."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labels: Sequence[str],
        lock: threading.Lock,
        buckets: Sequence[float] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._lock = lock
        self.values: dict[LabelValues, float] = {}
        # Histograms: per label values, the count in each bucket (not cumulative,
        # +Inf last) and the sum of the observations.
        self.counts: dict[LabelValues, list[int]] = {}
        self.sums: dict[LabelValues, float] = {}

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: labels {sorted(labels)}, expected {list(self.labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def sample_json(self, key: LabelValues) -> Any:
        if self.kind == HISTOGRAM:
            return {"counts": self.counts[key], "sum": self.sums[key]}
        return self.values[key]

    def label_keys(self) -> list[LabelValues]:
        return sorted(self.counts if self.kind == HISTOGRAM else self.values)


class Counter(Family):
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount


class Gauge(Family):
    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self.values[key] = float(value)

    def set_all(self, values: Mapping[str, float]) -> None:
        """Replace every value of a one-label gauge (a label value left out is dropped)."""
        (label,) = self.labels
        fresh = {self._key({label: k}): float(v) for k, v in values.items()}
        with self._lock:
            self.values = fresh

    def clear(self) -> None:
        with self._lock:
            self.values = {}


class Histogram(Family):
    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        with self._lock:
            counts = self.counts.setdefault(key, [0] * (len(self.bounds) + 1))
            counts[index] += 1
            self.sums[key] = self.sums.get(key, 0.0) + value


class Metrics:
    """The metrics of one tool, every name under `prefix` (`mint_burst`, ...).

    Each set carries `<prefix>_build_info{version="..."} 1`.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.families: dict[str, Family] = {}
        # Set when exposed: looking the version up costs ~30 ms, which a run whose
        # metrics nobody asked for should not pay.
        self.build_info = self.gauge("build_info", "The mint-tools release running.", ("version",))

    def _add(self, family: Family) -> Any:
        if family.name in self.families:
            raise ValueError(f"metric {family.name} declared twice")
        self.families[family.name] = family
        return family

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; exposed as `<prefix>_<name>_total`."""
        full = f"{self.prefix}_{name}"
        return self._add(Counter(COUNTER, full, documentation, labels, self._lock))

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        full = f"{self.prefix}_{name}"
        return self._add(Gauge(GAUGE, full, documentation, labels, self._lock))

    def histogram(
        self, name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        if list(buckets) != sorted(set(buckets)) or not all(math.isfinite(b) for b in buckets):
            raise ValueError(f"{name}: buckets must be finite and increasing")
        full = f"{self.prefix}_{name}"
        return self._add(Histogram(HISTOGRAM, full, documentation, labels, self._lock, buckets))

    # ---- persistence (one-shot runs) --------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": TOTALS_VERSION,
                "metrics": {
                    family.name: {
                        "kind": family.kind,
                        "labels": list(family.labels),
                        "bounds": list(family.bounds),
                        "samples": [[list(k), family.sample_json(k)] for k in family.label_keys()],
                    }
                    for family in self.families.values()
                    if family is not self.build_info
                },
            }

    def add_totals(self, stored: Any) -> None:
        """Add the stored counters and histograms to this run's; stored gauges fill in
        where this run set none. A family whose shape changed between releases starts over."""
        metrics = stored.get("metrics") if isinstance(stored, dict) else None
        if not isinstance(metrics, dict) or stored.get("version") != TOTALS_VERSION:
            return
        with self._lock:
            for name, entry in metrics.items():
                family = self.families.get(name)
                if family is None or not _same_shape(family, entry):
                    continue
                for labels, value in entry["samples"]:
                    _merge(family, tuple(str(v) for v in labels), value)

    # ---- exposition -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The metric families for prometheus_client (the `Collector` protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        with self._lock:
            snapshot = [
                (f, {k: f.sample_json(k) for k in f.label_keys()}) for f in self.families.values()
            ]
        for family, samples in snapshot:
            labels = list(family.labels)
            if family.kind == HISTOGRAM:
                histogram = HistogramMetricFamily(family.name, family.documentation, labels=labels)
                for key, value in samples.items():
                    edges = [*map(floatToGoString, family.bounds), "+Inf"]
                    cumulative = [sum(value["counts"][: i + 1]) for i in range(len(edges))]
                    histogram.add_metric(list(key), list(zip(edges, cumulative)), value["sum"])
                yield histogram
                continue
            kind = CounterMetricFamily if family.kind == COUNTER else GaugeMetricFamily
            metric = kind(family.name, family.documentation, labels=labels)
            for key, number in samples.items():
                metric.add_metric(list(key), number)
            yield metric

    def registry(self, *, process: bool = False) -> CollectorRegistry:
        """A registry of this set alone (and the process's own metrics when `process`)."""
        from prometheus_client import CollectorRegistry, ProcessCollector

        self.build_info.set_all({tool_version(): 1})
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        if process:
            ProcessCollector(registry=registry)
        return registry


def _same_shape(family: Family, entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("kind") == family.kind
        and entry.get("labels") == list(family.labels)
        and entry.get("bounds") == list(family.bounds)
        and isinstance(entry.get("samples"), list)
    )


def _merge(family: Family, key: LabelValues, value: Any) -> None:
    """Add one stored sample to this run's (caller holds the lock)."""
    try:
        if family.kind == GAUGE:
            family.values.setdefault(key, float(value))
        elif family.kind == COUNTER:
            family.values[key] = family.values.get(key, 0.0) + float(value)
        else:
            counts = [int(c) for c in value["counts"]]
            if len(counts) != len(family.bounds) + 1:
                return
            mine = family.counts.get(key, [0] * len(counts))
            family.counts[key] = [a + b for a, b in zip(mine, counts)]
            family.sums[key] = family.sums.get(key, 0.0) + float(value["sum"])
    except (TypeError, ValueError, KeyError):
        log.debug("metrics totals: dropping an unreadable sample of %s", family.name)


# ---- serving (daemons) ------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    metrics: Optional[Metrics], *, port: Optional[int], address: str = DEFAULT_ADDRESS
) -> Iterator[Optional[int]]:
    """Serve `metrics` on http://ADDRESS:PORT/metrics while the block runs; yields the port
    listened on, or None when nothing is served (no port set, or the port is taken)."""
    if metrics is None or port is None:
        yield None
        return
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(
            port, addr=address, registry=metrics.registry(process=True)
        )
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s port %d: %s; going on without the metrics endpoint",
            address,
            port,
            exc.strerror or exc,
        )
        yield None
        return
    bound = int(server.server_port)
    log.info("serving metrics on http://%s:%d/metrics", _host(address), bound)
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# ---- the textfile (one-shot runs) -------------------------------------------------------------


def totals_path(state_dir: Path) -> Path:
    """Where a tool's one-shot runs keep their running totals."""
    return state_dir / "metrics-totals.json"


def write_textfile(metrics: Metrics, textfile: Path, totals: Path) -> None:
    """Add this run's counts to the totals in `totals`, save them, and write `textfile`.

    Runs at the end of a one-shot run, whatever its outcome; a failure here is logged and
    does not change the run's exit status (its work is done). Overlapping runs add up
    correctly: the totals are read and written under a lock.
    """
    try:
        totals.parent.mkdir(parents=True, exist_ok=True)
        with open(totals.with_name(totals.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            metrics.add_totals(_load_totals(totals))
            JsonState(totals).save(metrics.to_json())
            _write_exposition(metrics, textfile)
    except (OSError, MintError) as exc:
        message = exc.message if isinstance(exc, MintError) else str(exc)
        log.error("cannot write the metrics file %s: %s", textfile, message)


def _load_totals(totals: Path) -> Any:
    try:
        return JsonState(totals).load(default={})
    except MintError as exc:
        # Totals are no record of work: losing them is a counter reset, which Prometheus
        # handles, while refusing would stop the metrics for good.
        log.warning("%s; the metrics totals start again from zero", exc.message)
        return {}


def _write_exposition(metrics: Metrics, textfile: Path) -> None:
    from prometheus_client import generate_latest

    # Not write_to_textfile: its temp file takes the umask (0600 under systemd's
    # UMask=0077), and the collector runs as another user. Ours is 0644 whatever the umask;
    # the temp file's name does not end in .prom, so the collector never reads half a file.
    textfile.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(textfile, generate_latest(metrics.registry()), mode=TEXTFILE_MODE)
