"""mint-poll: the agent's overhead per calculation with the Slurm batch runner against the
local runner, in the same run (figures for docs/benchmarks.md).

    python benchmarks/poll_batch_overhead.py [--runs 10] [--watch-interval 1]

Needs root and Debian's Slurm packages (like the `slurm` tests): brings up a one-host
cluster (scripts/lib/slurm_cluster.py) with one started node c1 in partition `cloud`, and
the rehearsal server (`mint-poll serve`) as a separate process. For each runner, RUNS
times (after one warm-up): the workflow side registers a calculation whose command stamps
its own start and end (`date +%s.%N`), the agent (in this process) polls once and takes
it through the whole sequence (submit, wait for the job, deliver); the time from
registration to `got return`, minus the command's own run time, is the overhead. With the
batch runner it holds sbatch, the scheduler's start of the job and the looks at it every
`batch.watch_interval`. Prints medians, means and maxima; asserts nothing. Everything
lives in a /tmp dir removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mint_poll.agent import Agent
from mint_poll.api import DistcompApi
from mint_poll.config import build_api, load_poll_config
from mint_poll.state import CalcStore

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "scripts" / "lib" / "slurm_cluster.py"
BIN = Path(sys.executable).parent
TOKEN = "b" * 64
SITE = "bench"
STAMP = 'date +%s.%N >> "$CALC_DIR/stamps"; true; date +%s.%N >> "$CALC_DIR/stamps"'


@contextmanager
def cluster(directory: Path) -> Iterator[None]:
    subprocess.run(
        [sys.executable, str(CLUSTER), "up", str(directory), "--node", "c1@cloud", "--start", "c1"],
        check=True,
        timeout=120,
    )
    os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
    try:
        yield
    finally:
        subprocess.run([sys.executable, str(CLUSTER), "down", str(directory)], check=False)


@contextmanager
def broker(work: Path) -> Iterator[str]:
    token_file = work / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    process = subprocess.Popen(
        [
            *(str(BIN / "mint-poll"), "-q", "serve", "--port", "0"),
            *("--site", f"{SITE}=stamp.sh", "--token-file", str(token_file)),
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


def make_agent(work: Path, url: str, name: str, **settings: Any) -> Agent:
    home = work / name
    (home / "calc").mkdir(parents=True)
    path = home / "mint-poll.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "url": url.rsplit("/mi-distcomp-api", 1)[0],
                "site_id": SITE,
                "token_file": str(work / "token"),
                "calc_base": str(home / "calc"),
                "state_dir": str(home / "state"),
                "commands": {"stamp.sh": ["/bin/sh", "-c", STAMP]},
                **settings,
            }
        )
    )
    config = load_poll_config(path)
    store = CalcStore(config.state_dir)
    store.ensure()
    return Agent(config, build_api(config), store)


def measure(agent: Agent, workflow: DistcompApi, runs: int, results: Path) -> list[float]:
    overheads = []
    for _ in range(runs + 1):
        started = time.time()
        accept_id = workflow.add_calcinfo("stamp.sh", SITE)
        workflow.allow_wait_calc(accept_id)
        outcome = agent.poll_once()
        assert outcome.record is not None and outcome.record.outcome == "completed", outcome
        assert workflow.calc_progress(accept_id) == "got return"
        ended = time.time()
        begin, end = map(float, Path(outcome.record.workdir, "stamps").read_text().split())
        overheads.append(ended - started - (end - begin))
        workflow.get_calc_result(accept_id, results / accept_id)
    return overheads[1:]  # the first one warms up connections and imports


def show(name: str, samples: list[float]) -> None:
    print(
        f"  {name}: median {statistics.median(samples) * 1000:.0f} ms, mean"
        f" {statistics.mean(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--watch-interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mint-poll-batch-", dir="/tmp") as tmp:
        work = Path(tmp)
        with cluster(work / "slurm"), broker(work) as url, DistcompApi(url, TOKEN) as workflow:
            local = make_agent(work, url, "local")
            batch = make_agent(
                work,
                url,
                "slurm",
                runner="slurm",
                batch={"partition": "cloud", "watch_interval": args.watch_interval},
            )
            local_samples = measure(local, workflow, args.runs, work / "results")
            batch_samples = measure(batch, workflow, args.runs, work / "results")
    print(
        f"agent overhead per calculation over {args.runs} runs (registration -> got return,"
        f" minus the command's own run time), watch_interval {args.watch_interval:g} s,"
        f" load average {os.getloadavg()[0]:.1f}:"
    )
    show("local runner", local_samples)
    show("slurm runner", batch_samples)


if __name__ == "__main__":
    main()
