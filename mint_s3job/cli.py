"""mint-s3job: submit Slurm jobs to a cloud cluster through an S3 bucket, dispatch them once.

A thin click layer: parse, load config, call the core modules, print results.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

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
from mint_common.extras import require_extra
from mint_common.output import emit_json, emit_table
from mint_common.progress import transfer_progress
from mint_common.waitdisplay import wait_display
from mint_s3job.config import S3JobConfig

if TYPE_CHECKING:
    from mint_s3job.jobs import JobStatus

log = logging.getLogger("mint_s3job")
TOOL = "mint-s3job"

bucket_option = click.option(
    "--bucket", help="The job bucket (config key 'bucket', env MINT_S3JOB_BUCKET)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")


def _config(*, daemon: bool = False, **cli: Any) -> S3JobConfig:
    opts = current_options()
    config = load_config(S3JobConfig, TOOL, config_file=opts.config_file, cli=cli)
    log_effective_config(log, config, at_start=daemon)
    return config


def _store(config: S3JobConfig) -> Any:
    from mint_s3job.store import open_store

    return open_store(config)


def _as_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


@click.group(cls=MintGroup, tool=TOOL)
@click.version_option(package_name="mint-tools", prog_name=TOOL)
@common_options
def main() -> None:
    """Run Slurm jobs on a cloud cluster through an S3 bucket.

    On premises: submit, status, list, wait, fetch, cancel, clean.
    On the cluster's head node: dispatch (replaces the legacy sub-job.sh),
    epilog (replaces the legacy epilog.sh, as Slurm's EpilogSlurmctld) and check.
    The bucket layout is the one of the manual procedure (job-aws-run.sh,
    job-aws-stat.txt, ...), so the legacy scripts and this tool can be mixed.
    """
    require_extra(TOOL, "s3job", ("boto3",))


@main.command()
@common_options
@bucket_option
@click.option("--prefix", help="Job prefix (default: job-DATE-TIME-RANDOM, always unique).")
@click.option(
    "--script",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Slurm batch script; uploaded as job-aws-run.sh.",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(),
    help="A file or directory to send (repeatable); the same as a PATH argument.",
)
@click.option("--force", is_flag=True, help="Replace an existing job under the same prefix.")
@json_option
@click.argument("paths", nargs=-1, type=click.Path())
def submit(
    bucket: Optional[str],
    prefix: Optional[str],
    script: Path,
    inputs: tuple[str, ...],
    force: bool,
    as_json: bool,
    paths: tuple[str, ...],
) -> None:
    """Upload the script and the inputs (--input PATH or PATH...), then mark the
    job FILE_UPLOAD (last).

    A file keeps its name; a directory keeps its name and layout (write
    `dir/` to put its contents at the top). Prints the prefix, and only it.

    \b
    Example:
        prefix=$(mint-s3job submit --bucket my-jobs --script run.sh \\
                 --input input.dat --input params/)
        mint-s3job wait "$prefix" && mint-s3job fetch "$prefix" --out-dir results
    """
    from mint_s3job.submit import collect_inputs, resolve_prefix
    from mint_s3job.submit import submit as do_submit

    config = _config(bucket=bucket)
    files = collect_inputs(script, (*inputs, *paths))
    job_prefix = resolve_prefix(prefix)
    result = do_submit(
        _store(config),
        job_prefix,
        files,
        force=force,
        progress=transfer_progress,
        hash_workers=min(4, os.cpu_count() or 1),
    )
    if as_json:
        emit_json(_as_dict(result))
    else:
        click.echo(result.prefix)


@main.command()
@common_options
@bucket_option
@json_option
@click.argument("prefix")
def status(bucket: Optional[str], as_json: bool, prefix: str) -> None:
    """Show the state, Slurm job id, exit status and times of one job.

    Times are ISO 8601 with the UTC offset (JSON: the `..._at` fields; `times`
    holds the same values under the old names until the next release).
    """
    from mint_s3job.jobs import job_status

    result = job_status(_store(_config(bucket=bucket)), prefix)
    if as_json:
        emit_json(_status_document(result))
        return
    emit_table(("field", "value"), _status_rows(result), title=f"job {prefix}")


def _status_document(status: JobStatus) -> dict[str, Any]:
    # `times` is what scripts read before the `..._at` fields existed.
    return {**_as_dict(status), "times": status.times()}


def _status_rows(status: JobStatus) -> list[tuple[str, Any]]:
    """One labelled line per fact, in the order a person reads them; unknown facts left out."""
    rows: list[tuple[str, Any]] = [
        ("prefix", status.prefix),
        ("state", status.state),
        ("Slurm job id", status.job_id),
        ("exit code", status.exit_code),
        ("signal", status.signal),
        ("reason", status.reason),
        ("cancel requested", "yes" if status.cancel_requested else "no"),
        ("cancelled", status.cancelled),
        ("claimed by", status.claimed_by),
        ("submitted at", status.submitted_at),
        ("updated at", status.updated_at),
        ("claimed at", status.claimed_at),
        ("completed at", status.completed_at),
        ("files", status.files),
        ("bytes", status.bytes),
        ("not uploaded", ", ".join(status.refused)),
    ]
    return [(label, value) for label, value in rows if value not in (None, "")]


@main.command(name="list")
@common_options
@bucket_option
@json_option
def list_command(bucket: Optional[str], as_json: bool) -> None:
    """List every job in the bucket with its state, newest first (reads no job files)."""
    from mint_s3job.jobs import list_jobs

    jobs = list_jobs(_store(_config(bucket=bucket)))
    if as_json:
        emit_json([_as_dict(j) for j in jobs])
        return
    rows = [
        (
            j.prefix,
            j.state + (" (cancel)" if j.cancel_requested else ""),
            j.job_id,
            j.submitted_at,
            j.updated_at,
            j.files,
            j.bytes,
        )
        for j in jobs
    ]
    emit_table(
        ("prefix", "state", "job id", "submitted at", "updated at", "files", "bytes"),
        rows,
        title="jobs",
    )


@main.command()
@common_options
@bucket_option
@click.option("--timeout", type=DURATION, help="Give up after this long (600, 30m, 2h): exit 75.")
@click.option(
    "--poll-interval",
    cls=AliasedOption,
    old_names=("--interval",),
    type=DURATION,
    help="Time between two looks at the job (config 'poll_interval', default 10s).",
)
@json_option
@click.argument("prefix")
def wait(
    bucket: Optional[str],
    timeout: Optional[float],
    poll_interval: Optional[float],
    as_json: bool,
    prefix: str,
) -> None:
    """Wait until the job ends and print its end state (with --json: its status).

    Exit 0 if it completed with status 0; 1 if it failed (JOB_ERROR, non-zero
    exit, cancelled), 75 on timeout (nothing printed: the job has not ended).
    """
    from mint_s3job.jobs import require_success, wait_until_done

    config = _config(bucket=bucket, poll_interval=poll_interval)
    interval = config.poll_interval
    with wait_display(f"job {prefix}", logger=log, interval=interval) as display:
        result = wait_until_done(
            _store(config), prefix, timeout=timeout, interval=interval, on_state=display.state
        )
    if as_json:
        emit_json(_status_document(result))
    else:
        click.echo(result.state)
    require_success(result)


@main.command()
@common_options
@bucket_option
@click.option(
    "--out-dir",
    cls=AliasedOption,
    old_names=("--dest",),
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the job's files are written (default: ./PREFIX).",
)
@click.option("--include", multiple=True, help="Only names matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip names matching this glob (repeatable).")
@json_option
@click.argument("prefix")
def fetch(
    bucket: Optional[str],
    out_dir: Optional[Path],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    prefix: str,
) -> None:
    """Download the job's files into --out-dir, verified against the manifests.

    Files already there with the same size and checksum are skipped; object
    names that would lead outside the directory are refused (exit 65).
    """
    from mint_s3job.fetch import fetch as do_fetch

    config = _config(bucket=bucket)
    result = do_fetch(
        _store(config),
        prefix,
        out_dir or Path(prefix),
        include=include,
        exclude=exclude,
        progress=transfer_progress,
    )
    if as_json:
        emit_json(_as_dict(result))
    else:
        click.echo(
            f"{result.dest}: downloaded {len(result.downloaded)} file(s),"
            f" {result.bytes} bytes; {len(result.skipped)} already up to date"
        )


@main.command()
@common_options
@bucket_option
@click.argument("prefix")
def cancel(bucket: Optional[str], prefix: str) -> None:
    """Ask the dispatcher to cancel the job (not submitted, or scancel'ed if running)."""
    from mint_s3job.jobs import cancel_job

    state = cancel_job(_store(_config(bucket=bucket)), prefix)
    click.echo(f"{prefix}: cancel requested (state {state})")


@main.command()
@common_options
@bucket_option
@click.option("--force", is_flag=True, help="Also delete a job that is being run.")
@click.argument("prefix")
def clean(bucket: Optional[str], force: bool, prefix: str) -> None:
    """Delete every object of the job from the bucket."""
    from mint_s3job.jobs import clean_job

    count = clean_job(_store(_config(bucket=bucket)), prefix, force=force)
    click.echo(f"{prefix}: deleted {count} object(s)")


@main.command()
@common_options
@bucket_option
@click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), help="Jobs go to DIR/PREFIX/."
)
@click.option("--sbatch", "sbatch", help="sbatch command (config 'sbatch').")
@click.option("--watch", is_flag=True, help="Keep dispatching, every --poll-interval.")
@click.option(
    "--poll-interval",
    cls=AliasedOption,
    old_names=("--interval",),
    type=DURATION,
    help="Time between two runs with --watch (config 'watch_interval', default 1m).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="With --watch, serve Prometheus metrics on this port (config 'metrics_port').",
)
@json_option
def dispatch(
    bucket: Optional[str],
    workdir: Optional[Path],
    sbatch: Optional[str],
    watch: bool,
    poll_interval: Optional[float],
    metrics_port: Optional[int],
    as_json: bool,
) -> None:
    """Submit every new FILE_UPLOAD job to Slurm, each exactly once (replaces the
    legacy sub-job.sh).

    One run per call (for an EventBridge/SSM trigger or a systemd timer), or
    --watch for a systemd service. Exit 69 when slurmctld could not be reached
    (the jobs stay FILE_UPLOAD for the next run), 1 when a job became JOB_ERROR.
    With --watch, SIGTERM or SIGINT finishes the current run and exits 0.

    Metrics (docs/metrics.md): with --watch and --metrics-port (or metrics_port) they
    are served on http://127.0.0.1:PORT/metrics; a one-shot run with metrics_textfile
    adds its counts to running totals and writes them there for node_exporter.
    """
    from mint_s3job.dispatch import Dispatcher, DispatchReport
    from mint_s3job.dispatch import watch as watch_loop
    from mint_s3job.layout import State
    from mint_s3job.metrics import dispatch_once, for_dispatch
    from mint_s3job.slurm import SlurmCommands

    if metrics_port is not None and not watch:
        raise click.UsageError("--metrics-port needs --watch (a one-shot run serves nothing)")
    config = _config(
        daemon=watch,
        bucket=bucket,
        workdir=workdir,
        sbatch=sbatch,
        watch_interval=poll_interval,
        metrics_port=metrics_port,
    )
    metrics = for_dispatch(config, watch=watch)
    scheduler = SlurmCommands(
        config.sbatch, config.scancel, config.command_timeout, config.sbatch_args
    )
    dispatcher = Dispatcher(_store(config), scheduler, config.require_workdir(), config)

    def show(report: DispatchReport) -> None:
        if as_json:
            emit_json(_as_dict(report))
            return
        for prefix, job_id in report.submitted:
            click.echo(f"{prefix}\t{State.JOB_SUBMIT.value}\t{job_id}")
        for prefix, reason in report.errors:
            click.echo(f"{prefix}\t{State.JOB_ERROR.value}\t{reason}")
        for prefix in report.cancelled:
            click.echo(f"{prefix}\tCANCELLED")
        for prefix, reason in report.waiting:
            click.echo(f"{prefix}\tWAITING\t{reason}")
        for prefix, reason in report.failed:
            click.echo(f"{prefix}\tRETRY\t{reason}")

    if watch:
        watch_loop(dispatcher, config.watch_interval, on_report=show, metrics=metrics)
    else:
        report = dispatch_once(dispatcher, metrics)
        show(report)
        # Slurm being unreachable is the operator's problem, job errors are the users'.
        if report.waiting:
            exit_with(69)
        if report.errors:
            exit_with(1)
        if report.failed:
            exit_with(75)


