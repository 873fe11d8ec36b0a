"""mint-ssh: upload and download throughput of a large file next to scp, same sshd, same run.

    .venv/bin/python benchmarks/ssh_throughput.py [--size-mib 1024] [--repeats 3]

mint-ssh's transfers are timed through the code `mint-ssh run` uses: `upload_files`
(one exec channel streaming into `<name>.part`, size checked remotely, renamed) and the
result fetch (a tar stream over one exec channel unpacked by `extract_stream`), on one
connection made by `mint_ssh.connection.connect`. scp runs with its defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ssh.harness import Bench, bench, median_seconds

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


def _measure(setup: Bench, big: Path, root: Path, repeats: int) -> dict[str, tuple[float, float]]:
    ssh_cfg = ["-F", str(setup.ssh_config)]
    remote = f"/tmp/scp-{uuid.uuid4().hex}.bin"
    back = root / "back.bin"

    def scp_up() -> None:
        subprocess.run(["scp", "-q", *ssh_cfg, str(big), f"node:{remote}"], check=True, timeout=900)

    def scp_down() -> None:
        subprocess.run(
            ["scp", "-q", *ssh_cfg, f"node:{remote}", str(back)], check=True, timeout=900
        )

    scp = (median_seconds(scp_up, repeats)[0], median_seconds(scp_down, repeats)[0])
    subprocess.run(["ssh", *ssh_cfg, "node", f"rm -f {remote}"], check=True, timeout=60)
    back.unlink(missing_ok=True)

    cfg = SshToolConfig(ssh_config=setup.ssh_config)
    spec = resolve_host("node", cfg)
    conn = connect(spec, resolve=lambda a: resolve_host(a, cfg), connect_timeout=30)
    workdir = protocol.workdir_path("/tmp", uuid.uuid4().hex)
    dest = root / "dest"
    try:
        up = median_seconds(
            lambda: upload_files(conn, workdir, [big], verify_sha256=False), repeats
        )[0]

        def download() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            conn.fetch(
                protocol.fetch(workdir), lambda stream: bool(extract_stream(stream, dest)) and False
            )
            assert (dest / big.name).stat().st_size == big.stat().st_size

        down = median_seconds(download, repeats)[0]
    finally:
        conn.execute(protocol.remove(workdir))
        conn.close()
        shutil.rmtree(dest, ignore_errors=True)
    return {"scp": scp, "mint-ssh": (up, down)}


if __name__ == "__main__":
    main()
