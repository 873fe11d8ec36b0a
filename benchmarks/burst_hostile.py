"""mint-burst once against hostile scheduler and provider output: peak RSS while 300 MB come in.

    .venv/bin/python benchmarks/burst_hostile.py [--mb 300] [--mint-burst PATH]

Fake `squeue`, `sinfo` and `scontrol` first on PATH and a command provider whose scripts
are the same fake (tests/burst/test_hostile.py does the same in-process, with small bounds);
each scenario makes one of them print MB megabytes where a short answer is expected,
generated lazily in 1 MiB chunks (nothing of that size exists in memory or on disk): an
squeue line without end, squeue lines without end, a provider `list` answer nested without
end, one endless string, endless instances, and stderr floods; plus the host list
`c[0-99999][0-99]` (10 M names) in squeue and in the partition. Each scenario is one
`mint-burst once` in its own process with a fresh state file; peak RSS is its ru_maxrss
from os.wait4 (the maximum over mint-burst and the fakes it ran and reaped; the fakes stay
near 10 MiB). "MB written" is what the fake got into the pipe before it was stopped.
`--mint-burst` runs another build (e.g. a wrapper importing an older copy) instead of
the venv's. Prints the figures; asserts nothing. Everything lives in a /tmp dir removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_rss import wait_peak_rss

TOOL = Path(sys.executable).parent / "mint-burst"
LIMIT_MIB = 150
TIMEOUT = 300.0

# One program for squeue, sinfo, scontrol and the provider script. $HOSTILE names the
# command that misbehaves and how ("squeue:endless-line"); every other command answers
# as a quiet cluster would (one idle partition of two burst nodes, no jobs, no VMs).
FAKE = """\
import os, sys
MB = 1024 * 1024
name = os.path.basename(sys.argv[0])
if name == "provider":
    sys.stdin.read()
    name = "provider-" + sys.argv[1]
target, _, kind = os.environ.get("HOSTILE", "").partition(":")
size = int(os.environ["HOSTILE_BYTES"])
counter = os.open(os.environ["HOSTILE_COUNTER"], os.O_WRONLY | os.O_CREAT, 0o644)
NORMAL = {
    "scontrol": b"PartitionName=cloud MaxNodes=UNLIMITED Nodes=c[1-2] TotalNodes=2\\n",
    "squeue": b"",
    "sinfo": b"c1|idle~\\nc2|idle~\\n",
    "provider-list": b'{"instances": []}\\n',
}
FLOODS = {
    # head, the unit repeated up to `size` bytes, whether the flood goes to stderr
    "endless-line": (b"7|PENDING|1|100|N/A|N/A|N/A|||(null)|", b"x", False),
    "many-lines": (b"", b"7|PENDING|1|100|N/A|N/A|N/A|||(null)|Resources\\n", False),
    "deep-nesting": (b'{"instances": ', b"[", False),
    "huge-string": (b'{"instances": [{"instance_id": "', b"a", False),
    "many-instances": (
        b'{"instances": [',
        b'{"instance_id": "i-0123456789abcdef0", "node": "c1", "ip": "10.0.1.11",'
        b' "state": "running"}, ',
        False,
    ),
    "short-lines": (b"", b"ab\\n", False),
    "empty-lists": (b'{"instances": [', b"[],", False),
    "stderr": (b"", b"slurm_load_jobs error: something went wrong\\n", True),
    "stderr-short-lines": (b"", b"ab\\n", True),
}
HOST_LISTS = {
    "host-list": {
        "squeue": b"7|RUNNING|1|1|N/A|N/A|N/A|c[0-99999][0-99]||(null)|None\\n",
        "scontrol": b"PartitionName=cloud MaxNodes=UNLIMITED Nodes=c[0-99999][0-99]"
        b" TotalNodes=10000000\\n",
    },
}
if target != name:
    sys.stdout.buffer.write(NORMAL.get(name, b""))
    sys.exit(0)
if kind in HOST_LISTS:
    sys.stdout.buffer.write(HOST_LISTS[kind][name])
    sys.exit(0)
