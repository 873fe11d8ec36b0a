"""The example systemd units are sandboxed, and the sandbox leaves the tools what they need.

`systemd-analyze security --offline=true` scores a unit file without a running systemd.
`systemd-analyze verify` is not used: offline it fails on every unit here because the
ExecStart binary (/opt/mint-tools/bin/...) is not installed, and the parse warnings it would
add (unknown keys, bad values) are printed by `security` too, which this test checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Callable

import pytest
import yaml

from tests.slurm_support import SlurmCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UNITS = sorted(EXAMPLES.glob("*/*.service"))
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# 5.0 on the tool's 0-10 scale; the units score 1.2-1.4 (docs/security.md).
THRESHOLD = "50"
# The example config that each tool's units run with, and its keys naming paths it writes.
WRITTEN_PATHS = {
    "mint-poll": ("mint-poll.yaml", ("calc_base", "state_dir")),
    "mint-burst": ("mint-burst.yaml", ("state_file",)),
    "mint-s3job": ("head-node.yaml", ("workdir",)),
}

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def _id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def _service_values(path: Path, key: str) -> list[str]:
    """Every value of `key` in [Service] (systemd allows a key more than once)."""
    values: list[str] = []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[Service]" and stripped.startswith(f"{key}="):
            values.append(stripped.partition("=")[2])
    return values


def _writable_roots(path: Path) -> list[PurePosixPath]:
    roots = [PurePosixPath("/var/lib") / d for d in _service_values(path, "StateDirectory")]
    for value in _service_values(path, "ReadWritePaths"):
        roots += [PurePosixPath(p.lstrip("-+")) for p in value.split()]
    return roots


@needs_systemd_analyze
@pytest.mark.parametrize("path", UNITS, ids=_id)
def test_unit_scores_at_most_five_and_parses_cleanly(path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", f"--threshold={THRESHOLD}", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert result.returncode == 0, f"{path.name} scores above 5.0: {overall}"
    # A misspelt directive or value is ignored with a warning and silently weakens the sandbox.
    assert "ignoring" not in result.stderr, result.stderr


@pytest.mark.parametrize("path", UNITS, ids=_id)
def test_daemon_unit_does_not_restart_on_config_error(path: Path) -> None:
    if not _service_values(path, "Restart"):
        pytest.skip("not restarted by systemd (a oneshot for a timer)")
    statuses = " ".join(_service_values(path, "RestartPreventExitStatus")).split()
    assert "78" in statuses, f"{path.name}: exit 78 (config error) must stop the restarts"


@pytest.mark.parametrize("path", UNITS, ids=_id)
def test_example_config_writes_only_where_the_sandbox_allows(path: Path) -> None:
    config_name, keys = WRITTEN_PATHS[path.parent.name]
    config = yaml.safe_load((path.parent / config_name).read_text(encoding="utf-8"))
    roots = _writable_roots(path)
    assert _service_values(path, "ProtectSystem") == ["strict"], path.name
    for key in keys:
        written = PurePosixPath(config[key])
        assert any(written == root or root in written.parents for root in roots), (
            f"{config_name}: {key}={written} is read-only under {path.name} (writable: {roots})"
        )


def test_writable_roots_follow_state_directory_and_read_write_paths(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text(
        "[Unit]\nDescription=ReadWritePaths=/not/service\n[Service]\n"
        "StateDirectory=x\nReadWritePaths=-/home/u/jobs /srv/a\n",
        encoding="utf-8",
    )
    assert _writable_roots(unit) == [
        PurePosixPath("/var/lib/x"),
        PurePosixPath("/home/u/jobs"),
        PurePosixPath("/srv/a"),
    ]


def test_units_are_found() -> None:
    assert {p.parent.name for p in UNITS} == set(WRITTEN_PATHS), UNITS


def _syscall_groups() -> dict[str, list[str]]:
    assert SYSTEMD_ANALYZE is not None
    listing = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.split()[0], [])
        elif line.strip() and not line.strip().startswith("#"):
            members.append(line.split()[0])
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= _expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


def allowed_syscalls(unit: Path) -> set[str]:
    """The calls a unit's SystemCallFilter= lines let through (allow list, then ~deny lists)."""
    groups = _syscall_groups()
    allowed: set[str] = set()
    denied: set[str] = set()
    for value in _service_values(unit, "SystemCallFilter"):
        if value.startswith("~"):
            denied |= _expand(value[1:].split(), groups)
        else:
            allowed |= _expand(value.split(), groups)
    return allowed - denied


def test_allowed_syscalls_apply_the_deny_lists(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / "x.service"
    unit.write_text(
        "[Service]\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n",
        encoding="utf-8",
    )
    allowed = allowed_syscalls(unit)
    assert {"openat", "connect", "execve", "clone3"} <= allowed
    assert not {"setuid", "setrlimit", "sched_setaffinity", "mount"} & allowed


_TRACED = re.compile(r"^\d+ +(\w+)\(", re.MULTILINE)


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@needs_systemd_analyze
def test_slurm_commands_stay_inside_the_filter_of_burst_and_s3job_units(
    slurm_cluster: Callable[..., SlurmCluster], tmp_path: Path
) -> None:
    """The Slurm client calls of mint-burst and mint-s3job dispatch, traced on the real
    Slurm: every system call is one the units allow, and none maps memory writable and
    executable (MemoryDenyWriteExecute=yes). systemd is not PID 1 here, so the units
    themselves cannot be started; this is the part of their sandbox a trace can check."""
    cluster = slurm_cluster(nodes=("c1@cloud", "c2@cloud"), start=("c1",))
    commands = [
        ["squeue", "--all", "--noheader"],
        ["sinfo", "--noheader"],
        ["scontrol", "show", "nodes"],
        ["scontrol", "update", "NodeName=c2", "State=DRAIN", "Reason=mint-burst"],
        ["sbatch", f"--chdir={cluster.work}", f"--output={cluster.work}/%j.out", "--wrap=true"],
        ["scancel", "--quiet", "4294967290"],
    ]
    used: set[str] = set()
    for number, argv in enumerate(commands):
        trace = tmp_path / f"trace.{number}"
        cluster.run("strace", "-f", "-qq", "-o", str(trace), *argv)
        text = trace.read_text(encoding="utf-8")
        used |= set(_TRACED.findall(text))
        assert "PROT_WRITE|PROT_EXEC" not in text, argv
        assert not re.search(r"^\d+ +p?k?e?y?_?mprotect\(.*PROT_EXEC", text, re.MULTILINE), argv
    assert {"connect", "execve"} <= used, "strace recorded nothing useful"
    for unit in UNITS:
        if unit.parent.name in ("mint-burst", "mint-s3job"):
            outside = used - allowed_syscalls(unit)
            assert not outside, f"{unit.name} would refuse {sorted(outside)} to the Slurm commands"
