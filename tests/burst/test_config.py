"""Configuration (the seed's setting names), hosts.json, and the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint_burst.config import BurstConfig
from mint_burst.hosts import load_hosts, parse_hosts
from mint_common.config import load_config
from mint_common.errors import ConfigError, NoInputError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "mint-burst"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_seed_environment_variables_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "QUEUE_NAME": "burst",
        "CLEANUP_NODE_WAIT_TIME": "300",
        "NFS_MOUNT_POINT": "172.30.2.194:/export",
        "NFS_LOCAL_DIR": "/work",
        "PROVIDER_NAME": "azure",
        "FLAVOR_NAME": "c5.large",
        "IMAGE_NAME": "ami-0abc",
        "VC_NAME": "hybridcloud",
    }.items():
        monkeypatch.setenv(name, value)
    config = load_config(
        BurstConfig,
        "mint-burst",
        config_file=write(tmp_path / "c.yaml", "ec2: {subnets: [subnet-1]}\n"),
    )
    assert (config.queue, config.idle_timeout, config.nfs_local_dir) == ("burst", 300.0, "/work")
    assert (config.provider_name, config.instance_types, config.ami) == (
        "azure",
        ["c5.large"],
        "ami-0abc",
    )
    assert (config.cluster, config.nfs_mount_point) == ("hybridcloud", "172.30.2.194:/export")


def test_seed_names_work_as_yaml_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "QUEUE_NAME: gpu\nCLEANUP_NODE_WAIT_TIME: 120\n"
        "IMAGE_NAME: ami-1\nFLAVOR_NAME: t3.large\nec2: {subnets: [subnet-1]}\n",
    )
    config = load_config(BurstConfig, "mint-burst", config_file=path)
    assert (config.queue, config.idle_timeout) == ("gpu", 120.0)


def test_mint_variable_wins_over_the_seed_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUEUE_NAME", "old")
    monkeypatch.setenv("MINT_BURST_QUEUE", "new")
    config = load_config(
        BurstConfig,
        "mint-burst",
        config_file=write(
            tmp_path / "c.yaml", "image: ami-1\nflavor: t3.micro\nec2: {subnets: [s-1]}\n"
        ),
    )
    assert config.queue == "new"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("ec2: {subnets: [s-1]}\nflavor: t3.micro\n", "needs 'ec2.launch_template' or an AMI"),
        ("image: ami-1\nec2: {subnets: [s-1]}\n", "needs 'ec2.instance_types'"),
        ("image: ami-1\nflavor: t3.micro\n", "needs 'ec2.subnets'"),
        ("provider: command\ncommand: {create: [a], list: [b]}\n", "command.delete"),
        (
            "provider: command\ncommand: {create: [a], list: [b], delete: [c]}\n"
            "NFS_MOUNT_POINT: /export\n",
            "expected server:/directory",
        ),
        (
            "provider: command\ncommand: {create: [a], list: [b], delete: [c]}\nmax_nodes: 0\n",
            "max_nodes",
        ),
        ("idle_timout: 5\n", "did you mean 'idle_timeout'"),
    ],
    ids=["no-ami", "no-type", "no-subnet", "no-delete", "bad-nfs", "zero-nodes", "typo"],
)
def test_invalid_config_names_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(BurstConfig, "mint-burst", config_file=write(tmp_path / "c.yaml", yaml_text))


def test_hosts_json_of_the_seed_parses_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.json",
        json.dumps(
            {"172.30.2.101": "c1", "172.30.2.102": "c2", "172.30.2.103": "c3", "172.30.2.104": "c4"}
        ),
    )
    assert [h.name for h in load_hosts(path)] == ["c1", "c2", "c3", "c4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"172.30.2.101": "c1", "172.30.2.101": "c2"}', "appears twice"),
        ('{"172.30.2.101": "c1", "172.30.2.102": "c1"}', "host name 'c1' appears twice"),
        ('{"not-an-ip": "c1"}', "is not an IP address"),
        ('{"172.30.2.101": "c1; rm -rf /"}', "is not a valid host name"),
        ('["c1"]', "expected an object"),
        ("{}", "lists no hosts"),
        ('{"172.30.2.101": "c1",', "not valid JSON"),
    ],
    ids=["dup-ip", "dup-name", "bad-ip", "bad-name", "list", "empty", "truncated"],
)
def test_bad_hosts_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hosts(text, "hosts.json")


def test_missing_hosts_json_is_no_input(tmp_path: Path) -> None:
    with pytest.raises(NoInputError, match="does not exist"):
        load_hosts(tmp_path / "nope.json")


@given(
    st.dictionaries(
        st.ip_addresses(v=4).map(str),
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        min_size=1,
        max_size=30,
    )
)
@settings(max_examples=150, deadline=None)
def test_hosts_json_round_trips(mapping: dict[str, str]) -> None:
    if len(set(mapping.values())) != len(mapping):
        with pytest.raises(ConfigError, match="appears twice"):
            parse_hosts(json.dumps(mapping), "h")
        return
    hosts = parse_hosts(json.dumps(mapping), "h")
    assert [(h.ip, h.name) for h in hosts] == list(mapping.items())


@pytest.mark.parametrize(
    "name", ["mint-burst.yaml", "mint-burst-command.yaml"], ids=["ec2", "command"]
)
def test_example_configs_load(name: str) -> None:
    config = load_config(BurstConfig, "mint-burst", config_file=EXAMPLES / name)
    assert config.queue == "cloud"
    assert config.idle_timeout == 600


def test_example_env_file_loads_as_the_seed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (EXAMPLES / "env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    config = load_config(BurstConfig, "mint-burst", config_file=EXAMPLES / "mint-burst.yaml")
    assert config.cluster == "hybridcloud" and config.nfs_mount_point == "172.30.2.194:/export"


def test_example_hosts_json_loads() -> None:
    assert len(load_hosts(EXAMPLES / "hosts.json")) == 16


COMMAND_PROVIDER = "provider: command\ncommand: {create: [a], list: [b], delete: [c]}\n"


def test_durations_are_read_in_every_form_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.yaml", COMMAND_PROVIDER + "boot_timeout: 15m\nlaunch_grace: 1h30m\n")
    monkeypatch.setenv("MINT_BURST_POLL_INTERVAL", "30s")
    monkeypatch.setenv("CLEANUP_NODE_WAIT_TIME", "2h")
    config = load_config(BurstConfig, "mint-burst", config_file=path)
    assert (config.boot_timeout, config.launch_grace) == (900.0, 5400.0)
    assert (config.poll_interval, config.idle_timeout) == (30.0, 7200.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MINT_BURST_BOOT_TIMEOUT", "0", "must be greater than 0, got 0"),
        ("MINT_BURST_POLL_INTERVAL", "soon", "expected seconds (600) or a number with"),
        ("CLEANUP_NODE_WAIT_TIME", "-300", "must be 0 or more, got -300"),
        ("MINT_BURST_MAX_NODES", "0", "must be 1 or more, got 0"),
    ],
    ids=["zero-boot", "not-a-duration", "negative-seed-name", "zero-nodes"],
)
def test_a_bad_value_names_the_variable_that_was_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    path = write(tmp_path / "c.yaml", COMMAND_PROVIDER)
    with pytest.raises(ConfigError) as caught:
        load_config(BurstConfig, "mint-burst", config_file=path)
    assert f"environment variable {variable}" in str(caught.value)
    assert message in str(caught.value)


def test_the_state_file_lives_under_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    config = load_config(
        BurstConfig, "mint-burst", config_file=write(tmp_path / "c.yaml", COMMAND_PROVIDER)
    )
    assert config.state_file == tmp_path / "state-home" / "mint" / "burst" / "state.json"


def test_retry_sets_the_aws_attempts_and_the_old_ec2_key_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = "image: ami-1\nflavor: t3.micro\n"
    new = load_config(
        BurstConfig,
        "mint-burst",
        config_file=write(
            tmp_path / "new.yaml", base + "retry: {max_attempts: 4}\nec2: {subnets: [s-1]}\n"
        ),
    )
    assert new.aws_max_attempts == 4 and "deprecated" not in caplog.text
    old = load_config(
        BurstConfig,
        "mint-burst",
        config_file=write(tmp_path / "old.yaml", base + "ec2: {subnets: [s-1], max_attempts: 3}\n"),
    )
    assert old.aws_max_attempts == 3
    assert "'ec2.max_attempts' is deprecated" in caplog.text and "retry" in caplog.text
    assert BurstConfig().aws_max_attempts == 5
    with pytest.raises(ConfigError, match=r"key 'ec2\.max_attempts': must be at least 1"):
        load_config(
            BurstConfig,
            "mint-burst",
            config_file=write(tmp_path / "bad.yaml", base + "ec2: {max_attempts: 0}\n"),
        )
