"""The workflow-side commands of mint-poll: `submit` and `submit-legacy`.

A thin click layer: parse, load the shared mint-poll configuration, check the
request, call `mint_poll.submit`, print the outcome, exit with its status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from mint_common.cli import DURATION, MintCommand, common_options, current_options

if TYPE_CHECKING:
    from mint_poll.config import PollConfig
    from mint_poll.submit import SubmitOutcome
    from mint_poll.submit_args import SubmitRequest

log = logging.getLogger("mint-poll")


def add_submit_commands(group: click.Group) -> None:
    """Attach the workflow-side commands to the mint-poll command group."""
    group.add_command(submit)
    group.add_command(submit_legacy)


def _positive(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be greater than 0, got {value:g}", ctx, param)
    return value


def _wait_options(fn: Any) -> Any:
    """Options shared by `submit` and `submit-legacy`."""
    decorators = [
        click.option(
            "--timeout",
            type=DURATION,
            callback=_positive,
            metavar="DURATION",
            help="Give up after this long (600, 30m, 2h): force-cancel the registration, exit 75.",
        ),
        click.option(
            "--poll-interval",
            type=DURATION,
            callback=_positive,
            metavar="DURATION",
            help="The longest pause between looks at the calculation's progress: every"
            " poll_min (2s) for a minute after each change, then backing off to this."
            "  [default: progress_interval from the config, 10s]",
        ),
        click.option(
            "--out-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path(),
            help="Write the result files here (created if needed).  [default: current dir]",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print a JSON summary (accept_id, status, files with sizes and sha256).",
        ),
    ]
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


@click.command("submit", cls=MintCommand)
@common_options
@click.option("--site", "site_id", metavar="SITE", help="Site id to run on (else site_id).")
@click.option("--command", "command", required=True, help="Command string the site runs.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="FILE",
    help="A file to send (repeatable). Sent under its relative path, else its base name.",
)
@click.option(
    "--result",
    "results",
    multiple=True,
    metavar="NAME",
    help="A result file to bring back (repeatable); stdout/stderr files always come back.",
)
@click.option("--parameters", default="", help="Free text passed to the remote command.")
@_wait_options
def submit(
    site_id: Optional[str],
    command: str,
    inputs: tuple[str, ...],
    results: tuple[str, ...],
    parameters: str,
    timeout: Optional[float],
    poll_interval: Optional[float],
    out_dir: Path,
    as_json: bool,
) -> None:
    """Run COMMAND on a remote site through the MInt WebAPI and collect its results.

    Registers the calculation with every input file, lets the site pick it up,
    waits until its results are back, and writes them into --out-dir
    (計算標準出力.txt and 計算標準エラー出力.txt always). url, token and TLS
    settings come from mint-poll.yaml / MINT_POLL_* like the agent's.

    \b
    Exit status: 0 completed with every result; 1 run abnormal, a result
    missing, or the command refused by the server; 65 unsafe result names;
    66 an input file missing (nothing sent); 69 server unreachable;
    73 out dir not writable (nothing sent); 75 --timeout (registration
    force-cancelled); 77 token refused; 78 bad config; 128+N after signal N
    (registration force-cancelled).

    \b
    Example (in a MInt module script):
      mint-poll submit --site nims-dev --command create_inp_file.sh \\
          --input input.dat --result out.dat --timeout 2h
    """
    from mint_poll.config import load_poll_config
    from mint_poll.submit_args import build_request

    config = load_poll_config(
        current_options().config_file,
        {"site_id": site_id, "progress_interval": poll_interval},
    )
    request = build_request(
        site_id=config.site_id,
        command=command,
        inputs=inputs,
        results=results,
        parameters=parameters,
        out_dir=out_dir,
        timeout=timeout,
        poll_interval=config.progress_interval,
    )
    _run(config, request, as_json)


@click.command(
    "submit-legacy",
    cls=MintCommand,
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
@common_options
@_wait_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def submit_legacy(
    args: tuple[str, ...],
    timeout: Optional[float],
    poll_interval: Optional[float],
    out_dir: Path,
    as_json: bool,
) -> None:
    """The command line of mi-system-wf.py, for existing module scripts.

    \b
    mint-poll submit-legacy <base url> <site id> <api token> <command>
                            <in1:in2:...> <res1:res2:...> [parameters]

    Same meaning as mi-system-wf.py: `:50443` is appended to the URL (unless
    it names a port). Unlike it, a missing input file stops the run (exit 66)
    before anything is sent. Options go before the positional arguments.
    The token on a command line is visible to every user of this computer:
    prefer `mint-poll submit` with token_file or MINT_POLL_TOKEN.
    """
    from mint_poll.config import load_poll_config
    from mint_poll.submit_args import build_request, parse_legacy_args

    legacy = parse_legacy_args(args)
    log.warning(
        "the API token was given on the command line, where every user of this computer can"
        " see it in the process list; put it in a file (mode 0600) as token_file, or in"
        " MINT_POLL_TOKEN, and use `mint-poll submit`"
    )
    config = load_poll_config(
        current_options().config_file,
        {
            "url": legacy.url,
            "site_id": legacy.site_id,
            "token": legacy.token,
            "progress_interval": poll_interval,
        },
    )
    request = build_request(
        site_id=config.site_id,
        command=legacy.command,
        inputs=legacy.inputs,
        results=legacy.results,
        parameters=legacy.parameters,
        out_dir=out_dir,
        timeout=timeout,
        poll_interval=config.progress_interval,
    )
    _run(config, request, as_json)


def _run(config: PollConfig, request: SubmitRequest, as_json: bool) -> None:
    from mint_common.signals import GracefulStop
    from mint_poll.submit import submit_with_config

    opts = current_options()
    live = None if opts.log_format in ("auto", "rich") and opts.verbosity >= 0 else False
    with GracefulStop() as stop:
        outcome = submit_with_config(config, request, stop=stop, live=live)
    _print(outcome, as_json)
    error = outcome.error()
    if error is not None:
        # MintGroup prints it like every other error: its line, its hint, -v its traceback.
        raise error


def _print(outcome: SubmitOutcome, as_json: bool) -> None:
    from mint_common.output import emit_json, emit_table

    if as_json:
        emit_json(outcome.summary())
        return
    if outcome.written:
        emit_table(
            ("file", "bytes", "sha256"),
            [(str(f.path), f"{f.size}", f.sha256[:16]) for f in outcome.written],
            title=f"calculation {outcome.accept_id}: {outcome.status}",
        )
