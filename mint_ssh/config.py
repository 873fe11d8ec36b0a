"""Settings of mint-ssh (`~/.config/mint/mint-ssh.yaml`, `MINT_SSH_*`, flags)."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from mint_common.config import redacted_view, tool_state_dir
from mint_common.errors import ConfigError
from mint_common.retry import RetryPolicy
from mint_common.timeutil import Duration

DEFAULT_PROGRAM = "~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh"


@dataclasses.dataclass(frozen=True)
class HostEntry:
    """One entry of the `hosts:` map; the same fields as an ssh_config `Host` block."""

    hostname: Optional[str] = None
    port: Optional[int] = dataclasses.field(default=None, metadata={"min": 1, "max": 65535})
    user: Optional[str] = None
    identity_file: Optional[list[str]] = None
    proxy_command: Optional[str] = None
    proxy_jump: Optional[str] = None
    server_alive_interval: Optional[int] = dataclasses.field(default=None, metadata={"min": 0})
    server_alive_count_max: Optional[int] = dataclasses.field(default=None, metadata={"min": 0})
    user_known_hosts_file: Optional[list[str]] = None
    workdir_base: Optional[str] = None
    remote_program: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SshToolConfig:
    """Everything `mint-ssh` reads from its config layers."""

    hosts: dict[str, HostEntry] = dataclasses.field(default_factory=dict)
    ssh_config: Optional[Path] = None
    known_hosts: Optional[Path] = None
    workdir_base: str = "/tmp"  # noqa: S108 - a remote path, as the manuals describe
    remote_program: str = DEFAULT_PROGRAM
    state_dir: Optional[Path] = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy.legacy_default)
    connect_timeout: Duration = dataclasses.field(default=Duration(15.0), metadata={"above": 0})
    verify_sha256: bool = False
    accept_new_host_key: bool = False
    timeout: Optional[Duration] = dataclasses.field(default=None, metadata={"above": 0})

    def validate(self) -> None:
        if not PurePosixPath(self.workdir_base).is_absolute():
            raise ConfigError(
                f"key 'workdir_base': {self.workdir_base!r} must be an absolute remote path"
            )
        for alias, entry in self.hosts.items():
            base = entry.workdir_base
            if base is not None and not PurePosixPath(base).is_absolute():
                raise ConfigError(
                    f"key 'hosts.{alias}.workdir_base': {base!r} must be an absolute remote path"
                )

    @property
    def ssh_config_path(self) -> Path:
        return self.ssh_config or Path.home() / ".ssh" / "config"

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts or Path.home() / ".ssh" / "known_hosts"

    @property
    def runs_dir(self) -> Path:
        return (self.state_dir or tool_state_dir("mint-ssh")) / "runs"


def config_view(cfg: SshToolConfig) -> dict[str, Any]:
    """The effective settings, for the one configuration log line (secrets: none here)."""
    view = redacted_view(cfg)
    view["retry"] = {
        "max_attempts": cfg.retry.max_attempts,
        "max_delay": cfg.retry.max_delay,
    }
    view["ssh_config"] = str(cfg.ssh_config_path)
    view["known_hosts"] = str(cfg.known_hosts_path)
    view["runs_dir"] = str(cfg.runs_dir)
    return view
