"""Dispatch time for 1 new job when the bucket already holds 0, 100 and 1000 finished jobs.

Each finished job: job-aws-run.sh + 4 small inputs (5 small files), one 1 MB result,
and the seed's control objects (state JOB_COMPLETE, job id, sbatch output), written
the way the seed's scripts leave them (none of mint-s3job's own objects), which is
the harder case for a cold cache. Every dispatch is a `mint-s3job dispatch` process,
as an EventBridge/SSM trigger would start it; sbatch is the recorded-output fake.
Also: 5 simultaneous dispatch processes for one new job, counting sbatch calls.

Usage: .venv/bin/python benchmarks/s3job_dispatch.py [--sizes 0,100,1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from s3job_common import BIN, aws_env, client, moto_server

FAKES = Path(__file__).resolve().parent.parent / "tests" / "s3job" / "fakes"
MB = os.urandom(1024 * 1024)


def populate(s3: Any, bucket: str, count: int) -> None:
    def one(n: int) -> None:
        prefix = f"done{n:05d}"
        objects = {
            "job-aws-run.sh": b"#!/bin/bash\n./solver input1.txt\n",
            **{f"input{i}.txt": os.urandom(2048) for i in range(1, 5)},
            "result.bin": MB,
            "job-aws-stat.txt": b"JOB_COMPLETE\n",
            "job-aws-jobid.txt": f"{n}\n".encode(),
            "job-aws-sbatch.out": f"Submitted batch job {n}\n".encode(),
        }
        for name, body in objects.items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(count)))


def new_job(s3: Any, bucket: str, prefix: str) -> None:
    s3.put_object(Bucket=bucket, Key=f"{prefix}/job-aws-run.sh", Body=b"#!/bin/bash\necho hi\n")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/input.txt", Body=b"x" * 1000)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/job-aws-stat.txt", Body=b"FILE_UPLOAD\n")


def dispatch(env: dict[str, str], workdir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "mint-s3job"), "-q", "dispatch", "--workdir", str(workdir)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def sbatch_calls(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(
        1 for line in log.read_text().splitlines() if json.loads(line)["command"] == "sbatch"
    )


def concurrent_calls(env: dict[str, str], s3: Any, bucket: str, work: Path, n: int) -> int:
    log = work / f"concurrent{n}.jsonl"
    env = dict(env, FAKE_SLURM_LOG=str(log))
    new_job(s3, bucket, f"race{n}")
    processes = [
        subprocess.Popen(
            [str(BIN / "mint-s3job"), "-q", "dispatch", "--workdir", str(work / f"race-{n}-{k}")],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for k in range(5)
    ]
    for process in processes:
        process.wait(timeout=300)
    return sbatch_calls(log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3job-dispatch-", dir="/tmp"))
    results: dict[int, tuple[float, float]] = {}
    try:
        with moto_server() as endpoint:
            s3 = client(endpoint)
            for size in (int(s) for s in args.sizes.split(",")):
                bucket = f"bench-{size}"
                s3.create_bucket(Bucket=bucket)
                started = time.perf_counter()
                populate(s3, bucket, size)
                print(f"{size} finished jobs written in {time.perf_counter() - started:.1f} s")
                env = aws_env(endpoint, bucket)
                env.update(
                    PATH=f"{FAKES}{os.pathsep}{env['PATH']}",
                    FAKE_SLURM_LOG=str(work / f"sbatch-{size}.jsonl"),
                )
                workdir = work / f"head-{size}"
                new_job(s3, bucket, "new-cold")
                cold = dispatch(env, workdir)
                warm = []
                for n in range(args.repeat):
                    new_job(s3, bucket, f"new-warm{n}")
                    warm.append(dispatch(env, workdir))
                calls = sbatch_calls(work / f"sbatch-{size}.jsonl")
                results[size] = (cold, statistics.median(warm))
                runs = ", ".join(f"{w:.2f}" for w in warm)
                print(
                    f"{size:5d} finished jobs: cold cache {cold:.2f} s, warm cache median"
                    f" {statistics.median(warm):.2f} s (runs {runs});"
                    f" sbatch calls {calls} for {args.repeat + 1} new jobs"
                )
            races = [concurrent_calls(env, s3, bucket, work, n) for n in range(5)]
            print(f"5 simultaneous dispatchers, one new job, 5 trials: sbatch calls {races}")
        base = results.get(0)
        if base:
            for size, (_cold, warm) in sorted(results.items()):
                print(f"ratio {size} vs 0 (warm): {warm / base[1]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
