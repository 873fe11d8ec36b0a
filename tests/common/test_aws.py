from __future__ import annotations

from typing import Optional

import pytest
from botocore import exceptions as bce

from mint_common.aws import aws_client, translate_aws_error
from mint_common.errors import (
    AuthError,
    ConfigError,
    InputError,
    MintError,
    TransferError,
    UnavailableError,
)
from mint_common.logging import redact


def _client_error(code: str, status: int, message: str = "nope") -> bce.ClientError:
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "DoSomething",
    )


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for var in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_env")
def test_no_region_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        aws_client("ec2", region=None, max_attempts=2, region_key="ec2.region")
    assert caught.value.exit_status == 78
    assert "creating the ec2 client: no AWS region configured" in str(caught.value)
    assert "'ec2.region'" in str(caught.value.hint)


@pytest.mark.usefixtures("no_aws_env")
def test_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuch"):
        aws_client("s3", region="us-east-1", max_attempts=2, profile="nosuch")


@pytest.mark.usefixtures("no_aws_env")
def test_credentials_are_masked_once_a_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzEXAMPLEKEY"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    client = aws_client("s3", region="ap-northeast-1", max_attempts=3, max_pool_connections=7)
    assert client.meta.region_name == "ap-northeast-1"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert client.meta.config.max_pool_connections == 7
    assert secret not in redact(f"header {secret}")


def test_missing_credentials_are_an_auth_error() -> None:
    error = translate_aws_error(bce.NoCredentialsError(), "listing the bucket")
    assert isinstance(error, AuthError) and error.exit_status == 77
    assert str(error) == "listing the bucket: no usable AWS credentials found"


@pytest.mark.parametrize(
    ("code", "status", "kind", "exit_status"),
    [
        ("AccessDenied", 403, AuthError, 77),
        ("UnauthorizedOperation", 400, AuthError, 77),
        ("", 403, AuthError, 77),
        ("SlowDown", 503, UnavailableError, 69),
        ("InternalError", 500, UnavailableError, 69),
        ("", 429, UnavailableError, 69),
        ("InvalidParameterValue", 400, InputError, 65),
        ("Weird", 300, UnavailableError, 69),
    ],
)
def test_client_errors_by_code_and_status(
    code: str, status: int, kind: type[MintError], exit_status: int
) -> None:
    error = translate_aws_error(_client_error(code, status), "terminating i-1")
    assert type(error) is kind and error.exit_status == exit_status
    assert str(error).startswith("terminating i-1: ")
    assert "nope" in str(error)


def test_a_service_classifier_comes_first() -> None:
    def classify(code: str, status: int, detail: str) -> Optional[MintError]:
        return ConfigError(f"bad AMI ({detail})") if code.startswith("InvalidAMIID") else None

    error = translate_aws_error(
        _client_error("InvalidAMIID.Malformed", 400), "x", classify=classify
    )
    assert isinstance(error, ConfigError) and "InvalidAMIID.Malformed: nope" in str(error)
    fallback = translate_aws_error(_client_error("AccessDenied", 403), "x", classify=classify)
    assert isinstance(fallback, AuthError)


def test_network_and_other_failures() -> None:
    down = translate_aws_error(
        bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "reading s3://b/k"
    )
    assert isinstance(down, UnavailableError) and "cannot reach AWS" in str(down)
    assert isinstance(translate_aws_error(OSError(5, "EIO"), "x"), TransferError)
    assert isinstance(translate_aws_error(RuntimeError("odd"), "x"), UnavailableError)
    mine = ConfigError("already ours")
    assert translate_aws_error(mine, "x") is mine
