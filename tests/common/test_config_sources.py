"""Range metadata, per-variable error sources, short secrets and the shared state layout."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Optional

import pytest

from mint_common.config import (
    MIN_SECRET_LENGTH,
    Secret,
    legacy_state_dir,
    load_config,
    log_effective_config,
    migrate_state_dir,
    tool_state_dir,
)
from mint_common.errors import ConfigError
from mint_common.retry import RetryPolicy
from mint_common.timeutil import Duration


@dataclasses.dataclass(frozen=True)
class Timing:
    connect_timeout: Duration = dataclasses.field(default=Duration(10), metadata={"above": 0})
    keep: int = dataclasses.field(default=3, metadata={"min": 0, "max": 10})
    grace: Optional[Duration] = dataclasses.field(default=None, metadata={"min": 0})
    token: Optional[Secret] = dataclasses.field(default=None, metadata={"secret": True})


def _load(tmp_path: Path, env: dict[str, str], text: str = "") -> Timing:
    config = tmp_path / "t.yaml"
    config.write_text(text)
    return load_config(
        Timing,
        "mint-demo",
        config_file=config,
        environ=env,
        system_dir=tmp_path / "sys",
        user_dir=tmp_path / "user",
    )


def test_durations_come_from_files_and_variables(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"MINT_DEMO_GRACE": "1h30m"}, "connect_timeout: 2m\n")
    assert (cfg.connect_timeout, cfg.grace) == (120.0, 5400.0)


def test_a_range_error_names_the_variable_that_was_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"MINT_DEMO_CONNECT_TIMEOUT": "-1"})
    assert str(caught.value) == (
        "environment variable MINT_DEMO_CONNECT_TIMEOUT: key 'connect_timeout':"
        " must be greater than 0, got -1"
    )


def test_a_type_error_names_the_variable_that_was_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment variable MINT_DEMO_KEEP: key 'keep'"):
        _load(tmp_path, {"MINT_DEMO_KEEP": "many"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keep: -1\n", "must be 0 or more, got -1"),
        ("keep: 11\n", "must be 10 or less, got 11"),
        ("connect_timeout: 0\n", "must be greater than 0, got 0"),
        ("grace: -5s\n", "expected seconds"),
    ],
)
def test_range_errors_in_a_file_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "t.yaml")) as caught:
        _load(tmp_path, {}, text)
    assert message in str(caught.value)


def test_limits_themselves_are_accepted(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {}, "keep: 0\ngrace: 0\n")
    assert (cfg.keep, cfg.grace) == (0, 0.0)
    assert _load(tmp_path, {}, "keep: 10\n").keep == 10


def test_short_secrets_are_refused_without_showing_them(tmp_path: Path) -> None:
    short = "x" * (MIN_SECRET_LENGTH - 1)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"MINT_DEMO_TOKEN": short})
    assert "environment variable MINT_DEMO_TOKEN: key 'token'" in str(caught.value)
    assert "shorter than 8" in str(caught.value)
    token_file = tmp_path / "token"
    token_file.write_text(short + "\n")
    token_file.chmod(0o600)
    with pytest.raises(ConfigError, match="token_file"):
        _load(tmp_path, {}, f"token_file: {token_file}\n")
    cfg = _load(tmp_path, {"MINT_DEMO_TOKEN": "x" * MIN_SECRET_LENGTH})
    assert cfg.token is not None and cfg.token.reveal() == "x" * MIN_SECRET_LENGTH


def test_state_dirs_follow_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert tool_state_dir("mint-poll") == tmp_path / "state" / "mint" / "poll"
    assert legacy_state_dir("mint-poll") == tmp_path / "state" / "mint-poll"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tool_state_dir("mint-burst") == tmp_path / "home" / ".local/state/mint/burst"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_migration_moves_everything_once(tmp_path: Path) -> None:
    old, new = tmp_path / "mint-poll", tmp_path / "mint" / "poll"
    (old / "calcs").mkdir(parents=True)
    (old / "calcs" / "a1.json").write_text('{"step": "running"}')
    (old / "agent.json").write_text("{}")
    before = _tree(old)
    assert migrate_state_dir(old, new) is True
    assert not old.exists()
    assert _tree(new) == before
    assert migrate_state_dir(old, new) is False
    assert _tree(new) == before


def test_migration_across_filesystems_copies_then_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = tmp_path / "old", tmp_path / "mint" / "burst"
    old.mkdir()
    (old / "state.json").write_text('{"nodes": {"c1": {}}}')
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def rename(src: object, dst: object) -> None:
        calls.append((str(src), str(dst)))
        if Path(str(src)) == old:
            raise OSError(18, "Invalid cross-device link")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename)
    assert migrate_state_dir(old, new) is True
    assert (new / "state.json").read_text() == '{"nodes": {"c1": {}}}'
    assert not old.exists()
    assert not (tmp_path / "mint" / "burst.migrating").exists()


def test_migration_keeps_both_when_the_new_one_exists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "state.json").write_text("old")
    (new / "state.json").write_text("new")
    with caplog.at_level(logging.WARNING):
        assert migrate_state_dir(old, new) is False
    assert (old / "state.json").read_text() == "old"
    assert (new / "state.json").read_text() == "new"
    assert str(old) in caplog.text


def test_migration_failure_is_a_config_error_that_loses_nothing(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "state.json").write_text("keep me")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        migrate_state_dir(old, blocker / "sub" / "new")
    assert f"mv {old} {blocker / 'sub' / 'new'}" in str(caught.value.hint)
    assert (old / "state.json").read_text() == "keep me"


def test_effective_config_is_debug_except_at_daemon_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("mint-demo")
    with caplog.at_level(logging.DEBUG, logger="mint-demo"):
        log_effective_config(log, Timing(token=Secret("tok-123456789")), at_start=False)
        log_effective_config(log, {"a": 1}, at_start=True)
    first, second = caplog.records
    assert first.levelno == logging.DEBUG and second.levelno == logging.INFO
    assert "tok-123456789" not in first.getMessage()
    assert first.getMessage().startswith('effective configuration: {"connect_timeout": 10.0')
    assert second.getMessage() == 'effective configuration: {"a": 1}'


@dataclasses.dataclass(frozen=True)
class WithRetry:
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)


def test_a_retry_mapping_comes_from_an_environment_variable(tmp_path: Path) -> None:
    cfg = load_config(
        WithRetry,
        "mint-demo",
        environ={"MINT_DEMO_RETRY": "{max_attempts: 3, base_delay: 0.5}"},
        system_dir=tmp_path,
        user_dir=tmp_path,
    )
    assert (cfg.retry.max_attempts, cfg.retry.base_delay) == (3, 0.5)


def test_the_effective_configuration_shows_settings_not_machinery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mint-demo"):
        log_effective_config(logging.getLogger("mint-demo"), WithRetry(), at_start=True)
    text = caplog.records[0].getMessage()
    assert '"max_attempts": 5' in text
    assert "clock" not in text and "rng" not in text and "sleep" not in text
