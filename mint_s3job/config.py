"""Settings of mint-s3job, validated into a frozen dataclass."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional

from mint_common.errors import ConfigError
from mint_common.metrics import DEFAULT_ADDRESS, PORT_RANGE, TEXTFILE_FIELD
from mint_common.retry import RetryPolicy
from mint_common.timeutil import Duration

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_POSITIVE = {"above": 0}


def default_retry() -> RetryPolicy:
    """8 tries in all: the 7 retries mint-s3job made before `retry` replaced `retries`."""
    return RetryPolicy(max_attempts=8)


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
    # botocore retries ("standard" mode: throttling, 5xx, broken connections) with
    # `retry.max_attempts` tries in all; botocore does its own backoff, so only that counts.
    retry: RetryPolicy = field(default_factory=default_retry)
    # Deprecated (one release): retries after the first try, i.e. retry.max_attempts - 1.
    retries: Optional[int] = field(default=None, metadata={"min": 0, "max": 20})
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
    # Prometheus metrics (docs/metrics.md): `dispatch --watch` serves them on
    # metrics_address:metrics_port; a one-shot `dispatch` writes them to metrics_textfile.
    metrics_port: Optional[int] = field(default=None, metadata=PORT_RANGE)
    metrics_address: str = DEFAULT_ADDRESS
    metrics_textfile: Optional[Path] = field(default=None, metadata=TEXTFILE_FIELD)
    # On-premises: `wait --poll-interval`.
    poll_interval: Duration = field(default=Duration(10), metadata=_POSITIVE)

    def __post_init__(self) -> None:
        if self.retries is None:
            return
        log.warning(
            "config key 'retries' is deprecated and will be removed: use 'retry' instead"
            " (retries: %d is retry: {max_attempts: %d}, the first try included)",
            self.retries,
            self.retries + 1,
        )
        if self.retry == default_retry():
            object.__setattr__(self, "retry", replace(self.retry, max_attempts=self.retries + 1))

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
