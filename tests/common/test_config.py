from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mint_common.config import (
    Secret,
    env_prefix,
    load_config,
    read_yaml_mapping,
    redacted_view,
    user_config_dir,
)
from mint_common.errors import ConfigError
from mint_common.logging import MASK, redact
from mint_common.retry import RetryPolicy


@dataclasses.dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    timeout: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Settings:
    url: str = "https://example.invalid"
    poll_interval: float = 60.0
    max_parallel: int = 1
    verify: bool = True
    calc_base: Path = Path("/tmp")
    mode: Literal["fast", "safe"] = "safe"
    tags: tuple[str, ...] = ()
    commands: dict[str, Command] = dataclasses.field(default_factory=dict)
    ca_bundle: Optional[Path] = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    token: Optional[Secret] = dataclasses.field(default=None, metadata={"secret": True})
    queue_name: str = dataclasses.field(
        default="cloud", metadata={"aliases": ("QUEUE_NAME",), "env": ("QUEUE_NAME",)}
    )
    extra: Any = None

    def validate(self) -> None:
        if self.max_parallel < 1:
            raise ConfigError(f"key 'max_parallel': must be at least 1, got {self.max_parallel}")


@dataclasses.dataclass(frozen=True)
class Required:
    site_id: str
    token: Secret = dataclasses.field(metadata={"secret": True})


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"system": tmp_path / "etc", "user": tmp_path / "user"}


def load(dirs: dict[str, Path], schema: type = Settings, **kwargs: Any) -> Any:
    kwargs.setdefault("environ", {})
    return load_config(
        schema, "mint-test", system_dir=dirs["system"], user_dir=dirs["user"], **kwargs
    )


def test_defaults_when_no_layer_sets_anything(dirs: dict[str, Path]) -> None:
    cfg = load(dirs)
    assert cfg == Settings()


def test_each_layer_overrides_the_one_below(dirs: dict[str, Path], tmp_path: Path) -> None:
    write_yaml(
        dirs["system"] / "mint-test.yaml",
        {"url": "s", "poll_interval": 1, "max_parallel": 2, "mode": "fast", "verify": False},
    )
    write_yaml(dirs["user"] / "mint-test.yaml", {"url": "u", "poll_interval": 2, "max_parallel": 3})
    explicit = write_yaml(tmp_path / "explicit.yaml", {"url": "c", "poll_interval": 3})
    env = {"MINT_TEST_URL": "e"}
    cfg = load(dirs, config_file=explicit, environ=env, cli={"url": None, "poll_interval": None})
    assert (cfg.url, cfg.poll_interval, cfg.max_parallel, cfg.mode, cfg.verify) == (
        "e",
        3.0,
        3,
        "fast",
        False,
    )
    cfg = load(dirs, config_file=explicit, environ=env, cli={"url": "flag"})
    assert cfg.url == "flag"


def test_user_dir_follows_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_config_dir() == tmp_path / "xdg" / "mint"
    write_yaml(tmp_path / "xdg" / "mint" / "mint-test.yaml", {"url": "from-xdg"})
    cfg = load_config(Settings, "mint-test", environ={})
    assert cfg.url == "from-xdg"


def test_system_dir_comes_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINT_SYSTEM_CONFIG_DIR", str(tmp_path / "sys"))
    write_yaml(tmp_path / "sys" / "mint-test.yaml", {"max_parallel": 7})
    assert load_config(Settings, "mint-test", environ={}).max_parallel == 7


def test_env_prefix_strips_mint_and_uppercases() -> None:
    assert env_prefix("mint-poll") == "MINT_POLL_"
    assert env_prefix("mint-s3job") == "MINT_S3JOB_"


