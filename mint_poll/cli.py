"""mint-poll: the remote-side polling agent of the MInt WebAPI method, and its rehearsal server.

A thin click layer: it parses, loads the configuration, calls the core
modules (agent, checks, server) and prints their results.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from mint_common.cli import MintGroup, common_options, current_options, exit_with
from mint_common.errors import MintError, UnavailableError
from mint_common.extras import require_extra

if TYPE_CHECKING:
    from mint_common.signals import GracefulStop
    from mint_poll.agent import Agent
    from mint_poll.config import PollConfig
    from mint_poll.metrics import PollMetrics

log = logging.getLogger("mint-poll")

#: Commands that read only local files: they work without the `poll` extra (requests).
LOCAL_ONLY = ("status",)


@click.group(cls=MintGroup, tool="mint-poll")
@click.version_option(package_name="mint-tools", prog_name="mint-poll")
@common_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run MInt calculations on this computer by polling the MInt WebAPI (outbound HTTPS only).

    \b
    Typical use:
      mint-poll check              # is everything in place?
      mint-poll run                # poll forever (systemd Type=simple service)
      mint-poll once               # one poll, from a timer or cron
      mint-poll status --json      # what this agent has run
      mint-poll serve --site nims-dev=run.sh --token-file tok   # rehearsal server
    """
    if ctx.invoked_subcommand not in LOCAL_ONLY:
        require_extra("mint-poll", "poll", ("requests",))


def _load(cli: Optional[Mapping[str, Any]] = None) -> PollConfig:
    from mint_poll.config import load_poll_config

    return load_poll_config(current_options().config_file, cli)


def _load_with_state(cli: Optional[Mapping[str, Any]] = None) -> PollConfig:
    """The configuration of a command that uses the state dir, moved first from where an
    older release kept it."""
    from mint_poll.config import migrate_default_state

    config = _load(cli)
    migrate_default_state(config)
    return config


def _agent(
    config: PollConfig,
    stop: threading.Event,
    *,
    daemon: bool,
    metrics: Optional[PollMetrics] = None,
) -> Agent:
    from mint_poll.agent import build_agent

    return build_agent(config, stop, daemon=daemon, metrics=metrics)


@contextlib.contextmanager
def _one_shot_stop() -> Iterator[GracefulStop]:
    """A stop for a one-shot command: SIGTERM/SIGINT wind a running calculation down as in
    `run` (its command gets stop_grace, what exists is delivered), then the command exits
    128 + N; a signal during a retry pause ends the retries at once."""
    from mint_common.signals import GracefulStop, Interrupted

    with GracefulStop() as stop:
        try:
            yield stop
        except Exception as exc:
            if stop.signal_number is None:
                raise
            raise Interrupted(stop.signal_number) from exc
    if stop.signal_number is not None:
        raise Interrupted(stop.signal_number)


def _run_forever(config: PollConfig) -> None:
    from mint_common.files import SingleInstanceLock
    from mint_common.metrics import serving
    from mint_common.signals import GracefulStop
    from mint_poll.metrics import for_run
    from mint_poll.state import CalcStore

    metrics = for_run(config, daemon=True)
    with SingleInstanceLock(CalcStore(config.state_dir).lock_path), GracefulStop() as stop:
        agent = _agent(config, stop.stop_requested, daemon=True, metrics=metrics)
        with serving(
            None if metrics is None else metrics.metrics,
            port=config.metrics_port,
            address=config.metrics_address,
        ):
            agent.run_forever()
    log.info("stopped")