@main.command()
@common_options
@bucket_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
def epilog(bucket: Optional[str], workdir: Optional[Path]) -> None:
    """Upload a finished job's new files and mark it JOB_COMPLETE (as EpilogSlurmctld).

    Reads SLURM_JOB_ID, SLURM_JOB_COMMENT, SLURM_JOB_WORK_DIR and
    SLURM_JOB_EXIT_CODE(2), as Slurm passes them; jobs that did not come from
    the bucket are ignored. Slurm passes no other environment: see
    examples/mint-s3job/epilog-slurmctld.sh for the wrapper to install.
    """
    from mint_s3job.epilog import run_epilog

    config = _config(bucket=bucket, workdir=workdir)
    run_epilog(_store(config), config.require_workdir(), dict(os.environ))


@main.command()
@common_options
@bucket_option
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--head-node",
    is_flag=True,
    help="Also check sbatch, scancel, slurmctld (scontrol ping), EpilogSlurmctld and the work dir.",
)
@json_option
def check(bucket: Optional[str], workdir: Optional[Path], head_node: bool, as_json: bool) -> None:
    """Diagnose credentials, region, bucket access, conditional writes (and sbatch)."""
    from mint_s3job.check import run_checks

    config = _config(bucket=bucket, workdir=workdir)
    runner = run_checks(config, _store(config), head_node or config.workdir is not None)
    exit_with(runner.render(as_json=as_json, title=f"{TOOL} check"))
