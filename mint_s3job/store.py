"""The object store behind a small Protocol, and its S3 implementation (boto3).

botocore does the retrying (its "standard" mode: throttling, 5xx, broken
connections) with `retries` from our config; whatever still fails is
translated here, and only here, into mint_common errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Protocol, Union

from mint_common.aws import aws_client, translate_aws_error
from mint_common.errors import (
    AuthError,
    ConfigError,
    InputError,
    MintError,
    NoInputError,
    TransferError,
)
from mint_s3job.config import S3JobConfig

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
SMALL_OBJECT_LIMIT = 1024 * 1024
EXPECT_CONTINUE_FROM = 2 * 1024 * 1024

# S3's own answers the shared AWS rules do not know: a lost conditional write, a missing
# bucket or object (HEAD answers carry no code, only the status), a bucket in another region.
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_WRONG_BUCKET_CODES = frozenset(
    {"InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed"}
)
_AUTH_CODES = frozenset({"TokenRefreshRequired", "Forbidden"})


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime


class ObjectStore(Protocol):
    """What mint-s3job needs from a bucket."""

    bucket: str

    def list_prefixes(self) -> list[str]: ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    def head(self, key: str) -> Optional[ObjectInfo]: ...

    def get_bytes(self, key: str, limit: int = SMALL_OBJECT_LIMIT) -> Optional[bytes]: ...

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: Optional[str] = None
    ) -> bool: ...

    def delete_keys(self, keys: Sequence[str]) -> None: ...

    def upload_files(
        self, items: Sequence[tuple[Union[Path, BinaryIO], str]], progress: Progress
    ) -> None: ...

    def download_files(self, items: Sequence[tuple[str, Path]], progress: Progress) -> None: ...

    def bucket_region(self) -> str: ...


class PreconditionFailed(MintError):
    """A conditional write lost (the object exists, or changed since it was read)."""


def translate_s3_error(exc: BaseException, action: str, bucket: str) -> MintError:
    """The shared AWS translation, with S3's own codes classified for this bucket."""

    def classify(code: str, status: int, detail: str) -> Optional[MintError]:
        if code in _PRECONDITION_CODES or status == 412:
            return PreconditionFailed(f"{action}: precondition failed ({detail})")
        if code == "NoSuchBucket":
            return ConfigError(f"{action}: bucket {bucket!r} does not exist")
        if code in _WRONG_BUCKET_CODES:
            return ConfigError(f"{action}: bucket {bucket!r} or its region is wrong ({detail})")
        if code in _AUTH_CODES:
            return AuthError(f"{action}: access denied ({detail})", hint=policy)
        if code in _MISSING_KEY_CODES or status == 404:
            return NoInputError(f"{action}: no such object ({detail})")
        return None

    policy = f"check the IAM policy for bucket {bucket}"
    return translate_aws_error(exc, action, classify=classify, policy_hint=policy)