@main.command()
@common_options
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (config 'metrics_port'; see docs/metrics.md).",
)
def run(metrics_port: Optional[int]) -> None:
    """Poll forever and run each calculation (for a systemd Type=simple service).

    Polls every poll_interval (with jitter). Network faults are retried
    per `retry`, then polling simply goes on; any other error of one step is
    logged (traceback with -v), shown by `status` as the last error, and
    polling goes on. A calculation that fails the same way 3 times is
    quarantined (failed, not retried). Configuration mistakes exit 78 at start.
    SIGTERM/SIGINT: stop polling, let a running command finish within
    stop_grace (then kill it and report it abnormal), deliver what exists,
    exit 0; a retry pause is cut short. A second signal exits at once.
    With `runner: slurm` or `pbs` each calculation is a batch job, up to
    max_parallel in flight (default 16); a stop leaves the jobs running and
    the next start follows them (`batch.cancel_on_stop: true` cancels them).
    With --metrics-port (or metrics_port), Prometheus metrics are served on
    http://127.0.0.1:PORT/metrics (metrics_address to listen elsewhere).
    """
    _run_forever(_load_with_state({"metrics_port": metrics_port}))


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def once(as_json: bool) -> None:
    """Poll once; run a waiting calculation to the end (for a timer or cron).

    Exit 0 when there was nothing to do or the calculation was delivered
    (whatever its own outcome); 75 at once if another run holds the lock;
    69 if the server stayed unreachable or the calculation was lost; 1 if an
    unexpected error stopped work on a calculation (the next run resumes it);
    78 for a configuration mistake (e.g. a command's program is missing);
    128 + N after signal N (a running command gets stop_grace, what exists is
    delivered; a retry pause is cut short). With a batch runner it follows the
    jobs an earlier run left, then submits, waits for the job and delivers.
    With metrics_textfile set, the run's metrics are added to running totals and
    written there for node_exporter's textfile collector.
    """
    from mint_common.files import SingleInstanceLock
    from mint_poll.metrics import for_run, textfile_written
    from mint_poll.state import CalcStore

    config = _load_with_state()
    metrics = for_run(config, daemon=False)
    with SingleInstanceLock(CalcStore(config.state_dir).lock_path), _one_shot_stop() as stop:
        agent = _agent(config, stop.stop_requested, daemon=False, metrics=metrics)
        with textfile_written(metrics, config):
            agent.prune_if_due()
            handled = agent.resume_unfinished()
            outcome = agent.poll_once()
            agent.beat("idle")
    records = [*handled, *([outcome.record] if outcome.record else [])]
    if as_json:
        from mint_common.output import emit_json

        emit_json({"message": outcome.message, "calculations": [r.to_json() for r in records]})
    else:
        for record in handled:
            click.echo(f"resumed {record.accept_id}: {record.step} {record.outcome or ''}".rstrip())
        click.echo(outcome.message)
    failed = [r for r in records if r.step in ("lost", "failed")]
    if failed:
        raise UnavailableError(
            "; ".join(f"calculation {r.accept_id} {r.step}: {r.message}" for r in failed)
        )
    if agent.last_error is not None:
        # an unexpected error was caught around one calculation; the next run retries it
        raise MintError(agent.last_error["message"])


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(as_json: bool) -> None:
    """Diagnose the set-up: config, DNS, TCP, TLS, API, token, site id, directories, agent
    heartbeat (a warning when older than 3 poll intervals), commands; with a batch
    runner also the scheduler's commands, the partition, MinJobAge against
    watch_interval, and a probe job proving calc_base is shared with the nodes.

    Exit 0 only if every check passed (warnings allowed).
    """
    from mint_poll.checks import PollChecks

    runner = PollChecks(_load).run()
    exit_with(runner.render(as_json=as_json, title="mint-poll check"))


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read this state directory instead of the configured one.",
)
def status(as_json: bool, state_dir: Optional[Path]) -> None:
    """Show this agent's record of calculations, newest first, and its heartbeat.

    Reads only local files: it needs neither the server nor the token. Ids are
    shown in full. An agent that has not beaten for 3 poll intervals is shown
    as stalled. Exit 66 when the directory holds no agent state (a mistyped
    --state-dir, or an agent that has never run as this user); 65 after the
    listing when a record could not be read (each such file is named).
    """
    from mint_common.output import emit_json
    from mint_poll.config import load_state_settings, migrate_default_state
    from mint_poll.state import CalcStore
    from mint_poll.status import agent_json, heartbeat_lines, print_table

    config = load_state_settings(current_options().config_file)
    if state_dir is None:
        migrate_default_state(config)
        state_dir = config.state_dir
    store = CalcStore(state_dir)
    store.require_state()
    listing = store.read_all()
    beat = store.heartbeat()
    if as_json:
        agent = agent_json(beat, config.poll_interval)
        emit_json({"agent": agent, "calculations": [r.to_json() for r in listing.records]})
    else:
        for line in heartbeat_lines(beat, config.poll_interval):
            click.echo(line)
        print_table(listing.records)
    listing.check()


