"""The command provider with site scripts written by the test (the JSON contract).

Scripts whose create really starts a node (a slurmd of the real test cluster) and whose
delete stops it are in test_e2e_slurm.py; the contract's failure cases (bad JSON,
exit 75, timeouts) stay here, where they need no cluster and run for non-root developers.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from mint_burst.command_provider import CommandProvider
from mint_burst.config import BurstConfig, CommandSettings
from mint_burst.provider import LaunchRequest
from mint_common.errors import ConfigError, InputError, TryAgainLater, UnavailableError

# A tiny "cloud" kept in a JSON file: what a site's VCP SDK / Azure CLI wrapper would do.
CLOUD_SCRIPT = """\
import json, os, sys
request = json.load(sys.stdin)
db_path = os.environ["CLOUD_DB"]
db = json.load(open(db_path)) if os.path.exists(db_path) else {"next": 1, "vms": {}}
log = open(db_path + ".log", "a")
log.write(json.dumps({"request": request, "env": {k: os.environ.get(k, "") for k in
          ("VC_NAME", "FLAVOR_NAME", "IMAGE_NAME", "NFS_MOUNT_POINT", "NFS_LOCAL_DIR",
           "PROVIDER_NAME")}}) + "\\n")
action = request["action"]
if action == "create":
    if request["node"] == "full":
        print("no capacity in this region", file=sys.stderr)
        sys.exit(75)
    vm = f"vm-{db['next']}"
    db["next"] += 1
    db["vms"][vm] = {"node": request["node"], "ip": request["ip"]}
    print(json.dumps({"instance_id": vm}))
elif action == "list":
    print(json.dumps({"instances": [{"instance_id": k, "node": v["node"], "ip": v["ip"],
                                     "state": "running"} for k, v in db["vms"].items()]}))
elif action == "delete":
    for vm in request["instance_ids"]:
        db["vms"].pop(vm, None)
    print("{}")
json.dump(db, open(db_path, "w"))
"""


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CommandProvider:
    monkeypatch.setenv("CLOUD_DB", str(tmp_path / "cloud.json"))
    cloud = script(tmp_path, "cloud.py", CLOUD_SCRIPT)
    config = BurstConfig(
        provider="command",
        cluster="hybridcloud",
        flavor="small",
        image="base:slurm",
        nfs_mount_point="172.30.2.194:/export",
        command=CommandSettings(create=[cloud, "create"], list=[cloud], delete=[cloud], timeout=30),
    )
    return CommandProvider(config)


def log_lines(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "cloud.json.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_create_list_delete_round_trip(provider: CommandProvider, tmp_path: Path) -> None:
    instance_id = provider.launch(LaunchRequest("c1", "172.30.2.101", "tok-1", "#!/bin/sh\n"))
    assert instance_id == "vm-1"
    [listed] = provider.list_instances()
    assert (listed.instance_id, listed.node, listed.ip) == ("vm-1", "c1", "172.30.2.101")
    provider.terminate(["vm-1"])
    assert provider.list_instances() == []
    create = log_lines(tmp_path)[0]
    assert create["request"] == {
        "action": "create",
        "cluster": "hybridcloud",
        "node": "c1",
        "ip": "172.30.2.101",
        "token": "tok-1",
        "user_data": "#!/bin/sh\n",
        "provider_name": "aws",
        "flavor": "small",
        "image": "base:slurm",
        "nfs_mount_point": "172.30.2.194:/export",
        "nfs_local_dir": "/mnt",
    }
    assert create["env"] == {
        "VC_NAME": "hybridcloud",
        "FLAVOR_NAME": "small",
        "IMAGE_NAME": "base:slurm",
        "NFS_MOUNT_POINT": "172.30.2.194:/export",
        "NFS_LOCAL_DIR": "/mnt",
        "PROVIDER_NAME": "aws",
    }


def test_exit_75_means_try_later(provider: CommandProvider) -> None:
    with pytest.raises(TryAgainLater, match="no capacity in this region"):
        provider.launch(LaunchRequest("full", "172.30.2.109", "t", ""))


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            "import sys; print('boom', file=sys.stderr); sys.exit(3)",
            UnavailableError,
            "exited with status 3: boom",
        ),
        ("print('not json')", InputError, "did not print JSON"),
        ("print('[1, 2]')", InputError, "must print a JSON object"),
        (
            'print(\'{"instances": [{"node": "c1"}]}\')',
            InputError,
            'needs "instance_id" and "node"',
        ),
        ("print('{}')", InputError, 'printed no "instances" list'),
    ],
    ids=["failure", "not-json", "not-object", "bad-instance", "no-list"],
)
def test_bad_list_answers_raise(tmp_path: Path, body: str, error: type, message: str) -> None:
    broken = script(tmp_path, "broken.py", body + "\n")
    config = BurstConfig(
        provider="command", command=CommandSettings(create=[broken], list=[broken], delete=[broken])
    )
    with pytest.raises(error, match=message):
        CommandProvider(config).list_instances()


def test_create_without_instance_id_raises(tmp_path: Path) -> None:
    quiet = script(tmp_path, "quiet.py", "print('{}')\n")
    config = BurstConfig(
        provider="command", command=CommandSettings(create=[quiet], list=[quiet], delete=[quiet])
    )
    with pytest.raises(InputError, match='printed no "instance_id"'):
        CommandProvider(config).launch(LaunchRequest("c1", "1.2.3.4", "t", ""))


def test_slow_script_times_out(tmp_path: Path) -> None:
    slow = script(tmp_path, "slow.py", "import time; time.sleep(30)\n")
    config = BurstConfig(
        provider="command",
        command=CommandSettings(create=[slow], list=[slow], delete=[slow], timeout=0.5),
    )
    with pytest.raises(UnavailableError, match=r"did not answer within 0\.5 s"):
        CommandProvider(config).list_instances()


def test_check_lists_and_refuses_a_missing_script(
    provider: CommandProvider, tmp_path: Path
) -> None:
    assert provider.check() == [("command provider list", "list script answered (0 instance(s))")]
    config = BurstConfig(
        provider="command",
        command=CommandSettings(
            create=[str(tmp_path / "nope")], list=[str(tmp_path / "nope")], delete=["x"]
        ),
    )
    with pytest.raises(ConfigError, match="nope does not exist"):
        CommandProvider(config).check()
