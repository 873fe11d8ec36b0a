"""Resolve a HOST argument into connection settings (ssh_config alias or the `hosts:` map)."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import getpass
import os
import socket
from pathlib import Path
from typing import Any, Callable, Optional, Union

from mint_common.errors import ConfigError
from mint_ssh.config import HostEntry, SshToolConfig

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
# Looks a host name up (socket.getaddrinfo's signature); raises socket.gaierror when it cannot.
Lookup = Callable[[str, int], object]
# "No such name" answers: the name does not exist, retrying will not make it.
NO_SUCH_NAME = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


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


def resolve_host(alias: str, cfg: SshToolConfig, lookup: Lookup = socket.getaddrinfo) -> HostSpec:
    """The tool's own `hosts:` entry wins; otherwise the ssh_config file (if it exists).

    A name known to neither (a `Host *` block does not make a name known) must be a real host
    name: `lookup` checks it, and "no such name" is a configuration error at once (a
    misspelt alias), with the known names that come close. A lookup that fails for another
    reason (the resolver is down) is left to the connection, which retries.
    """
    if not alias or alias.startswith("-") or any(c.isspace() for c in alias):
        raise ConfigError(f"host {alias!r} is not a valid host name or alias")
    entry = cfg.hosts.get(alias)
    if entry is not None:
        return _from_entry(alias, entry, cfg)
    spec, known = _from_ssh_config(alias, cfg)
    if alias not in known and not (spec.proxy_command or spec.proxy_jump):
        try:
            lookup(spec.hostname, spec.port)
        except socket.gaierror as exc:
            if exc.errno in NO_SUCH_NAME:
                raise no_such_name(alias, spec.hostname, spec.source, [*cfg.hosts, *known]) from exc
    return spec


def no_such_name(
    alias: str, hostname: str, source: str, known: Optional[list[str]] = None
) -> ConfigError:
    """The error for a host name that does not exist (78: retrying cannot help); with
    `known`, the names it was looked for among, and those close to it."""
    if known is None:
        where = "" if hostname == alias else f" (host name {hostname}, from {source})"
        return ConfigError(f"unknown host {alias!r}{where}: no such host name")
    names = sorted(set(known))
    close = difflib.get_close_matches(alias, names, n=3, cutoff=0.6)
    message = (
        f"unknown host {alias!r}: neither in hosts: of the mint-ssh config nor a Host of the"
        " ssh config, and no such host name"
    )
    if close:
        message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    hint = f"known hosts: {', '.join(names[:10])}" if names else None
    return ConfigError(message, hint=hint)


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


def _from_ssh_config(alias: str, cfg: SshToolConfig) -> tuple[HostSpec, list[str]]:
    """The host's settings, and the names the ssh config knows (its `Host` names without
    wildcards, plus `alias` when a pattern other than a bare `*` matches it)."""
    # Only the SSH adapter imports paramiko (whose parser this is); imported here, not at the
    # top, because the adapter imports this module and the local commands need neither.
    from mint_ssh.connection import read_ssh_config

    path = cfg.ssh_config_path
    settings: dict[str, Any]
    known: list[str] = []
    if path.is_file():
        settings = read_ssh_config(path, alias)
        source = f"ssh config {path}"
        known = _known_names(alias, _host_patterns(path))
    else:
        settings = {"hostname": alias}
        source = "no ssh config entry"
    spec = _build(alias, settings, cfg, source=source, workdir_base=None, remote_program=None)
    return spec, known


def _host_patterns(path: Path) -> set[str]:
    """The patterns of the file's `Host` lines (paramiko's own list fails on `Match` blocks)."""
    patterns: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.strip().replace("=", " ", 1).split()
        if len(words) > 1 and words[0].lower() == "host":
            patterns.update(w.strip('"') for w in words[1:])
    return patterns


def _known_names(alias: str, patterns: set[str]) -> list[str]:
    names = [p for p in patterns if not any(c in p for c in "*?!")]
    wildcards = [p for p in patterns if p != "*" and not p.startswith("!") and p not in names]
    if any(fnmatch.fnmatchcase(alias, p) for p in wildcards):
        names.append(alias)
    return names


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
    return HostSpec(
        alias=alias,
        hostname=str(settings.get("hostname") or alias),
        port=_port(settings, source),
        user=str(settings.get("user") or getpass.getuser()),
        identity_files=_identity_files(settings),
        proxy_command=_proxy_command(settings),
        proxy_jump=_proxy_jumps(settings),
        server_alive_interval=_int_setting(settings, "serveraliveinterval", 30, source),
        server_alive_count_max=_int_setting(settings, "serveralivecountmax", 3, source),
        known_hosts_files=_known_hosts_files(settings, cfg),
        workdir_base=workdir_base or cfg.workdir_base,
        remote_program=remote_program or cfg.remote_program,
        source=source,
    )


def _identity_files(settings: dict[str, Any]) -> tuple[Path, ...]:
    identities = [_expand(p) for p in _as_list(settings.get("identityfile"))]
    if not identities:
        identities = [Path.home() / ".ssh" / name for name in DEFAULT_IDENTITIES]
    return tuple(identities)


def _known_hosts_files(settings: dict[str, Any], cfg: SshToolConfig) -> tuple[Path, ...]:
    """The host's UserKnownHostsFile; the tool's own `known_hosts` setting goes first."""
    known = settings.get("userknownhostsfile")
    known_files = [_expand(p) for p in str(known).split()] if known else [cfg.known_hosts_path]
    if cfg.known_hosts is not None and cfg.known_hosts_path not in known_files:
        known_files.insert(0, cfg.known_hosts_path)
    return tuple(known_files)


def _proxy_command(settings: dict[str, Any]) -> Optional[str]:
    command = settings.get("proxycommand")
    if not command or str(command).lower() == "none":
        return None
    return str(command)


def _proxy_jumps(settings: dict[str, Any]) -> tuple[str, ...]:
    jump = settings.get("proxyjump")
    jumps = tuple(j.strip() for j in str(jump).split(",") if j.strip()) if jump else ()
    return () if jumps == ("none",) else jumps


def _port(settings: dict[str, Any], source: str) -> int:
    port = _int_setting(settings, "port", 22, source)
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: port {port} is out of range")
    return port


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
