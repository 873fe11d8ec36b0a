"""The one-file mint-poll bundle runs with a bare system python3 and an empty environment.

Building a bundle downloads wheels from the package index, and tests talk to 127.0.0.1
only: so `./scripts/test` builds it before pytest starts (into build/test-bundle) and
these tests run what it built. Without that bundle they skip, except under CI=true,
where they fail.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mint_poll.server import Broker, DistcompServer

REPO = Path(__file__).resolve().parent.parent
BUNDLE_DIR = REPO / "build" / "test-bundle"
SYSTEM_PYTHON = Path("/usr/bin/python3")
BARE_ENV = {"PATH": "/usr/bin:/bin"}
TOKEN = "0123456789abcdef" * 4

pytestmark = pytest.mark.slow


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must test the bundle, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def poll_bundle() -> Path:
    if not SYSTEM_PYTHON.exists():
        _unavailable(f"{SYSTEM_PYTHON} is missing")
    built = sorted(BUNDLE_DIR.glob("mint-poll-*.pex"))
    if not built:
        _unavailable(
            f"no bundle in {BUNDLE_DIR}: ./scripts/test builds it, or run"
            f" ./scripts/bundle poll --python {SYSTEM_PYTHON} --out-dir {BUNDLE_DIR}"
        )
    return built[-1]


def run_bare(bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SYSTEM_PYTHON), str(bundle), *args],
        env=BARE_ENV,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def server() -> Iterator[DistcompServer]:
    with DistcompServer(Broker({"nims-dev": ["solve.sh"]}), TOKEN) as running:
        yield running


def write_config(directory: Path, url: str) -> Path:
    token = directory / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (directory / "calc").mkdir()
    config = directory / "mint-poll.yaml"
    config.write_text(
        f"url: {url}\n"
        "site_id: nims-dev\n"
        f"token_file: {token}\n"
        f"calc_base: {directory / 'calc'}\n"
        f"state_dir: {directory / 'state'}\n"
        "min_free_mb: 1\n"
        "commands:\n"
        "  solve.sh: [/bin/true]\n"
    )
    return config


def test_bundle_is_named_by_version_with_its_checksum_beside_it(poll_bundle: Path) -> None:
    assert poll_bundle.name == "mint-poll-0.1.0.pex"
    recorded = Path(f"{poll_bundle}.sha256").read_text().split()
    assert recorded == [hashlib.sha256(poll_bundle.read_bytes()).hexdigest(), poll_bundle.name]


def test_help_runs_from_the_bundle_with_an_empty_environment(
    poll_bundle: Path, tmp_path: Path
) -> None:
    result = run_bare(poll_bundle, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: mint-poll" in result.stdout
    for command in ("check", "once", "run", "status"):
        assert f"  {command} " in result.stdout


def test_check_passes_against_a_loopback_broker(
    poll_bundle: Path, server: DistcompServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, server.url)
    result = run_bare(poll_bundle, "--config", str(config), "check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(line.split("\t")[:2] for line in result.stdout.splitlines()[1:])
    assert rows["api"] == "PASS"
    assert rows["token"] == "PASS"
    assert "FAIL" not in rows.values()


def test_check_fails_when_the_broker_is_gone(poll_bundle: Path, tmp_path: Path) -> None:
    with DistcompServer(Broker({"nims-dev": ["solve.sh"]}), TOKEN) as gone:
        url = gone.url
    config = write_config(tmp_path, url)
    result = run_bare(poll_bundle, "--config", str(config), "check", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = dict(line.split("\t")[:2] for line in result.stdout.splitlines()[1:])
    assert rows["tcp"] == "FAIL"