@main.command(context_settings={"ignore_unknown_options": True})
@common_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def legacy(args: tuple[str, ...]) -> None:
    """The command line of mi-system-remote.py: poll forever like `run`.

    \b
    mint-poll legacy <site id> <base url> <token|login> [retry:N,S]
                     [no_auth[:CA file]] [port:N] [calc_base:DIR] [debug]

    Other settings (commands, state_dir, ...) come from mint-poll.yaml as usual.
    The token on a command line is visible to every user of this computer:
    move it to token_file when you can. `login` is not supported.
    """
    from mint_common.logging import setup_logging
    from mint_poll.legacy import parse_legacy

    parsed = parse_legacy(args)
    if parsed.debug:
        opts = current_options()
        setup_logging(
            opts.tool,
            verbosity=max(1, opts.verbosity),
            log_format=opts.log_format,
            log_file=opts.log_file,
        )
    log.warning(
        "the API token was given on the command line, where every user of this computer can"
        " read it; put it in a file (mode 0600) and set token_file instead"
    )
    _run_forever(_load_with_state(parsed.settings))


@main.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=50443, show_default=True, help="Port (0: pick a free one).")
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="SITE=CMD[,CMD...]",
    help="A known site id and the command strings it may run (repeatable).",
)
@click.option(
    "--sites-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML mapping of site id -> list of command strings.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (mode 0600) holding the token clients must send; else $MINT_POLL_SERVE_TOKEN.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--json-style",
    type=click.Choice(["python", "utf8", "pretty", "sorted"]),
    default="python",
    show_default=True,
    help="Write replies as one of the real server's Flask versions does: Japanese as"
    " \\uXXXX escapes (python) or raw UTF-8 (utf8), indented (pretty), or keys sorted"
    " with escapes (sorted).",
)
def serve(
    host: str,
    port: int,
    sites: tuple[str, ...],
    sites_file: Optional[Path],
    token_file: Optional[Path],
    tls_cert: Optional[Path],
    tls_key: Optional[Path],
    json_style: str,
) -> None:
    """Run a local, in-memory stand-in for the MInt WebAPI server, for rehearsals and tests.

    It implements the endpoints of both sides, the calculation states, the
    30-minute purge and the ways the deployed server answers (refusals as
    HTTP 200 with an error code, codes as strings such as "0300", Japanese
    messages), and checks the bearer token. Records are kept in memory only.
    Prints `listening on <URL>` on stdout when ready.

    \b
    Example:
      MINT_POLL_SERVE_TOKEN=... mint-poll serve --port 0 --site nims-dev=create_inp_file.sh
    """
    from mint_common.signals import GracefulStop
    from mint_poll.serve import parse_sites, serve_token
    from mint_poll.server import Broker, DistcompServer

    token = serve_token(token_file)
    broker = Broker(parse_sites(sites, sites_file))
    server = DistcompServer(
        broker,
        token,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        json_style=json_style,
    )
    with GracefulStop() as stop:
        server.start()
        click.echo(f"listening on {server.base_url}")
        sys.stdout.flush()
        log.info("serving sites %s on %s", ", ".join(sorted(broker.sites)), server.base_url)
        stop.stop_requested.wait()
        server.shutdown()
    log.info("stopped")


from mint_poll.cli_submit import add_submit_commands  # noqa: E402

add_submit_commands(main)
