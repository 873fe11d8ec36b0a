"""mint-burst: `once` against a real Slurm with 1,000 pending jobs and all nodes defined.

    python benchmarks/burst_once_slurm.py [--nodes 16] [--jobs 1000] [--static 0] [--runs 7]

Needs root and Debian's Slurm packages (like the `slurm` tests). Brings up a one-host
cluster (scripts/lib/slurm_cluster.py) with NODES burst nodes c1.. in partition `cloud`,
all in slurm.conf and hosts.json, none started, plus STATIC always-on nodes s1.. in the
same partition (started, not in hosts.json); submits JOBS separate one-node jobs (each
its own squeue line; real demand, since no burst node is up to run them); then times, as
the timer would run them:

- `mint-burst once --dry-run`  (reads the provider's list and the scheduler, decides);
- `mint-burst once` from an empty state (launches a node per free host name, in parallel,
  through a command provider whose create only records the "VM");
- `mint-burst once` again with those nodes booting (the steady step: nothing to launch);

and each scheduler command the Slurm adapter runs for one step (found by running the
adapter itself with a timing runner, so the list follows the adapter). Medians of RUNS.
Prints the figures; asserts nothing. Everything lives in a /tmp dir removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mint_burst.scheduler import CommandRunner
from mint_burst.slurm import SlurmScheduler
from mint_common.proc import run_command

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "scripts" / "lib" / "slurm_cluster.py"
TOOL = Path(sys.executable).parent / "mint-burst"

PROVIDER = """\
import fcntl, json, os, sys, uuid
db_path = {db!r}
request = json.load(sys.stdin)
with open(db_path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    db = json.load(open(db_path)) if os.path.exists(db_path) else {{}}
    if request["action"] == "create":
        vm = "vm-" + uuid.uuid4().hex[:8]
        db[vm] = {{"node": request["node"], "ip": request["ip"]}}
        answer = {{"instance_id": vm}}
    elif request["action"] == "list":
        answer = {{"instances": [{{"instance_id": k, "state": "running", **v}}
                                for k, v in db.items()]}}
    else:
        for vm in request["instance_ids"]:
            db.pop(vm, None)
        answer = {{}}
    json.dump(db, open(db_path, "w"))
print(json.dumps(answer))
"""


def cluster(*args: str) -> None:
    subprocess.run([sys.executable, str(CLUSTER), *args], check=True, timeout=120)


def submit(env: dict[str, str], work: Path, count: int) -> float:
    """Submit `count` one-node jobs with 4 sbatch processes at a time; return the seconds."""
    argv = [
        "sbatch",
        "--parsable",
        "--quiet",
        "-N1",
        f"--chdir={work}",
        "--output=/dev/null",
        "--wrap=sleep 60",
    ]
    started = time.monotonic()

    def one(_: int) -> None:
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def write_config(directory: Path, nodes: int) -> Path:
    hosts = {f"10.0.{i // 250}.{i % 250 + 1}": f"c{i + 1}" for i in range(nodes)}
    (directory / "hosts.json").write_text(json.dumps(hosts))
    script = directory / "provider.py"
    script.write_text(PROVIDER.format(db=str(directory / "vms.json")))
    command = [sys.executable, str(script)]
    config = directory / "mint-burst.yaml"
    config.write_text(
        json.dumps(
            {
                "queue": "cloud",
                "cluster": "bench",
                "hosts_file": str(directory / "hosts.json"),
                "state_file": str(directory / "state" / "state.json"),
                "boot_timeout": 3600,
                "provider": "command",
                "command": {
                    "create": [*command, "create"],
                    "list": [*command, "list"],
                    "delete": [*command, "delete"],
                },
            }
        )
    )
    return config


def reset(directory: Path) -> None:
    for name in ("vms.json", "state"):
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def time_once(env: dict[str, str], config: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run(
        [str(TOOL), "once", "--json", *extra, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"mint-burst once {' '.join(extra)} failed: {done.stderr.strip()}")
    return elapsed, json.loads(done.stdout)


def scheduler_commands(runs: int) -> list[tuple[str, float, int]]:
    """(command, median seconds, output bytes) of each command one adapter step runs."""
    samples: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}

    def timed(argv: Sequence[str], *, timeout: float) -> Any:
        started = time.monotonic()
        result = run_command(argv, timeout=timeout)
        key = " ".join(argv)
        samples.setdefault(key, []).append(time.monotonic() - started)
        sizes[key] = len(result.stdout)
        return result

    scheduler = SlurmScheduler("cloud", CommandRunner(timeout=120, runner=timed))
    for _ in range(runs):
        scheduler.get_status()
    return [(k, statistics.median(v), sizes[k]) for k, v in samples.items()]


def describe(samples: list[float]) -> str:
    shown = ", ".join(f"{s:.2f}" for s in samples)
    return f"median {statistics.median(samples):.3f} s  (samples {shown})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--static", type=int, default=0, help="always-on nodes beside them")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root and Debian's slurmctld, slurmd, slurm-client and munge")
    directory = Path(tempfile.mkdtemp(prefix="mbench-", dir="/tmp"))
    try:
        static = [f"s{i + 1}" for i in range(args.static)]
        cluster(
            "up",
            str(directory / "slurm"),
            *[f"--node=c{i + 1}@cloud" for i in range(args.nodes)],
            *[f"--node={n}@cloud" for n in static],
            f"--start={','.join(static)}",
        )
        env = {**os.environ, "SLURM_CONF": str(directory / "slurm" / "slurm.conf")}
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        work = directory / "work"
        work.mkdir()
        config = write_config(directory, args.nodes)
        version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout
        print(
            f"{version.strip()}, partition cloud: {args.nodes} burst nodes (none started),"
            f" {args.static} static nodes (started)"
        )
        seconds = submit(env, work, args.jobs)
        print(
            f"submitted {args.jobs} one-node jobs in {seconds:.1f} s"
            f" ({args.jobs / seconds:.0f} jobs/s, 4 sbatch at a time)"
        )
        if args.static:
            # The static nodes take some jobs; wait until the controller has placed them.
            time.sleep(3)
        pending = subprocess.run(
            ["squeue", "--noheader", "--states=PENDING", "--format=%i"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split()
        print(f"pending jobs: {len(pending)}")

        dry = [time_once(env, config, "--dry-run") for _ in range(args.runs)]
        print(f"\nmint-burst once --dry-run          : {describe([t for t, _ in dry])}")
        print(f"  it would: {len(dry[0][1]['actions'])} action(s), e.g. {dry[0][1]['actions'][:1]}")
        first: list[float] = []
        for _ in range(args.runs):
            reset(directory)
            elapsed, report = time_once(env, config)
            first.append(elapsed)
        print(f"mint-burst once (launches)          : {describe(first)}")
        print(f"  done: {len(report['done'])} result(s), e.g. {report['done'][:1]}")
        steady = [time_once(env, config)[0] for _ in range(args.runs)]
        print(f"mint-burst once (nodes booting)     : {describe(steady)}")

        print(f"\nscheduler commands of one step (median of {args.runs}):")
        for command, median, size in scheduler_commands(args.runs):
            print(f"  {median * 1000:7.1f} ms  {size:7d} bytes  {command}")
        started = time.monotonic()
        subprocess.run([str(TOOL), "--version"], capture_output=True, check=True)
        print(f"  for scale, `mint-burst --version`: {(time.monotonic() - started) * 1000:.0f} ms")
    finally:
        cluster("down", str(directory / "slurm"))
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
