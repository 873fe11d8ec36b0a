"""Fixtures shared by every tool's tests.

Autouse fixtures keep the developer's machine out of the tests: no real AWS
credentials or config, no ~/.ssh/config or /etc/mint, and no network traffic
except to loopback.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.slurm_support import SlurmCluster, slurm_unavailable, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parent.parent


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and the like
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise OSError(f"test tried to reach {address!r}: only loopback is allowed in tests")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise OSError(f"test tried to reach {address!r}: only loopback is allowed in tests")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A fresh HOME, XDG config dir and /etc/mint stand-in; fake AWS credentials."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("MINT_SYSTEM_CONFIG_DIR", str(tmp_path_factory.mktemp("etc-mint")))
    for name in list(os.environ):
        if name.startswith("MINT_") and name != "MINT_SYSTEM_CONFIG_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def _source_digest() -> str:
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml"]
    for top in ("common", "mint_poll", "mint_ssh", "mint_s3job", "mint_burst"):
        files.extend(sorted((REPO / top).rglob("*.py")))
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def base_only_venv() -> Iterator[Path]:
    """The python of a venv holding `pip install .` (no extras) of the current source.

    Cached under build/ by a digest of pyproject.toml and the Python sources, so it
    is rebuilt only when they change; a file lock lets parallel runs share it.
    Tools test their "missing extra" message against it.
    """
    build = REPO / "build"
    build.mkdir(exist_ok=True)
    target = build / f"base-venv-{_source_digest()}"
    python = target / "bin" / "python"
    with open(build / "base-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            # Another run may still use a venv built from other sources: drop only old ones.
            for stale in build.glob("base-venv-*"):
                if time.time() - stale.stat().st_mtime > 3600:
                    shutil.rmtree(stale, ignore_errors=True)
            venv.EnvBuilder(with_pip=True, clear=True).create(target)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    str(REPO),
                ],
                check=True,
                env={**os.environ, "PIP_NO_INPUT": "1"},
            )
            (target / ".complete").write_text("ok\n")
    yield python


_SLURM_SKIPS: list[str] = []


@pytest.fixture
def slurm_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SlurmCluster]]:
    """Factory: `slurm_cluster(nodes=..., start=..., epilog_slurmctld=..., conf=...)` brings up a
    real one-host Slurm, points SLURM_CONF at it and tears it down after the test."""
    reason = slurm_unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the real Slurm tests, but {reason}")
        pytest.skip(reason)
    started: list[SlurmCluster] = []

    def make(**kwargs: Any) -> SlurmCluster:
        cluster = start_cluster(**kwargs)
        started.append(cluster)
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        return cluster

    yield make
    for cluster in started:
        stop_cluster(cluster.directory)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "slurm" in report.keywords and not hasattr(report, "wasxfail"):
        _SLURM_SKIPS.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped `slurm` test fails the run: CI is never green without them."""
    if _SLURM_SKIPS and os.environ.get("CI") == "true":
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SLURM_SKIPS and os.environ.get("CI") == "true":
        terminalreporter.write_line(
            f"CI=true: {len(_SLURM_SKIPS)} slurm test(s) skipped; failing the run", red=True
        )
