"""Host resolution from ssh_config and from the tool's own `hosts:` map; config loading."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mint_common.config import load_config
from mint_common.errors import ConfigError
from mint_ssh.config import SshToolConfig
from mint_ssh.diagnose import check_host
from mint_ssh.hosts import parse_jump, resolve_host

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mint-ssh"


def _config(tmp_path: Path, text: str) -> SshToolConfig:
    path = tmp_path / "mint-ssh.yaml"
    path.write_text(text)
    return load_config(SshToolConfig, "mint-ssh", config_file=path)


def test_ssh_config_alias_gives_every_supported_field(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        "Host ssh-node01\n"
        "  HostName calc.example.jp\n"
        "  Port 50022\n"
        "  User mint\n"
        "  IdentityFile ~/.ssh/mint_ed25519\n"
        "  ProxyCommand nc -X 5 -x socks.example.jp:1080 %h %p\n"
        "  ServerAliveInterval 15\n"
        "  ServerAliveCountMax 4\n"
        f"  UserKnownHostsFile {tmp_path}/kh1 {tmp_path}/kh2\n"
        "Host jumped\n"
        "  HostName inner.example.jp\n"
        "  ProxyJump gw.example.jp:2222,mint@gw2\n"
    )
    cfg = _config(tmp_path, f"ssh_config: {ssh_config}\n")
    spec = resolve_host("ssh-node01", cfg)
    assert (spec.hostname, spec.port, spec.user) == ("calc.example.jp", 50022, "mint")
    assert spec.identity_files == (Path.home() / ".ssh" / "mint_ed25519",)
    assert spec.proxy_command == "nc -X 5 -x socks.example.jp:1080 calc.example.jp 50022"
    assert (spec.server_alive_interval, spec.server_alive_count_max) == (15, 4)
    assert spec.known_hosts_files == (tmp_path / "kh1", tmp_path / "kh2")
    assert spec.known_hosts_name == "[calc.example.jp]:50022"
    jumped = resolve_host("jumped", cfg)
    assert jumped.proxy_jump == ("gw.example.jp:2222", "mint@gw2")


def test_hosts_map_wins_over_ssh_config(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        "hosts:\n"
        "  node:\n"
        "    hostname: 192.0.2.10\n"
        "    port: 2222\n"
        "    user: calc\n"
        "    identity_file: [/keys/a, /keys/b]\n"
        "    proxy_command: nc %h %p\n"
        "    workdir_base: /scratch\n"
        "    remote_program: ~/bin/run.sh\n",
    )
    spec = resolve_host("node", cfg)
    assert (spec.hostname, spec.port, spec.user) == ("192.0.2.10", 2222, "calc")
    assert spec.identity_files == (Path("/keys/a"), Path("/keys/b"))
    assert spec.proxy_command == "nc 192.0.2.10 2222"
    assert (spec.workdir_base, spec.remote_program) == ("/scratch", "~/bin/run.sh")
    assert spec.known_hosts_name == "[192.0.2.10]:2222"


def _found(_name: str, _port: int) -> object:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 22))]


class _Resolver:
    """Stands in for getaddrinfo: answers with `error`, records the names asked."""

    def __init__(self, error: int | None) -> None:
        self.error = error
        self.asked: list[str] = []

    def __call__(self, name: str, port: int) -> object:
        self.asked.append(name)
        if self.error is not None:
            raise socket.gaierror(self.error, "resolver says no")
        return _found(name, port)


def test_unknown_alias_without_ssh_config_uses_the_name(tmp_path: Path) -> None:
    spec = resolve_host("calc.example.jp", _config(tmp_path, ""), lookup=_found)
    assert (spec.hostname, spec.port) == ("calc.example.jp", 22)
    assert spec.known_hosts_name == "calc.example.jp"


def _known_hosts_config(tmp_path: Path) -> SshToolConfig:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        "Host ssh-node01 ssh-node02\n  HostName calc.example.jp\nHost *\n  ServerAliveInterval 10\n"
    )
    return _config(tmp_path, f"ssh_config: {ssh_config}\nhosts:\n  gpu-node: {{}}\n")


@pytest.mark.parametrize(
    "code",
    [socket.EAI_NONAME, socket.EAI_NODATA],
    ids=["EAI_NONAME", "EAI_NODATA"],
)
def test_misspelt_host_is_a_config_error_with_did_you_mean(tmp_path: Path, code: int) -> None:
    resolver = _Resolver(code)
    with pytest.raises(ConfigError, match="did you mean 'ssh-node01'") as caught:
        resolve_host("ssh-nod01", _known_hosts_config(tmp_path), lookup=resolver)
    assert caught.value.exit_status == 78
    assert "gpu-node" in (caught.value.hint or "")
    assert resolver.asked == ["ssh-nod01"], "a `Host *` block does not make a name known"


def test_a_temporary_resolver_failure_is_left_to_the_retrying_connect(tmp_path: Path) -> None:
    resolver = _Resolver(socket.EAI_AGAIN)
    spec = resolve_host("ssh-nod01", _known_hosts_config(tmp_path), lookup=resolver)
    assert spec.hostname == "ssh-nod01" and resolver.asked == ["ssh-nod01"]


def test_known_names_are_not_looked_up(tmp_path: Path) -> None:
    resolver = _Resolver(socket.EAI_NONAME)
    cfg = _known_hosts_config(tmp_path)
    assert resolve_host("ssh-node02", cfg, lookup=resolver).hostname == "calc.example.jp"
    assert resolve_host("gpu-node", cfg, lookup=resolver).hostname == "gpu-node"
    assert resolver.asked == []


def test_check_shows_a_misspelt_host_as_a_failed_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _known_hosts_config(tmp_path)
    connected: list[object] = []
    status = check_host(
        lambda: resolve_host("ssh-nod01", cfg, lookup=_Resolver(socket.EAI_NONAME)),
        connected.append,  # type: ignore[arg-type]
        as_json=True,
    )
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["checks"]}
    assert status == 1 and connected == []
    assert rows["config"]["status"] == "fail"
    assert "did you mean 'ssh-node01'" in rows["config"]["detail"]
    assert rows["connect"]["status"] == "skip"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workdir_base: tmp\n", "workdir_base"),
        ("hosts:\n  n:\n    workdir_base: rel\n", "hosts.n.workdir_base"),
        ("retry: often\n", "retry"),
        ("hostz: {}\n", "did you mean"),
        ("connect_timeout: 0\n", "connect_timeout"),
    ],
    ids=["relative-base", "relative-host-base", "bad-retry", "typo", "zero-timeout"],
)
def test_bad_config_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, text)


@pytest.mark.parametrize("alias", ["-oProxyCommand=x", "a b", ""], ids=["option", "space", "empty"])
def test_suspicious_host_names_are_refused(tmp_path: Path, alias: str) -> None:
    with pytest.raises(ConfigError):
        resolve_host(alias, _config(tmp_path, ""))


@pytest.mark.parametrize(
    ("jump", "expected"),
    [
        ("gw", (None, "gw", None)),
        ("mint@gw:2222", ("mint", "gw", 2222)),
        ("[2001:db8::1]:22", (None, "2001:db8::1", 22)),
    ],
    ids=["host", "user-host-port", "ipv6"],
)
def test_parse_jump(jump: str, expected: tuple[object, ...]) -> None:
    assert parse_jump(jump) == expected


def test_example_config_loads(tmp_path: Path) -> None:
    cfg = load_config(SshToolConfig, "mint-ssh", config_file=EXAMPLES / "mint-ssh.yaml")
    assert "ssh-node01" in cfg.hosts
    assert cfg.retry.max_attempts == 6
    spec = resolve_host("ssh-node01", cfg, lookup=_found)
    assert spec.proxy_command is not None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("port", "0", "must be 1 or more, got 0"),
        ("port", "70000", "must be 65535 or less, got 70000"),
        ("server_alive_interval", "-5", "must be 0 or more, got -5"),
        ("server_alive_count_max", "-1", "must be 0 or more, got -1"),
    ],
    ids=["port-0", "port-too-big", "negative-interval", "negative-count"],
)
def test_a_host_entry_out_of_range_is_refused_naming_the_file(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, f"hosts:\n  n:\n    {key}: {value}\n")
    expected = f"{tmp_path / 'mint-ssh.yaml'}: key \"hosts['n'].{key}\": {problem}"
    assert str(caught.value) == expected


def test_the_default_retry_is_the_legacy_one_six_attempts_sixty_seconds_apart() -> None:
    retry = SshToolConfig().retry
    assert (retry.max_attempts, retry.base_delay, retry.max_delay) == (6, 60.0, 60.0)
    assert (retry.backoff, retry.jitter) == (1.0, False)


def test_none_switches_proxies_off_and_the_tools_known_hosts_goes_first(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        "Host plain\n  HostName calc.example.jp\n  ProxyCommand none\n  ProxyJump none\n"
        f"  UserKnownHostsFile {tmp_path}/kh1\n"
    )
    cfg = _config(tmp_path, f"ssh_config: {ssh_config}\nknown_hosts: {tmp_path}/tool_kh\n")
    spec = resolve_host("plain", cfg)
    assert (spec.proxy_command, spec.proxy_jump) == (None, ())
    assert spec.known_hosts_files == (tmp_path / "tool_kh", tmp_path / "kh1")


def test_a_port_out_of_range_in_the_ssh_config_is_a_config_error(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host far\n  HostName calc.example.jp\n  Port 70000\n")
    with pytest.raises(ConfigError) as caught:
        resolve_host("far", _config(tmp_path, f"ssh_config: {ssh_config}\n"))
    assert str(caught.value) == f"ssh config {ssh_config}: port 70000 is out of range"
