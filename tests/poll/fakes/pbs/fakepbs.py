"""A fake Torque command set (qsub, qstat, qdel, qselect) for mint-poll's batch runner tests.

NOT captured from a real server: no PBS runs here. The outputs are written from the
Torque 6.1 documentation (qsub prints `ID.server`; `qstat -f` prints `Job Id: ID` and
indented `key = value` lines, long values continued on tab-indented lines, times in
ctime form, `start_time` in epoch seconds; an unknown job is `qstat: Unknown Job Id ID`,
PBSE_UNKJOBID 15001, exit status 15001 & 255 = 153; an unknown queue is
`Unknown queue`, PBSE_UNKQUE 15018, exit status 170; a job deleted while running ends
in state C with Exit_status 271 = 256 + SIGTERM).

State: the JSON file $FAKE_PBS_STATE. The tests drive the "server" with
`fakepbs.py run ID` (run the job script for real, as the MOM would: state R, then C with
the script's exit status), `fakepbs.py finish ID STATUS` (state C without running the
script: a node that cannot see the working dir) and `fakepbs.py purge ID` (the server
forgets the job, as after keep_completed).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ["FAKE_PBS_STATE"])
SERVER = "fakeserver"
CTIME = "%a %b %d %H:%M:%S %Y"


def load() -> dict[str, Any]:
    if not STATE.exists():
        return {"next_id": 1, "queues": ["batch"], "jobs": {}, "submitted": []}
    return json.loads(STATE.read_text())


def save(state: dict[str, Any]) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, STATE)


def qsub(state: dict[str, Any], args: list[str]) -> int:
    options: dict[str, str] = {}
    index = 0
    while index < len(args) - 1:
        if args[index].startswith("-") and index + 1 < len(args) - 1:
            options[args[index]] = args[index + 1]
            index += 2
        else:
            index += 1
    queue = options.get("-q", "batch")
    if queue not in state["queues"]:
        sys.stderr.write("qsub: submit error (Unknown queue MSG=cannot locate queue)\n")
        return 170
    job_id = f"{state['next_id']}.{SERVER}"
    state["next_id"] += 1
    state["submitted"].append(args)
    state["jobs"][job_id] = {
        "name": options.get("-N", "STDIN"),
        "queue": queue,
        "state": "Q",
        "script": args[-1],
        "output": options.get("-o", ""),
        "qtime": time.strftime(CTIME),
    }
    sys.stdout.write(job_id + "\n")
    return 0


def qstat(state: dict[str, Any], args: list[str]) -> int:
    if args == ["--version"]:
        sys.stdout.write("Version: 6.1.3\n")
        return 0
    if args[:1] == ["-Q"]:
        if args[1] not in state["queues"]:
            sys.stderr.write(f"qstat: Unknown queue {args[1]}\n")
            return 170
        sys.stdout.write(f"Queue  Max Tot Ena Str\n-----  --- --- --- ---\n{args[1]} 0 0 yes yes\n")
        return 0
    job_id = args[-1]
    job = state["jobs"].get(job_id)
    if job is None:
        sys.stderr.write(f"qstat: Unknown Job Id {job_id}\n")
        return 153
    lines = [
        f"Job Id: {job_id}",
        f"    Job_Name = {job['name']}",
        f"    Job_Owner = root@{SERVER}",
        f"    job_state = {job['state']}",
        f"    queue = {job['queue']}",
        f"    qtime = {job['qtime']}",
        # A long attribute wraps onto a tab-indented line, as qstat -f prints it.
        "    Variable_List = PBS_O_QUEUE=batch,PBS_O_HOME=/root,PBS_O_LANG=C.UTF-8,",
        "\tPBS_O_LOGNAME=root,PBS_O_PATH=/usr/bin:/bin",
    ]
    if "start_time" in job:
        lines += [f"    start_time = {job['start_time']}", "    exec_host = node1/0"]
    if "exit_status" in job:
        lines.append(f"    Exit_status = {job['exit_status']}")
    sys.stdout.write("\n".join(lines) + "\n\n")
    return 0


def qselect(state: dict[str, Any], args: list[str]) -> int:
    name = args[args.index("-N") + 1]
    for job_id, job in state["jobs"].items():
        if job["name"] == name:
            sys.stdout.write(job_id + "\n")
    return 0


def qdel(state: dict[str, Any], args: list[str]) -> int:
    job = state["jobs"].get(args[-1])
    if job is None:
        sys.stderr.write(f"qdel: Unknown Job Id {args[-1]}\n")
        return 153
    job["state"] = "C"
    job["exit_status"] = 271 if "start_time" in job else -3
    return 0


def run(state: dict[str, Any], job_id: str) -> int:
    job = state["jobs"][job_id]
    job["state"], job["start_time"] = "R", int(time.time())
    save(state)
    with open(job["output"] or os.devnull, "ab") as output:
        done = subprocess.run(
            ["/bin/sh", job["script"]],
            env={**os.environ, "PBS_JOBID": job_id},
            cwd="/",
            stdout=output,
            stderr=output,
            check=False,
        )
    job["state"], job["exit_status"] = "C", done.returncode
    return 0


def control(state: dict[str, Any], command: str, args: list[str]) -> int:
    job = state["jobs"][args[0]]
    if command == "start":
        job["state"], job["start_time"] = "R", int(time.time())
    elif command == "finish":
        job.setdefault("start_time", int(time.time()))
        job["state"], job["exit_status"] = "C", int(args[1])
    elif command == "purge":
        del state["jobs"][args[0]]
    return 0


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load()
        failure = state.get("fail", {}).get(command)
        if failure:
            sys.stderr.write(failure["stderr"])
            return int(failure["rc"])
        handlers = {"qsub": qsub, "qstat": qstat, "qselect": qselect, "qdel": qdel}
        if command in handlers:
            status = handlers[command](state, args)
        elif command == "run":
            status = run(state, args[0])
        else:
            status = control(state, command, args)
        save(state)
        return status


if __name__ == "__main__":
    sys.exit(main())
