"""Settings of mint-s3job, validated into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from mint_common.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True)
class S3JobConfig:
    """Every key can be set in YAML, as MINT_S3JOB_<KEY>, and some by flags."""

    bucket: Optional[str] = field(default=None, metadata={"aliases": ("S3_JOB_BUCKET_NAME",)})
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    # Retries after the first try, done by botocore ("standard" mode: throttling, 5xx,
    # broken connections); passed as botocore's own `max_attempts`, which counts retries.
    retries: int = 7
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # S3 verifies every PUT and part with it; end-to-end integrity is the SHA-256 manifest.
    checksum_algorithm: Literal["CRC32", "CRC32C", "SHA256", "SHA1"] = "CRC32"
    concurrency: int = 10
    multipart_threshold: int = 16 * MiB
    multipart_chunksize: int = 16 * MiB
    # Head node.
    workdir: Optional[Path] = field(default=None, metadata={"aliases": ("ITO_WORK_DIR",)})
    sbatch: str = "sbatch"
    sbatch_args: tuple[str, ...] = ()
    scancel: str = "scancel"
    command_timeout: float = 120.0
    watch_interval: float = 60.0
    rescan_interval: float = 600.0
    claim_stale_after: float = 900.0
    # A job whose preparation fails the same way this many runs in a row becomes JOB_ERROR.
    quarantine_after: int = 3
    # On-premises.
    poll_interval: float = 10.0

    def validate(self) -> None:
        if not 0 <= self.retries <= 20:
            raise ConfigError(f"key 'retries': must be 0-20, got {self.retries}")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"key 'concurrency': must be 1-64, got {self.concurrency}")
        if self.multipart_chunksize < 5 * MiB:
            raise ConfigError(
                f"key 'multipart_chunksize': S3 needs parts of at least 5 MiB,"
                f" got {self.multipart_chunksize}"
            )
        for name in (
            "connect_timeout",
            "read_timeout",
            "command_timeout",
            "watch_interval",
            "poll_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"key {name!r}: must be positive, got {getattr(self, name)}")
        if self.quarantine_after < 1:
            raise ConfigError(f"key 'quarantine_after': must be >= 1, got {self.quarantine_after}")
        if self.rescan_interval < 0:
            raise ConfigError(f"key 'rescan_interval': must be >= 0, got {self.rescan_interval}")

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