head, unit, to_stderr = FLOODS[kind]
out = sys.stderr.buffer if to_stderr else sys.stdout.buffer
chunk = unit * max(1, MB // len(unit))
written = len(head)
try:
    out.write(head)
    while written < size:
        part = chunk[: size - written]
        out.write(part)
        written += len(part)
        os.pwrite(counter, str(written).encode().ljust(20), 0)
    out.flush()
except BrokenPipeError:
    sys.exit(1)
if to_stderr:
    sys.stdout.buffer.write(NORMAL[name])
    sys.exit(1 if name == "squeue" else 0)
"""

# mint_burst.scheduler.MAX_OUTPUT_BYTES - 1: the most stdout that is still parsed.
UNDER_BOUND = 16 * 1024 * 1024 - 1
# (label, $HOSTILE, bytes instead of --mb)
SCENARIOS: list[tuple[str, str] | tuple[str, str, int]] = [
    ("baseline: a quiet cluster", ""),
    ("squeue: one line of {mb} MB", "squeue:endless-line"),
    ("squeue: {mb} MB of 44-byte lines", "squeue:many-lines"),
    ("squeue: {mb} MB on stderr, exit 1", "squeue:stderr"),
    ("squeue: {mb} MB of 3-byte lines on stderr", "squeue:stderr-short-lines"),
    ("squeue: 3-byte lines, 1 byte under the bound", "squeue:short-lines", UNDER_BOUND),
    ("squeue: job lines, 1 byte under the bound", "squeue:many-lines", UNDER_BOUND),
    ("squeue: host list c[0-99999][0-99]", "squeue:host-list"),
    ("scontrol: partition Nodes=c[0-99999][0-99]", "scontrol:host-list"),
    ("provider list: {mb} MB of nested [", "provider-list:deep-nesting"),
    ("provider list: one string of {mb} MB", "provider-list:huge-string"),
    ("provider list: {mb} MB of instances", "provider-list:many-instances"),
    ("provider list: [], [], ... 1 byte under the bound", "provider-list:empty-lists", UNDER_BOUND),
    ("provider list: {mb} MB on stderr, exit 0", "provider-list:stderr"),
    ("provider list: {mb} MB of 3-byte lines on stderr", "provider-list:stderr-short-lines"),
]


def setup(root: Path) -> Path:
    """The fake commands, hosts.json and the config; returns the config's path."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sinfo", "scontrol", "provider"):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\n{FAKE}")
        script.chmod(0o755)
    (root / "hosts.json").write_text(json.dumps({"10.0.1.11": "c1", "10.0.1.12": "c2"}))
    provider = str(bin_dir / "provider")
    config = root / "mint-burst.yaml"
    config.write_text(
        json.dumps(
            {
                "queue": "cloud",
                "cluster": "bench",
                "hosts_file": str(root / "hosts.json"),
                "state_file": str(root / "state" / "state.json"),
                "provider": "command",
                "command": {
                    "create": [provider, "create"],
                    "list": [provider, "list"],
                    "delete": [provider, "delete"],
                },
            }
        )
    )
    return config


def run_once(
    tool: Path, root: Path, config: Path, hostile: str, size: int
) -> tuple[str, float, float, str]:
    """(exit status, seconds, peak RSS in MiB, last stderr line) of one `mint-burst once`."""
    for stale in (root / "state").glob("*"):
        stale.unlink()
    env = dict(os.environ)
    env.update(
        PATH=f"{root / 'bin'}{os.pathsep}{env['PATH']}",
        HOSTILE=hostile,
        HOSTILE_BYTES=str(size),
        HOSTILE_COUNTER=str(root / "written"),
    )
    log = root / "stderr.log"
    began = time.perf_counter()
    with log.open("wb") as err:
        child = subprocess.Popen(
            [str(tool), "once", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        code, peak = wait_peak_rss(child, TIMEOUT)
    seconds = time.perf_counter() - began
    lines = log.read_text(errors="replace").strip().splitlines()
    return code, seconds, peak, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--mint-burst", type=Path, default=TOOL, help="the program to run")
    args = parser.parse_args()
    mb = args.mb
    size = mb * 1000 * 1000
    with tempfile.TemporaryDirectory(prefix="mint-burst-hostile-") as tmp:
        root = Path(tmp)
        config = setup(root)
        print(f"{'scenario':48} {'exit':>4} {'seconds':>8} {'peak RSS MiB':>13} {'MB written':>11}")
        for label, hostile, *override in SCENARIOS:
            counter = root / "written"
            counter.write_text("0")
            code, seconds, rss, last = run_once(
                args.mint_burst, root, config, hostile, override[0] if override else size
            )
            written = int(counter.read_text().strip() or 0) / 1e6
            mark = "" if rss < LIMIT_MIB else f"  OVER {LIMIT_MIB} MiB"
            shown = f"{written:>11.1f}" if written else f"{'-':>11}"
            print(f"{label.format(mb=mb):48} {code:>4} {seconds:>8.2f} {rss:>13.1f} {shown}{mark}")
            print(f"    {last[:160]}")


if __name__ == "__main__":
    main()
