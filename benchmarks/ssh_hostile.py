"""mint-ssh run against a hostile remote host: peak RSS while 300 MB hostile streams come in.

    .venv/bin/python benchmarks/ssh_hostile.py [--mb 300]

A real sshd on 127.0.0.1 whose user finds a fake `tar`/`cat` first on PATH
(tests/ssh/hostile_remote.py). Each scenario sends MB megabytes where little is expected:
a GNU long-name header announcing that much name, an exit status line without a newline,
stderr alongside the result tar stream. Peak RSS is the client process's ru_maxrss
(os.wait4); a plain small run is the baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from peak_rss import wait_peak_rss
from ssh.harness import BIN

from tests.ssh.hostile import HostileRemote

LIMIT_MIB = 150
TIMEOUT = 120.0


def _config(remote: HostileRemote, root: Path) -> Path:
    known_hosts = root / "known_hosts"
    known_hosts.write_text(remote.server.known_hosts_line())
    ssh_config = root / "ssh_config"
    ssh_config.write_text(
        remote.server.ssh_config_block("node", known_hosts=known_hosts, extra="  BatchMode yes\n")
    )
    config = root / "mint-ssh.yaml"
    config.write_text(
        f'{{"ssh_config": "{ssh_config}", "state_dir": "{root / "state"}", "retry": "retry:1,1"}}'
    )
    return config


def _run(config: Path, dest: Path) -> tuple[str, float, float]:
    """(exit status, seconds, peak RSS in MiB) of one `mint-ssh run`; "hung" after TIMEOUT s."""
    argv = [str(BIN / "mint-ssh"), "--config", str(config), "-q", "run", "node",
            "--out-dir", str(dest), "--", "sh", "-c", "echo result > out.txt"]  # fmt: skip
    began = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code, peak = wait_peak_rss(child, TIMEOUT)
    return code, time.perf_counter() - began, peak


def _remove_kept_dirs(runs: Path) -> None:
    """The remote dirs the refused runs kept (the sshd is on this machine)."""
    for record in runs.glob("*.json"):
        shutil.rmtree(json.loads(record.read_text())["workdir"], ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300)
    size = parser.parse_args().mb * 1000 * 1000
    scenarios: list[tuple[str, dict[str, Any]]] = [
        ("baseline: a plain small run", {}),
        (f"tar long-name header of {size // 10**6} MB", {"long_name": size}),
        (f"exit status line of {size // 10**6} MB, no newline", {"status_flood": size}),
        (f"{size // 10**6} MB of stderr with the tar stream", {"stderr_flood": size}),
    ]
    with tempfile.TemporaryDirectory(prefix="mint-ssh-hostile-") as tmp:
        root = Path(tmp)
        remote = HostileRemote(root / "remote")
        remote.server.start()
        try:
            config = _config(remote, root)
            print(f"{'scenario':48} {'exit':>4} {'seconds':>8} {'peak RSS MiB':>13}")
            for n, (label, scenario) in enumerate(scenarios):
                remote.play(**scenario)
                code, seconds, rss = _run(config, root / f"dest{n}")
                mark = "" if rss < LIMIT_MIB else f"  OVER {LIMIT_MIB} MiB"
                print(f"{label:48} {code:>4} {seconds:>8.2f} {rss:>13.1f}{mark}")
        finally:
            remote.server.stop()
            _remove_kept_dirs(root / "state" / "runs")


if __name__ == "__main__":
    main()
