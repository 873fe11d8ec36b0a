"""mint-ssh: run one command on an external computer over SSH, with files in and out."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from mint_common.cli import (
    DURATION,
    AliasedOption,
    MintGroup,
    common_options,
    current_options,
    exit_with,
)
from mint_common.config import load_config, log_effective_config
from mint_common.errors import InputError, JobFailed, UsageError
from mint_common.extras import require_extra
from mint_common.files import atomic_write
from mint_common.output import emit_json, emit_table
from mint_ssh.config import SshToolConfig, config_view

if TYPE_CHECKING:
    from mint_ssh.connection import SshConnection
    from mint_ssh.hosts import HostSpec
    from mint_ssh.records import RunRecord
    from mint_ssh.runner import RunOutcome

log = logging.getLogger("mint_ssh")


def _load(**cli: Any) -> SshToolConfig:
    cfg = load_config(SshToolConfig, "mint-ssh", config_file=current_options().config_file, cli=cli)
    log_effective_config(log, config_view(cfg), at_start=False)
    return cfg


def _needs_ssh() -> None:
    """Only the commands that connect need paramiko (`runs` and `gate` work without it)."""
    require_extra("mint-ssh", "ssh", ("paramiko",))


def _connector(cfg: SshToolConfig, accept_new: bool) -> Callable[[HostSpec], SshConnection]:
    from mint_ssh.connection import connect
    from mint_ssh.hosts import resolve_host

    def connect_to(spec: HostSpec) -> SshConnection:
        return connect(
            spec,
            resolve=lambda alias: resolve_host(alias, cfg),
            connect_timeout=cfg.connect_timeout,
            accept_new_host_key=accept_new,
        )

    return connect_to


@click.group(cls=MintGroup, tool="mint-ssh")
@click.version_option(package_name="mint-tools", prog_name="mint-ssh")
@common_options
def main() -> None:
    """Run one command on an external computer over SSH, with files in and out.

    \b
      mint-ssh run ssh-node01 --input input.dat -- ./solve.sh input.dat
      mint-ssh check ssh-node01
      mint-ssh runs
      mint-ssh resume --last   (after a crash or a long network outage)
    """


def _summary(outcome: RunOutcome) -> dict[str, Any]:
    from mint_common.timeutil import iso_from_epoch

    record = outcome.record
    return {
        "run_id": record.run_id,
        "host": record.host,
        "exit_status": record.exit_status,
        "state": record.state,
        "out_dir": record.dest,
        "files": [{"path": name, "size": size} for name, size in outcome.downloaded.fetched],
        "fetched_earlier": outcome.fetched_earlier,
        "remote_dir_kept": outcome.kept_remote,
        "remote_dir": record.workdir,
        "created_at": iso_from_epoch(record.created_at),
        "updated_at": iso_from_epoch(record.updated_at),
    }


def _report(outcome: RunOutcome, exit_code_file: Optional[Path], json_file: Optional[Path]) -> None:
    status = outcome.return_code
    if exit_code_file is not None:
        atomic_write(exit_code_file, f"{status}\n", mode=0o644)
    if json_file is not None:
        atomic_write(json_file, json.dumps(_summary(outcome), indent=2) + "\n", mode=0o644)
    record = outcome.record
    if outcome.fetched_earlier:
        click.echo(
            f"run {record.run_id}: already done (remote exit status {status});"
            f" its results were fetched earlier into {record.dest}",
            err=True,
        )
    else:
        click.echo(
            f"run {record.run_id}: remote exit status {status};"
            f" {outcome.downloaded.files} file(s) fetched into {record.dest}",
            err=True,
        )
    if outcome.kept_remote:
        click.echo(f"remote working dir kept: {record.host}:{record.workdir}", err=True)
    if outcome.failed:
        raise JobFailed(f"the remote command exited with status {status}", job_exit_status=status)
    refused = outcome.downloaded.refused
    if refused:
        raise InputError(
            f"{len(refused)} result name(s) were refused as unsafe: {', '.join(refused[:5])};"
            " the other files were fetched and the remote working dir is kept"
        )


_EXIT_CODE_FILE = click.option(
    "--exit-code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the remote exit status here.",
)


def _not_stdout(_ctx: click.Context, param: click.Parameter, value: Optional[Path]) -> Any:
    if value is not None and str(value) == "-":
        raise click.BadParameter(
            "give a file: stdout carries the remote command's own output", param=param
        )
    return value


_JSON_FILE = click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_not_stdout,
    help="Also write a summary for scripts to this file: run id, exit status, the files"
    " fetched with their sizes, times (ISO 8601). Not to stdout: stdout carries the remote"
    " command's own output.",
)


@main.command()
@common_options
@click.argument("host")
@click.argument("command", nargs=-1)
@click.option(
    "--input",
    "inputs",
    cls=AliasedOption,
    old_names=("--put",),
    multiple=True,
    type=click.Path(),
    help="Send this file or directory into the working dir (repeatable). A directory"
    " arrives as DIR/...; with a trailing slash (DIR/), its contents arrive.",
)
@click.option(
    "--include",
    "includes",
    cls=AliasedOption,
    old_names=("--get",),
    multiple=True,
    metavar="GLOB",
    help="Fetch only paths matching this glob (repeatable); default: the whole working dir.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Do not fetch paths matching this glob, nor what is under them (repeatable).",
)
@click.option(
    "--out-dir",
    "out_dir",
    cls=AliasedOption,
    old_names=("--dest",),
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default="current dir",
    help="Where the results go.",
)
@click.option(
    "--workdir-base", help="Remote directory under which <base>/<run id> is made [default: /tmp]."
)
@click.option("--keep", is_flag=True, help="Leave the remote working dir in place.")
@click.option(
    "--timeout",
    type=DURATION,
    help="Stop the remote command after this long (600, 30m, 2h).",
)
@_EXIT_CODE_FILE
@_JSON_FILE
@click.option(
    "--accept-new-host-key",
    is_flag=True,
    default=None,
    help="Record an unknown host key (never a changed one).",
)
@click.option(
    "--sha256",
    "verify_sha256",
    is_flag=True,
    default=None,
    help="Check each upload's sha256 on the remote side.",
)
def run(
    host: str,
    command: tuple[str, ...],
    inputs: tuple[str, ...],
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    out_dir: Path,
    workdir_base: Optional[str],
    keep: bool,
    timeout: Optional[float],
    exit_code_file: Optional[Path],
    json_file: Optional[Path],
    accept_new_host_key: Optional[bool],
    verify_sha256: Optional[bool],
) -> None:
    """Send files to HOST, run COMMAND there in a fresh dir, fetch the results back.

    Without COMMAND the remote program from the config runs (by default
    ~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh).
    The remote command's stdout goes to stdout and its stderr to stderr, as
    with ssh; mint-ssh's own messages go to stderr.
    Exit 0 when the remote command exited 0, 1 when it did not; 65 when result
    names were refused as unsafe; 66 missing input, 69 unreachable, 74 transfer
    failure, 77 host key or login refused, 78 configuration (an unknown host).

    \b
      mint-ssh run ssh-node01 --input in.csv --include 'out/*' --out-dir results \\
          --json summary.json -- ./calc.sh in.csv
      x=$(mint-ssh run ssh-node01 -- cat version.txt)
    """
    _needs_ssh()
    from mint_ssh.hosts import resolve_host
    from mint_ssh.runner import RunRequest, run_job

    cfg = _load(
        workdir_base=workdir_base,
        accept_new_host_key=accept_new_host_key,
        verify_sha256=verify_sha256,
        timeout=timeout,
    )
    spec = resolve_host(host, cfg)
    request = RunRequest(
        host=host,
        command=command or (spec.remote_program,),
        inputs=inputs,
        get=includes,
        exclude=excludes,
        dest=out_dir,
        keep=keep,
        timeout=cfg.timeout,
    )
    outcome = run_job(spec, cfg, request, _connector(cfg, cfg.accept_new_host_key))
    _report(outcome, exit_code_file, json_file)


@main.command()
@common_options
@click.argument("run_id", required=False)
@click.option("--last", is_flag=True, help="Resume the newest run.")
@_EXIT_CODE_FILE
@_JSON_FILE
def resume(
    run_id: Optional[str], last: bool, exit_code_file: Optional[Path], json_file: Optional[Path]
) -> None:
    """Reattach to run RUN_ID, wait for its command, and fetch its results.

    RUN_ID may be any unique beginning of the id that `mint-ssh runs` shows.

    \b
      mint-ssh resume 3f2a
      mint-ssh resume --last
    """
    _needs_ssh()
    from mint_ssh.hosts import resolve_host
    from mint_ssh.records import RunStore
    from mint_ssh.runner import resume_job

    if (run_id is None) == (not last):
        raise UsageError("give a RUN_ID (or a unique beginning of one), or --last")
    cfg = _load()
    store = RunStore(cfg.runs_dir)
    full_id = store.newest() if last else store.find(run_id or "")
    outcome = resume_job(
        full_id, lambda alias: resolve_host(alias, cfg), cfg, _connector(cfg, False)
    )
    _report(outcome, exit_code_file, json_file)


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="One JSON list for scripts.")
def runs(as_json: bool) -> None:
    """List the local run records (newest first).

    A record that cannot be read is named in a warning; the others are listed, and the
    command then exits 65."""
    from mint_ssh.records import RunStore

    records, unreadable = RunStore(_load().runs_dir).scan()
    for problem in unreadable:
        log.warning("skipping %s", problem.message)
    _list_runs(records, as_json)
    if unreadable:
        raise InputError(
            f"{len(unreadable)} run record(s) could not be read; the others are listed",
            hint="move an unreadable record aside, or repair it",
        )


def _list_runs(records: list[RunRecord], as_json: bool) -> None:
    from mint_common.timeutil import iso_from_epoch

    if as_json:
        emit_json([r.as_json() for r in records])
        return
    rows = [
        [
            r.run_id,
            r.host,
            r.state,
            "" if r.exit_status is None else str(r.exit_status),
            iso_from_epoch(r.created_at) or "",
            r.workdir,
            r.message,
        ]
        for r in records
    ]
    emit_table(
        ["run id", "host", "state", "exit", "created", "remote dir", "note"],
        rows,
        title="mint-ssh runs",
    )


@main.command()
@common_options
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
@click.option(
    "--accept-new-host-key", is_flag=True, default=None, help="Record an unknown host key."
)
def check(host: str, as_json: bool, accept_new_host_key: Optional[bool]) -> None:
    """Diagnose HOST: config, connection, host key, login, work base, program, latency."""
    _needs_ssh()
    from mint_ssh.diagnose import check_host
    from mint_ssh.hosts import resolve_host

    cfg = _load(accept_new_host_key=accept_new_host_key)
    status = check_host(
        lambda: resolve_host(host, cfg),
        _connector(cfg, cfg.accept_new_host_key),
        as_json=as_json,
    )
    exit_with(status)


@main.command()
@common_options
@click.option(
    "--allow",
    "allowed",
    multiple=True,
    required=True,
    help="A program `run` may start (repeatable; ~ is this user's home).",
)
@click.option(
    "--base",
    "bases",
    multiple=True,
    help="Work base(s) allowed [default: /tmp]; never read from the environment or a config.",
)
@click.option(
    "--syslog/--no-syslog",
    default=True,
    show_default=True,
    help="Also log decisions to syslog (/dev/log).",
)
def gate(allowed: tuple[str, ...], bases: tuple[str, ...], syslog: bool) -> None:
    """Forced command for authorized_keys: admit only what `mint-ssh run` sends.

    Its policy comes from this command line only (the client can set environment
    variables), so give --base explicitly.

    \b
      command="mint-ssh gate --base /tmp --allow ~/bin/solve.sh",restrict ssh-ed25519 AAAA
    """
    from mint_ssh.gate import DEFAULT_BASE, attach_syslog, make_policy, quiet_console, run_gate

    if not allowed:
        raise UsageError("give at least one --allow PROGRAM")
    quiet_console()
    if syslog:
        attach_syslog()
    policy = make_policy(bases or (DEFAULT_BASE,), allowed)
    sys.stderr.flush()
    run_gate(os.environ.get("SSH_ORIGINAL_COMMAND"), policy)
