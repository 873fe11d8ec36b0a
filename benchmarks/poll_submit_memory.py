"""Peak RSS of `mint-poll submit` while it sends a large input file and receives a large result.

Starts `mint-poll serve` and a `mint-poll run` agent on loopback (the agent's
command copies the input to the result), then runs `mint-poll submit` as a
child process and reads its own peak RSS from wait4(2). Target: < 150 MiB
with a 1 GiB input and a 1 GiB result.

    .venv/bin/python benchmarks/poll_submit_memory.py            # 1024 MiB each way
    .venv/bin/python benchmarks/poll_submit_memory.py --mib 64   # a quick run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BIN = Path(sys.executable).parent
TOKEN = "0123456789abcdef" * 4
SITE = "bench"
BLOCK = 16 * 1024 * 1024


def make_input(path: Path, mib: int) -> str:
    """`mib` MiB of incompressible bytes (a random 16 MiB block repeated); returns the sha256."""
    block = os.urandom(BLOCK)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        remaining = mib * 1024 * 1024
        while remaining:
            piece = block[: min(BLOCK, remaining)]
            handle.write(piece)
            digest.update(piece)
            remaining -= len(piece)
    return digest.hexdigest()


def start_server(work: Path) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [str(BIN / "mint-poll"), "-q", "serve", "--port", "0", "--site", f"{SITE}=copy-big"],
        stdout=subprocess.PIPE,
        stderr=open(work / "serve.log", "w"),  # noqa: SIM115
        text=True,
        env={**os.environ, "MINT_POLL_SERVE_TOKEN": TOKEN},
    )
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"mint-poll serve did not start: {line!r}")
    return server, line.removeprefix("listening on ").removesuffix("/mi-distcomp-api")


def write_yaml(path: Path, settings: dict[str, object]) -> Path:
    path.write_text(json.dumps(settings, ensure_ascii=False))
    return path


def start_agent(work: Path, url: str, token_file: Path) -> subprocess.Popen[str]:
    (work / "calc").mkdir()
    config = write_yaml(
        work / "agent.yaml",
        {
            "url": url,
            "site_id": SITE,
            "token_file": str(token_file),
            "calc_base": str(work / "calc"),
            "state_dir": str(work / "state"),
            "poll_interval": 0.2,
            "read_timeout": 600,
            "commands": {"copy-big": ["/bin/cp", "big.in", "big.out"]},
        },
    )
    return subprocess.Popen(
        [str(BIN / "mint-poll"), "-q", "--config", str(config), "run"],
        stderr=open(work / "agent.log", "w"),
        text=True,
    )


def run_submit(work: Path, url: str, token_file: Path) -> tuple[float, float, dict[str, object]]:
    """Run submit as a child; returns (peak RSS MiB, wall seconds, JSON summary)."""
    config = write_yaml(
        work / "workflow.yaml",
        {"url": url, "site_id": SITE, "token_file": str(token_file), "read_timeout": 600},
    )
    started = time.monotonic()
    child = subprocess.Popen(
        [
            str(BIN / "mint-poll"),
            "--config",
            str(config),
            "-v",
            "submit",
            "--command",
            "copy-big",
            "--input",
            "big.in",
            "--result",
            "big.out",
            "--out-dir",
            "out",
            "--poll-interval",
            "0.5",
            "--json",
        ],
        cwd=work,
        stdout=open(work / "submit.json", "w"),  # noqa: SIM115
        stderr=open(work / "submit.log", "w"),  # noqa: SIM115
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise SystemExit(
            f"submit exited {child.returncode}:\n{(work / 'submit.log').read_text()[-2000:]}"
        )
    summary = json.loads((work / "submit.json").read_text())
    return usage.ru_maxrss / 1024, wall, summary


def phase_seconds(log_text: str, start: str, end: str) -> float:
    """Seconds between the first log lines containing `start` and `end` (1 s resolution)."""
    stamps: dict[str, datetime] = {}
    for line in log_text.splitlines():
        for marker in (start, end):
            if marker in line and marker not in stamps:
                stamps[marker] = datetime.fromisoformat(line.split(" ", 1)[0])
    return (stamps[end] - stamps[start]).total_seconds()


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of input and result (MiB)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mint-poll-submit-bench-", dir="/tmp"))
    server = agent = None
    try:
        token_file = work / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        print(f"writing a {args.mib} MiB input file ...", flush=True)
        digest = make_input(work / "big.in", args.mib)
        server, url = start_server(work)
        agent = start_agent(work, url, token_file)
        peak_mib, wall, summary = run_submit(work, url, token_file)
        files = {entry["name"]: entry for entry in summary["files"]}  # type: ignore[attr-defined]
        exact = files["big.out"]["sha256"] == digest
        moved = 2 * args.mib
        print(f"input {args.mib} MiB sent, result {args.mib} MiB received, exact: {exact}")
        print(f"submit peak RSS: {peak_mib:.1f} MiB (target < 150 MiB)")
        print(f"submit wall time: {wall:.1f} s (registration to results on disk, agent included)")
        print(f"file data end to end: {moved / wall:.0f} MiB/s ({moved} MiB in {wall:.1f} s)")
        log_text = (work / "submit.log").read_text()
        upload = phase_seconds(log_text, "registering ", "registered calculation")
        download = phase_seconds(log_text, ": got return", "ended completed")
        print(
            f"submit upload (add-calcinfo): ~{upload:.0f} s, ~{args.mib / max(upload, 1):.0f} MiB/s"
        )
        print(
            f"submit download (get-calc-result + sha256): ~{download:.0f} s,"
            f" ~{args.mib / max(download, 1):.0f} MiB/s"
        )
        return 0 if exact and peak_mib < 150 else 1
    finally:
        for process in (agent, server):
            if process is not None:
                stop(process)
        if os.environ.get("MINT_BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
