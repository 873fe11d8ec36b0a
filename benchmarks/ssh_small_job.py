"""mint-ssh: a small job end to end vs the legacy one-ssh/rsync-per-step flow, same sshd.

    .venv/bin/python benchmarks/ssh_small_job.py [--repeats 7] [--login-user USER]
        [--mint-ssh PATH-TO-ANOTHER-mint-ssh (e.g. a wrapper around an older copy)]

Small job: 3 inputs of 10 KB, a trivial command, results back, remote dir removed.
Legacy flow (as execute_remote_command.sample.sh does it): ssh mkdir, rsync up, ssh run,
rsync down, ssh rm -- a new SSH connection for every step. The two flows take turns.
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

from ssh.harness import BIN, Bench, bench, seconds

COMMAND = "cat in1.dat in2.dat in3.dat > out.dat; wc -c out.dat"


def _inputs(root: Path) -> list[Path]:
    paths = []
    for n in (1, 2, 3):
        path = root / f"in{n}.dat"
        path.write_bytes(os.urandom(10 * 1024))
        paths.append(path)
    return paths


def _mint_ssh(setup: Bench, inputs: list[Path], dest: Path, program: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    puts = [arg for path in inputs for arg in ("--input", str(path))]
    subprocess.run(
        [str(program), "--config", str(setup.config), "-q", "run", "node", *puts,
         "--out-dir", str(dest), "--", "sh", "-c", COMMAND],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    assert (dest / "out.dat").stat().st_size == 30 * 1024


def _legacy(setup: Bench, inputs: list[Path], dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    workdir = f"/tmp/legacy-{uuid.uuid4().hex}"
    ssh = ["ssh", "-F", str(setup.ssh_config)]
    rsync_ssh = f"ssh -F {setup.ssh_config}"

    def step(argv: list[str]) -> None:
        subprocess.run(argv, check=True, timeout=120, capture_output=True)

    step([*ssh, "node", f"mkdir -m 700 {workdir}"])
    step(["rsync", "-a", "-e", rsync_ssh, *map(str, inputs), f"node:{workdir}/"])
    step([*ssh, "node", f"cd {workdir} && sh -c '{COMMAND}'"])
    step(["rsync", "-a", "-e", rsync_ssh, f"node:{workdir}/", f"{dest}/"])
    step([*ssh, "node", f"rm -rf {workdir}"])
    assert (dest / "out.dat").stat().st_size == 30 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--login-user",
        help="run the sshd as this local user and log in as them (needs root; e.g. a user"
        " whose ~/.bashrc is cheap)",
    )
    parser.add_argument("--mint-ssh", type=Path, default=BIN / "mint-ssh", help="the program")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mint-ssh-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 - the login user must read the inputs
        inputs = _inputs(root)
        for path in inputs:
            os.chmod(path, 0o644)
        with bench(root, args.login_user) as setup:
            _mint_ssh(setup, inputs, root / "warm", args.mint_ssh)
            ours_all, legacy_all = [], []
            # Alternate the two flows so that load from other work on the machine hits both.
            for _ in range(args.repeats):
                ours_all.append(
                    seconds(lambda: _mint_ssh(setup, inputs, root / "ours", args.mint_ssh))
                )
                legacy_all.append(seconds(lambda: _legacy(setup, inputs, root / "legacy")))
            ours, legacy = statistics.median(ours_all), statistics.median(legacy_all)
            single = subprocess.run(
                ["bash", "-c", f"time ssh -F {setup.ssh_config} node true"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
    who = args.login_user or "yourself"
    print(f"small job, median of {args.repeats} (3 x 10 KB in, trivial command, results back),")
    print(f"logging in as {who}:")
    print(f"  mint-ssh run : {ours:.3f} s  (samples {', '.join(f'{s:.2f}' for s in ours_all)})")
    print(f"  legacy flow  : {legacy:.3f} s  (samples {', '.join(f'{s:.2f}' for s in legacy_all)})")
    print(f"  speed-up     : {legacy / ours:.2f}x")
    print(f"  one `ssh node true` for scale: {single.stderr.strip().splitlines()[0]}")


if __name__ == "__main__":
    main()
