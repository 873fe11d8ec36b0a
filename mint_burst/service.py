"""Builds the pieces from the configuration and runs the commands' core work.

cli.py stays a thin click layer over these functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from mint_burst import metrics as burst_metrics
from mint_burst.config import TOOL, BurstConfig, default_state_file, old_default_state_dir
from mint_burst.engine import Engine, StepReport
from mint_burst.hosts import load_hosts
from mint_burst.model import TERMINATING, Host, NodeRecord, NodeTable, QueueStatus, utc_day
from mint_burst.policy import Demand, demand
from mint_burst.provider import Provider, render_user_data
from mint_burst.scheduler import CommandRunner, QueueScheduler
from mint_burst.state import FileStore
from mint_common.checks import WARN, CheckOutcome, CheckResult, CheckRunner
from mint_common.config import load_config, log_effective_config, migrate_state_dir
from mint_common.errors import ConfigError, MintError, UnavailableError
from mint_common.extras import require_extra
from mint_common.files import SingleInstanceLock
from mint_common.heartbeat import heartbeat_check, stale_after
from mint_common.metrics import serving
from mint_common.signals import GracefulStop
from mint_common.timeutil import iso_from_epoch

log = logging.getLogger(__name__)


def load(
    config_file: Any = None, *, daemon: bool = False, metrics_port: Optional[int] = None
) -> BurstConfig:
    """The configuration, with the state moved from its old place if needed.

    It is logged at DEBUG (-v), so a cron `once` does not repeat it; the daemon
    (`daemon=True`) logs it at INFO when its loop starts.
    """
    config = load_config(
        BurstConfig, TOOL, config_file=config_file, cli={"metrics_port": metrics_port}
    )
    if not daemon:
        log_effective_config(log, config, at_start=False)
    migrate_state(config)
    return config


def migrate_state(config: BurstConfig) -> None:
    """Move the state directory of earlier releases to the shared layout, losing nothing.

    Only when the state file is the default one. The move happens under the old
    directory's lock, so a `once` of the earlier release finishes its step first; the
    lock file moves with the directory (the same inode), so the lock stays held.
    """
    old, new = old_default_state_dir(), config.state_file.parent
    if config.state_file != default_state_file() or old == new or not old.is_dir():
        return
    if new.exists():
        migrate_state_dir(old, new)  # only warns that the old one is left alone
        return
    with SingleInstanceLock(old / (config.state_file.name + ".lock")):
        migrate_state_dir(old, new)


def build_scheduler(config: BurstConfig) -> QueueScheduler:
    runner = CommandRunner(timeout=config.command_timeout, admin_prefix=config.admin_command_prefix)
    if config.scheduler == "slurm":
        from mint_burst.slurm import SlurmScheduler

        return SlurmScheduler(config.queue, runner)
    from mint_burst.pbs import PbsScheduler

    return PbsScheduler(config.queue, runner, flavor=config.scheduler)


def build_provider(config: BurstConfig) -> Provider:
    if config.provider == "command":
        from mint_burst.command_provider import CommandProvider

        provider = CommandProvider(config)
        provider.validate_commands()
        return provider
    require_extra(TOOL, "burst", ("boto3",))
    from mint_burst.ec2 import Ec2Provider

    return Ec2Provider(config)


def build_engine(
    config: BurstConfig, *, dry_run: bool = False, reap_orphans: bool = False
) -> Engine:
    hosts = load_hosts(config.hosts_file)

    def user_data(host: Host) -> str:
        return render_user_data(
            config.ec2.user_data_file,
            {
                "node": host.name,
                "ip": host.ip,
                "cluster": config.cluster,
                "nfs_mount_point": config.nfs_mount_point,
                "nfs_local_dir": config.nfs_local_dir,
            },
        )

    return Engine(
        scheduler=build_scheduler(config),
        provider=build_provider(config),
        store=FileStore(config.state_file),
        settings=config.policy_settings(hosts),
        user_data=user_data,
        launch_grace=config.launch_grace,
        dry_run=dry_run,
        reap_orphans=reap_orphans,
    )


def run_once(config: BurstConfig, *, dry_run: bool, reap_orphans: bool) -> StepReport:
    """One step; with `metrics_textfile`, its metrics are added to the totals and written
    whatever the step's outcome (a dry run changes nothing, so it writes none)."""
    metrics = None if dry_run else burst_metrics.for_once(config)
    engine = build_engine(config, dry_run=dry_run, reap_orphans=reap_orphans)
    check_startup(config, engine, build_scheduler(config))
    if dry_run:
        return engine.step()
    with SingleInstanceLock(config.lock_file):
        if metrics is None:
            return _guarded_step(engine)
        report: Optional[StepReport] = None
        try:
            report = _guarded_step(engine)
        finally:
            metrics.record(engine, report)
            burst_metrics.write(metrics, config)
        return report


