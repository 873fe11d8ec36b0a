"""The cloud provider interface and what every provider shares (user-data for the NFS mount)."""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from mint_burst.model import Host, Instance
from mint_common.checks import CheckResult
from mint_common.errors import ConfigError

CLUSTER_TAG = "mint-burst:cluster"
NODE_TAG = "mint-burst:node"
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")

DEFAULT_USER_DATA = """#!/bin/sh
# Written by mint-burst: node $node ($ip) of cluster $cluster.
set -eu
hostnamectl set-hostname $node 2>/dev/null || hostname $node
if [ -n $nfs_mount_point ]; then
    mkdir -p $nfs_local_dir
    mount -t nfs -o hard,nofail $nfs_mount_point $nfs_local_dir
fi
"""


@dataclass(frozen=True)
class LaunchRequest:
    node: str
    ip: str
    token: str
    user_data: str


class Provider(Protocol):
    # Capacity back-off book ("option" -> until epoch seconds); the engine keeps it in the
    # state file so that a timer-driven `once` remembers it between runs.
    backoffs: dict[str, float]

    def launch(self, request: LaunchRequest) -> str:
        """Start one instance for the node with its fixed IP; return the instance id."""

    def list_instances(self) -> list[Instance]:
        """Every live instance carrying our cluster tag."""

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate these instances (already gone is fine)."""

    def check(self) -> list[tuple[str, str]]:
        """Permission and reachability checks as (name, detail); raise on a failure."""

    def check_hosts(self, name: str, hosts: Sequence[Host]) -> CheckResult:
        """The `check` row `name`: whether the provider can place every host of the list."""


def render_user_data(template_file: Optional[Path], values: Mapping[str, Optional[str]]) -> str:
    """Fill `$node`, `$ip`, `$cluster`, `$nfs_mount_point`, `$nfs_local_dir` (shell-quoted)."""
    if template_file is None:
        text = DEFAULT_USER_DATA
    else:
        try:
            text = template_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"key 'ec2.user_data_file': cannot read {template_file}: {exc}"
            ) from exc
    quoted = {k: shlex.quote(v or "") for k, v in values.items()}
    try:
        return string.Template(text).substitute(quoted)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"user-data template {template_file or '(built-in)'}: unknown or bad placeholder {exc};"
            f" known: {', '.join('$' + k for k in sorted(values))} (write $$ for a literal $)"
        ) from None
