"""`check`: can this machine use the bucket (and, on the head node, run sbatch)?"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from mint_common.checks import FAIL, PASS, SKIP, WARN, CheckResult, CheckRunner
from mint_common.errors import AuthError, UnavailableError
from mint_common.files import JsonState
from mint_common.heartbeat import Heartbeat, heartbeat_check
from mint_s3job.config import S3JobConfig
from mint_s3job.dispatch import state_dir
from mint_s3job.slurm import SlurmCommands
from mint_s3job.store import ObjectStore, session_facts

PROBE_PREFIX = ".mint-s3job-check"
# `epilog` as a word of its own (an argument), not part of a name like epilog.sh.
_EPILOG_WORD = re.compile(r"(?<![\w./-])epilog(?![\w./-])")


def run_checks(config: S3JobConfig, store: ObjectStore, head_node: bool) -> CheckRunner:
    runner = CheckRunner()
    probe = f"{PROBE_PREFIX}/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    runner.run("credentials", lambda: _credentials(config))
    runner.run("region", lambda: _region(config))
    runner.run("bucket reachable", lambda: _bucket(store), requires="credentials")
    runner.run("list", lambda: _list(store), requires="bucket reachable")
    runner.run("write", lambda: _write(store, probe), requires="bucket reachable")
    runner.run("read", lambda: _read(store, probe), requires="write")
    runner.run("conditional write", lambda: _conditional(store, probe), requires="write")
    runner.run("delete", lambda: _delete(store, probe), requires="write")
    _head_node_checks(runner, config, head_node)
    return runner


def _credentials(config: S3JobConfig) -> str:
    method, _region = session_facts(config)
    if method is None:
        raise AuthError("no AWS credentials found (environment, profile or instance role)")
    return f"found (source: {method})"


def _region(config: S3JobConfig) -> CheckResult | str:
    _method, region = session_facts(config)
    if not region:
        return CheckResult("region", WARN, "no region configured; S3 defaults to us-east-1")
    where = f", endpoint {config.endpoint_url}" if config.endpoint_url else ""
    return f"{region}{where}"


def _bucket(store: ObjectStore) -> str:
    region = store.bucket_region()
    return f"s3://{store.bucket} reachable" + (f" (region {region})" if region else "")


def _list(store: ObjectStore) -> str:
    return f"{len(store.list_prefixes())} top-level prefix(es)"


def _write(store: ObjectStore, probe: str) -> str:
    store.put_bytes(probe, b"mint-s3job check\n")
    return f"wrote s3://{store.bucket}/{probe}"


def _read(store: ObjectStore, probe: str) -> CheckResult | str:
    data = store.get_bytes(probe)
    if data != b"mint-s3job check\n":
        return CheckResult("read", FAIL, "the probe object read back differently")
    return "read the probe back"


def _conditional(store: ObjectStore, probe: str) -> CheckResult:
    key = probe + ".claim"
    first = store.put_bytes(key, b"1", if_none_match=True)
    second = store.put_bytes(key, b"2", if_none_match=True)
    store.delete_keys([key])
    if first and not second:
        return CheckResult("conditional write", PASS, "If-None-Match: * honoured (claims are safe)")
    return CheckResult(
        "conditional write",
        FAIL,
        f"If-None-Match: * not honoured (first={first}, second={second}): several dispatchers"
        " could submit the same job",
    )


def _delete(store: ObjectStore, probe: str) -> str:
    store.delete_keys([probe])
    return "removed the probe object"


def _head_node_checks(runner: CheckRunner, config: S3JobConfig, head_node: bool) -> None:
    if not head_node:
        # Not applicable here, so not a failure: `check` still exits 0 on premises.
        runner.results.append(
            CheckResult("sbatch", SKIP, "not a head node (no workdir configured)")
        )
        return
    runner.run("sbatch", lambda: _which(config.sbatch, "sbatch"))
    runner.run("scancel", lambda: _which(config.scancel, "scancel"))
    runner.run("slurmctld", lambda: _controller(_slurm(config)), requires="sbatch")
    runner.run("EpilogSlurmctld", lambda: _epilog(_slurm(config)), requires="slurmctld")
    runner.run("workdir", lambda: _workdir(config.require_workdir()))
    runner.run(
        "dispatcher heartbeat",
        lambda: _heartbeat(config.require_workdir(), config.watch_interval),
    )


def _which(command: str, what: str) -> CheckResult | str:
    found = shutil.which(command)
    if found is None:
        return CheckResult(what, FAIL, f"{command!r} not found on PATH; set the {what!r} key")
    return found


def _slurm(config: S3JobConfig) -> SlurmCommands:
    return SlurmCommands(config.sbatch, config.scancel, config.command_timeout)


def _controller(slurm: SlurmCommands) -> CheckResult | str:
    try:
        return slurm.ping()
    except UnavailableError as exc:
        return CheckResult(
            "slurmctld",
            FAIL,
            f"{exc.message}; dispatch leaves jobs waiting until it is up",
        )


def _epilog(slurm: SlurmCommands) -> CheckResult | str:
    """Without mint-s3job's epilog no job ever reaches JOB_COMPLETE: `wait` would never end."""
    try:
        script = slurm.show_config().get("EpilogSlurmctld", "(null)")
    except UnavailableError as exc:
        return CheckResult("EpilogSlurmctld", FAIL, exc.message)
    if script in ("", "(null)"):
        return CheckResult(
            "EpilogSlurmctld",
            FAIL,
            "not set in slurm.conf: jobs would never reach JOB_COMPLETE (set it to the"
            " wrapper examples/mint-s3job/epilog-slurmctld.sh)",
        )
    try:
        text = Path(script).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return CheckResult("EpilogSlurmctld", FAIL, f"{script}: {exc.strerror}")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if "mint-s3job" not in code or not _EPILOG_WORD.search(code):
        return CheckResult(
            "EpilogSlurmctld",
            WARN,
            f"{script} does not call 'mint-s3job epilog' (the legacy epilog.sh?): jobs"
            " finish without an exit status and without the epilog manifest",
        )
    return f"{script} calls mint-s3job epilog"


def _workdir(workdir: Path) -> CheckResult | str:
    if not workdir.exists():
        return CheckResult("workdir", WARN, f"{workdir} does not exist yet (dispatch creates it)")
    if not os.access(workdir, os.W_OK):
        return CheckResult("workdir", FAIL, f"{workdir} is not writable")
    return f"{workdir} writable"


def _heartbeat(workdir: Path, interval: float) -> CheckResult:
    """Stalled (WARN) when the dispatcher missed `stale_after(interval)` of its beats."""
    state: dict[str, Any] = JsonState(state_dir(workdir) / "dispatch-state.json").load() or {}
    where = f"dispatcher on {state.get('host', '?')} (pid {state.get('pid', '?')})"
    result = heartbeat_check(
        "dispatcher heartbeat",
        Heartbeat.from_json(state.get("heartbeat")),
        interval=interval,
        where=where,
    )
    if result.status == PASS and state.get("last_error"):
        detail = f"{result.detail}; last error: {state['last_error']}"
        return CheckResult(result.name, WARN, detail, result.data)
    return result
