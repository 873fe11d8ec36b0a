"""AWS EC2 provider (boto3, imported lazily so `--help` stays fast).

The client comes from `mint_common.aws.aws_client`, and every boto3 call goes
through `_call`, which translates botocore errors with the shared
`translate_aws_error` plus EC2's own codes (`classify`). Launching walks the
ordered (instance type, subnet) options and backs off an option that ran out
of capacity for `capacity_backoff` seconds; the back-off book lives in the
state file so a timer-driven `once` remembers it. Throttling is retried by
botocore's standard retry mode (`retry.max_attempts` attempts) before it
reaches us.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from mint_burst.config import BurstConfig
from mint_burst.model import Host, Instance
from mint_burst.provider import CLUSTER_TAG, LIVE_STATES, NODE_TAG, LaunchRequest
from mint_common.aws import aws_client, translate_aws_error
from mint_common.checks import PASS, CheckResult
from mint_common.errors import (
    AuthError,
    ConfigError,
    MintError,
    TryAgainLater,
    UnavailableError,
)

log = logging.getLogger(__name__)
REGION_HINT = "set ec2.region (for example ap-northeast-1) or AWS_DEFAULT_REGION"
POLICY_HINT = "check the IAM policy of the head node's credentials"

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "InsufficientFreeAddressesInSubnet",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "Unsupported",
    }
)
# Codes the shared translation would not call an authentication failure.
EC2_AUTH_CODES = frozenset({"RequestExpired"})
CONFIG_PREFIXES = (
    "InvalidAMIID",
    "InvalidSubnetID",
    "InvalidLaunchTemplate",
    "InvalidGroup",
    "InvalidKeyPair",
    "InvalidParameter",
    "InvalidInstanceType",
    "MissingParameter",
)
GONE_CODE = "InvalidInstanceID.NotFound"


class CapacityError(UnavailableError):
    """This (instance type, subnet) option has no capacity or hit a limit just now."""


def classify(what: str, code: str, status: int, detail: str) -> Optional[MintError]:
    """EC2's own codes: capacity (back off this option), a bad launch setting (78)."""
    if code in CAPACITY_CODES:
        return CapacityError(f"{what}: {detail}")
    if code in EC2_AUTH_CODES:
        return AuthError(f"{what}: {detail}", hint=POLICY_HINT)
    if code.startswith(CONFIG_PREFIXES):
        return ConfigError(f"{what}: {detail}")
    return None


def _translated(exc: Exception, what: str) -> MintError:
    """A botocore exception as the mint error `what` failed with (the shared rules + EC2's)."""
    return translate_aws_error(
        exc,
        what,
        classify=functools.partial(classify, what),
        region_hint=REGION_HINT,
        policy_hint=POLICY_HINT,
    )


