"""The seed's manual procedure, sub-job.sh and epilog.sh, re-written with boto3 from the seed text.

Used to prove that jobs move between the old scripts and mint-s3job in both directions.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from mint_common.files import safe_join

JOBSTAT = "job-aws-stat.txt"
JOBSCRIPT = "job-aws-run.sh"
SUBMITOUT = "job-aws-sbatch.out"
JOBID = "job-aws-jobid.txt"


def manual_submit(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    """`aws s3 cp` each file, then the hand-written job-aws-stat.txt (`FILE_UPLOAD`)."""
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{JOBSTAT}", Body=b"FILE_UPLOAD\n")


def _sync_down(s3: Any, bucket: str, workdir: Path) -> None:
    """`aws s3 sync s3://BUCKET ./`: fetch objects missing locally or of another size."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            target = safe_join(workdir, item["Key"])
            if target.is_file() and target.stat().st_size == item["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))


def sub_job(s3: Any, bucket: str, workdir: Path, sbatch: str = "sbatch") -> None:
    """sub-job.sh: sync the whole bucket, sbatch every FILE_UPLOAD job, upload its state."""
    workdir.mkdir(parents=True, exist_ok=True)
    _sync_down(s3, bucket, workdir)
    for d in sorted(p for p in workdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stat_file = d / JOBSTAT
        if not stat_file.is_file():
            continue
        lines = stat_file.read_text().splitlines()
        if (lines[0] if lines else "") != "FILE_UPLOAD" or not (d / JOBSCRIPT).is_file():
            continue
        with open(d / SUBMITOUT, "w") as out:
            subprocess.run([sbatch, JOBSCRIPT], cwd=d, stdout=out, stderr=out, check=False)
        text = (d / SUBMITOUT).read_text()
        if re.search(r"^sbatch: error:", text, re.MULTILINE):
            stat_file.write_text("JOB_ERROR\n")
        else:
            stat_file.write_text("JOB_SUBMIT\n")
            (d / JOBID).write_text(text.split()[3] + "\n")
        s3.upload_file(str(stat_file), bucket, f"{d.name}/{JOBSTAT}")


def epilog(s3: Any, bucket: str, job_work_dir: Path) -> None:
    """epilog.sh: write JOB_COMPLETE locally, then `aws s3 sync ./PREFIX s3://BUCKET/PREFIX`."""
    prefix = job_work_dir.name
    (job_work_dir / JOBSTAT).write_text("JOB_COMPLETE\n")
    remote = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            remote[item["Key"]] = item
    for path in sorted(p for p in job_work_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(job_work_dir).as_posix()}"
        known = remote.get(key)
        newer = known is None or path.stat().st_mtime > known["LastModified"].timestamp()
        if known is None or known["Size"] != path.stat().st_size or newer:
            s3.upload_file(str(path), bucket, key)
