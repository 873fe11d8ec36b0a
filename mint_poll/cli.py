"""mint-poll: the remote-side polling agent of the MInt WebAPI method, and its rehearsal server.

A thin click layer: it parses, loads the configuration, calls the core
modules (agent, checks, server) and prints their results.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from mint_common.cli import MintGroup, common_options, current_options, exit_with
from mint_common.errors import MintError, UnavailableError
from mint_common.extras import require_extra

if TYPE_CHECKING:
    from mint_poll.agent import Agent
    from mint_poll.config import PollConfig

log = logging.getLogger("mint-poll")


@click.group(cls=MintGroup, tool="mint-poll")
@click.version_option(package_name="mint-tools", prog_name="mint-poll")
@common_options
def main() -> None:
    """Run MInt calculations on this computer by polling the MInt WebAPI (outbound HTTPS only).

    \b
    Typical use:
      mint-poll check              # is everything in place?
      mint-poll run                # poll forever (systemd Type=simple service)
      mint-poll once               # one poll, from a timer or cron
      mint-poll status --json      # what this agent has run
      mint-poll serve --site nims-dev=run.sh --token-file tok   # rehearsal server
    """
    require_extra("mint-poll", "poll", ("requests",))


def _load(cli: Optional[Mapping[str, Any]] = None) -> PollConfig:
    from mint_poll.config import load_poll_config

    return load_poll_config(current_options().config_file, cli)


def _agent(config: PollConfig, stop: threading.Event) -> Agent:
    from mint_poll.agent import build_agent

    return build_agent(config, stop)


def _run_forever(config: PollConfig) -> None:
    from mint_common.files import SingleInstanceLock
    from mint_common.signals import GracefulStop
    from mint_poll.state import StateStore

    with SingleInstanceLock(StateStore(config.state_dir).lock_path), GracefulStop() as stop:
        agent = _agent(config, stop.stop_requested)
        agent.run_forever()
    log.info("stopped")


@main.command()
@common_options
def run() -> None:
    """Poll forever and run each calculation (for a systemd Type=simple service).

    Polls every poll_interval seconds (with jitter). Network faults are retried
    per `retry`, then polling simply goes on; any other error of one step is
    logged (traceback with -v), shown by `status` as the last error, and
    polling goes on. A calculation that fails the same way 3 times is
    quarantined (failed, not retried). Configuration mistakes exit 78 at start.
    SIGTERM/SIGINT: stop polling, let a running command finish within
    stop_grace seconds (then kill it and report it abnormal), deliver what
    exists, exit 0. A second signal exits at once.
    """
    _run_forever(_load())


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def once(as_json: bool) -> None:
    """Poll once; run a waiting calculation to the end (for a timer or cron).

    Exit 0 when there was nothing to do or the calculation was delivered
    (whatever its own outcome); 75 at once if another run holds the lock;
    69 if the server stayed unreachable or the calculation was lost; 1 if an
    unexpected error stopped work on a calculation (the next run resumes it);
    78 for a configuration mistake (e.g. a command's program is missing).
    """
    from mint_common.files import SingleInstanceLock
    from mint_common.signals import GracefulStop
    from mint_poll.state import StateStore

    config = _load()
    with SingleInstanceLock(StateStore(config.state_dir).lock_path), GracefulStop() as stop:
        agent = _agent(config, stop.stop_requested)
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
    """Diagnose the set-up: config, DNS, TCP, TLS, API, token, site id, directories, commands.

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
    """Show this agent's record of calculations, newest first, and its heartbeat."""
    from mint_common.output import emit_json, emit_table
    from mint_poll.state import StateStore

    store = StateStore(state_dir if state_dir is not None else _load().state_dir)
    records = store.all()
    beat = store.heartbeat()
    if as_json:
        emit_json({"agent": beat, "calculations": [r.to_json() for r in records]})
        return
    if beat:
        click.echo(f"agent pid {beat.get('pid')}: {beat.get('state')} at {beat.get('time')}")
        last_error = beat.get("last_error")
        if isinstance(last_error, dict):
            click.echo(f"last error at {last_error.get('time')}: {last_error.get('message')}")
    rows = [
        (
            r.accept_id,
            r.command or "",
            r.step if r.step != "done" else f"done: {r.outcome}",
            r.accepted_at,
            r.delivered_at or r.finished_at or "",
            r.workdir,
        )
        for r in records
    ]
    emit_table(
        ("accept_id", "command", "state", "accepted", "finished", "working dir"),
        rows,
        title="mint-poll calculations",
    )


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
    _run_forever(_load(parsed.settings))


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
    help="Shape replies like the Flask version of the real server (quirk 7).",
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
    """Run a local in-memory mi-distcomp-api broker for rehearsals and tests.

    It implements both sides' endpoints, the states, the 30-minute purge and
    the quirks of the deployed server, and checks the bearer token. Records are
    kept in memory only. Prints `listening on <URL>` on stdout when ready.

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
