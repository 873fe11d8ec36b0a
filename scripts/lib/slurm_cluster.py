#!/usr/bin/env python3
"""A real one-host Slurm cluster in a directory of its own, for tests and the demo.

Debian's slurmctld, slurmd and munged, started by hand (apt's policy-rc.d keeps
services from starting): a private munged socket and key, one slurmd per node on
a free loopback port chosen at run time, pid files for every daemon. Nothing is
ever killed by name: every daemon is started with MINT_SLURM_CLUSTER=<dir> in its
environment, which the job steps it forks (slurmstepd) inherit, and teardown kills
exactly the processes carrying that marker and their descendants.

    slurm_cluster.py up DIR [--node NAME[@PARTITION]]... [--start NAME,...]
                            [--epilog-slurmctld PATH] [--conf 'Key=Value']...
    slurm_cluster.py down DIR
    slurm_cluster.py node-start DIR NAME     # a "VM" boots: its slurmd starts
    slurm_cluster.py node-stop DIR NAME      # the "VM" goes away: slurmd and its jobs killed
    slurm_cluster.py node-kill DIR NAME      # the "VM" crashes: SIGKILL, nothing reports back
    slurm_cluster.py ctld-stop DIR | ctld-start DIR
    slurm_cluster.py available               # exit 0 when the daemons can run here

After `up`, DIR/slurm.conf is the configuration (export SLURM_CONF=DIR/slurm.conf).
Only the standard library is used, so the script runs without the project's venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

MARKER = "MINT_SLURM_CLUSTER"
NODE_MARKER = "MINT_SLURM_NODE"
DAEMONS = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch")
DEFAULT_NODES = ("c1@cloud", "c2@cloud", "c3@cloud", "c4@cloud")
READY_TIMEOUT = 20.0


def missing_programs() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name, path=_search_path()) is None]


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _program(name: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        raise SystemExit(
            f"slurm_cluster: {name} not found (apt-get install slurmctld slurmd munge)"
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _parse_nodes(specs: list[str]) -> dict[str, str]:
    nodes: dict[str, str] = {}
    for spec in specs:
        name, _, partition = spec.partition("@")
        nodes[name] = partition or "cloud"
    return nodes


def write_conf(
    directory: Path, nodes: dict[str, str], epilog: str | None, extra: list[str]
) -> dict[str, object]:
    ctld_port, *node_ports = _free_ports(1 + len(nodes))
    ports = dict(zip(nodes, node_ports))
    lines = [
        "ClusterName=minttest",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={directory}/munge.sock",
        f"StateSaveLocation={directory}/state",
        f"SlurmdSpoolDir={directory}/spool/%n",
        f"SlurmctldPidFile={directory}/slurmctld.pid",
        f"SlurmdPidFile={directory}/slurmd-%n.pid",
        f"SlurmctldLogFile={directory}/slurmctld.log",
        f"SlurmdLogFile={directory}/slurmd-%n.log",
        # No cgroups: the test machine may be a container without a writable cgroup tree.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "MpiDefault=none",
        # A stopped controller must fail a command in ~2 s, a dead node be seen in seconds.
        "MessageTimeout=2",
        "SlurmdTimeout=5",
        "ReturnToService=0",
        "SchedulerParameters=sched_interval=2",
    ]
    if epilog:
        lines.append(f"EpilogSlurmctld={epilog}")
    lines.extend(extra)
    for name, port in ports.items():
        lines.append(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port}"
            " CPUs=1 RealMemory=100 State=UNKNOWN"
        )
    partitions: dict[str, list[str]] = {}
    for name, partition in nodes.items():
        partitions.setdefault(partition, []).append(name)
    for index, (partition, members) in enumerate(partitions.items()):
        default = " Default=YES" if index == 0 else ""
        lines.append(
            f"PartitionName={partition} Nodes={','.join(members)}{default}"
            " MaxTime=INFINITE State=UP"
        )
    (directory / "slurm.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info: dict[str, object] = {"ctld_port": ctld_port, "node_ports": ports, "nodes": nodes}
    (directory / "cluster.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def _environment(directory: Path, node: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    env[MARKER] = str(directory)
    if node:
        env[NODE_MARKER] = node
    return env


def _start(argv: list[str], directory: Path, node: str = "") -> None:
    # slurmd hangs at start-up with fds 0-2 closed: give every daemon real ones.
    with open(os.devnull, "rb") as null_in, open(directory / "daemons.out", "ab") as out:
        done = subprocess.run(
            argv,
            stdin=null_in,
            stdout=out,
            stderr=out,
            env=_environment(directory, node),
            timeout=30,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"slurm_cluster: {' '.join(argv)} exited with status {done.returncode}")


def start_munged(directory: Path) -> None:
    key = directory / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
    _start(
        [
            _program("munged"),
            "--force",
            f"--socket={directory}/munge.sock",
            f"--key-file={key}",
            f"--log-file={directory}/munged.log",
            f"--pid-file={directory}/munged.pid",
            f"--seed-file={directory}/munged.seed",
        ],
        directory,
    )


def start_ctld(directory: Path) -> None:
    _start([_program("slurmctld"), "-f", str(directory / "slurm.conf")], directory)
    _wait(lambda: _ping(directory), "slurmctld to answer", directory)


def start_node(directory: Path, name: str) -> None:
    (directory / "spool" / name).mkdir(parents=True, exist_ok=True)
    _start([_program("slurmd"), "-f", str(directory / "slurm.conf"), "-N", name], directory, name)


def _ping(directory: Path) -> bool:
    done = subprocess.run(
        [_program("scontrol"), "ping"],
        env=_environment(directory),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return done.returncode == 0 and "UP" in done.stdout


def node_states(directory: Path) -> dict[str, str]:
    done = subprocess.run(
        [_program("sinfo"), "--noheader", "--Node", "--format=%N|%T"],
        env=_environment(directory),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, state = line.partition("|")
        states[name.strip()] = state.strip()
    return states


def _wait(
    ready: Callable[[], bool], what: str, directory: Path, timeout: float = READY_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise SystemExit(f"slurm_cluster: timed out waiting for {what} (logs in {directory})")


def wait_idle(directory: Path, names: list[str]) -> None:
    def all_idle() -> bool:
        states = node_states(directory)
        return all(states.get(n) == "idle" for n in names)

    _wait(all_idle, f"nodes {', '.join(names)} to be idle", directory)


def up(
    directory: Path, nodes: dict[str, str], start: list[str], epilog: str | None, extra: list[str]
) -> None:
    directory = directory.resolve()  # slurmctld retries for 60 s on a relative -f path
    for sub in ("state", "spool"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    write_conf(directory, nodes, epilog, extra)
    start_munged(directory)
    _wait(lambda: (directory / "munge.sock").exists(), "munged's socket", directory)
    start_ctld(directory)
    for name in start:
        start_node(directory, name)
    wait_idle(directory, start)


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, environment) of every process we can read."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (parent, environ)
    return table


def _marked(directory: Path, node: str = "") -> set[int]:
    """Processes started for this cluster (and node), with all their descendants."""
    table = _processes()
    wanted = f"{MARKER}={directory}".encode()
    node_wanted = f"{NODE_MARKER}={node}".encode()
    roots = {
        pid
        for pid, (_, environ) in table.items()
        if wanted in environ.split(b"\0") and (not node or node_wanted in environ.split(b"\0"))
    }
    roots.discard(os.getpid())
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in table.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _kill(pids: set[int], signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL)) -> None:
    for sig in signals:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = {p for p in pids if _alive(p)}
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        if f"{MARKER}={path.parent}".encode() in environ.split(b"\0"):
            _kill({pid})


def node_stop(directory: Path, name: str) -> None:
    _kill_pidfile(directory / f"slurmd-{name}.pid")
    _kill(_marked(directory, name))


def node_kill(directory: Path, name: str) -> None:
    # SIGTERM lets slurmstepd report its job as failed (JobLaunchFailure, no requeue);
    # a vanished VM says nothing, so the controller sees a node failure and requeues.
    _kill(_marked(directory, name), (signal.SIGKILL,))


def ctld_stop(directory: Path) -> None:
    _kill_pidfile(directory / "slurmctld.pid")


def down(directory: Path) -> None:
    # A test cluster's state is thrown away: no need for a graceful shutdown.
    pids = _marked(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument("directory", type=Path)
    up_parser.add_argument("--node", action="append", default=[])
    up_parser.add_argument("--start", default="")
    up_parser.add_argument("--epilog-slurmctld")
    up_parser.add_argument("--conf", action="append", default=[])
    for name in ("down", "ctld-stop", "ctld-start"):
        sub.add_parser(name).add_argument("directory", type=Path)
    for name in ("node-start", "node-stop", "node-kill"):
        node_parser = sub.add_parser(name)
        node_parser.add_argument("directory", type=Path)
        node_parser.add_argument("node")
    sub.add_parser("available")
    args = parser.parse_args(argv)
    if args.command == "available":
        missing = missing_programs()
        if missing:
            sys.stderr.write(f"missing: {' '.join(missing)}\n")
            return 1
        return 0
    directory = args.directory.resolve()
    if args.command == "up":
        nodes = _parse_nodes(args.node or list(DEFAULT_NODES))
        start = [n for n in args.start.split(",") if n]
        up(directory, nodes, start, args.epilog_slurmctld, args.conf)
    elif args.command == "down":
        down(directory)
    elif args.command == "ctld-stop":
        ctld_stop(directory)
    elif args.command == "ctld-start":
        start_ctld(directory)
    elif args.command == "node-start":
        start_node(directory, args.node)
    elif args.command == "node-stop":
        node_stop(directory, args.node)
    elif args.command == "node-kill":
        node_kill(directory, args.node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