class Ec2Provider:
    """The Provider protocol for EC2."""

    def __init__(
        self,
        config: BurstConfig,
        *,
        backoffs: Optional[dict[str, float]] = None,
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.ec2
        self.backoffs: dict[str, float] = backoffs if backoffs is not None else {}
        if client is None:
            client = aws_client(
                "ec2",
                region=config.ec2.region,
                max_attempts=config.aws_max_attempts,
                endpoint_url=config.ec2.endpoint_url,
                region_key="ec2.region",
            )
        self.client = client
        self.clock = clock
        self._subnet_cidrs: Optional[dict[str, str]] = None

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _translated(exc, what) from None

    def options(self, ip: str) -> list[tuple[Optional[str], str]]:
        """The ordered (instance type, subnet) choices whose subnet holds this IP."""
        subnets = [s for s, cidr in self._cidrs().items() if _contains(cidr, ip)]
        if not subnets:
            raise ConfigError(
                f"IP {ip} from hosts.json lies in none of ec2.subnets"
                f" ({', '.join(f'{s} {c}' for s, c in self._cidrs().items())})"
            )
        types: list[Optional[str]] = list(self.config.instance_types) or [None]
        return [(t, s) for t in types for s in subnets]

    def _cidrs(self) -> dict[str, str]:
        if self._subnet_cidrs is None:
            answer = self._call(
                "describe subnets", "describe_subnets", SubnetIds=list(self.settings.subnets)
            )
            by_id = {s["SubnetId"]: s["CidrBlock"] for s in answer.get("Subnets", [])}
            self._subnet_cidrs = {s: by_id[s] for s in self.settings.subnets if s in by_id}
        return self._subnet_cidrs

    def launch(self, request: LaunchRequest) -> str:
        now = self.clock()
        tried: list[str] = []
        for instance_type, subnet in self.options(request.ip):
            key = f"{instance_type or 'template'}@{subnet}"
            until = self.backoffs.get(key, 0.0)
            if until > now:
                tried.append(f"{key} (backed off for {until - now:.0f} s)")
                continue
            try:
                return self._run(request, instance_type, subnet)
            except CapacityError as exc:
                self.backoffs[key] = now + self.settings.capacity_backoff
                log.warning("%s; backing off %s for %g s", exc, key, self.settings.capacity_backoff)
                tried.append(f"{key} ({exc})")
        raise TryAgainLater(f"no EC2 capacity for node {request.node}: tried " + "; ".join(tried))

    def _launch_kwargs(
        self, request: LaunchRequest, instance_type: Optional[str], subnet: str
    ) -> dict[str, Any]:
        tags = [
            {"Key": CLUSTER_TAG, "Value": self.config.cluster},
            {"Key": NODE_TAG, "Value": request.node},
            {"Key": "Name", "Value": f"{self.config.cluster}-{request.node}"},
            *({"Key": k, "Value": v} for k, v in sorted(self.settings.tags.items())),
        ]
        kwargs: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet,
            "PrivateIpAddress": request.ip,
            "ClientToken": request.token,
            "UserData": request.user_data,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self.settings.launch_template:
            field = (
                "LaunchTemplateId"
                if self.settings.launch_template.startswith("lt-")
                else ("LaunchTemplateName")
            )
            kwargs["LaunchTemplate"] = {
                field: self.settings.launch_template,
                "Version": self.settings.launch_template_version,
            }
        if self.config.ami:
            kwargs["ImageId"] = self.config.ami
        if instance_type:
            kwargs["InstanceType"] = instance_type
        if self.settings.security_group_ids:
            kwargs["SecurityGroupIds"] = list(self.settings.security_group_ids)
        if self.settings.key_name:
            kwargs["KeyName"] = self.settings.key_name
        if self.settings.iam_instance_profile:
            kwargs["IamInstanceProfile"] = {"Name": self.settings.iam_instance_profile}
        return kwargs

    def _run(self, request: LaunchRequest, instance_type: Optional[str], subnet: str) -> str:
        kwargs = self._launch_kwargs(request, instance_type, subnet)
        answer = self._call(f"launch {request.node}", "run_instances", **kwargs)
        instance_id = str(answer["Instances"][0]["InstanceId"])
        log.info(
            "launched %s as %s (%s in %s, %s)",
            request.node,
            instance_id,
            instance_type or "template type",
            subnet,
            request.ip,
        )
        return instance_id

    def list_instances(self) -> list[Instance]:
        filters = [
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [self.config.cluster]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        instances: list[Instance] = []
        token: Optional[str] = None
        while True:
            extra = {"NextToken": token} if token else {}
            answer = self._call("list instances", "describe_instances", Filters=filters, **extra)
            for reservation in answer.get("Reservations", []):
                for item in reservation.get("Instances", []):
                    instances.append(_instance(item))
            token = answer.get("NextToken")
            if not token:
                return instances

    def terminate(self, instance_ids: Sequence[str]) -> None:
        if not instance_ids:
            return
        try:
            self._call("terminate", "terminate_instances", InstanceIds=list(instance_ids))
        except MintError as exc:
            if GONE_CODE not in exc.message:
                raise

    def check(self) -> list[tuple[str, str]]:
        results = [("ec2 describe", self._dry_run("describe_instances"))]
        cidrs = self._cidrs()
        missing = [s for s in self.settings.subnets if s not in cidrs]
        if missing:
            raise ConfigError(f"subnet(s) not found: {', '.join(missing)}")
        results.append(("ec2 subnets", ", ".join(f"{s} {c}" for s, c in cidrs.items())))
        types: list[Optional[str]] = [*self.config.instance_types] or [None]
        instance_type, subnet = types[0], next(iter(cidrs))
        probe = LaunchRequest("mint-burst-check", "", "check", "")
        kwargs = self._launch_kwargs(probe, instance_type, subnet)
        kwargs.pop("PrivateIpAddress")
        kwargs.pop("ClientToken")
        results.append(("ec2 launch permission", self._dry_run("run_instances", **kwargs)))
        results.append(
            (
                "ec2 terminate permission",
                self._dry_run("terminate_instances", InstanceIds=["i-0000000000000000f"]),
            ),
        )
        return results

    def check_hosts(self, name: str, hosts: Sequence[Host]) -> CheckResult:
        for host in hosts:
            self.options(host.ip)
        return CheckResult(name, PASS, f"all {len(hosts)} host IPs lie in ec2.subnets")

    def _dry_run(self, method: str, **kwargs: Any) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            getattr(self.client, method)(DryRun=True, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "DryRunOperation":
                return f"{method} allowed (DryRun)"
            raise _translated(exc, f"{method} (DryRun)") from None
        except BotoCoreError as exc:
            raise _translated(exc, f"{method} (DryRun)") from None
        return f"{method} answered without DryRunOperation"


def _contains(cidr: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _instance(item: dict[str, Any]) -> Instance:
    tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
    launch_time = item.get("LaunchTime")
    return Instance(
        instance_id=str(item["InstanceId"]),
        node=tags.get(NODE_TAG, ""),
        ip=str(item.get("PrivateIpAddress", "")),
        state=str(item.get("State", {}).get("Name", "unknown")),
        launched_at=launch_time.timestamp() if launch_time is not None else None,
        token=str(item.get("ClientToken", "")),
    )
