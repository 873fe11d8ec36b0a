"""The command provider: site scripts create, list and delete nodes (VCP SDK, Azure CLI, ...).

Contract (also in docs/mint-burst.md). Each script is run as an argument list
with one JSON object on stdin and must print one JSON object on stdout:

- create: {"action": "create", "cluster", "node", "ip", "token", "user_data",
  "provider_name", "flavor", "image", "nfs_mount_point", "nfs_local_dir"}
  -> {"instance_id": "..."}. Exit 75 means "no capacity now, try later".
- list:   {"action": "list", "cluster"}
  -> {"instances": [{"instance_id", "node", "ip", "state", "token"}, ...]} (live instances
  only; "token" is optional: the create request's token, if the cloud keeps it).
- delete: {"action": "delete", "cluster", "instance_ids": [...]} -> {} (ids already gone are fine).

The earlier burst agent's variables (VC_NAME, PROVIDER_NAME, FLAVOR_NAME, IMAGE_NAME,
NFS_MOUNT_POINT, NFS_LOCAL_DIR) are also set in the script's environment.
Any other non-zero exit, a timeout, or output that is not such an object raises.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

from mint_burst.config import BurstConfig
from mint_burst.model import Host, Instance
from mint_burst.provider import LaunchRequest
from mint_burst.scheduler import MAX_JSON_VALUES, MAX_OUTPUT_BYTES, check_json_size, last_line
from mint_common.checks import SKIP, CheckResult
from mint_common.errors import ConfigError, InputError, TryAgainLater, UnavailableError
from mint_common.proc import run_command


class CommandProvider:
    """The Provider protocol over site scripts."""

    def __init__(
        self,
        config: BurstConfig,
        *,
        max_output: int = MAX_OUTPUT_BYTES,
        max_values: int = MAX_JSON_VALUES,
    ) -> None:
        self.config = config
        self.settings = config.command
        self.max_output = max_output
        self.max_values = max_values
        self.backoffs: dict[str, float] = {}

    def _environment(self) -> dict[str, str]:
        seed = {
            "VC_NAME": self.config.cluster,
            "PROVIDER_NAME": self.config.provider_name,
            "FLAVOR_NAME": self.config.flavor or "",
            "IMAGE_NAME": self.config.image or "",
            "NFS_MOUNT_POINT": self.config.nfs_mount_point or "",
            "NFS_LOCAL_DIR": self.config.nfs_local_dir,
        }
        return {**os.environ, **seed}

    def _call(self, action: str, argv: Sequence[str], payload: dict[str, Any]) -> dict[str, Any]:
        try:
            result = run_command(
                argv,
                timeout=self.settings.timeout,
                env=self._environment(),
                input_text=json.dumps(
                    {"action": action, "cluster": self.config.cluster, **payload}
                ),
                max_output=self.max_output,
            )
        except InputError as exc:
            raise InputError(f"{action} script: {exc.message}") from None
        if result.return_code == 75:
            raise TryAgainLater(
                f"{action} script {argv[0]} asks to try later: {_detail(result.stderr)}"
            )
        if result.failed:
            raise UnavailableError(
                f"{action} script {argv[0]} exited with status {result.return_code}:"
                f" {_detail(result.stderr)}"
            )
        check_json_size(result.stdout, f"{action} script {argv[0]}", max_values=self.max_values)
        try:
            document = json.loads(result.stdout or "null")
        except RecursionError:
            raise InputError(f"{action} script {argv[0]} printed JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{action} script {argv[0]} did not print JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        except ValueError as exc:  # an integer literal of more than 4,300 digits
            raise InputError(f"{action} script {argv[0]} printed unusable JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InputError(f"{action} script {argv[0]} must print a JSON object")
        return document

    def launch(self, request: LaunchRequest) -> str:
        answer = self._call(
            "create",
            self.settings.create,
            {
                "node": request.node,
                "ip": request.ip,
                "token": request.token,
                "user_data": request.user_data,
                "provider_name": self.config.provider_name,
                "flavor": self.config.flavor,
                "image": self.config.image,
                "nfs_mount_point": self.config.nfs_mount_point,
                "nfs_local_dir": self.config.nfs_local_dir,
            },
        )
        instance_id = answer.get("instance_id")
        if not isinstance(instance_id, str) or not instance_id:
            raise InputError(
                f'create script {self.settings.create[0]} printed no "instance_id" string'
            )
        return instance_id

    def list_instances(self) -> list[Instance]:
        answer = self._call("list", self.settings.list, {})
        items = answer.get("instances")
        if not isinstance(items, list):
            raise InputError(f'list script {self.settings.list[0]} printed no "instances" list')
        instances: list[Instance] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) and item.get(k) for k in ("instance_id", "node")
            ):
                raise InputError(
                    f"list script {self.settings.list[0]}: instances[{index}] needs"
                    ' "instance_id" and "node" strings'
                )
            instances.append(
                Instance(
                    instance_id=item["instance_id"],
                    node=item["node"],
                    ip=str(item.get("ip", "")),
                    state=str(item.get("state", "running")),
                    token=str(item.get("token", "")),
                )
            )
        return instances

    def terminate(self, instance_ids: Sequence[str]) -> None:
        if instance_ids:
            self._call("delete", self.settings.delete, {"instance_ids": list(instance_ids)})

    def validate_commands(self) -> None:
        """A script that is missing or not executable is a configuration mistake (78) at
        start-up, not a failure of every step that would read as "try again later"."""
        for key in ("create", "list", "delete"):
            program = getattr(self.settings, key)[0]
            if os.sep in program:
                if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                    what = "is not executable" if os.path.isfile(program) else "does not exist"
                    raise ConfigError(
                        f"key 'command.{key}': {program} {what}",
                        hint=f"install the site script or correct command.{key}",
                    )
            elif shutil.which(program) is None:
                raise ConfigError(
                    f"key 'command.{key}': no program {program!r} on PATH",
                    hint=f"give the full path in command.{key}",
                )

    def check(self) -> list[tuple[str, str]]:
        self.validate_commands()
        count = len(self.list_instances())
        return [("command provider list", f"list script answered ({count} instance(s))")]

    def check_hosts(self, name: str, hosts: Sequence[Host]) -> CheckResult:
        return CheckResult(name, SKIP, "provider command: its scripts place the nodes")


def _detail(stderr: str) -> str:
    return last_line(stderr) or "no message"