def test_environment_values_are_parsed_by_type(dirs: dict[str, Path]) -> None:
    env = {
        "MINT_TEST_POLL_INTERVAL": "2.5",
        "MINT_TEST_MAX_PARALLEL": "4",
        "MINT_TEST_VERIFY": "no",
        "MINT_TEST_TAGS": "a, b,c",
        "MINT_TEST_CALC_BASE": "~/calc",
        "MINT_TEST_COMMANDS": "{run: {argv: [/bin/true], timeout: 5}}",
        "MINT_TEST_RETRY": "retry:3,10",
    }
    cfg = load(dirs, environ=env)
    assert cfg.poll_interval == 2.5
    assert cfg.max_parallel == 4
    assert cfg.verify is False
    assert cfg.tags == ("a", "b", "c")
    assert cfg.calc_base == Path.home() / "calc"
    assert cfg.commands == {"run": Command(argv=("/bin/true",), timeout=5.0)}
    assert (cfg.retry.max_attempts, cfg.retry.base_delay, cfg.retry.backoff) == (4, 10.0, 1.0)


def test_mappings_merge_by_key_across_layers(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["system"] / "mint-test.yaml", {"commands": {"a": {"argv": ["/bin/a"]}}})
    write_yaml(dirs["user"] / "mint-test.yaml", {"commands": {"b": {"argv": ["/bin/b"]}}})
    cfg = load(dirs)
    assert set(cfg.commands) == {"a", "b"}


def test_unknown_key_names_file_and_suggests(dirs: dict[str, Path]) -> None:
    path = write_yaml(dirs["user"] / "mint-test.yaml", {"pol_interval": 5})
    with pytest.raises(ConfigError) as info:
        load(dirs)
    message = str(info.value)
    assert str(path) in message
    assert "'pol_interval'" in message
    assert "did you mean 'poll_interval'" in message
    assert info.value.exit_status == 78


def test_unknown_environment_variable_is_refused_with_hint(dirs: dict[str, Path]) -> None:
    with pytest.raises(
        ConfigError, match=r"MINT_TEST_POLL_INTERVALL.*did you mean 'MINT_TEST_POLL_INTERVAL'"
    ):
        load(dirs, environ={"MINT_TEST_POLL_INTERVALL": "3"})


def test_unknown_nested_key_names_the_path(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"commands": {"run": {"argv": ["x"], "timout": 3}}})
    with pytest.raises(ConfigError, match=r"commands\['run'\]\.timout.*did you mean 'timeout'"):
        load(dirs)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"poll_interval": "soon"}, "key 'poll_interval': expected a number, got 'soon'"),
        ({"max_parallel": 1.5}, "key 'max_parallel': expected an integer, got 1.5"),
        ({"max_parallel": True}, "key 'max_parallel': expected an integer, got True"),
        ({"verify": "maybe"}, "key 'verify': expected true or false, got 'maybe'"),
        ({"mode": "turbo"}, "key 'mode': expected one of 'fast', 'safe', got 'turbo'"),
        ({"tags": {"a": 1}}, "key 'tags': expected a list"),
        ({"commands": ["x"]}, "key 'commands': expected a mapping"),
        ({"url": ["x"]}, "key 'url': expected a string"),
        ({"calc_base": ""}, "key 'calc_base': expected a path"),
        ({"retry": "retry:x"}, "key 'retry': expected retry:<count>,<interval>"),
        ({"commands": {"run": {"timeout": 1}}}, "missing required 'argv'"),
        ({"max_parallel": 0}, "must be at least 1, got 0"),
    ],
    ids=[
        "float",
        "int-float",
        "int-bool",
        "bool",
        "literal",
        "list",
        "mapping",
        "str",
        "path",
        "retry",
        "nested-required",
        "validate",
    ],
)
def test_bad_values_name_file_key_and_value(
    dirs: dict[str, Path], data: dict[str, Any], fragment: str
) -> None:
    path = write_yaml(dirs["user"] / "mint-test.yaml", data)
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert fragment in str(info.value)
    if "validate" not in fragment and "at least" not in fragment:
        assert str(path) in str(info.value)


def test_invalid_yaml_names_file_and_line(dirs: dict[str, Path]) -> None:
    path = dirs["user"] / "mint-test.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("url: a\npoll_interval: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path} is not valid YAML at line \d+"):
        load(dirs)


def test_top_level_must_be_a_mapping(dirs: dict[str, Path]) -> None:
    path = dirs["user"] / "mint-test.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(dirs)


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert read_yaml_mapping(path) == {}


