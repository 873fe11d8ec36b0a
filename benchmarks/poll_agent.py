"""Benchmarks of the mint-poll agent on loopback (figures for docs/benchmarks.md).

    python benchmarks/poll_agent.py overhead [--runs 30]
    python benchmarks/poll_agent.py transfer [--size-mib 1024]

`overhead`: registration -> `got return` for a trivial command (/bin/true),
the poll interval excluded: the workflow side registers and allows, the
agent (in this process) polls once and walks the whole sequence. The broker
runs as a separate `mint-poll serve` process, as the real server would.

`transfer`: one calculation with a SIZE parameter file whose command copies it
to a SIZE result file, run by `mint-poll once` as a separate process under
/usr/bin/time -v (peak RSS of the agent alone). The command stamps the time
when it starts and ends, so receiving (launch -> command start) and sending
(command end -> exit) are timed separately; file data MB/s = SIZE / phase.
Large files are created in a temporary directory and deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from mint_poll.agent import Agent
from mint_poll.api import DistcompApi
from mint_poll.config import build_api, load_poll_config
from mint_poll.state import StateStore

BIN = Path(sys.executable).parent
TOKEN = "b" * 64
SITE = "bench"


@contextmanager
def broker(work: Path, commands: str) -> Iterator[str]:
    token_file = work / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    process = subprocess.Popen(
        [
            str(BIN / "mint-poll"),
            "-q",
            "serve",
            "--port",
            "0",
            "--site",
            f"{SITE}={commands}",
            "--token-file",
            str(token_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def write_config(work: Path, url: str, commands: dict[str, object]) -> Path:
    (work / "calc").mkdir(exist_ok=True)
    path = work / "mint-poll.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "url": url.rsplit("/mi-distcomp-api", 1)[0],
                "site_id": SITE,
                "token_file": str(work / "token"),
                "calc_base": str(work / "calc"),
                "state_dir": str(work / "state"),
                "read_timeout": 600,
                "commands": commands,
            }
        )
    )
    return path


def overhead(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mint-poll-bench-") as tmp:
        work = Path(tmp)
        with broker(work, "true.sh") as url:
            config = load_poll_config(write_config(work, url, {"true.sh": "/bin/true"}))
            store = StateStore(config.state_dir)
            store.ensure()
            agent = Agent(config, build_api(config), store)
            workflow = DistcompApi(url, TOKEN)
            samples = []
            for _ in range(runs + 1):
                started = time.perf_counter()
                accept_id = workflow.add_calcinfo("true.sh", SITE)
                workflow.allow_wait_calc(accept_id)
                outcome = agent.poll_once()
                assert outcome.record is not None and outcome.record.step == "done"
                assert workflow.calc_progress(accept_id) == "got return"
                samples.append(time.perf_counter() - started)
                workflow.get_calc_result(accept_id, work / "results")
            samples = samples[1:]  # the first one warms up connections and imports
    print(f"overhead per calculation over {runs} runs (registration -> got return):")
    print(
        f"  median {statistics.median(samples) * 1000:.0f} ms, mean"
        f" {statistics.mean(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
    )


def transfer(size_mib: int) -> None:
    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="mint-poll-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        source = work / "input.bin"
        with open(source, "wb") as handle:
            block = os.urandom(1024 * 1024)
            for _ in range(size_mib):
                handle.write(block)
        stamps = work / "stamps"
        script = (
            f"date +%s.%N >> {stamps}; cp input.bin result.bin; rm input.bin;"
            f" date +%s.%N >> {stamps}"
        )
        with broker(work, "copy.sh") as url:
            config = write_config(work, url, {"copy.sh": ["/bin/sh", "-c", script]})
            with DistcompApi(url, TOKEN) as workflow:
                accept_id = workflow.add_calcinfo(
                    "copy.sh",
                    SITE,
                    parameter_files={"input.bin": source},
                    result_names=["result.bin"],
                )
                workflow.allow_wait_calc(accept_id)
                source.unlink()
                launched = time.time()
                agent = subprocess.run(
                    [
                        "/usr/bin/time",
                        "-v",
                        str(BIN / "mint-poll"),
                        "-q",
                        "--config",
                        str(config),
                        "once",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                ended = time.time()
                command_start, command_end = map(float, stamps.read_text().split())
                shutil.rmtree(work / "calc")
                fetched = workflow.get_calc_result(accept_id, work / "results")
                received = next(f for f in fetched.files if f.name == "result.bin")
                assert received.size == size, received
                shutil.rmtree(work / "results")
    rss_kib = int(_time_v(agent.stderr, r"Maximum resident set size \(kbytes\)"))
    cpu = float(_time_v(agent.stderr, r"User time \(seconds\)")) + float(
        _time_v(agent.stderr, r"System time \(seconds\)")
    )
    receive = command_start - launched
    send = ended - command_end
    mb = size / 1e6
    print(f"transfer of a {size_mib} MiB parameter file and a {size_mib} MiB result file:")
    print(f"  agent peak RSS {rss_kib / 1024:.0f} MiB, agent CPU time {cpu:.1f} s")
    print(f"  whole run {ended - launched:.2f} s, load average {os.getloadavg()[0]:.1f}")
    print(f"  receive (process start -> command start) {receive:.2f} s = {mb / receive:.0f} MB/s")
    print(f"  send (command end -> process exit) {send:.2f} s = {mb / send:.0f} MB/s")


def _time_v(report: str, label: str) -> str:
    match = re.search(label + r": ([\d.]+)", report)
    if match is None:
        raise SystemExit(f"/usr/bin/time -v printed no {label!r}")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("overhead").add_argument("--runs", type=int, default=30)
    sub.add_parser("transfer").add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.runs)
    else:
        transfer(args.size_mib)


if __name__ == "__main__":
    main()
