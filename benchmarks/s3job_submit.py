"""Submit of 200 files x 100 KB plus one 500 MB file: mint-s3job vs `aws s3 sync`.

Both run as separate processes against the same moto server process on loopback,
alternating, to fresh prefixes; objects are deleted between rounds.
Usage: .venv/bin/python benchmarks/s3job_submit.py [--rounds 2] [--big-mb 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from s3job_common import BIN, aws_env, client, moto_server


def make_tree(root: Path, small: int, small_kb: int, big_mb: int) -> Path:
    data = root / "data"
    (data / "small").mkdir(parents=True)
    for n in range(small):
        (data / "small" / f"f{n:03d}.dat").write_bytes(os.urandom(small_kb * 1024))
    with open(data / "big.bin", "wb") as handle:
        for _ in range(big_mb):
            handle.write(os.urandom(1024 * 1024))
    (root / "run.sh").write_text("#!/bin/bash\necho hi\n")
    return data


def empty(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--big-mb", type=int, default=500)
    args = parser.parse_args()
    aws = shutil.which("aws")
    work = Path(tempfile.mkdtemp(prefix="s3job-bench-", dir="/tmp"))
    try:
        data = make_tree(work, 200, 100, args.big_mb)
        total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        print(f"tree: 200 x 100 KB + 1 x {args.big_mb} MB = {total / 1e6:.1f} MB")
        if aws:
            version = subprocess.run(
                [aws, "--version"], capture_output=True, text=True, check=False
            )
            print(f"aws CLI: {(version.stdout or version.stderr).strip()}")
        else:
            print("aws CLI: not found; only mint-s3job is timed")
        with moto_server() as endpoint:
            s3 = client(endpoint)
            s3.create_bucket(Bucket="bench")
            env = aws_env(endpoint, "bench")
            ours: list[float] = []
            theirs: list[float] = []
            for n in range(args.rounds):
                ours.append(
                    timed(
                        [
                            str(BIN / "mint-s3job"),
                            "-q",
                            "submit",
                            "--prefix",
                            f"ours{n}",
                            "--script",
                            str(work / "run.sh"),
                            f"{data}/",
                        ],
                        env,
                    )
                )
                empty(s3, "bench")
                if aws:
                    theirs.append(
                        timed(
                            [
                                aws,
                                "s3",
                                "sync",
                                "--only-show-errors",
                                "--endpoint-url",
                                endpoint,
                                str(data),
                                f"s3://bench/aws{n}/",
                            ],
                            env,
                        )
                    )
                    empty(s3, "bench")
                print(
                    f"round {n + 1}: mint-s3job submit {ours[-1]:.2f} s"
                    + (f", aws s3 sync {theirs[-1]:.2f} s" if theirs else "")
                )
            print(
                f"median: mint-s3job submit {statistics.median(ours):.2f} s"
                f" ({total / 1e6 / statistics.median(ours):.0f} MB/s)"
            )
            if theirs:
                print(
                    f"median: aws s3 sync      {statistics.median(theirs):.2f} s"
                    f" ({total / 1e6 / statistics.median(theirs):.0f} MB/s)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
