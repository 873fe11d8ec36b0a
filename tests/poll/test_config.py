"""Config schema, the commands allowlist, and the legacy command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mint_common.errors import ConfigError, UsageError
from mint_common.retry import RetryPolicy
from mint_poll.config import CommandSpec, load_poll_config
from mint_poll.legacy import parse_legacy
from tests.poll.conftest import TOKEN, write_token


def config_file(tmp_path: Path, **settings: Any) -> Path:
    base: dict[str, Any] = {
        "url": "https://mint.example",
        "site_id": "nims-dev",
        "token_file": str(write_token(tmp_path)),
    }
    base.update(settings)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_defaults_follow_the_legacy_client(tmp_path: Path) -> None:
    config = load_poll_config(config_file(tmp_path))
    # manual 1.0.1: 5 retries 60 s apart; the same as `retry:5,60` written out (and as mint-ssh)
    assert config.retry == RetryPolicy.parse_legacy("retry:5,60")
    assert (config.retry.max_attempts, config.retry.base_delay, config.retry.jitter) == (
        6,
        60.0,
        False,
    )
    assert config.retry.backoff == 1.0 and config.retry.max_delay == 60.0
    assert config.calc_base == Path("/tmp")
    assert config.poll_interval == 60 and config.max_parallel == 1 and config.stop_grace == 30
    assert config.token.reveal() == TOKEN
    assert config.commands == {} and not config.allow_any_command


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/opt/run.sh", CommandSpec(("/opt/run.sh",))),
        (["/opt/run", "--fast"], CommandSpec(("/opt/run", "--fast"))),
        (
            {"run": "/opt/run", "timeout": 60, "env": {"N": 4}},
            CommandSpec(("/opt/run",), 60.0, {"N": "4"}),
        ),
    ],
    ids=["path", "argv", "mapping"],
)
def test_command_forms(tmp_path: Path, value: Any, expected: CommandSpec) -> None:
    config = load_poll_config(config_file(tmp_path, commands={"x.sh": value}))
    assert config.commands["x.sh"] == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"commands": {"x": {"run": "/a", "timout": 5}}}, "unknown setting 'timout'"),
        ({"commands": {"x": {"timeout": 5}}}, "missing 'run'"),
        ({"commands": {"x": []}}, "non-empty argv list"),
        ({"commands": {"x": {"run": "/a", "timeout": -1}}}, "timeout: must be greater than 0"),
        ({"commands": {"x": {"run": "/a", "timeout": "soon"}}}, "timeout: expected seconds"),
        ({"commands": {"x": {"run": "/a", "env": {"1BAD": "v"}}}}, "bad variable name"),
        ({"site_id": "../etc"}, "not a plain identifier"),
        ({"poll_interval": 0}, "key 'poll_interval': must be greater than 0, got 0"),
        ({"poll_interval": "5 minutes"}, "key 'poll_interval': expected seconds"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"ca_bundle": "/nonexistent.pem"}, "ca_bundle /nonexistent.pem does not exist"),
        ({"verify": False, "ca_bundle": "/etc/hostname"}, "either ca_bundle or verify"),
        ({"retry": "retry:five"}, "retry:<count>,<interval>"),
        ({"pol_interval": 3}, "did you mean 'poll_interval'"),
    ],
    ids=[
        "typo-in-command",
        "no-run",
        "empty-argv",
        "bad-timeout",
        "timeout-not-a-duration",
        "bad-env",
        "site-id",
        "interval",
        "interval-not-a-duration",
        "parallel",
        "ca-missing",
        "ca-and-no-verify",
        "retry",
        "unknown-key",
    ],
)
def test_bad_config_names_the_key_and_value(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_poll_config(config_file(tmp_path, **settings))


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    (tmp_path / "token").chmod(0o644)
    with pytest.raises(ConfigError, match=r"accessible by group"):
        load_poll_config(path)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINT_POLL_SITE_ID", "from-env")
    assert load_poll_config(config_file(tmp_path)).site_id == "from-env"


def test_legacy_full_form() -> None:
    parsed = parse_legacy(
        [
            "rme-u-tokyo",
            "https://nims.mintsys.jp",
            TOKEN,
            "retry:3,10",
            "no_auth:/etc/ca.pem",
            "port:8443",
            "calc_base:/scratch",
            "debug",
        ]
    )
    settings = parsed.settings
    assert parsed.debug
    assert settings["site_id"] == "rme-u-tokyo" and settings["token"] == TOKEN
    assert settings["url"] == "https://nims.mintsys.jp:8443"
    assert settings["retry"].max_attempts == 4 and settings["retry"].base_delay == 10
    assert settings["ca_bundle"] == "/etc/ca.pem" and settings["calc_base"] == "/scratch"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["site", "https://h"], "legacy form"),
        (["site", "https://h", "login"], "'login' form"),
        (["site", "https://h", "tok", "retry:x"], "retry:<count>"),
        (["site", "https://h", "tok", "port:99999"], "port must be"),
        (["site", "https://h", "tok", "verbose"], "unknown legacy argument 'verbose'"),
    ],
    ids=["too-few", "login", "bad-retry", "bad-port", "unknown"],
)
def test_legacy_errors_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_legacy(args)


@given(
    site=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    retries=st.integers(min_value=0, max_value=50),
    interval=st.integers(min_value=0, max_value=600),
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    no_auth=st.sampled_from([None, "no_auth", "no_auth:/ca.pem"]),
    debug=st.booleans(),
    order=st.randoms(),
)
def test_legacy_options_in_any_order_parse_the_same(
    site: str, retries: int, interval: int, port: Any, no_auth: Any, debug: bool, order: Any
) -> None:
    options = [f"retry:{retries},{interval}"]
    if port is not None:
        options.append(f"port:{port}")
    if no_auth:
        options.append(no_auth)
    if debug:
        options.append("debug")
    order.shuffle(options)
    parsed = parse_legacy([site, "https://mint.example", TOKEN, *options])
    assert parsed.debug == debug
    assert parsed.settings["retry"].max_attempts == retries + 1
    expected_url = "https://mint.example" + (f":{port}" if port else "")
    assert parsed.settings["url"] == expected_url
    assert parsed.settings.get("verify", True) is (no_auth != "no_auth")