def _guarded_step(engine: Engine) -> StepReport:
    try:
        return engine.step()
    except MintError as exc:
        engine.note_failure(exc.message)
        raise
    except Exception as exc:
        engine.note_failure(f"unexpected {type(exc).__name__}: {exc}")
        raise


def check_startup(config: BurstConfig, engine: Engine, scheduler: QueueScheduler) -> None:
    """Find configuration mistakes before any step (78), where no step failure can hide them.

    A scheduler that does not answer now is no configuration mistake: the steps report it.
    """
    for host in engine.settings.hosts:
        engine.user_data(host)
    try:
        known = scheduler.check_queue()
    except ConfigError:
        raise
    except MintError as exc:
        log.warning("cannot ask the scheduler whether queue %r exists yet: %s", config.queue, exc)
        return
    require_known_hosts(config, engine.settings.hosts, known)


def require_known_hosts(
    config: BurstConfig, hosts: tuple[Host, ...], known: tuple[str, ...]
) -> None:
    """A host the queue does not have would boot and never join, billed until someone looks."""
    unknown = [h.name for h in hosts if h.name not in known]
    if not unknown:
        return
    raise ConfigError(
        f"host list {config.hosts_file}: {', '.join(unknown[:10])} not among the nodes of"
        f" queue {config.queue!r} ({', '.join(known[:10]) or 'none'})",
        hint=f"add them to the scheduler's configuration for queue {config.queue!r}"
        " (slurm.conf: NodeName and the partition's Nodes) or remove them from the host list",
    )


def run_loop(
    config: BurstConfig, *, dry_run: bool, reap_orphans: bool, engine: Optional[Engine] = None
) -> int:
    """The daemon: one step every poll_interval until SIGTERM/SIGINT; returns the step count.

    `engine` is built from the configuration unless given (tests give one with doubles).
    With `metrics_port`, the metrics are served while the loop runs.
    """
    metrics = burst_metrics.for_daemon(config)
    # Stopping while it starts up (reading the scheduler can take a while) is a stop too.
    with GracefulStop() as stop:
        log_effective_config(log, config, at_start=True)
        engine = engine or build_engine(config, dry_run=dry_run, reap_orphans=reap_orphans)
        check_startup(config, engine, build_scheduler(config))
        lock = None if dry_run else SingleInstanceLock(config.lock_file)
        if lock is not None:
            lock.acquire()
        try:
            with serving(
                None if metrics is None else metrics.metrics,
                port=config.metrics_port,
                address=config.metrics_address,
            ):
                steps = _loop(config, engine, stop, dry_run=dry_run, metrics=metrics)
        finally:
            if lock is not None:
                lock.release()
    log.info("stopped after %d step(s)", steps)
    return steps


def _loop(
    config: BurstConfig,
    engine: Engine,
    stop: GracefulStop,
    *,
    dry_run: bool,
    metrics: Optional[burst_metrics.BurstMetrics] = None,
) -> int:
    steps = 0
    while not stop.stop_requested.is_set():
        started = time.monotonic()
        report = _logged_step(engine, dry_run=dry_run)
        if metrics is not None:
            metrics.record(engine, report)
        steps += 1
        stop.wait(config.poll_interval - (time.monotonic() - started))
    return steps


