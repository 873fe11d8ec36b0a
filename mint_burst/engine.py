"""One reconcile step, and drain-all: read the world, ask the policy, carry out its actions.

Every side effect is preceded by a state save that records the intent (a
launch is written as `requested` with its client token before the provider is
called), so a crash at any point leaves a table the next start can reconcile:
the provider's tagged instances are matched to records by instance id or node
name, and nothing is launched twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from mint_burst.model import (
    BOOTING,
    DRAINING,
    JOIN,
    LAUNCH,
    REMOVE,
    REQUESTED,
    TERMINATING,
    Action,
    Host,
    Instance,
    NodeRecord,
    NodeTable,
    QueueStatus,
)
from mint_burst.policy import PolicySettings, decide
from mint_burst.provider import LaunchRequest, Provider
from mint_burst.scheduler import Scheduler, UnknownNode
from mint_burst.state import StateStore
from mint_common.errors import AuthError, ConfigError, MintError, TryAgainLater
from mint_common.heartbeat import Heartbeat

log = logging.getLogger(__name__)
RETERMINATE_AFTER = 60.0
MAX_PARALLEL_LAUNCHES = 16
# Launch failures that prove no instance was created: the provider refused the request.
REFUSED = (TryAgainLater, ConfigError, AuthError)


@dataclass
class StepReport:
    status: Optional[QueueStatus] = None
    actions: list[Action] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: list[Instance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unservable: dict[str, str] = field(default_factory=dict)
    # For the metrics: each launch's result (ok, refused, uncertain), the nodes terminated.
    launch_results: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        status = self.status
        return {
            "scheduler_read": status is not None,
            "pending_jobs": len(status.pending) if status else None,
            "running_jobs": len(status.running) if status else None,
            "actions": [a.describe() for a in self.actions],
            "done": self.done,
            "errors": self.errors,
            "orphans": [f"{o.instance_id} ({o.node or 'no node tag'})" for o in self.orphans],
            "notes": self.notes,
            "unservable_jobs": [{"job_id": j, "why": w} for j, w in self.unservable.items()],
        }


class Engine:
    def __init__(
        self,
        *,
        scheduler: Scheduler,
        provider: Provider,
        store: StateStore,
        settings: PolicySettings,
        user_data: Callable[[Host], str],
        launch_grace: float = 300.0,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
        reap_orphans: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.provider = provider
        self.store = store
        self.settings = settings
        self.user_data = user_data
        self.launch_grace = launch_grace
        self.clock = clock
        self.dry_run = dry_run
        self.reap_orphans = reap_orphans
        self._ips = {h.name: h.ip for h in settings.hosts}

    def step(self) -> StepReport:
        report = StepReport()
        table = self.store.load()
        self.provider.backoffs = table.backoffs
        now = self.clock()
        table.account(now)
        # Read first: a queue that does not exist (ConfigError) stops the step before any change.
        report.status = self._read_scheduler(report)
        self._sync(table, self.provider.list_instances(), now, report)
        decision = decide(report.status, table, now, self.settings)
        table.records = decision.records
        report.actions = list(decision.actions)
        report.notes.extend(decision.notes)
        if report.status is not None:
            report.unservable = decision.unservable
            self._note_unservable(table, decision.unservable)
        if self.dry_run:
            return report
        self._save(table)
        self._execute(table, report.actions, now, report)
        table.heartbeat = Heartbeat.beat(self.clock)
        table.last_error = "; ".join(report.errors)
        self._save(table)
        return report

    def note_failure(self, message: str) -> None:
        """Record a failed step (and the heartbeat: the daemon is alive, the world is not)."""
        if self.dry_run:
            return
        table = self.store.load()
        table.heartbeat = Heartbeat.beat(self.clock)
        table.last_error = message
        self._save(table)

    def _save(self, table: NodeTable) -> None:
        self.store.save(table)

    @staticmethod
    def _note_unservable(table: NodeTable, unservable: dict[str, str]) -> None:
        """Log each job no node of ours can ever serve once, not at every step."""
        for job_id, why in unservable.items():
            if table.unservable.get(job_id) != why:
                log.warning("job %s will never be served by burst nodes: %s", job_id, why)
        table.unservable = dict(unservable)

    def _read_scheduler(self, report: StepReport) -> Optional[QueueStatus]:
        try:
            return self.scheduler.get_status()
        except ConfigError:
            raise
        except MintError as exc:
            report.errors.append(f"scheduler: {exc.message}")
            log.error("cannot read the scheduler, so no node is added or removed: %s", exc.message)
            return None

    def _sync(
        self, table: NodeTable, instances: Sequence[Instance], now: float, report: StepReport
    ) -> None:
        """Match tagged instances to records: adopt ours, free vanished names, find orphans."""
        owned: set[str] = set()
        for record in list(table.records.values()):
            instance = self._match(record, instances, owned)
            if instance is not None:
                owned.add(instance.instance_id)
                self._adopt_instance(record, instance, now, report)
            else:
                self._free_vanished(table, record, now)
        self._handle_orphans(table, [i for i in instances if i.instance_id not in owned], report)

    def _adopt_instance(
        self, record: NodeRecord, instance: Instance, now: float, report: StepReport
    ) -> None:
        """The record's instance is listed: take its id, note it booted, retry a terminate."""
        if record.instance_id is None:
            log.info("adopted %s for node %s", instance.instance_id, record.name)
            record.instance_id = instance.instance_id
            record.launch_error = ""
        if record.phase == REQUESTED:
            record.enter(BOOTING, now)
        if (
            record.phase == TERMINATING
            and now - record.phase_since >= RETERMINATE_AFTER
            and not self.dry_run
        ):
            self._terminate_quietly([instance.instance_id], report)

    def _past_grace(self, record: NodeRecord, now: float) -> bool:
        """Whether a listing without the record's instance proves it has none.

        Within the grace a fresh instance may not be listed yet (EC2 describe is
        eventually consistent), or the launch call is still to come after a crash;
        a failed launch may also have created one that is not listed yet.
        """
        return now - record.launched_at > self.launch_grace

    def _free_vanished(self, table: NodeTable, record: NodeRecord, now: float) -> None:
        """Free the name of a record no listing matched, once its instance is surely gone."""
        past_grace = self._past_grace(record, now)
        if record.launch_error and record.instance_id is None and past_grace:
            log.warning(
                "node %s: its failed launch (%s) created no instance; freeing the name",
                record.name,
                record.launch_error,
            )
        elif record.phase == TERMINATING or past_grace:
            terminated = record.phase == TERMINATING
            log.log(
                logging.INFO if terminated else logging.WARNING,
                "node %s: instance %s is %s; freeing the name",
                record.name,
                record.instance_id or "(never created)",
                "terminated" if terminated else "gone without us",
            )
        else:
            return
        del table.records[record.name]

    def _handle_orphans(
        self, table: NodeTable, orphans: list[Instance], report: StepReport
    ) -> None:
        """Tagged instances no record owns: reaped if asked (and safe), else kept and named."""
        if orphans and self.reap_orphans and not self.dry_run:
            orphans = self._reap(orphans, report)
        if orphans:
            log.warning(
                "tagged instance(s) without a record (kept; --reap-orphans terminates them): %s",
                ", ".join(f"{i.instance_id} ({i.node or '?'})" for i in orphans),
            )
        table.orphans = orphans
        report.orphans = orphans

    def _reap(self, orphans: list[Instance], report: StepReport) -> list[Instance]:
        """Terminate the orphans the scheduler confirms idle or absent; return the others."""
        if report.status is None:
            log.warning("not reaping orphans: the scheduler could not be read")
            return orphans
        busy = report.status.busy_nodes()
        kept: list[Instance] = []
        for orphan in orphans:
            why = self._orphan_in_use(orphan, busy)
            if why:
                report.notes.append(f"kept orphan {orphan.instance_id} (node {orphan.node}): {why}")
                kept.append(orphan)
                continue
            log.warning(
                "terminating tagged instance %s (node %s) we have no record of",
                orphan.instance_id,
                orphan.node or "none",
            )
            self._terminate_quietly([orphan.instance_id], report)
            report.done.append(f"reaped orphan {orphan.instance_id}")
        return kept

    def _orphan_in_use(self, orphan: Instance, busy: frozenset[str]) -> str:
        """Why the orphan may run a job ("" once the scheduler says its node is idle or absent).

        An idle node is drained and set down first, so no job lands on it before the
        terminate; a node the scheduler does not answer for is kept.
        """
        if not orphan.node:
            return ""
        if orphan.node in busy:
            return "the scheduler shows a job on its node"
        try:
            return "" if self.scheduler.leave_cluster(orphan.node) else "a job runs on it; draining"
        except MintError as exc:
            try:
                jobs = self.scheduler.node_jobs(orphan.node)
            except MintError as jobs_exc:
                return f"the scheduler cannot say ({exc.message}; {jobs_exc.message})"
        return f"job(s) {', '.join(jobs)} run on it" if jobs else ""

    @staticmethod
    def _match(
        record: NodeRecord, instances: Sequence[Instance], owned: set[str]
    ) -> Optional[Instance]:
        for instance in instances:
            if instance.instance_id in owned:
                continue
            if record.instance_id is not None:
                if instance.instance_id == record.instance_id:
                    return instance
            elif instance.node == record.name or (
                record.launch_token and instance.token == record.launch_token
            ):
                return instance
        return None

    def _terminate_quietly(self, instance_ids: list[str], report: StepReport) -> None:
        try:
            self.provider.terminate(instance_ids)
        except MintError as exc:
            report.errors.append(f"terminate {', '.join(instance_ids)}: {exc.message}")

    def _execute(
        self, table: NodeTable, actions: Sequence[Action], now: float, report: StepReport
    ) -> None:
        launches = [a for a in actions if a.kind == LAUNCH]
        if launches:
            self._launch_all(table, launches, now, report)
        for action in actions:
            record = table.records.get(action.node)
            if record is None or action.kind == LAUNCH:
                continue
            try:
                self._carry_out(table, record, action, report)
            except Exception as exc:  # one node's surprise must not starve the others
                log.error(
                    "%s %s: unexpected %s: %s",
                    action.kind,
                    action.node,
                    type(exc).__name__,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                report.errors.append(
                    f"{action.kind} {action.node}: unexpected {type(exc).__name__}: {exc}"
                )
            self._save(table)

    def _carry_out(
        self, table: NodeTable, record: NodeRecord, action: Action, report: StepReport
    ) -> None:
        if action.kind != JOIN:
            self._retire(table, record, action, report)
            return
        try:
            self.scheduler.join_cluster(action.node)
            report.done.append(action.describe())
        except MintError as exc:
            report.errors.append(f"join {action.node}: {exc.message}")

    def _launch_all(
        self, table: NodeTable, launches: Sequence[Action], now: float, report: StepReport
    ) -> None:
        requests: list[LaunchRequest] = []
        for action in launches:
            host = Host(ip=action.ip or self._ips[action.node], name=action.node)
            token = f"{action.node}-{uuid.uuid4().hex[:16]}"
            table.records[action.node] = NodeRecord(
                name=action.node,
                ip=host.ip,
                phase=REQUESTED,
                launched_at=now,
                phase_since=now,
                launch_token=token,
            )
            requests.append(LaunchRequest(action.node, host.ip, token, self.user_data(host)))
        self._save(table)
        workers = min(MAX_PARALLEL_LAUNCHES, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="launch") as pool:
            outcomes = list(pool.map(self._launch_one, requests))
        for request, (instance_id, error, refused) in zip(requests, outcomes):
            record = table.records[request.node]
            if instance_id is not None:
                record.instance_id = instance_id
                record.enter(BOOTING, self.clock())
                report.done.append(f"launched {request.node} as {instance_id}")
                report.launch_results.append("ok")
            elif refused:
                del table.records[request.node]
                report.errors.append(f"launch {request.node}: {error}")
                report.launch_results.append("refused")
            else:
                report.launch_results.append("uncertain")
                record.launch_error = error
                record.note = "launch failed, the instance may exist: a listing decides"
                report.errors.append(
                    f"launch {request.node} (kept until a listing shows it or launch_grace"
                    f" passes): {error}"
                )
        self._save(table)

    def _launch_one(self, request: LaunchRequest) -> tuple[Optional[str], str, bool]:
        """(instance id, error, whether the provider refused so that nothing was created)."""
        try:
            return self.provider.launch(request), "", False
        except MintError as exc:
            log.error("cannot launch %s: %s", request.node, exc.message)
            return None, exc.message, isinstance(exc, REFUSED)
        except Exception as exc:  # a bug or a garbled answer after the call
            log.error("cannot launch %s: %s: %s", request.node, type(exc).__name__, exc)
            return None, f"{type(exc).__name__}: {exc}", False

    def _retire(
        self, table: NodeTable, record: NodeRecord, action: Action, report: StepReport
    ) -> None:
        """Take a node out of the cluster and terminate it, but never under a running job."""
        must_leave = action.kind == REMOVE
        try:
            left = self.scheduler.leave_cluster(record.name)
        except UnknownNode as exc:
            # No job can run on a node the scheduler does not know; keeping it would
            # bill the VM forever.
            log.warning("node %s: %s; terminating its instance", record.name, exc.message)
            left = True
        except MintError as exc:
            if must_leave:
                report.errors.append(f"leave {record.name}: {exc.message}; keeping it")
                return
            try:
                left = not self.scheduler.node_jobs(record.name)
            except MintError as jobs_exc:
                report.errors.append(f"jobs of {record.name}: {jobs_exc.message}; keeping it")
                return
        if not left:
            record.enter(DRAINING, self.clock(), "waiting for its jobs to end")
            report.done.append(f"draining {record.name}: a job started on it")
            return
        self._terminate_record(table, record, action.reason, report)

    def _terminate_record(
        self, table: NodeTable, record: NodeRecord, reason: str, report: StepReport
    ) -> None:
        if record.instance_id is None:
            del table.records[record.name]
            return
        record.enter(TERMINATING, self.clock(), reason)
        self._save(table)
        self._terminate_quietly([record.instance_id], report)
        report.removed.append(record.name)
        report.done.append(f"terminating {record.name} ({record.instance_id}): {reason}")

    def drain_all(self, *, force: bool) -> list[str]:
        """Drain every burst node; terminate those without jobs (all of them with force).

        Returns the names still draining (running jobs), so the caller can wait.
        """
        report = StepReport()
        table = self.store.load()
        now = self.clock()
        table.account(now)
        self._sync(table, self.provider.list_instances(), now, report)
        waiting: list[str] = []
        for record in list(table.records.values()):
            if record.phase == TERMINATING:
                continue
            try:
                left = self.scheduler.leave_cluster(record.name, force=force)
            except UnknownNode as exc:
                log.warning("node %s: %s; terminating its instance", record.name, exc.message)
                left = True
            except MintError as exc:
                if not force:
                    raise
                log.warning(
                    "cannot take %s out of the scheduler (%s); --force terminates it",
                    record.name,
                    exc.message,
                )
                left = True
            if left:
                self._terminate_record(table, record, "drain-all", report)
            else:
                record.enter(DRAINING, self.clock(), "drain-all: waiting for its jobs")
                waiting.append(record.name)
        for error in report.errors:
            log.error("%s", error)
        table.heartbeat = Heartbeat.beat(self.clock)
        self._save(table)
        return waiting