class S3ObjectStore:
    """ObjectStore over boto3; one client (thread-safe) shared by all transfers."""

    def __init__(self, config: S3JobConfig, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self.config = config
        self.client = client if client is not None else make_client(config)

    @contextmanager
    def _translating(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            translated = translate_s3_error(exc, action, self.bucket)
            if translated is exc:
                raise
            raise translated from exc

    def list_prefixes(self) -> list[str]:
        prefixes: list[str] = []
        with self._translating(f"listing s3://{self.bucket}/"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Delimiter="/"
            )
            for page in pages:
                prefixes.extend(p["Prefix"][:-1] for p in page.get("CommonPrefixes", []))
        return prefixes

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        with self._translating(f"listing s3://{self.bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                found.extend(
                    ObjectInfo(o["Key"], int(o["Size"]), o["ETag"], o["LastModified"])
                    for o in page.get("Contents", [])
                )
        return found

    def head(self, key: str) -> Optional[ObjectInfo]:
        try:
            with self._translating(f"reading s3://{self.bucket}/{key}"):
                reply = self.client.head_object(Bucket=self.bucket, Key=key)
        except NoInputError:
            return None
        return ObjectInfo(key, int(reply["ContentLength"]), reply["ETag"], reply["LastModified"])

    def get_bytes(self, key: str, limit: int = SMALL_OBJECT_LIMIT) -> Optional[bytes]:
        try:
            with self._translating(f"reading s3://{self.bucket}/{key}"):
                reply = self.client.get_object(Bucket=self.bucket, Key=key)
                data: bytes = reply["Body"].read(limit + 1)
        except NoInputError:
            return None
        if len(data) > limit:
            raise InputError(f"s3://{self.bucket}/{key} is larger than {limit} bytes; refusing it")
        return data

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: Optional[str] = None
    ) -> bool:
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            with self._translating(f"writing s3://{self.bucket}/{key}"):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ChecksumAlgorithm=self.config.checksum_algorithm,
                    **extra,
                )
        except PreconditionFailed:
            return False
        return True

    def delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with self._translating(f"deleting objects in s3://{self.bucket}"):
                reply = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = reply.get("Errors", [])
            if errors:
                first = errors[0]
                raise TransferError(
                    f"could not delete {len(errors)} object(s), e.g. {first.get('Key')!r}:"
                    f" {first.get('Code')} {first.get('Message')}"
                )

    def bucket_region(self) -> str:
        try:
            with self._translating(f"checking bucket {self.bucket}"):
                reply = self.client.head_bucket(Bucket=self.bucket)
        except NoInputError:
            # HEAD answers carry no error code: a 404 here is the bucket itself.
            raise ConfigError(f"bucket {self.bucket!r} does not exist") from None
        headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region: str = headers.get("x-amz-bucket-region") or reply.get("BucketRegion") or ""
        return region

    def upload_files(
        self, items: Sequence[tuple[Union[Path, BinaryIO], str]], progress: Progress
    ) -> None:
        """Upload files named by path, or already opened (read from where they are)."""
        extra = {"ChecksumAlgorithm": self.config.checksum_algorithm}
        # One subscriber for all: s3transfer inspects each new one's signature, which
        # cost more CPU than queueing the 200 uploads of a typical job.
        subscribers = [_progress(progress)]
        with self._transfers(f"uploading to s3://{self.bucket}") as manager:
            futures = [
                manager.upload(
                    str(source) if isinstance(source, Path) else source,
                    self.bucket,
                    key,
                    extra_args=extra,
                    subscribers=subscribers,
                )
                for source, key in items
            ]
            _wait_all(futures)

    def download_files(self, items: Sequence[tuple[str, Path]], progress: Progress) -> None:
        extra = {"ChecksumMode": "ENABLED"}
        subscribers = [_progress(progress)]
        with self._transfers(f"downloading from s3://{self.bucket}") as manager:
            futures = [
                manager.download(
                    self.bucket, key, str(path), extra_args=extra, subscribers=subscribers
                )
                for key, path in items
            ]
            _wait_all(futures)

    @contextmanager
    def _transfers(self, action: str) -> Iterator[Any]:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        transfer_config = TransferConfig(
            multipart_threshold=self.config.multipart_threshold,
            multipart_chunksize=self.config.multipart_chunksize,
            max_concurrency=self.config.concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        manager = create_transfer_manager(self.client, transfer_config)
        failed = True
        try:
            with self._translating(action):
                yield manager
            failed = False
        finally:
            manager.shutdown(cancel=failed)


def _wait_all(futures: Sequence[Any]) -> None:
    """Wait for every transfer; re-raise the first failure after cancelling the rest."""
    for future in futures:
        try:
            future.result()
        except BaseException:
            for other in futures:
                other.cancel()
            raise


def _progress(advance: Progress) -> Any:
    from s3transfer.subscribers import BaseSubscriber  # type: ignore[import-untyped]

    class _Subscriber(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            advance(bytes_transferred)

    return _Subscriber()


def make_client(config: S3JobConfig) -> Any:
    """A boto3 S3 client: botocore's standard retries, `retry.max_attempts` tries in all."""
    client = aws_client(
        "s3",
        region=config.region,
        max_attempts=config.retry.max_attempts,
        profile=config.profile,
        endpoint_url=config.endpoint_url,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=config.concurrency + 4,
    )
    client.meta.events.register("before-sign.s3.PutObject", expect_continue_only_for_large_bodies)
    return client


def expect_continue_only_for_large_bodies(request: Any, **_kwargs: Any) -> None:
    """botocore asks for `100 Continue` before every PutObject body: one more round
    trip per object. It only pays off for large bodies (the server can refuse before
    they are sent), so drop it below EXPECT_CONTINUE_FROM, 2 MiB as in the AWS SDKs for
    Go and Kotlin."""
    from botocore.utils import determine_content_length

    if "Expect" not in request.headers:
        return
    size = determine_content_length(request.body)
    if size is not None and size < EXPECT_CONTINUE_FROM:
        del request.headers["Expect"]


def open_store(config: S3JobConfig, bucket: Optional[str] = None) -> S3ObjectStore:
    return S3ObjectStore(config, bucket or config.require_bucket())


def session_facts(config: S3JobConfig) -> tuple[Optional[str], Optional[str]]:
    """(where the credentials come from, or None; the region) without revealing the keys."""
    import boto3

    try:
        session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
        credentials = session.get_credentials()
    except Exception as exc:
        raise translate_s3_error(exc, "looking up AWS credentials", config.bucket or "?") from exc
    method = getattr(credentials, "method", "unknown") if credentials is not None else None
    return method, session.region_name