def _logged_step(engine: Engine, *, dry_run: bool) -> Optional[StepReport]:
    """One step of the daemon, its report logged; None when it failed (logged too)."""
    try:
        report = _guarded_step(engine)
    except MintError as exc:
        log.error("step failed: %s", exc.message)
        return None
    except Exception as exc:
        # Whatever one step throws (a bug, a reply no parser foresaw), the
        # next step runs; the state's last_error shows it to `status`.
        log.error(
            "step failed: unexpected %s: %s",
            type(exc).__name__,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        return None
    log_report(report, dry_run=dry_run)
    return report


def log_report(report: StepReport, *, dry_run: bool) -> None:
    for action in report.actions:
        log.info("%s%s", "would " if dry_run else "", action.describe())
    for line in report.done:
        log.info("%s", line)
    for line in report.errors:
        log.error("%s", line)
    for note in report.notes:
        log.info("%s", note)


def drain_candidates(config: BurstConfig) -> list[NodeRecord]:
    """The burst nodes drain-all would take out (from the state file), newest first."""
    table = FileStore(config.state_file).load()
    live = [r for r in table.records.values() if r.phase != TERMINATING]
    return sorted(live, key=lambda r: r.launched_at, reverse=True)


def drain_engine(config: BurstConfig, *, force: bool) -> Engine:
    """The engine for drain-all, after the start-up checks (78 before anything is asked)."""
    engine = build_engine(config)
    try:
        build_scheduler(config).check_queue()
    except UnavailableError as exc:
        if not force:
            raise
        log.warning("cannot reach the scheduler (%s); --force goes on", exc.message)
    return engine


def drain_all(config: BurstConfig, engine: Engine, *, force: bool, wait: bool) -> list[str]:
    with SingleInstanceLock(config.lock_file), GracefulStop() as stop:
        while True:
            waiting = engine.drain_all(force=force)
            if not waiting or not wait:
                return waiting
            log.info("waiting for jobs on %s", ", ".join(waiting))
            if stop.wait(config.poll_interval):
                return waiting


@dataclass
class StatusView:
    table: NodeTable
    now: float
    stale_after: float
    queue: Optional[QueueStatus] = None
    queue_error: str = ""
    hosts: int = 0
    node_cap: int = 0
    demand: Optional[Demand] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def heartbeat_age(self) -> Optional[float]:
        beat = self.table.heartbeat
        return None if beat is None else beat.age(self.now)

    @property
    def stale(self) -> bool:
        beat = self.table.heartbeat
        return beat is None or beat.stale(self.stale_after, self.now)

    def to_json(self) -> dict[str, Any]:
        beat = self.table.heartbeat
        queue: dict[str, Any]
        if self.queue is not None and self.demand is not None:
            queue = {
                "pending_jobs": len(self.queue.pending),
                "running_jobs": len(self.queue.running),
                "nodes_needed": self.demand.nodes,
                "unservable_jobs": [
                    {"job_id": j, "why": w} for j, w in self.demand.unservable.items()
                ],
            }
        elif self.queue_error:
            queue = {"error": self.queue_error}
        else:
            queue = {"not_read": True}
        return {
            "queue": queue,
            "heartbeat_at": None if beat is None else beat.to_json()["at"],
            # Epoch seconds, as before the ISO time was added beside it.
            "heartbeat": None if beat is None else beat.epoch,
            "heartbeat_age_s": self.heartbeat_age,
            "stale": self.stale,
            "last_error": self.table.last_error,
            "node_cap": self.node_cap,
            "node_hours_today": round(self.table.node_hours_on(utc_day(self.now)), 3),
            "nodes": [
                {
                    **_with_iso_times(r.to_json()),
                    "age_s": round(self.now - r.launched_at, 1),
                    "in_phase_s": round(self.now - r.phase_since, 1),
                    "idle_s": None if r.idle_since is None else round(self.now - r.idle_since, 1),
                }
                for r in sorted(
                    self.table.records.values(), key=lambda r: r.launched_at, reverse=True
                )
            ],
            "orphans": [_with_iso_times(vars(o)) for o in self.table.orphans],
        }


# Epoch fields of a node record or instance and the ISO 8601 field shown beside each.
# `launched_at` and `joined_at` carried epoch seconds before ISO times were the rule:
# scripts may do arithmetic on them, so they keep that meaning until the next release.
_EPOCH_FIELDS = {
    "launched_at": "launched_at_iso",
    "joined_at": "joined_at_iso",
    "phase_since": "phase_since_at",
    "idle_since": "idle_since_at",
}


def _with_iso_times(document: dict[str, Any]) -> dict[str, Any]:
    shown = dict(document)
    for old, new in _EPOCH_FIELDS.items():
        if old in document:
            shown[new] = iso_from_epoch(document[old])
    return shown


def status(config: BurstConfig, *, read_scheduler: bool) -> StatusView:
    table = FileStore(config.state_file).load()
    hosts = load_hosts(config.hosts_file)
    settings = config.policy_settings(hosts)
    view = StatusView(
        table=table,
        now=time.time(),
        stale_after=stale_after(config.poll_interval),
        hosts=len(hosts),
        node_cap=settings.node_cap,
    )
    if read_scheduler:
        try:
            view.queue = build_scheduler(config).get_status()
        except ConfigError:
            raise
        except MintError as exc:
            view.queue_error = exc.message
        else:
            view.demand = demand(view.queue, settings, view.now)
    return view


class BurstChecks:
    """The rows of `check`, in order; later rows use what earlier ones loaded.

    A configuration mistake found by the queue or provider row is remembered
    (`config_error`): `check` shows the table, then exits 78.
    """

    def __init__(self, config_file: Any) -> None:
        self._config_file = config_file
        self.runner = CheckRunner()
        self.config_error: Optional[ConfigError] = None
        self.config: Optional[BurstConfig] = None
        self.hosts: tuple[Host, ...] = ()
        self.scheduler: Optional[QueueScheduler] = None
        self.provider: Optional[Provider] = None

    def run(self) -> CheckRunner:
        run = self.runner.run
        run("config", self.check_config)
        run("host list", self.check_hosts, requires="config")
        run("scheduler commands", self.check_scheduler, requires="config")
        run("scheduler queue", self.check_queue, requires="scheduler commands")
        run("provider", self.check_provider, requires="config")
        run("ec2 host addresses", self.check_addresses, requires="provider")
        run("state file", self.check_state, requires="config")
        return self.runner

    def _noting(self, error: ConfigError) -> ConfigError:
        self.config_error = self.config_error or error
        return error

    def check_config(self) -> CheckOutcome:
        self.config = config = load(self._config_file)
        return f"{config.scheduler} queue {config.queue!r}, provider {config.provider}"

    def check_hosts(self) -> CheckOutcome:
        assert self.config is not None
        config = self.config
        self.hosts = load_hosts(config.hosts_file)
        detail = f"{len(self.hosts)} host(s) in {config.hosts_file}"
        if config.max_nodes is not None and config.max_nodes > len(self.hosts):
            return CheckResult(
                "host list",
                WARN,
                f"{detail}; max_nodes {config.max_nodes} is more than the host list",
            )
        return detail

    def check_scheduler(self) -> CheckOutcome:
        assert self.config is not None
        self.scheduler = build_scheduler(self.config)
        return self.scheduler.check_version()

    def check_queue(self) -> CheckOutcome:
        assert self.config is not None and self.scheduler is not None
        try:
            require_known_hosts(self.config, self.hosts, self.scheduler.check_queue())
        except ConfigError as exc:
            raise self._noting(exc) from None
        queue = self.scheduler.get_status()
        detail = (
            f"queue {queue.queue!r}: {len(queue.pending)} pending, {len(queue.running)} running,"
            f" {len(queue.nodes)} node(s)"
        )
        settings = self.config.policy_settings(self.hosts)
        never = demand(queue, settings, time.time()).unservable
        if never:
            listed = "; ".join(f"job {j}: {w}" for j, w in list(never.items())[:10])
            return CheckResult(
                "scheduler queue",
                WARN,
                f"{detail}; {len(never)} job(s) no burst node will ever serve: {listed}",
            )
        return detail

    def check_provider(self) -> CheckOutcome:
        assert self.config is not None
        try:
            self.provider = build_provider(self.config)
            return "; ".join(detail for _name, detail in self.provider.check())
        except ConfigError as exc:
            raise self._noting(exc) from None

    def check_addresses(self) -> CheckOutcome:
        assert self.provider is not None
        return self.provider.check_hosts("ec2 host addresses", self.hosts)

    def check_state(self) -> CheckOutcome:
        assert self.config is not None
        config = self.config
        table = FileStore(config.state_file).load()
        where = f"{config.state_file}: {len(table.records)} node(s)"
        row = heartbeat_check(
            "state file", table.heartbeat, interval=config.poll_interval, where=where
        )
        if table.orphans:
            return CheckResult(
                row.name,
                WARN,
                f"{row.detail}; {len(table.orphans)} tagged instance(s) without a record",
                row.data,
            )
        return row


def run_checks(config_file: Any) -> BurstChecks:
    checks = BurstChecks(config_file)
    checks.run()
    return checks


def require_readable(report: StepReport) -> None:
    if report.status is None:
        raise UnavailableError(
            "the scheduler could not be read, so nothing was decided: " + "; ".join(report.errors)
        )
