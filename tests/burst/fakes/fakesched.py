"""A fake Slurm/Torque command set for tests and the demo, driven by a small JSON state file.

Invoked as `fakesched.py <squeue|sinfo|scontrol|qstat|pbsnodes> ARGS...` by the
wrapper scripts next to it; the state file is $FAKE_SCHED_STATE. It accepts
only the options mint-burst uses and answers in the real tools' formats (see
../recorded/ for the samples they follow). The state file may also ask a
command to fail ("fail": {"squeue": {"rc": 1, "stderr": "..."}}), to print
garbage ("garbage": {"squeue": "..."}) or to be slow ("delay": {"squeue": 3}).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ["FAKE_SCHED_STATE"])


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def load() -> dict[str, Any]:
    return json.loads(STATE.read_text())


def save(state: dict[str, Any]) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, STATE)


def options(args: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            found[key] = value
        elif arg.startswith("--"):
            found[arg[2:]] = ""
    return found


def node_string(node: dict[str, Any]) -> str:
    return node["state"] + node.get("flags", "")


def squeue(state: dict[str, Any], args: list[str]) -> int:
    opts = options(args)
    if "version" in opts:
        say(f"slurm {state.get('version', '23.02.7')}")
        return 0
    partition = opts.get("partition")
    if partition is not None and partition not in state.get("partitions", ["cloud"]):
        err("squeue: error: Invalid partition name specified")
        return 1
    nodelist = opts.get("nodelist")
    wanted_states = set(opts["states"].split(",")) if "states" in opts else None
    fmt = opts.get("format", "")
    for job in state.get("jobs", []):
        if partition is not None and job.get("partition", "cloud") != partition:
            continue
        if nodelist is not None and nodelist not in job.get("nodelist", "").split(","):
            continue
        if wanted_states is not None and job["state"] not in wanted_states:
            continue
        if fmt == "%i":
            say(job["id"])
        elif fmt == "%i|%T|%D|%Q|%F|%K|%S|%N|%n|%E|%r":
            held = job["state"] == "HELD"
            say(
                f"{job['id']}|{'PENDING' if held else job['state']}|{job['nodes']}"
                f"|{0 if held else 4294901757}|{job['id']}|N/A|{job.get('start', 'N/A')}"
                f"|{job.get('nodelist', '')}||{job.get('dependency', '(null)')}"
                f"|{'JobHeldUser' if held else job.get('reason', 'None')}"
            )
        else:
            err(f"squeue: error: fake squeue does not know format {fmt!r}")
            return 2
    return 0


def sinfo(state: dict[str, Any], args: list[str]) -> int:
    opts = options(args)
    if "version" in opts:
        say(f"slurm {state.get('version', '23.02.7')}")
        return 0
    if opts.get("format") != "%N|%T" or "Node" not in opts:
        err("sinfo: error: fake sinfo needs --Node --format=%N|%T")
        return 2
    only = opts.get("nodes")
    for name, node in sorted(state.get("nodes", {}).items()):
        if only is None or name == only:
            say(f"{name}|{node_string(node)}")
    return 0


def scontrol(state: dict[str, Any], args: list[str]) -> int:
    if args == ["--version"]:
        say(f"slurm {state.get('version', '23.02.7')}")
        return 0
    if args[:3] == ["--oneliner", "show", "partition"]:
        return show_partition(state, args[3])
    if args[:3] == ["--oneliner", "show", "node"]:
        return show_nodes(state, args[3].split(","))
    if not args or args[0] != "update":
        err("scontrol: error: fake scontrol knows only 'update' and 'show partition|node'")
        return 2
    fields = dict(a.split("=", 1) for a in args[1:])
    name, wanted = fields.get("NodeName"), fields.get("State", "").upper()
    node = state.get("nodes", {}).get(name or "")
    if node is None:
        err("slurm_update error: Invalid node name specified")
        return 1
    busy = any(
        name in j.get("nodelist", "").split(",")
        for j in state.get("jobs", [])
        if j["state"] == "RUNNING"
    )
    if wanted == "RESUME":
        if node["state"] not in ("down", "drained", "draining", "fail"):
            err("slurm_update error: Invalid node state specified")
            return 1
        node["state"] = "allocated" if busy else "idle"
    elif wanted == "DRAIN":
        node["state"] = "draining" if busy else "drained"
    elif wanted == "DOWN":
        node["state"] = "down"
        for job in state.get("jobs", []):
            if job["state"] == "RUNNING" and name in job.get("nodelist", "").split(","):
                job.update(state="PENDING", nodelist="", reason="BeginTime", requeued=True)
    else:
        err("slurm_update error: Invalid node state specified")
        return 1
    state.setdefault("log", []).append(" ".join(["scontrol", *args]))
    save(state)
    return 0


def show_partition(state: dict[str, Any], name: str) -> int:
    if name not in state.get("partitions", ["cloud"]):
        say(f"Partition {name} not found")
        return 1
    nodes = sorted(state.get("nodes", {}))
    say(
        f"PartitionName={name} AllowGroups=ALL Default=YES MaxNodes=UNLIMITED"
        f" MaxTime=UNLIMITED MinNodes=0 Nodes={','.join(nodes) or '(null)'} State=UP"
        f" TotalCPUs={len(nodes)} TotalNodes={len(nodes)}"
    )
    return 0


def show_nodes(state: dict[str, Any], names: list[str]) -> int:
    nodes = state.get("nodes", {})
    for name in names:
        if name not in nodes:
            say(f"Node {name} not found")
            return 1
        # Unless the test says otherwise, slurmd has just registered (after any launch).
        started = nodes[name].get(
            "slurmd_started", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        )
        say(f"NodeName={name} State={nodes[name]['state'].upper()} SlurmdStartTime={started}")
    return 0


def qstat(state: dict[str, Any], args: list[str]) -> int:
    if args == ["--version"]:
        say(f"Version: {state.get('torque_version', '6.1.3')}")
        return 0
    queue = args[-1]
    if queue not in state.get("partitions", ["cloud"]):
        # Torque's and PBS Pro's text for PBSE_UNKQUE (15018, exit status 15018 & 255).
        err("qstat: Unknown queue MSG=cannot locate queue")
        return 170
    if args[:1] == ["-Q"]:
        say(f"{queue} 0 0 yes yes 0 0 0 0 0 0 E")
        return 0
    jobs = [j for j in state.get("jobs", []) if j.get("partition", "cloud") == queue]
    codes = {"PENDING": "Q", "RUNNING": "R", "HELD": "H"}
    if args[:1] == ["-x"]:
        if not jobs:
            return 0
        parts = ["<Data>"]
        for job in jobs:
            hosts = "+".join(f"{n}/0" for n in job.get("nodelist", "").split(",") if n)
            parts.append(
                f"<Job><Job_Id>{job['id']}.head</Job_Id><job_state>{codes[job['state']]}"
                f"</job_state><queue>{queue}</queue><Resource_List><nodect>{job['nodes']}"
                f"</nodect><nodes>{job['nodes']}:ppn=1</nodes></Resource_List>"
                + (f"<exec_host>{hosts}</exec_host>" if hosts else "")
                + "</Job>"
            )
        say("".join(parts) + "</Data>")
        return 0
    document: dict[str, Any] = {"timestamp": 1700000000, "pbs_version": "2022.1.1"}
    if jobs:
        document["Jobs"] = {
            f"{j['id']}.pbs": {
                "job_state": codes[j["state"]],
                "queue": queue,
                "Resource_List": {"nodect": j["nodes"], "select": f"{j['nodes']}:ncpus=1"},
                **(
                    {"exec_host": "+".join(f"{n}/0" for n in j["nodelist"].split(","))}
                    if j.get("nodelist")
                    else {}
                ),
            }
            for j in jobs
        }
    say(json.dumps(document, indent=4))
    return 0


def pbsnodes(state: dict[str, Any], args: list[str]) -> int:
    nodes = state.get("nodes", {})
    if "-o" in args or "-c" in args or "-r" in args:
        name = args[-1]
        if name not in nodes:
            err(f"pbsnodes: Unknown node  MSG=cannot locate specified node {name}")
            return 1
        nodes[name]["state"] = "offline" if "-o" in args else "free"
        state.setdefault("log", []).append(" ".join(["pbsnodes", *args]))
        save(state)
        return 0
    names = [a for a in args if not a.startswith("-") and a not in ("json",)]
    selected = {n: v for n, v in nodes.items() if not names or n in names}
    jobs_of = {
        n: [
            f"{j['id']}.head"
            for j in state.get("jobs", [])
            if j["state"] == "RUNNING" and n in j.get("nodelist", "").split(",")
        ]
        for n in selected
    }
    if "-x" in args:
        say(
            "<Data>"
            + "".join(
                f"<Node><name>{n}</name><state>{v['state']}</state><np>4</np>"
                + (f"<jobs>{','.join('0/' + j for j in jobs_of[n])}</jobs>" if jobs_of[n] else "")
                + "</Node>"
                for n, v in sorted(selected.items())
            )
            + "</Data>"
        )
        return 0
    say(
        json.dumps(
            {
                "timestamp": 1700000000,
                "nodes": {
                    n: {
                        "state": v["state"],
                        **({"jobs": [j + "/0" for j in jobs_of[n]]} if jobs_of[n] else {}),
                    }
                    for n, v in selected.items()
                },
            },
            indent=4,
        )
    )
    return 0


COMMANDS = {
    "squeue": squeue,
    "sinfo": sinfo,
    "scontrol": scontrol,
    "qstat": qstat,
    "pbsnodes": pbsnodes,
}


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load()
        state.setdefault("calls", []).append(" ".join([command, *args]))
        save(state)
    time.sleep(float(state.get("delay", {}).get(command, 0)))
    failure = state.get("fail", {}).get(command)
    if failure:
        err(failure.get("stderr", ""))
        return int(failure.get("rc", 1))
    if command in state.get("garbage", {}):
        say(state["garbage"][command])
        return 0
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return COMMANDS[command](load(), args)


if __name__ == "__main__":
    sys.exit(main())
