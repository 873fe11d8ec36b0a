"""Peak RSS of the mint-poll agent while a hostile server sends it 300 MB poisoned replies.

Runs the rehearsal server in this process, in hostile mode on `calc-params` (each
scenario a 300 MB reply streamed lazily), and `mint-poll once` as a child process
for each scenario; the child's own peak RSS comes from wait4(2). Also reports how
many bytes the server managed to send before the agent refused and hung up. The
agent must refuse each one, report the calculation abnormal, and stay under
150 MiB.

    .venv/bin/python benchmarks/poll_hostile.py              # 300 MB per scenario
    .venv/bin/python benchmarks/poll_hostile.py --mb 50      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mint_poll.api import DistcompApi
from mint_poll.server import (
    Broker,
    DistcompServer,
    Hostile,
    deep_nesting,
    huge_number,
    many_strings,
    many_values,
)

BIN = Path(sys.executable).parent
TOKEN = "0123456789abcdef" * 4
SITE = "bench"
MB = 1000 * 1000
LIMIT_MIB = 150


def scenarios(size: int) -> dict[str, Hostile]:
    return {
        "many 1 MB strings": many_strings(size // MB, MB),
        "one number literal": huge_number(size),
        "deep nesting": deep_nesting(size),
        "many short strings": many_strings(size // 100, 90),
        "many numbers": many_values(size // 2),
    }


def counted(scenario: Hostile, sent: list[int]) -> Hostile:
    """The same scenario, counting the bytes the server gets to write."""
    assert scenario.body is not None
    body = scenario.body

    def chunks() -> Iterator[bytes]:
        for chunk in body():
            sent[0] += len(chunk)
            yield chunk

    return Hostile(chunks, scenario.status, scenario.process, scenario.delay)


def write_config(work: Path, url: str) -> Path:
    token = work / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (work / "calc").mkdir(exist_ok=True)
    config = {
        "url": url,
        "site_id": SITE,
        "token_file": str(token),
        "calc_base": str(work / "calc"),
        "state_dir": str(work / "state"),
        "retry": {"max_attempts": 1},
        "commands": {"run.sh": ["/bin/true"]},
    }
    path = work / "mint-poll.yaml"
    path.write_text(json.dumps(config))
    return path


def run_once(config: Path) -> tuple[int, float, float]:
    """`mint-poll once`: (exit status, peak RSS in MiB, seconds)."""
    start = time.monotonic()
    child = subprocess.Popen(
        [str(BIN / "mint-poll"), "-q", "--config", str(config), "once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss / 1024, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of each hostile reply in MB")
    args = parser.parse_args()
    size = args.mb * MB
    print(f"# {datetime.now().astimezone().isoformat(timespec='seconds')}, {args.mb} MB each")
    print("| scenario | agent exit | server bytes sent | peak RSS (MiB) | seconds | server says |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    broker = Broker({SITE: ["run.sh"]})
    with tempfile.TemporaryDirectory() as tmp, DistcompServer(broker, TOKEN) as server:
        config = write_config(Path(tmp), server.url)
        with DistcompApi(server.url, TOKEN) as workflow:
            baseline = workflow.add_calcinfo("run.sh", SITE)
            workflow.allow_wait_calc(baseline)
            code, rss, seconds = run_once(config)
            status = workflow.calc_status(baseline)
            print(
                f"| (none: a normal calculation) | {code} | - | {rss:.1f} | {seconds:.1f}"
                f" | {status} |"
            )
            for name, scenario in scenarios(size).items():
                accept_id = workflow.add_calcinfo("run.sh", SITE)
                workflow.allow_wait_calc(accept_id)
                sent = [0]
                server.hostile("calc-params", counted(scenario, sent))
                code, rss, seconds = run_once(config)
                status = workflow.calc_status(accept_id)
                worst = max(worst, rss)
                print(
                    f"| {name} | {code} | {sent[0] / MB:.1f} MB | {rss:.1f} | {seconds:.1f}"
                    f" | {status} |"
                )
    print(f"\nworst peak RSS {worst:.1f} MiB (limit {LIMIT_MIB} MiB)")
    return 0 if worst < LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
