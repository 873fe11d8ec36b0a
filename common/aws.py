"""The one place that turns AWS SDK errors into mint errors, and makes AWS clients.

Both AWS tools (mint-burst for EC2, mint-s3job for S3) create their clients
with `aws_client` and translate every SDK exception with `translate_aws_error`,
so the same failure (no region, no credentials, access denied, endpoint down)
gives the same message and exit status in both. A tool passes `classify` for
the codes only its service has (EC2 capacity, S3 preconditions). botocore is
imported lazily: mint_common itself does not depend on it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from mint_common.errors import (
    AuthError,
    ConfigError,
    InputError,
    MintError,
    TransferError,
    UnavailableError,
)
from mint_common.logging import register_secret

AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AuthFailure",
        "Blocked",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "OptInRequired",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)
# (code, HTTP status, "code: message") -> an error, or None for the common rules.
Classifier = Callable[[str, int, str], Optional[MintError]]


def client_error_parts(exc: Any) -> tuple[str, int, str]:
    """(code, HTTP status, "code: message") of a botocore ClientError."""
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", "") or "")
    status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
    return code, status, f"{code or status}: {error.get('Message') or 'no message'}"


def translate_aws_error(
    exc: BaseException,
    action: str,
    *,
    classify: Optional[Classifier] = None,
    region_hint: str = "set the 'region' key (for example ap-northeast-1) or AWS_DEFAULT_REGION",
    policy_hint: str = "check the IAM policy of these credentials",
) -> MintError:
    """Map any exception from boto3/botocore to the mint error a caller should see."""
    from botocore import exceptions as bce

    if isinstance(exc, MintError):
        return exc
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return AuthError(
            f"{action}: no usable AWS credentials found",
            hint="set AWS_PROFILE or the 'profile' key, or run on an instance with an IAM role",
        )
    if isinstance(exc, bce.ProfileNotFound):
        return ConfigError(f"{action}: {exc}", hint="check the 'profile' key and ~/.aws/config")
    if isinstance(exc, bce.NoRegionError):
        return ConfigError(f"{action}: no AWS region configured", hint=region_hint)
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, action, classify, policy_hint)
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionError, bce.HTTPClientError)):
        return UnavailableError(f"{action}: cannot reach AWS: {exc}")
    if isinstance(exc, bce.BotoCoreError):
        return UnavailableError(f"{action}: {exc}")
    if isinstance(exc, OSError):
        return TransferError(f"{action}: {exc}")
    return UnavailableError(f"{action}: {type(exc).__name__}: {exc}")


def _client_error(
    exc: Any, action: str, classify: Optional[Classifier], policy_hint: str
) -> MintError:
    code, status, detail = client_error_parts(exc)
    if classify is not None:
        special = classify(code, status, detail)
        if special is not None:
            return special
    if code in AUTH_CODES or status in (401, 403):
        return AuthError(f"{action}: access denied ({detail})", hint=policy_hint)
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return UnavailableError(f"{action}: AWS kept failing after retries ({detail})")
    if 400 <= status < 500:
        return InputError(f"{action}: AWS refused the request ({detail})")
    return UnavailableError(f"{action}: {detail}")


def aws_client(
    service: str,
    *,
    region: Optional[str],
    max_attempts: int,
    profile: Optional[str] = None,
    endpoint_url: Optional[str] = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_pool_connections: Optional[int] = None,
    region_key: str = "region",
) -> Any:
    """A boto3 client with botocore's standard retries; any failure to make it is translated.

    The credentials' secret parts are registered for masking (botocore's debug
    logs print request headers, and a session token travels in one).
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
    }
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            register_secret(frozen.secret_key)
            register_secret(frozen.token)
        return session.client(service, endpoint_url=endpoint_url, config=Config(**options))
    except Exception as exc:
        raise translate_aws_error(
            exc,
            f"creating the {service} client",
            region_hint=f"set {region_key!r} (for example ap-northeast-1) or AWS_DEFAULT_REGION",
        ) from exc
