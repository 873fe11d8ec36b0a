"""EC2 provider against moto (in-process): tags, fixed IPs, describe, terminate, DryRun,
and the capacity fallback over instance types and subnets."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mint_burst.config import BurstConfig, Ec2Settings
from mint_burst.ec2 import CapacityError, Ec2Provider
from mint_burst.provider import CLUSTER_TAG, NODE_TAG, LaunchRequest, render_user_data
from mint_common.errors import AuthError, ConfigError, MintError, TryAgainLater, UnavailableError
from mint_common.retry import RetryPolicy
from tests.burst.conftest import Ec2World


def config_for(world: Ec2World, **ec2: Any) -> BurstConfig:
    settings: dict[str, Any] = {
        "subnets": [world.subnet, world.subnet_b],
        "instance_types": ["c5.large", "m5.large"],
        "tags": {"project": "mint"},
    }
    settings.update(ec2)
    return BurstConfig(cluster=world.cluster, image=world.ami, ec2=Ec2Settings(**settings))


def request(node: str = "c1", ip: str = "10.0.1.11") -> LaunchRequest:
    return LaunchRequest(node, ip, f"{node}-token", "#!/bin/sh\nmount -t nfs x:/e /mnt\n")


class FailingClient:
    """The moto client, except that chosen instance types answer with an EC2 error code."""

    def __init__(self, client: Any, failing: dict[str, str]) -> None:
        self._client = client
        self.failing = failing
        self.run_calls: list[tuple[str, str]] = []

    def run_instances(self, **kwargs: Any) -> Any:
        self.run_calls.append((kwargs.get("InstanceType", ""), kwargs["SubnetId"]))
        code = self.failing.get(kwargs.get("InstanceType", ""))
        if code:
            raise ClientError({"Error": {"Code": code, "Message": "try elsewhere"}}, "RunInstances")
        return self._client.run_instances(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_launch_sets_tags_fixed_ip_and_user_data(ec2_world: Ec2World) -> None:
    provider = Ec2Provider(config_for(ec2_world), client=ec2_world.client)
    instance_id = provider.launch(request())
    [item] = ec2_world.instances()
    assert item["InstanceId"] == instance_id
    assert item["PrivateIpAddress"] == "10.0.1.11"
    assert item["InstanceType"] == "c5.large"
    tags = {t["Key"]: t["Value"] for t in item["Tags"]}
    c = ec2_world.cluster
    assert tags == {CLUSTER_TAG: c, NODE_TAG: "c1", "Name": f"{c}-c1", "project": "mint"}
    user_data = ec2_world.client.describe_instance_attribute(
        InstanceId=instance_id, Attribute="userData"
    )["UserData"]["Value"]
    assert base64.b64decode(user_data).decode() == request().user_data


def test_list_finds_only_our_cluster_and_terminate_removes(ec2_world: Ec2World) -> None:
    ours = Ec2Provider(config_for(ec2_world), client=ec2_world.client)
    other = Ec2Provider(
        BurstConfig(
            cluster=f"{ec2_world.cluster}-other",
            image=ec2_world.ami,
            ec2=Ec2Settings(subnets=[ec2_world.subnet], instance_types=["t3.micro"]),
        ),
        client=ec2_world.client,
    )
    first = ours.launch(request("c1", "10.0.1.11"))
    ours.launch(request("c2", "10.0.2.12"))
    other.launch(request("c1", "10.0.1.21"))
    listed = {i.node: i for i in ours.list_instances()}
    assert set(listed) == {"c1", "c2"}
    assert listed["c1"].instance_id == first and listed["c2"].ip == "10.0.2.12"
    ours.terminate([first])
    ours.terminate([first])
    assert {i.node for i in ours.list_instances()} == {"c2"}


def test_launch_template_without_ami(ec2_world: Ec2World) -> None:
    ec2_world.client.create_launch_template(
        LaunchTemplateName="burst",
        LaunchTemplateData={"ImageId": ec2_world.ami, "InstanceType": "t3.small"},
    )
    config = BurstConfig(
        cluster=ec2_world.cluster,
        ec2=Ec2Settings(launch_template="burst", subnets=[ec2_world.subnet]),
    )
    config.validate()
    Ec2Provider(config, client=ec2_world.client).launch(request())
    [item] = ec2_world.instances()
    assert item["InstanceType"] == "t3.small" and item["PrivateIpAddress"] == "10.0.1.11"


@pytest.mark.parametrize(
    "code",
    ["InsufficientInstanceCapacity", "InstanceLimitExceeded", "RequestLimitExceeded"],
    ids=["capacity", "limit", "throttled"],
)
def test_capacity_error_falls_back_and_backs_off_that_option(
    ec2_world: Ec2World, code: str
) -> None:
    clock = [1000.0]
    client = FailingClient(ec2_world.client, {"c5.large": code})
    provider = Ec2Provider(
        config_for(ec2_world, subnets=[ec2_world.subnet]), client=client, clock=lambda: clock[0]
    )
    provider.launch(request("c1", "10.0.1.11"))
    assert ec2_world.instances()[0]["InstanceType"] == "m5.large"
    assert provider.backoffs == {f"c5.large@{ec2_world.subnet}": 1600.0}
    provider.launch(request("c2", "10.0.1.12"))
    assert [t for t, _s in client.run_calls] == ["c5.large", "m5.large", "m5.large"]
    clock[0] = 1601.0
    provider.launch(request("c3", "10.0.1.13"))
    assert client.run_calls[-2][0] == "c5.large"


def test_every_option_out_of_capacity_is_try_again_later(ec2_world: Ec2World) -> None:
    client = FailingClient(
        ec2_world.client,
        {"c5.large": "InsufficientInstanceCapacity", "m5.large": "InsufficientInstanceCapacity"},
    )
    provider = Ec2Provider(config_for(ec2_world), client=client)
    with pytest.raises(TryAgainLater, match="no EC2 capacity for node c1"):
        provider.launch(request())
    assert ec2_world.instances() == []


def test_ip_outside_every_subnet_is_a_config_error(ec2_world: Ec2World) -> None:
    provider = Ec2Provider(config_for(ec2_world), client=ec2_world.client)
    with pytest.raises(ConfigError, match=r"10\.9\.9\.9 from hosts\.json lies in none"):
        provider.launch(request("c1", "10.9.9.9"))


def test_subnet_order_follows_the_ip(ec2_world: Ec2World) -> None:
    provider = Ec2Provider(config_for(ec2_world), client=ec2_world.client)
    assert provider.options("10.0.2.5") == [
        ("c5.large", ec2_world.subnet_b),
        ("m5.large", ec2_world.subnet_b),
    ]


def test_check_uses_dry_run_permission_checks(ec2_world: Ec2World) -> None:
    results = dict(Ec2Provider(config_for(ec2_world), client=ec2_world.client).check())
    assert results["ec2 describe"] == "describe_instances allowed (DryRun)"
    assert results["ec2 launch permission"] == "run_instances allowed (DryRun)"
    assert results["ec2 terminate permission"] == "terminate_instances allowed (DryRun)"
    assert ec2_world.instances() == []


def test_check_reports_a_refused_permission(ec2_world: Ec2World) -> None:
    class Refusing(FailingClient):
        def run_instances(self, **kwargs: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "RunInstances"
            )

    provider = Ec2Provider(config_for(ec2_world), client=Refusing(ec2_world.client, {}))
    with pytest.raises(AuthError, match="UnauthorizedOperation"):
        provider.check()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InsufficientInstanceCapacity", CapacityError),
        ("Throttling", CapacityError),
        ("UnauthorizedOperation", AuthError),
        ("AuthFailure", AuthError),
        ("RequestExpired", AuthError),
        ("InvalidAMIID.NotFound", ConfigError),
        ("InvalidSubnetID.NotFound", ConfigError),
        ("InternalError", UnavailableError),
    ],
    ids=[
        "capacity",
        "throttling",
        "unauthorized",
        "auth",
        "expired",
        "bad-ami",
        "bad-subnet",
        "other",
    ],
)
def test_ec2_errors_map_to_mint_errors(ec2_world: Ec2World, code: str, expected: type) -> None:
    class Failing(FailingClient):
        def describe_instances(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": code, "Message": "m"}}, "DescribeInstances")

    provider = Ec2Provider(config_for(ec2_world), client=Failing(ec2_world.client, {}))
    with pytest.raises(MintError) as caught:
        provider.list_instances()
    assert type(caught.value) is expected
    assert code in caught.value.message and "list instances" in caught.value.message


def _client_retries(config: BurstConfig) -> Any:
    return Ec2Provider(config).client.meta.config.retries


def test_client_uses_botocore_standard_retry_mode_with_retry_max_attempts() -> None:
    config = BurstConfig(
        image="ami-1",
        flavor="t3.micro",
        retry=RetryPolicy(max_attempts=7),
        ec2=Ec2Settings(subnets=["subnet-1"], region="us-east-1"),
    )
    assert _client_retries(config) == {"mode": "standard", "total_max_attempts": 7}


def test_the_old_ec2_max_attempts_still_sets_the_client_retries() -> None:
    config = BurstConfig(
        image="ami-1",
        flavor="t3.micro",
        ec2=Ec2Settings(subnets=["subnet-1"], max_attempts=3, region="us-east-1"),
    )
    assert _client_retries(config) == {"mode": "standard", "total_max_attempts": 3}


def test_default_user_data_mounts_nfs_with_quoted_values(tmp_path: Path) -> None:
    values = {
        "node": "c1",
        "ip": "10.0.1.11",
        "cluster": "hpc",
        "nfs_local_dir": "/mnt/a b",
        "nfs_mount_point": "172.30.2.194:/export",
    }
    text = render_user_data(None, values)
    assert text.startswith("#!/bin/sh\n")
    assert "mount -t nfs -o hard,nofail 172.30.2.194:/export '/mnt/a b'" in text
    assert "hostnamectl set-hostname c1" in text
    template = tmp_path / "user-data.sh"
    template.write_text("#!/bin/sh\necho $node $$HOME $nfs_share\n")
    with pytest.raises(ConfigError, match="unknown or bad placeholder 'nfs_share'"):
        render_user_data(template, values)
