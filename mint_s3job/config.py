"""Settings of mint-s3job, validated into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from mint_common.errors import ConfigError
from mint_common.timeutil import Duration

MiB = 1024 * 1024
_POSITIVE = {"above": 0}


@dataclass(frozen=True)
class S3JobConfig:
    """Every key can be set in YAML, as MINT_S3JOB_<KEY>, and some by flags.

    Lengths of time take any duration form (`600`, `30m`, `2h`); ranges are checked
    where the value is given, so an error names the file, variable or flag.
    """

    bucket: Optional[str] = field(default=None, metadata={"aliases": ("S3_JOB_BUCKET_NAME",)})
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    # Retries after the first try, done by botocore ("standard" mode: throttling, 5xx,
    # broken connections); passed as botocore's own `max_attempts`, which counts retries.
    retries: int = field(default=7, metadata={"min": 0, "max": 20})
    connect_timeout: Duration = field(default=Duration(10), metadata=_POSITIVE)
    read_timeout: Duration = field(default=Duration(60), metadata=_POSITIVE)
    # S3 verifies every PUT and part with it; end-to-end integrity is the SHA-256 manifest.
    checksum_algorithm: Literal["CRC32", "CRC32C", "SHA256", "SHA1"] = "CRC32"
    concurrency: int = field(default=10, metadata={"min": 1, "max": 64})
    multipart_threshold: int = field(default=16 * MiB, metadata={"min": 0})
    # S3 refuses parts smaller than 5 MiB.
    multipart_chunksize: int = field(default=16 * MiB, metadata={"min": 5 * MiB})
    # Head node.
    workdir: Optional[Path] = field(default=None, metadata={"aliases": ("ITO_WORK_DIR",)})
    sbatch: str = "sbatch"
    sbatch_args: tuple[str, ...] = ()
    scancel: str = "scancel"
    command_timeout: Duration = field(default=Duration(120), metadata=_POSITIVE)
    # `dispatch --watch --poll-interval`: the pause between two dispatch runs.
    watch_interval: Duration = field(default=Duration(60), metadata=_POSITIVE)
    rescan_interval: Duration = field(default=Duration(600), metadata={"min": 0})
    claim_stale_after: Duration = field(default=Duration(900), metadata=_POSITIVE)
    # A job whose preparation fails the same way this many runs in a row becomes JOB_ERROR.
    quarantine_after: int = field(default=3, metadata={"min": 1})
    # On-premises: `wait --poll-interval`.
    poll_interval: Duration = field(default=Duration(10), metadata=_POSITIVE)

    def require_bucket(self) -> str:
        if not self.bucket:
            raise ConfigError(
                "no bucket given: use --bucket, the 'bucket' config key or MINT_S3JOB_BUCKET"
            )
        return self.bucket

    def require_workdir(self) -> Path:
        if self.workdir is None:
            raise ConfigError(
                "no work directory given: use --workdir, the 'workdir' config key"
                " or MINT_S3JOB_WORKDIR"
            )
        return self.workdir
