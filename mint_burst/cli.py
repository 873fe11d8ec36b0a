"""mint-burst command line: a thin click layer over mint_burst.service and mint_burst.simulate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import click

from mint_common.cli import DURATION, MintGroup, common_options, current_options, exit_with
from mint_common.errors import JobFailed, TryAgainLater
from mint_common.output import emit_json, emit_table
from mint_common.terminal import confirm

if TYPE_CHECKING:
    from mint_burst.simulate import SimResult
    from mint_burst.sweep import SweepRow, Value


@click.group(cls=MintGroup, tool="mint-burst")
@click.version_option(package_name="mint-tools", prog_name="mint-burst")
@common_options
def main() -> None:
    """Grow a Slurm/Torque cloud queue with cloud VMs when jobs wait, and shrink it safely.

    Runs on the scheduler's head node. Node names and private IPs come from a
    hosts.json file ({"IP": "name"}, as the earlier burst agent used); that agent's
    environment settings (QUEUE_NAME, CLEANUP_NODE_WAIT_TIME, VC_NAME, ...) are read
    as they are. See docs/mint-burst.md.
    """


def _dry_run_option(fn: Any) -> Any:
    fn = click.option(
        "--reap-orphans",
        is_flag=True,
        help="Terminate instances tagged with our cluster that the state file does not know.",
    )(fn)
    return click.option("--dry-run", is_flag=True, help="Print the actions; change nothing.")(fn)


@main.command()
@common_options
@_dry_run_option
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (config 'metrics_port'; see docs/metrics.md).",
)
def run(dry_run: bool, reap_orphans: bool, metrics_port: Optional[int]) -> None:
    """The service loop: one reconcile step every poll_interval.

    SIGTERM (systemctl stop) finishes the current step, saves the state and exits 0.
    With --metrics-port (or metrics_port), Prometheus metrics are served on
    http://127.0.0.1:PORT/metrics (metrics_address to listen elsewhere).

        mint-burst run --config /etc/mint/mint-burst.yaml
    """
    from mint_burst import service

    config = service.load(current_options().config_file, daemon=True, metrics_port=metrics_port)
    service.run_loop(config, dry_run=dry_run, reap_orphans=reap_orphans)


@main.command()
@common_options
@_dry_run_option
@click.option("--json", "as_json", is_flag=True, help="Print the step's report as JSON.")
def once(dry_run: bool, reap_orphans: bool, as_json: bool) -> None:
    """One reconcile step, for a systemd timer or cron.

    Exit 0: done; 1: an action failed; 69: the scheduler could not be read, so
    nothing was decided; 75: another run holds the lock; 78: a configuration mistake
    (no such queue, a host the queue does not have, a provider script that is missing).
    With metrics_textfile set, the step's metrics are added to running totals and
    written there for node_exporter's textfile collector.
    """
    from mint_burst import service

    config = service.load(current_options().config_file)
    report = service.run_once(config, dry_run=dry_run, reap_orphans=reap_orphans)
    if as_json:
        emit_json({"dry_run": dry_run, **report.to_json()})
    else:
        prefix = "would " if dry_run else ""
        for action in report.actions:
            click.echo(f"{prefix}{action.describe()}")
        if not report.actions:
            click.echo("no action needed")
        for line in [*report.done, *report.notes]:
            click.echo(line)
        if report.status is not None:
            for line in report.errors:
                click.echo(f"error: {line}", err=True)
    service.require_readable(report)
    if report.errors:
        raise JobFailed(f"{len(report.errors)} action(s) failed: {report.errors[0]}")


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--no-scheduler", is_flag=True, help="Only the state file; do not run squeue/qstat.")
def status(as_json: bool, no_scheduler: bool) -> None:
    """Queue counts, the node table with phases and ages, today's node-hours."""
    from mint_burst import service

    config = service.load(current_options().config_file)
    view = service.status(config, read_scheduler=not no_scheduler)
    document = view.to_json()
    if as_json:
        emit_json(document)
        return
    _echo_queue(config.queue, document["queue"])
    age = document["heartbeat_age_s"]
    click.echo(
        "heartbeat: never"
        if age is None
        else f"heartbeat: {age:.0f} s ago{' (STALE)' if view.stale else ''}"
    )
    click.echo(f"node-hours today (UTC): {document['node_hours_today']:.2f}")
    click.echo(f"nodes: {len(document['nodes'])} of at most {document['node_cap']}")
    _echo_nodes(document)
    if document["last_error"]:
        click.echo(f"last error: {document['last_error']}")


