"""Resolve a HOST argument into connection settings (ssh_config alias or the `hosts:` map)."""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path
from typing import Any, Optional, Union

from mint_common.errors import ConfigError
from mint_ssh.config import HostEntry, SshToolConfig
from mint_ssh.lazyimport import defer_import

# paramiko.config imports invoke (about 50 ms of start-up) only to run `Match exec` lines.
defer_import("invoke")

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """Everything needed to reach one host."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]
    proxy_command: Optional[str]
    proxy_jump: tuple[str, ...]
    server_alive_interval: int
    server_alive_count_max: int
    known_hosts_files: tuple[Path, ...]
    workdir_base: str
    remote_program: str
    source: str

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this host's key under in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        via = ""
        if self.proxy_command:
            via = " via ProxyCommand"
        elif self.proxy_jump:
            via = f" via {','.join(self.proxy_jump)}"
        return f"{self.user}@{self.hostname}:{self.port}{via} ({self.source})"


def _as_list(value: Union[str, list[str], None]) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


def resolve_host(alias: str, cfg: SshToolConfig) -> HostSpec:
    """The tool's own `hosts:` entry wins; otherwise the ssh_config file (if it exists)."""
    if not alias or alias.startswith("-") or any(c.isspace() for c in alias):
        raise ConfigError(f"host {alias!r} is not a valid host name or alias")
    entry = cfg.hosts.get(alias)
    if entry is not None:
        return _from_entry(alias, entry, cfg)
    return _from_ssh_config(alias, cfg)


def _from_entry(alias: str, entry: HostEntry, cfg: SshToolConfig) -> HostSpec:
    hostname = entry.hostname or alias
    settings: dict[str, Any] = {
        "hostname": hostname,
        "port": str(entry.port or 22),
        "user": entry.user,
        "identityfile": _as_list(entry.identity_file),
        "proxycommand": entry.proxy_command,
        "proxyjump": entry.proxy_jump,
        "serveraliveinterval": entry.server_alive_interval,
        "serveralivecountmax": entry.server_alive_count_max,
        "userknownhostsfile": " ".join(_as_list(entry.user_known_hosts_file)) or None,
    }
    if entry.proxy_command:
        settings["proxycommand"] = entry.proxy_command.replace("%h", hostname).replace(
            "%p", settings["port"]
        )
    return _build(
        alias,
        settings,
        cfg,
        source=f"hosts.{alias} in the mint-ssh config",
        workdir_base=entry.workdir_base,
        remote_program=entry.remote_program,
    )


def _from_ssh_config(alias: str, cfg: SshToolConfig) -> HostSpec:
    import paramiko

    path = cfg.ssh_config_path
    settings: dict[str, Any]
    if path.is_file():
        try:
            ssh_config = paramiko.SSHConfig.from_path(str(path))
            settings = dict(ssh_config.lookup(alias))
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise ConfigError(f"cannot read ssh config {path}: {exc}") from exc
        source = f"ssh config {path}"
    else:
        settings = {"hostname": alias}
        source = "no ssh config entry"
    return _build(alias, settings, cfg, source=source, workdir_base=None, remote_program=None)


def _int_setting(settings: dict[str, Any], key: str, default: int, source: str) -> int:
    value = settings.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None


def _build(
    alias: str,
    settings: dict[str, Any],
    cfg: SshToolConfig,
    *,
    source: str,
    workdir_base: Optional[str],
    remote_program: Optional[str],
) -> HostSpec:
    identities = [_expand(p) for p in _as_list(settings.get("identityfile"))]
    if not identities:
        identities = [Path.home() / ".ssh" / name for name in DEFAULT_IDENTITIES]
    known = settings.get("userknownhostsfile")
    known_files = [_expand(p) for p in str(known).split()] if known else [cfg.known_hosts_path]
    if cfg.known_hosts is not None and cfg.known_hosts_path not in known_files:
        known_files.insert(0, cfg.known_hosts_path)
    proxy_command = settings.get("proxycommand")
    if proxy_command is not None and str(proxy_command).lower() == "none":
        proxy_command = None
    jump = settings.get("proxyjump")
    jumps = tuple(j.strip() for j in str(jump).split(",") if j.strip()) if jump else ()
    if jumps == ("none",):
        jumps = ()
    port = _int_setting(settings, "port", 22, source)
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: port {port} is out of range")
    return HostSpec(
        alias=alias,
        hostname=str(settings.get("hostname") or alias),
        port=port,
        user=str(settings.get("user") or getpass.getuser()),
        identity_files=tuple(identities),
        proxy_command=str(proxy_command) if proxy_command else None,
        proxy_jump=jumps,
        server_alive_interval=_int_setting(settings, "serveraliveinterval", 30, source),
        server_alive_count_max=_int_setting(settings, "serveralivecountmax", 3, source),
        known_hosts_files=tuple(known_files),
        workdir_base=workdir_base or cfg.workdir_base,
        remote_program=remote_program or cfg.remote_program,
        source=source,
    )


def parse_jump(jump: str) -> tuple[Optional[str], str, Optional[int]]:
    """`[user@]host[:port]` -> (user, host, port)."""
    user: Optional[str] = None
    if "@" in jump:
        user, jump = jump.rsplit("@", 1)
    port: Optional[int] = None
    if jump.startswith("[") and "]" in jump:
        host, _, rest = jump[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
        return user, host, port
    if jump.count(":") == 1:
        host, port_text = jump.split(":")
        return user, host, int(port_text)
    return user, jump, port
