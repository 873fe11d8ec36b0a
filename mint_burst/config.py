"""mint-burst settings: one frozen dataclass, loaded by mint_common.config.

The earlier burst agent's environment variables (QUEUE_NAME, CLEANUP_NODE_WAIT_TIME,
NFS_MOUNT_POINT, NFS_LOCAL_DIR, PROVIDER_NAME, FLAVOR_NAME, IMAGE_NAME,
VC_NAME) are read under their own names and accepted as key names in YAML,
so a site's `env` file keeps working (for example as a systemd EnvironmentFile).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

from mint_burst.model import Host
from mint_burst.policy import PolicySettings
from mint_common.config import tool_state_dir
from mint_common.errors import ConfigError
from mint_common.metrics import DEFAULT_ADDRESS, PORT_RANGE, TEXTFILE_FIELD
from mint_common.retry import RetryPolicy
from mint_common.timeutil import Duration

log = logging.getLogger(__name__)

TOOL = "mint-burst"


def _legacy(name: str, **limits: float) -> dict[str, object]:
    return {"aliases": (name,), "env": (name,), **limits}


POSITIVE = {"above": 0}
NOT_NEGATIVE = {"min": 0}


def default_state_file() -> Path:
    return tool_state_dir(TOOL) / "state.json"


def old_default_state_dir() -> Path:
    """Where the state lived before the shared layout (it ignored XDG_STATE_HOME)."""
    return Path.home() / ".local" / "state" / "mint-burst"


@dataclass(frozen=True)
class Ec2Settings:
    """How to start a node on EC2 (launch template, or AMI + instance type + subnet)."""

    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    launch_template: Optional[str] = None
    launch_template_version: str = "$Default"
    image_id: Optional[str] = None
    instance_types: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    key_name: Optional[str] = None
    iam_instance_profile: Optional[str] = None
    capacity_backoff: Duration = field(default=Duration(600))
    # Replaced by the top-level `retry`; still read for one release (see aws_max_attempts).
    max_attempts: Optional[int] = None
    tags: dict[str, str] = field(default_factory=dict)
    user_data_file: Optional[Path] = None


@dataclass(frozen=True)
class CommandSettings:
    """Site scripts for the command provider (argument lists; JSON on stdin and stdout)."""

    create: List[str] = field(default_factory=list)
    delete: List[str] = field(default_factory=list)
    # Named after the action; declared last because it shadows the builtin in the class body.
    list: List[str] = field(default_factory=list)
    timeout: Duration = field(default=Duration(900))


@dataclass(frozen=True)
class BurstConfig:
    scheduler: Literal["slurm", "torque", "pbspro"] = "slurm"
    queue: str = field(default="cloud", metadata=_legacy("QUEUE_NAME"))
    cluster: str = field(default="mint-burst", metadata=_legacy("VC_NAME"))
    hosts_file: Path = Path("/etc/mint/burst-hosts.json")
    max_nodes: Optional[int] = field(default=None, metadata={"min": 1})
    max_node_hours_per_day: Optional[float] = field(default=None, metadata=POSITIVE)
    idle_timeout: Duration = field(
        default=Duration(600), metadata=_legacy("CLEANUP_NODE_WAIT_TIME", min=0)
    )
    boot_timeout: Duration = field(default=Duration(900), metadata=POSITIVE)
    poll_interval: Duration = field(default=Duration(60), metadata=POSITIVE)
    launch_grace: Duration = field(default=Duration(300), metadata=NOT_NEGATIVE)
    state_file: Path = field(default_factory=default_state_file)
    command_timeout: Duration = field(default=Duration(60), metadata=POSITIVE)
    admin_command_prefix: list[str] = field(default_factory=list)
    provider: Literal["ec2", "command"] = "ec2"
    provider_name: str = field(default="aws", metadata=_legacy("PROVIDER_NAME"))
    flavor: Optional[str] = field(default=None, metadata=_legacy("FLAVOR_NAME"))
    image: Optional[str] = field(default=None, metadata=_legacy("IMAGE_NAME"))
    nfs_mount_point: Optional[str] = field(default=None, metadata=_legacy("NFS_MOUNT_POINT"))
    nfs_local_dir: str = field(default="/mnt", metadata=_legacy("NFS_LOCAL_DIR"))
    # Attempts of one AWS call, botocore's standard retries (total_max_attempts).
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ec2: Ec2Settings = field(default_factory=Ec2Settings)
    command: CommandSettings = field(default_factory=CommandSettings)
    # Prometheus metrics (docs/metrics.md): `run` serves them on metrics_address:metrics_port,
    # `once` writes them to metrics_textfile for node_exporter's textfile collector.
    metrics_port: Optional[int] = field(default=None, metadata=PORT_RANGE)
    metrics_address: str = DEFAULT_ADDRESS
    metrics_textfile: Optional[Path] = field(default=None, metadata=TEXTFILE_FIELD)

    def validate(self) -> None:
        if self.nfs_mount_point is not None and ":" not in self.nfs_mount_point:
            raise ConfigError(
                f"key 'nfs_mount_point' (NFS_MOUNT_POINT): expected server:/directory,"
                f" got {self.nfs_mount_point!r}"
            )
        # Range metadata is not applied inside nested sections, so they are checked here.
        if self.ec2.capacity_backoff < 0:
            raise ConfigError(
                f"key 'ec2.capacity_backoff': must be at least 0, got {self.ec2.capacity_backoff:g}"
            )
        if self.ec2.max_attempts is not None:
            if self.ec2.max_attempts < 1:
                raise ConfigError(
                    f"key 'ec2.max_attempts': must be at least 1, got {self.ec2.max_attempts}"
                )
            log.warning(
                "key 'ec2.max_attempts' is deprecated and will be removed in the next release;"
                " write 'retry: {max_attempts: %d}' instead",
                self.ec2.max_attempts,
            )
        if self.command.timeout <= 0:
            raise ConfigError(
                f"key 'command.timeout': must be greater than 0, got {self.command.timeout:g}"
            )
        if self.provider == "ec2":
            self._validate_ec2()
        else:
            for key in ("create", "list", "delete"):
                if not getattr(self.command, key):
                    raise ConfigError(
                        f"key 'command.{key}': the command provider needs a {key} command"
                        " (an argument list)"
                    )

    def _validate_ec2(self) -> None:
        ec2 = self.ec2
        if not ec2.launch_template and not self.ami:
            raise ConfigError(
                "provider ec2 needs 'ec2.launch_template' or an AMI"
                " ('ec2.image_id', or IMAGE_NAME / 'image')"
            )
        if not ec2.launch_template and not self.instance_types:
            raise ConfigError(
                "provider ec2 needs 'ec2.instance_types' (or FLAVOR_NAME / 'flavor')"
                " unless a launch template sets the type"
            )
        if not ec2.subnets:
            raise ConfigError(
                "provider ec2 needs 'ec2.subnets': the node's fixed private IP must lie in one"
            )

    @property
    def ami(self) -> Optional[str]:
        return self.ec2.image_id or self.image

    @property
    def instance_types(self) -> list[str]:
        if self.ec2.instance_types:
            return list(self.ec2.instance_types)
        return [self.flavor] if self.flavor else []

    @property
    def aws_max_attempts(self) -> int:
        """`retry.max_attempts`, or the deprecated `ec2.max_attempts` where a file still sets it."""
        if self.ec2.max_attempts is not None:
            return self.ec2.max_attempts
        return self.retry.max_attempts

    @property
    def lock_file(self) -> Path:
        return self.state_file.with_name(self.state_file.name + ".lock")

    def policy_settings(self, hosts: tuple[Host, ...]) -> PolicySettings:
        cap = len(hosts) if self.max_nodes is None else min(self.max_nodes, len(hosts))
        return PolicySettings(
            hosts=hosts,
            max_nodes=cap,
            idle_timeout=self.idle_timeout,
            boot_timeout=self.boot_timeout,
            max_node_hours_per_day=self.max_node_hours_per_day,
        )