def _echo_queue(name: str, queue: dict[str, Any]) -> None:
    if "error" in queue:
        click.echo(f"queue {name!r}: cannot read the scheduler: {queue['error']}")
    elif "pending_jobs" in queue:
        click.echo(
            f"queue {name!r}: {queue['pending_jobs']} pending, "
            f"{queue['running_jobs']} running ({queue['nodes_needed']} node(s) needed)"
        )
        for job in queue["unservable_jobs"]:
            click.echo(f"never served: job {job['job_id']}: {job['why']}")


def _echo_nodes(document: dict[str, Any]) -> None:
    rows = [
        (
            n["name"],
            n["ip"],
            n["phase"],
            n["instance_id"] or "-",
            _age(n["age_s"]),
            _age(n["in_phase_s"]),
            _age(n["idle_s"]),
        )
        for n in document["nodes"]
    ]
    if rows:
        emit_table(("node", "ip", "phase", "instance", "age", "in phase", "idle"), rows)
    for node in document["nodes"]:
        if node["launch_error"]:
            click.echo(
                f"launch of {node['name']} failed, the instance may exist (kept until a"
                f" listing shows it or launch_grace passes): {node['launch_error']}"
            )
    for orphan in document["orphans"]:
        click.echo(f"orphan: {orphan['instance_id']} (node tag {orphan['node'] or '-'})")


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return str(dt.timedelta(seconds=int(seconds)))


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(as_json: bool) -> None:
    """Diagnostics: config, host list, scheduler commands, EC2 permissions (DryRun), state.

    Exit 0 if nothing failed, 78 if the queue does not exist, 1 otherwise.
    """
    from mint_burst import service

    checks = service.run_checks(current_options().config_file)
    rendered = checks.runner.render(as_json=as_json, title="mint-burst check")
    if checks.config_error is not None:
        raise checks.config_error
    exit_with(rendered)