def test_missing_explicit_config_file_is_a_config_error(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"does-not-exist\.yaml does not exist"):
        load(dirs, config_file=tmp_path / "does-not-exist.yaml")


def test_non_utf8_file_is_refused(dirs: dict[str, Path]) -> None:
    path = dirs["user"] / "mint-test.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"url: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(dirs)


def test_required_setting_missing_says_where_to_set_it(dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"missing required setting 'site_id'.*MINT_TEST_SITE_ID"):
        load(dirs, schema=Required, environ={"MINT_TEST_TOKEN": "abcdefgh"})
    with pytest.raises(ConfigError, match="token, token_file or token_command"):
        load(dirs, schema=Required, environ={"MINT_TEST_SITE_ID": "nims-dev"})


def test_secret_from_environment_is_masked_everywhere(dirs: dict[str, Path]) -> None:
    cfg = load(dirs, environ={"MINT_TEST_TOKEN": "tok-env-0123456789"})
    assert cfg.token.reveal() == "tok-env-0123456789"
    assert "tok-env" not in repr(cfg)
    assert str(cfg.token) == MASK
    assert redacted_view(cfg)["token"] == MASK
    assert redact("Bearer tok-env-0123456789") == f"Bearer {MASK}"


def test_secret_file_must_be_private(dirs: dict[str, Path], tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-file-0123456789\n", encoding="utf-8")
    secret.chmod(0o644)
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_file": str(secret)})
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert "token_file" in str(info.value)
    assert "0644" in str(info.value)
    assert info.value.hint == f"chmod 600 {secret}"
    secret.chmod(0o600)
    assert load(dirs).token.reveal() == "tok-file-0123456789"
    assert redact("x tok-file-0123456789 y") == f"x {MASK} y"


def test_secret_file_missing_or_empty(dirs: dict[str, Path], tmp_path: Path) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_file": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="does not exist"):
        load(dirs)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_file": str(empty)})
    with pytest.raises(ConfigError, match="is empty"):
        load(dirs)


def test_secret_command_stdout_is_the_secret(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_command": "echo tok-cmd-0123456789"})
    assert load(dirs).token.reveal() == "tok-cmd-0123456789"


def test_secret_command_failure_names_key_but_not_output(dirs: dict[str, Path]) -> None:
    write_yaml(
        dirs["user"] / "mint-test.yaml",
        {"token_command": "echo leaked-0123456789; echo 'vault: locked' >&2; exit 3"},
    )
    with pytest.raises(ConfigError) as info:
        load(dirs)
    message = str(info.value)
    assert "token_command" in message and "status 3" in message and "vault: locked" in message
    assert "leaked-0123456789" not in redact(message)


def test_secret_command_printing_nothing_is_refused(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_command": "true"})
    with pytest.raises(ConfigError, match="printed nothing"):
        load(dirs)


def test_higher_layer_secret_source_replaces_lower_one(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["system"] / "mint-test.yaml", {"token_command": "exit 1"})
    cfg = load(dirs, environ={"MINT_TEST_TOKEN": "tok-wins-0123456789"})
    assert cfg.token.reveal() == "tok-wins-0123456789"


def test_two_secret_sources_in_one_layer_are_refused(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"token": "abcdefgh", "token_command": "echo x"})
    with pytest.raises(
        ConfigError, match="give only one of 'token', 'token_file', 'token_command'"
    ):
        load(dirs)


def test_empty_secret_value_is_refused(dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="key 'token': expected a non-empty string"):
        load(dirs, environ={"MINT_TEST_TOKEN": " "})


def test_aliases_and_extra_env_names(dirs: dict[str, Path]) -> None:
    write_yaml(dirs["user"] / "mint-test.yaml", {"QUEUE_NAME": "burst"})
    assert load(dirs).queue_name == "burst"
    assert load(dirs, environ={"QUEUE_NAME": "legacy-env"}).queue_name == "legacy-env"
    both = {"QUEUE_NAME": "legacy-env", "MINT_TEST_QUEUE_NAME": "new-env"}
    assert load(dirs, environ=both).queue_name == "new-env"


def test_schema_must_be_a_dataclass() -> None:
    with pytest.raises(TypeError):
        load_config(dict, "mint-test", environ={})  # type: ignore[type-var]


def test_redacted_view_is_plain_data(dirs: dict[str, Path]) -> None:
    cfg = load(
        dirs,
        environ={"MINT_TEST_TOKEN": "abcdefgh1234", "MINT_TEST_TAGS": "x"},
        cli={"commands": {"run": {"argv": ["/bin/true"]}}},
    )
    view = redacted_view(cfg)
    assert view["tags"] == ["x"]
    assert view["calc_base"] == "/tmp"
    assert view["commands"] == {"run": {"argv": ["/bin/true"], "timeout": None}}
    assert "abcdefgh1234" not in repr(view)


_keys = st.sampled_from(["url", "max_parallel", "poll_interval"])
_values = {
    "url": st.text(alphabet="abcxyz:/.", min_size=1, max_size=10),
    "max_parallel": st.integers(min_value=1, max_value=64),
    "poll_interval": st.floats(min_value=0, max_value=1e6, allow_nan=False),
}


@st.composite
def layer(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.sets(_keys))
    return {k: draw(_values[k]) for k in keys}


@given(layers=st.lists(layer(), min_size=1, max_size=4))
def test_merging_takes_the_highest_layer_that_sets_each_key(
    tmp_path_factory: pytest.TempPathFactory, layers: list[dict[str, Any]]
) -> None:
    base = tmp_path_factory.mktemp("merge")
    system, user = base / "sys", base / "user"
    names = ["system", "user", "explicit", "cli"]
    paths = {
        "system": system / "mint-test.yaml",
        "user": user / "mint-test.yaml",
        "explicit": base / "explicit.yaml",
    }
    config_file = None
    cli: dict[str, Any] = {}
    for name, data in zip(names, layers):
        if name == "cli":
            cli = data
        else:
            write_yaml(paths[name], data)
            if name == "explicit":
                config_file = paths[name]
    cfg = load_config(
        Settings,
        "mint-test",
        system_dir=system,
        user_dir=user,
        config_file=config_file,
        cli=cli,
        environ={},
    )
    for key in ("url", "max_parallel", "poll_interval"):
        expected = getattr(Settings(), key)
        for data in layers:
            if key in data:
                expected = data[key]
        assert (
            getattr(cfg, key) == pytest.approx(expected)
            if isinstance(expected, float)
            else (getattr(cfg, key) == expected)
        )
    for path in paths.values():
        if path.exists():
            os.unlink(path)


def _two_line_file(tmp_path: Path) -> Path:
    path = tmp_path / "two-lines"
    path.write_text("tok-first-line-0123\ntok-second-line-4567\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_two_line_secret_file_is_refused_naming_the_file_not_the_lines(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    path = _two_line_file(tmp_path)
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_file": str(path)})
    with pytest.raises(ConfigError) as info:
        load(dirs)
    message = f"{info.value} {info.value.hint}"
    assert info.value.exit_status == 78
    assert str(path) in message and "token_file" in message and "2 lines" in message
    assert "tok-first" not in message and "tok-second" not in message
    assert redact("x tok-second-line-4567 y") == f"x {MASK} y"


def test_multi_line_secret_command_is_refused_with_a_head_hint(dirs: dict[str, Path]) -> None:
    command = "printf 'tok-pass-line-0123\\nlogin: alice-admin\\n'"
    write_yaml(dirs["user"] / "mint-test.yaml", {"token_command": command})
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert "token_command" in str(info.value) and "2 lines" in str(info.value)
    assert info.value.hint is not None and f"{command} | head -n1" in info.value.hint
    assert "tok-pass-line-0123" not in str(info.value)
    assert redact("output: tok-pass-line-0123") == f"output: {MASK}"


@pytest.mark.parametrize("value", ["tok-a-0123\ntok-b-4567", "tok-a-0123\rtok-b-4567"])
def test_secret_value_with_a_line_break_is_refused(dirs: dict[str, Path], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(dirs, environ={"MINT_TEST_TOKEN": value})
    assert "MINT_TEST_" in str(info.value) and "'token'" in str(info.value)
    assert "tok-a" not in str(info.value) and "tok-b" not in str(info.value)
