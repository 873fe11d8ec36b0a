"""Builds the pieces from the configuration and runs the commands' core work.

cli.py stays a thin click layer over these functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from mint_burst.config import TOOL, BurstConfig
from mint_burst.engine import Engine, StepReport
from mint_burst.hosts import load_hosts
from mint_burst.model import Host, NodeTable, QueueStatus, utc_day
from mint_burst.policy import Demand, PolicySettings, demand
from mint_burst.provider import Provider, render_user_data
from mint_burst.scheduler import CommandRunner, QueueScheduler
from mint_burst.state import FileStore
from mint_common.checks import CheckRunner
from mint_common.config import load_config, redacted_view
from mint_common.errors import ConfigError, MintError, UnavailableError
from mint_common.extras import require_extra
from mint_common.files import SingleInstanceLock
from mint_common.signals import GracefulStop

log = logging.getLogger(__name__)


def load(config_file: Any = None) -> BurstConfig:
    config = load_config(BurstConfig, TOOL, config_file=config_file)
    log.debug("effective configuration: %s", redacted_view(config))
    return config


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

        return CommandProvider(config)
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
    engine = build_engine(config, dry_run=dry_run, reap_orphans=reap_orphans)
    if dry_run:
        return engine.step()
    with SingleInstanceLock(config.lock_file):
        return _guarded_step(engine)


def _guarded_step(engine: Engine) -> StepReport:
    try:
        return engine.step()
    except MintError as exc:
        engine.note_failure(exc.message)
        raise
    except Exception as exc:
        engine.note_failure(f"unexpected {type(exc).__name__}: {exc}")
        raise


def check_startup(config: BurstConfig, engine: Engine) -> None:
    """Find configuration mistakes before the loop (78), where no step failure can hide them."""
    for host in engine.settings.hosts:
        engine.user_data(host)
    try:
        build_scheduler(config).check_queue()
    except ConfigError:
        raise
    except MintError as exc:
        log.warning("cannot ask the scheduler whether queue %r exists yet: %s", config.queue, exc)


def run_loop(
    config: BurstConfig, *, dry_run: bool, reap_orphans: bool, engine: Optional[Engine] = None
) -> int:
    """The daemon: one step every poll_interval until SIGTERM/SIGINT; returns the step count.

    `engine` is built from the configuration unless given (tests give one with doubles).
    """
    engine = engine or build_engine(config, dry_run=dry_run, reap_orphans=reap_orphans)
    log.info("effective configuration: %s", redacted_view(config))
    check_startup(config, engine)
    steps = 0
    lock = None if dry_run else SingleInstanceLock(config.lock_file)
    if lock is not None:
        lock.acquire()
    try:
        with GracefulStop() as stop:
            while not stop.stop_requested.is_set():
                started = time.monotonic()
                try:
                    report = _guarded_step(engine)
                    log_report(report, dry_run=dry_run)
                except MintError as exc:
                    log.error("step failed: %s", exc.message)
                except Exception as exc:
                    # Whatever one step throws (a bug, a reply no parser foresaw), the
                    # next step runs; the state's last_error shows it to `status`.
                    log.error(
                        "step failed: unexpected %s: %s",
                        type(exc).__name__,
                        exc,
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
                steps += 1
                stop.wait(config.poll_interval - (time.monotonic() - started))
        log.info("stopped after %d step(s)", steps)
        return steps
    finally:
        if lock is not None:
            lock.release()


def log_report(report: StepReport, *, dry_run: bool) -> None:
    for action in report.actions:
        log.info("%s%s", "would " if dry_run else "", action.describe())
    for line in report.done:
        log.info("%s", line)
    for line in report.errors:
        log.error("%s", line)
    for note in report.notes:
        log.info("%s", note)


def drain_all(config: BurstConfig, *, force: bool, wait: bool) -> list[str]:
    engine = build_engine(config)
    try:
        build_scheduler(config).check_queue()
    except UnavailableError as exc:
        if not force:
            raise
        log.warning("cannot reach the scheduler (%s); --force goes on", exc.message)
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
        return None if self.table.heartbeat is None else self.now - self.table.heartbeat

    @property
    def stale(self) -> bool:
        age = self.heartbeat_age
        return age is None or age > self.stale_after

    def to_json(self) -> dict[str, Any]:
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
            "heartbeat": self.table.heartbeat,
            "heartbeat_age_s": self.heartbeat_age,
            "stale": self.stale,
            "last_error": self.table.last_error,
            "node_cap": self.node_cap,
            "node_hours_today": round(self.table.node_hours_on(utc_day(self.now)), 3),
            "nodes": [
                {
                    **r.to_json(),
                    "age_s": round(self.now - r.launched_at, 1),
                    "in_phase_s": round(self.now - r.phase_since, 1),
                    "idle_s": None if r.idle_since is None else round(self.now - r.idle_since, 1),
                }
                for r in sorted(self.table.records.values(), key=lambda r: r.name)
            ],
            "orphans": [vars(o) for o in self.table.orphans],
        }


def status(config: BurstConfig, *, read_scheduler: bool) -> StatusView:
    table = FileStore(config.state_file).load()
    hosts = load_hosts(config.hosts_file)
    settings = config.policy_settings(hosts)
    view = StatusView(
        table=table,
        now=time.time(),
        stale_after=3 * config.poll_interval,
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


class BurstChecks(CheckRunner):
    """The checks, remembering a queue that does not exist (`check` then exits 78)."""

    def __init__(self) -> None:
        super().__init__()
        self.config_error: Optional[ConfigError] = None


def run_checks(config_file: Any) -> BurstChecks:
    runner = BurstChecks()
    holder: dict[str, Any] = {}

    def check_config() -> str:
        holder["config"] = config = load(config_file)
        return f"{config.scheduler} queue {config.queue!r}, provider {config.provider}"

    runner.run("config", check_config)
    config: Optional[BurstConfig] = holder.get("config")

    def check_hosts() -> Any:
        assert config is not None
        hosts = load_hosts(config.hosts_file)
        holder["hosts"] = hosts
        detail = f"{len(hosts)} host(s) in {config.hosts_file}"
        if config.max_nodes is not None and config.max_nodes > len(hosts):
            return ("warn", f"{detail}; max_nodes {config.max_nodes} is more than the host list")
        return detail

    runner.run("host list", check_hosts, requires="config")
    scheduler = build_scheduler(config) if config is not None else None
    runner.run("scheduler commands", lambda: _version(scheduler), requires="config")

    def check_queue() -> Any:
        assert config is not None and scheduler is not None
        try:
            return _queue_detail(scheduler, config.policy_settings(holder.get("hosts", ())))
        except ConfigError as exc:
            runner.config_error = exc
            raise

    runner.run("scheduler queue", check_queue, requires="scheduler commands")
    runner.run(
        "provider", lambda: _provider_detail(config, holder.get("hosts", ())), requires="config"
    )
    runner.run("state file", lambda: _state_detail(config), requires="config")
    return runner


def _version(scheduler: Optional[QueueScheduler]) -> str:
    assert scheduler is not None
    return scheduler.check_version()


def _queue_detail(scheduler: QueueScheduler, settings: PolicySettings) -> Any:
    scheduler.check_queue()
    queue = scheduler.get_status()
    detail = (
        f"queue {queue.queue!r}: {len(queue.pending)} pending, {len(queue.running)} running,"
        f" {len(queue.nodes)} node(s)"
    )
    warnings = []
    unknown = [h.name for h in settings.hosts if h.name not in queue.nodes]
    if unknown:
        warnings.append(f"not in the queue's node list: {', '.join(unknown[:10])}")
    never = demand(queue, settings, time.time()).unservable
    if never:
        listed = "; ".join(f"job {j}: {w}" for j, w in list(never.items())[:10])
        warnings.append(f"{len(never)} job(s) no burst node will ever serve: {listed}")
    if warnings:
        return ("warn", f"{detail}; {'; '.join(warnings)}")
    return detail


def _provider_detail(config: Optional[BurstConfig], hosts: tuple[Host, ...]) -> str:
    assert config is not None
    provider = build_provider(config)
    results = provider.check()
    from mint_burst.ec2 import Ec2Provider

    if isinstance(provider, Ec2Provider):
        for host in hosts:
            provider.options(host.ip)
        results.append(("ec2 host addresses", f"all {len(hosts)} host IPs lie in ec2.subnets"))
    return "; ".join(detail for _name, detail in results)


def _state_detail(config: Optional[BurstConfig]) -> Any:
    assert config is not None
    table = FileStore(config.state_file).load()
    if table.heartbeat is None:
        return ("warn", f"{config.state_file}: no heartbeat yet (never ran)")
    age = time.time() - table.heartbeat
    detail = f"{config.state_file}: {len(table.records)} node(s), heartbeat {age:.0f} s ago"
    if table.orphans:
        return ("warn", f"{detail}; {len(table.orphans)} tagged instance(s) without a record")
    if age > 3 * config.poll_interval:
        return ("warn", f"{detail}: stale (more than 3 poll intervals)")
    return detail


def require_readable(report: StepReport) -> None:
    if report.status is None:
        raise UnavailableError(
            "the scheduler could not be read, so nothing was decided: " + "; ".join(report.errors)
        )
