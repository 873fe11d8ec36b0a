"""`mint-ssh check HOST`: each step of a run, tried once, as a table of findings."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Callable, Optional

from mint_common.checks import FAIL, WARN, CheckOutcome, CheckRunner
from mint_common.errors import MintError
from mint_common.exitcodes import describe
from mint_ssh import protocol
from mint_ssh.connection import SshConnection
from mint_ssh.hosts import HostSpec

LOW_SPACE_KIB = 1024 * 1024
LATENCY_SAMPLES = 3


class HostChecks:
    """The checks, in order; later ones need the connection made by `connect`."""

    def __init__(
        self, resolve: Callable[[], HostSpec], connect: Callable[[HostSpec], SshConnection]
    ) -> None:
        self._resolve = resolve
        self._connect = connect
        self.spec: Optional[HostSpec] = None
        self.conn: Optional[SshConnection] = None
        self.home = "/"

    def run(self, runner: CheckRunner) -> None:
        try:
            runner.run("config", self.config)
            runner.run("connect", self.connect, requires="config")
            runner.run("host key", self.host_key, requires="connect")
            runner.run("run true", self.run_true, requires="connect")
            runner.run("work base writable", self.work_base, requires="run true")
            runner.run("free space", self.free_space, requires="run true")
            runner.run("remote program", self.program, requires="run true")
            runner.run("latency", self.latency, requires="run true")
        finally:
            if self.conn is not None:
                self.conn.close()

    def config(self) -> CheckOutcome:
        try:
            self.spec = self._resolve()
        except MintError as exc:
            return _failed_with_hint(exc)
        return self.spec.describe()

    def connect(self) -> CheckOutcome:
        assert self.spec is not None
        began = time.monotonic()
        try:
            self.conn = self._connect(self.spec)
        except MintError as exc:
            return _failed_with_hint(exc)
        return f"authenticated as {self.spec.user} in {time.monotonic() - began:.2f} s"

    def host_key(self) -> str:
        assert self.conn is not None
        return f"{self.conn.host_key_fingerprint} ({self.conn.host_key_status})"

    def run_true(self) -> CheckOutcome:
        assert self.conn is not None
        result = self.conn.execute(protocol.noop(), timeout=30)
        if result.failed:
            return FAIL, f"`true` exited {result.return_code}: {result.error_text()}"
        return "`true` ran"

    def work_base(self) -> CheckOutcome:
        assert self.conn is not None and self.spec is not None
        probe = protocol.workdir_path(self.spec.workdir_base, uuid.uuid4().hex)
        made = self.conn.execute(protocol.make_workdir(probe))
        if made.failed:
            return FAIL, f"cannot create a dir in {self.spec.workdir_base}: {made.error_text()}"
        self.home = made.text.strip() or "/"
        self.conn.execute(protocol.remove(probe))
        return f"{self.spec.workdir_base} is writable"

    def free_space(self) -> CheckOutcome:
        assert self.conn is not None and self.spec is not None
        result = self.conn.execute(protocol.free_space(self.spec.workdir_base))
        lines = result.text.strip().splitlines()
        if result.failed or len(lines) < 2:
            return FAIL, f"df failed: {result.error_text()}"
        available_kib = int(lines[-1].split()[3])
        detail = f"{available_kib / 1024 / 1024:.1f} GiB free in {self.spec.workdir_base}"
        return (WARN, detail + " (less than 1 GiB)") if available_kib < LOW_SPACE_KIB else detail

    def program(self) -> CheckOutcome:
        assert self.conn is not None and self.spec is not None
        program = self.spec.remote_program
        if program == "~" or program.startswith("~/"):
            program = self.home.rstrip("/") + program[1:]
        result = self.conn.execute(protocol.is_executable(program))
        if result.failed:
            return FAIL, f"{program} is missing or not executable"
        return f"{program} is executable"

    def latency(self) -> str:
        assert self.conn is not None
        samples = []
        for _ in range(LATENCY_SAMPLES):
            began = time.monotonic()
            self.conn.execute(protocol.noop(), timeout=30)
            samples.append(time.monotonic() - began)
        return (
            f"{statistics.median(samples) * 1000:.1f} ms per command (median of {LATENCY_SAMPLES})"
        )


def _failed_with_hint(exc: MintError) -> CheckOutcome:
    """A FAIL row that also says what to do (the hint a run would print)."""
    detail = describe(exc)
    return FAIL, f"{detail}; {exc.hint}" if exc.hint else detail


def check_host(
    resolve: Callable[[], HostSpec], connect: Callable[[HostSpec], SshConnection], *, as_json: bool
) -> int:
    runner = CheckRunner()
    checks = HostChecks(resolve, connect)
    checks.run(runner)
    return int(runner.render(as_json=as_json, title="mint-ssh check"))
