"""The S3 adapter: error translation at the boundary, conditional writes, botocore retries."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import exceptions as bce
from moto import mock_aws

from mint_common.config import load_config
from mint_common.errors import (
    AuthError,
    ConfigError,
    InputError,
    MintError,
    NoInputError,
    TransferError,
    UnavailableError,
)
from mint_common.retry import RetryPolicy
from mint_s3job.config import S3JobConfig
from mint_s3job.store import (
    EXPECT_CONTINUE_FROM,
    PreconditionFailed,
    S3ObjectStore,
    translate_s3_error,
)

from .conftest import FlakyProxy


def _client_error(code: str, status: int) -> bce.ClientError:
    response = {
        "Error": {"Code": code, "Message": "recorded message"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bce.ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("AccessDenied", 403), AuthError),
        (_client_error("InvalidAccessKeyId", 403), AuthError),
        (_client_error("ExpiredToken", 400), AuthError),
        (_client_error("NoSuchBucket", 404), ConfigError),
        (_client_error("PermanentRedirect", 301), ConfigError),
        (_client_error("NoSuchKey", 404), NoInputError),
        (_client_error("404", 404), NoInputError),
        (_client_error("PreconditionFailed", 412), PreconditionFailed),
        (_client_error("ConditionalRequestConflict", 409), PreconditionFailed),
        (_client_error("SlowDown", 503), UnavailableError),
        (_client_error("InternalError", 500), UnavailableError),
        (_client_error("TooManyRequests", 429), UnavailableError),
        (_client_error("EntityTooLarge", 400), InputError),
        (_client_error("Weird", 0), UnavailableError),
        (_client_error("TokenRefreshRequired", 400), AuthError),
        (_client_error("AuthorizationHeaderMalformed", 400), ConfigError),
        (_client_error("NotFound", 404), NoInputError),
        (bce.NoCredentialsError(), AuthError),
        (bce.PartialCredentialsError(provider="env", cred_var="secret"), AuthError),
        (bce.ProfileNotFound(profile="nope"), ConfigError),
        (bce.NoRegionError(), ConfigError),
        (bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), UnavailableError),
        (bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), UnavailableError),
        (bce.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), UnavailableError),
        (bce.ParamValidationError(report="bad"), UnavailableError),
        (OSError(28, "No space left on device"), TransferError),
        (RuntimeError("boom"), UnavailableError),
    ],
    ids=lambda v: (
        type(v).__name__ if not isinstance(v, bce.ClientError) else v.response["Error"]["Code"]
    ),
)
def test_translate_maps_every_kind_of_error(exc: BaseException, expected: type[MintError]) -> None:
    translated = translate_s3_error(exc, "writing s3://b/k", "b")
    assert type(translated) is expected
    assert "writing s3://b/k" in translated.message


def test_translate_keeps_our_own_errors() -> None:
    mine = NoInputError("x")
    assert translate_s3_error(mine, "a", "b") is mine


def test_access_denied_names_the_bucket_in_the_hint() -> None:
    error = translate_s3_error(_client_error("AccessDenied", 403), "listing", "my-jobs")
    assert error.hint is not None and "my-jobs" in error.hint


@mock_aws
def test_conditional_put_wins_once_in_process() -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="claims")
    store = S3ObjectStore(S3JobConfig(bucket="claims", region="us-east-1"), "claims")
    assert store.put_bytes("job/claim", b"a", if_none_match=True)
    assert not store.put_bytes("job/claim", b"b", if_none_match=True)
    assert store.get_bytes("job/claim") == b"a"
    etag = store.head("job/claim")
    assert etag is not None
    assert not store.put_bytes("job/claim", b"c", if_match='"0000"')
    assert store.put_bytes("job/claim", b"c", if_match=etag.etag)
    assert store.get_bytes("job/claim") == b"c"


@mock_aws
def test_missing_objects_and_buckets_are_reported_plainly() -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="present")
    store = S3ObjectStore(S3JobConfig(region="us-east-1"), "present")
    assert store.get_bytes("nothing/here") is None
    assert store.head("nothing/here") is None
    absent = S3ObjectStore(S3JobConfig(region="us-east-1"), "absent-bucket")
    with pytest.raises(ConfigError, match="absent-bucket"):
        absent.list_prefixes()


@mock_aws
def test_get_bytes_refuses_oversized_control_objects() -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="big")
    store = S3ObjectStore(S3JobConfig(region="us-east-1"), "big")
    store.put_bytes("job/job-aws-stat.txt", b"x" * 100)
    with pytest.raises(InputError, match="larger than 10 bytes"):
        store.get_bytes("job/job-aws-stat.txt", limit=10)


@pytest.mark.parametrize(
    ("status", "code"), [(503, "SlowDown"), (500, "InternalError")], ids=["throttled", "500"]
)
def test_botocore_retries_throttling_and_server_errors(
    proxied_store: S3ObjectStore, flaky_proxy: FlakyProxy, status: int, code: str, tmp_path: Path
) -> None:
    flaky_proxy.fail_next(2, status, code)
    assert proxied_store.put_bytes("job1/a.txt", b"hello")
    assert flaky_proxy.failed == 2
    flaky_proxy.fail_next(2, status, code)
    source = tmp_path / "big.bin"
    source.write_bytes(b"z" * 1000)
    proxied_store.upload_files([(source, "job1/big.bin")], lambda _n: None)
    assert proxied_store.get_bytes("job1/big.bin") == b"z" * 1000


@pytest.mark.parametrize("attempts", [1, 2, 4], ids=["one", "two", "four"])
def test_tries_are_bounded_by_retry_max_attempts(
    proxied_store: S3ObjectStore, flaky_proxy: FlakyProxy, attempts: int
) -> None:
    config = replace(proxied_store.config, retry=RetryPolicy(max_attempts=attempts))
    store = S3ObjectStore(config, proxied_store.bucket)
    flaky_proxy.fail_next(10, 503, "SlowDown")
    with pytest.raises(UnavailableError, match="SlowDown"):
        store.put_bytes("job1/a.txt", b"hello")
    assert flaky_proxy.failed == attempts  # the first try included


def test_the_old_retries_key_still_counts_retries_with_a_warning(
    proxied_store: S3ObjectStore,
    flaky_proxy: FlakyProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_file = tmp_path / "mint-s3job.yaml"
    config_file.write_text("retries: 1\n")
    with caplog.at_level(logging.WARNING, logger="mint_s3job.config"):
        loaded = load_config(S3JobConfig, "mint-s3job", config_file=config_file, cli={})
    assert loaded.retry.max_attempts == 2
    assert "'retries' is deprecated" in caplog.text and "use 'retry'" in caplog.text
    config = replace(proxied_store.config, retry=loaded.retry)
    store = S3ObjectStore(config, proxied_store.bucket)
    flaky_proxy.fail_next(10, 503, "SlowDown")
    with pytest.raises(UnavailableError, match="SlowDown"):
        store.put_bytes("job1/a.txt", b"hello")
    assert flaky_proxy.failed == 2


def test_the_new_retry_key_loads_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = tmp_path / "mint-s3job.yaml"
    config_file.write_text("retry: {max_attempts: 5}\n")
    with caplog.at_level(logging.WARNING, logger="mint_s3job.config"):
        loaded = load_config(S3JobConfig, "mint-s3job", config_file=config_file, cli={})
    assert loaded.retry.max_attempts == 5 and loaded.retries is None
    assert "deprecated" not in caplog.text
    assert S3JobConfig().retry.max_attempts == 8  # the 7 retries of before, plus the first try


def test_only_large_puts_wait_for_100_continue(store: S3ObjectStore, tmp_path: Path) -> None:
    small = tmp_path / "small.dat"
    small.write_bytes(os.urandom(100 * 1024))
    large = tmp_path / "large.dat"
    large.write_bytes(os.urandom(EXPECT_CONTINUE_FROM))
    sent: dict[str, object] = {}

    def record(request: Any, **_kwargs: Any) -> None:
        sent[request.url.rsplit("/", 1)[-1]] = request.headers.get("Expect")

    store.client.meta.events.register("before-send.s3.PutObject", record)
    progressed: list[int] = []
    store.upload_files([(small, "e/small.dat"), (large, "e/large.dat")], progressed.append)
    assert sent == {"small.dat": None, "large.dat": b"100-continue"}
    assert store.get_bytes("e/small.dat") == small.read_bytes()
    assert store.get_bytes("e/large.dat", limit=EXPECT_CONTINUE_FROM) == large.read_bytes()
    assert sum(progressed) == len(small.read_bytes()) + EXPECT_CONTINUE_FROM
