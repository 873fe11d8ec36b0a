"""Fixtures for mint-burst tests: recorded outputs, the fake scheduler on PATH, EC2 under moto."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from mint_common.proc import CommandResult

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"
FAKES = HERE / "fakes"


def recorded(name: str, argv: Sequence[str] = ()) -> CommandResult:
    """A recorded command output as the CommandResult the adapters get from run_command."""
    rc_file = RECORDED / f"{name}.rc"
    stderr_file = RECORDED / f"{name}.stderr"
    return CommandResult(
        argv=tuple(argv) or (name,),
        return_code=int(rc_file.read_text()) if rc_file.exists() else 0,
        stdout=(RECORDED / f"{name}.stdout").read_text(),
        stderr=stderr_file.read_text() if stderr_file.exists() else "",
    )


@dataclass
class RecordedRunner:
    """Answers each command with a recorded sample, chosen by a function of the argv."""

    choose: Callable[[list[str]], str]
    calls: list[list[str]]

    def __call__(self, argv: list[str], *, timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        return recorded(self.choose(list(argv)), argv)


@pytest.fixture
def recorded_runner() -> Callable[[Callable[[list[str]], str]], RecordedRunner]:
    def make(choose: Callable[[list[str]], str]) -> RecordedRunner:
        return RecordedRunner(choose, [])

    return make


@dataclass
class FakeScheduler:
    state_file: Path
    bin_dir: Path

    def read(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def write(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=1))

    def update(self, **changes: Any) -> None:
        state = self.read()
        state.update(changes)
        self.write(state)

    def set_node(self, name: str, state: str, flags: str = "") -> None:
        document = self.read()
        document["nodes"][name] = {"state": state, "flags": flags}
        self.write(document)


@pytest.fixture
def fake_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeScheduler:
    """squeue/sinfo/scontrol/qstat/pbsnodes on PATH, answering from a JSON state file."""
    state_file = tmp_path / "fake-sched.json"
    nodes = {f"c{i}": {"state": "down", "flags": "*"} for i in range(1, 5)}
    state_file.write_text(json.dumps({"partitions": ["cloud"], "jobs": [], "nodes": nodes}))
    monkeypatch.setenv("FAKE_SCHED_STATE", str(state_file))
    monkeypatch.setenv("FAKE_SCHED_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return FakeScheduler(state_file, FAKES)


HOSTS = {"10.0.1.11": "c1", "10.0.1.12": "c2", "10.0.1.13": "c3", "10.0.1.14": "c4"}


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(HOSTS))
    return path


@dataclass
class Ec2World:
    """A VPC of its own with two subnets, an AMI, and a cluster name no other test uses."""

    client: Any
    subnet: str
    subnet_b: str
    ami: str
    cluster: str
    endpoint_url: str = ""

    def instances(self, states: tuple[str, ...] = ("pending", "running")) -> list[dict[str, Any]]:
        answer = self.client.describe_instances(
            Filters=[
                {"Name": "instance-state-name", "Values": list(states)},
                {"Name": "subnet-id", "Values": [self.subnet, self.subnet_b]},
            ]
        )
        return [i for r in answer["Reservations"] for i in r["Instances"]]


def make_ec2_world(client: Any, endpoint_url: str = "") -> Ec2World:
    vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    subnet_b = client.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    images = client.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-2.0.2*"]}]
    )["Images"]
    return Ec2World(
        client, subnet, subnet_b, images[0]["ImageId"], f"hpc-{uuid.uuid4().hex[:8]}", endpoint_url
    )


@pytest.fixture(scope="module")
def _moto_in_process() -> Iterator[None]:
    # Starting moto's EC2 backend costs seconds; one per module, a fresh VPC per test.
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def ec2_world(_moto_in_process: None) -> Ec2World:
    """EC2 in-process (moto mock_aws) with a VPC, two subnets and an AMI."""
    import boto3

    return make_ec2_world(boto3.client("ec2", region_name="us-east-1"))


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A real moto server over HTTP on 127.0.0.1 (for the CLI in-process and as a subprocess)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def ec2_server_world(moto_server: str) -> Ec2World:
    import boto3

    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server)
    return make_ec2_world(client, moto_server)
