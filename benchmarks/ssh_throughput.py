"""mint-ssh: upload and download throughput of a large file next to scp, same sshd, same run.

    .venv/bin/python benchmarks/ssh_throughput.py [--size-mib 1024] [--repeats 3]

mint-ssh's transfers are timed through the code `mint-ssh run` uses: `upload_files`
(one exec channel streaming into `<name>.part`, size checked remotely, renamed) and the
result fetch (the start request of a finished run reporting its exit status, then sending
a tar stream on the same channel, unpacked by `extract_stream`), on one connection made by
`mint_ssh.connection.connect`. scp runs with its defaults. The two tools take turns.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

from ssh.harness import Bench, bench, seconds

from mint_ssh import protocol
from mint_ssh.config import SshToolConfig
from mint_ssh.connection import connect
from mint_ssh.hosts import resolve_host
from mint_ssh.transfer import extract_stream, upload_files


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="mint-ssh-tput-", dir="/tmp") as tmp:
        root = Path(tmp)
        big = root / "big.bin"
        _make_file(big, size)
        with bench(root) as setup:
            results = _measure(setup, big, root, args.repeats)
    mb = size / 1e6
    print(f"{args.size_mib} MiB file, median of {args.repeats}, MB/s (1 MB = 10^6 bytes):")
    for name, (up, down) in results.items():
        print(f"  {name:9s} upload {mb / up:7.1f}   download {mb / down:7.1f}")
    (scp_up, scp_down), (ours_up, ours_down) = results["scp"], results["mint-ssh"]
    print(f"  mint-ssh / scp: upload {scp_up / ours_up:.2f}x, download {scp_down / ours_down:.2f}x")


class _Paths:
    """Where the current repeat's copies go: fresh names each upload, as each `run` has a
    fresh working dir (writing next to the previous 1 GiB copy ran 30-40 % slower here)."""

    def __init__(self, root: Path) -> None:
        self.remote_file = ""
        self.workdir = ""
        self.back = root / "back.bin"
        self.dest = root / "dest"


def _measure(setup: Bench, big: Path, root: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds per (upload, download) for scp and mint-ssh. Each repeat runs all four
    transfers back to back, so that a change of machine speed during the run (this is a
    virtual machine) hits both tools alike. Clearing up the previous copy is not timed."""
    ssh_cfg = ["-F", str(setup.ssh_config)]
    cfg = SshToolConfig(ssh_config=setup.ssh_config)
    spec = resolve_host("node", cfg)
    conn = connect(spec, resolve=lambda a: resolve_host(a, cfg), connect_timeout=30)
    at = _Paths(root)

    def ssh(command: str) -> None:
        subprocess.run(["ssh", *ssh_cfg, "node", command], check=True, timeout=60)

    def clear_scp_copy() -> None:
        if at.remote_file:
            ssh(f"rm -f {at.remote_file}")

    def clear_our_copy() -> None:
        if at.workdir:
            conn.execute(protocol.remove(at.workdir))

    def clear_local() -> None:
        at.back.unlink(missing_ok=True)
        shutil.rmtree(at.dest, ignore_errors=True)
        at.dest.mkdir()

    def scp_up() -> None:
        at.remote_file = f"/tmp/scp-{uuid.uuid4().hex}.bin"
        subprocess.run(
            ["scp", "-q", *ssh_cfg, str(big), f"node:{at.remote_file}"], check=True, timeout=900
        )

    def scp_down() -> None:
        subprocess.run(
            ["scp", "-q", *ssh_cfg, f"node:{at.remote_file}", str(at.back)],
            check=True,
            timeout=900,
        )

    def ours_up() -> None:
        at.workdir = protocol.workdir_path("/tmp", uuid.uuid4().hex)
        upload_files(conn, at.workdir, [big], verify_sha256=False)

    def ours_down() -> None:
        # As `run` and `resume` do: the start finds the command ended and waits for `fetch`.
        ended = conn.watch(protocol.start(at.workdir, ["true"]), lambda chunk: None)
        assert ended.stdout == b"0\n" and ended.pending is not None
        conn.fetch(
            protocol.fetch(at.workdir),
            lambda stream: bool(extract_stream(stream, at.dest)) and False,
            ended.pending,
        )
        assert (at.dest / big.name).stat().st_size == big.stat().st_size

    steps = {
        "scp up": (clear_scp_copy, scp_up),
        "ours up": (clear_our_copy, ours_up),
        "scp down": (clear_local, scp_down),
        "ours down": (clear_local, ours_down),
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for _ in range(repeats):
            for name, (clear, step) in steps.items():
                clear()
                # No dirty pages left by the step before (1 GiB of them set off writeback in
                # the middle of the next transfer).
                os.sync()
                samples[name].append(seconds(step))
    finally:
        clear_scp_copy()
        clear_our_copy()
        clear_local()
        shutil.rmtree(at.dest, ignore_errors=True)
        conn.close()
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "scp": (median["scp up"], median["scp down"]),
        "mint-ssh": (median["ours up"], median["ours down"]),
    }


if __name__ == "__main__":
    main()