@main.command("drain-all")
@common_options
@click.option("--force", is_flag=True, help="Do not wait for running jobs: they are requeued.")
@click.option("--no-wait", is_flag=True, help="Drain and return; nodes with jobs stay draining.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="List the nodes it would drain; change nothing.")
def drain_all(force: bool, no_wait: bool, yes: bool, dry_run: bool) -> None:
    """Drain and remove every burst node (admin). Waits for running jobs unless --force.

    On a terminal it lists the nodes and asks first; --yes skips the question (needed
    when no one is at a terminal). Exit 75 if nodes are still draining when it returns
    (--no-wait, or a stop signal).
    """
    from mint_burst import service

    config = service.load(current_options().config_file)
    engine = None if dry_run else service.drain_engine(config, force=force)
    nodes = service.drain_candidates(config)
    listed = [f"{n.name} ({n.instance_id or 'no instance yet'}, {n.phase})" for n in nodes]
    if dry_run:
        for line in listed:
            click.echo(f"would drain and terminate {line}")
        if not nodes:
            click.echo("no burst node to drain")
        return
    if nodes and not yes:
        click.echo("burst nodes to drain and terminate:", err=True)
        for line in listed:
            click.echo(f"  {line}", err=True)
        if not confirm(f"drain and terminate these {len(nodes)} node(s)?"):
            raise JobFailed("not confirmed; nothing was changed")
    assert engine is not None
    waiting = service.drain_all(config, engine, force=force, wait=not no_wait)
    if waiting:
        raise TryAgainLater(f"still draining (jobs running): {', '.join(waiting)}")
    click.echo("every burst node is drained and terminating")


@main.command()
@common_options
@click.option(
    "--trace",
    "trace_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="sacct --parsable2 --noheader --format=JobID,Submit,Start,End,NNodes,Partition,State",
)
@click.option(
    "--boot-time",
    type=DURATION,
    default="3m",
    show_default=True,
    help="How long a node takes to boot (600, 10m, 1h).",
)
@click.option("--max-nodes", default=16, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--idle-timeout",
    type=DURATION,
    default="10m",
    show_default=True,
    help="How long a node may idle before it is removed.",
)
@click.option(
    "--poll-interval",
    type=DURATION,
    default="1m",
    show_default=True,
    help="How long between reconcile steps.",
)
@click.option(
    "--policy",
    type=click.Choice(["ours", "legacy", "both"]),
    default="ours",
    show_default=True,
    help="ours: mint-burst's policy; legacy: the earlier burst agent's loop; both: compare.",
)
@click.option(
    "--squeue-fail-at",
    default=None,
    metavar="T,DURATION",
    help="The scheduler does not answer from T for DURATION (e.g. 2h,15m).",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Replay every combination of these values (repeatable; keys idle_timeout,"
    " max_nodes, boot_time, poll_interval; durations as 10m).",
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw FILE.png or FILE.svg: nodes and pending jobs over time, or a sweep's"
    " mean wait against node-hours (needs the plot extra).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def simulate(
    trace_file: Path,
    boot_time: float,
    max_nodes: int,
    idle_timeout: float,
    poll_interval: float,
    policy: Literal["ours", "legacy", "both"],
    squeue_fail_at: Optional[str],
    sweeps: tuple[str, ...],
    plot_file: Optional[Path],
    as_json: bool,
) -> None:
    """Replay a job trace through the real policy with a simulated clock and cloud.

    \b
        sacct --parsable2 --noheader -S 2026-10-01 -r cloud \\
          --format=JobID,Submit,Start,End,NNodes,Partition,State > cloud.sacct
        mint-burst simulate --trace cloud.sacct --idle-timeout 300 --policy both
        mint-burst simulate --trace cloud.sacct --policy both --plot timeline.png
        mint-burst simulate --trace cloud.sacct --sweep idle_timeout=5m,10m,20m \\
          --sweep max_nodes=8,16,32 --plot sweep.svg

    A sweep prints one row per combination and policy; rows marked pareto are
    those no other row beats on both node-hours billed and mean wait.
    """
    from mint_burst import plot, sweep
    from mint_burst import simulate as sim

    grid = sweep.parse_sweeps(sweeps)
    if plot_file is not None:
        plot.check_target(plot_file)
    jobs = sim.read_trace(trace_file)
    try:
        fail = None if squeue_fail_at is None else sim.parse_fail_window(squeue_fail_at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--squeue-fail-at") from None
    settings: dict[str, Any] = {
        "boot_time": boot_time,
        "max_nodes": max_nodes,
        "idle_timeout": idle_timeout,
        "poll_interval": poll_interval,
        "squeue_fail": fail,
    }
    if grid:
        rows = sweep.run_sweep(jobs, grid, policy, **settings)
        _print_sweep(trace_file, grid, rows, as_json)
        if plot_file is not None:
            plot.save(plot.sweep_figure(rows, f"sweep over {trace_file.name}"), plot_file)
        return
    results = sim.compare(jobs, policy, record=plot_file is not None, **settings)
    _print_results(trace_file, results, as_json)
    if plot_file is not None:
        plot.save(plot.timeline_figure(results, f"replay of {trace_file.name}"), plot_file)


def _print_results(trace_file: Path, results: list[SimResult], as_json: bool) -> None:
    if as_json:
        emit_json({"trace": str(trace_file), "results": [r.to_json() for r in results]})
        return
    columns = (
        "policy",
        "jobs",
        "node-h billed",
        "idle node-h",
        "mean wait s",
        "p95 wait s",
        "max nodes",
        "scale events",
        "jobs killed",
    )
    rows = [
        (
            r.policy,
            r.jobs,
            f"{r.node_hours_billed:.1f}",
            f"{r.idle_node_hours:.1f}",
            f"{r.mean_wait_s:.0f}",
            f"{r.p95_wait_s:.0f}",
            r.max_nodes,
            r.scale_events,
            r.jobs_killed,
        )
        for r in results
    ]
    emit_table(columns, rows, title=f"simulated {trace_file.name}")


def _print_sweep(
    trace_file: Path, grid: dict[str, tuple[Value, ...]], rows: list[SweepRow], as_json: bool
) -> None:
    from mint_burst.sweep import display_value

    if as_json:
        emit_json(
            {
                "trace": str(trace_file),
                "sweep": {key: list(values) for key, values in grid.items()},
                "results": [row.to_json() for row in rows],
            }
        )
        return
    columns = (
        "policy",
        *grid,
        "jobs",
        "node-h billed",
        "idle node-h",
        "mean wait s",
        "p95 wait s",
        "jobs killed",
        "pareto",
    )
    table = [
        (
            row.result.policy,
            *(display_value(key, value) for key, value in row.settings.items()),
            row.result.jobs,
            f"{row.result.node_hours_billed:.1f}",
            f"{row.result.idle_node_hours:.1f}",
            f"{row.result.mean_wait_s:.0f}",
            f"{row.result.p95_wait_s:.0f}",
            row.result.jobs_killed,
            "yes" if row.pareto else "no",
        )
        for row in rows
    ]
    emit_table(columns, table, title=f"sweep over {trace_file.name}")
