"""hosts.json, the list of burst nodes: `{"<private IP>": "<node name>", ...}`.

Its order is the order names are handed out; its size is the hard cap on nodes.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

from mint_burst.model import Host
from mint_common.errors import ConfigError, NoInputError

MAX_HOSTS_FILE_BYTES = 1024 * 1024
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$")


def parse_hosts(text: str, source: str) -> tuple[Host, ...]:
    """Parse and check a hosts.json document; every problem names the entry."""
    try:
        pairs = json.loads(text, object_pairs_hook=list)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from exc
    if not isinstance(pairs, list) or any(not isinstance(p, tuple) for p in pairs):
        raise ConfigError(f'{source}: expected an object {{"IP": "hostname", ...}}')
    hosts: list[Host] = []
    names: set[str] = set()
    addresses: set[str] = set()
    for ip, name in pairs:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"{source}: {ip!r} is not an IP address") from None
        if not isinstance(name, str) or not _HOSTNAME.match(name):
            raise ConfigError(
                f"{source}: entry {ip!r}: {name!r} is not a valid host name"
                " (letters, digits and '-', at most 63 characters)"
            )
        if str(address) in addresses:
            raise ConfigError(f"{source}: IP address {ip} appears twice")
        if name in names:
            raise ConfigError(f"{source}: host name {name!r} appears twice")
        addresses.add(str(address))
        names.add(name)
        hosts.append(Host(ip=str(address), name=name))
    if not hosts:
        raise ConfigError(f"{source}: lists no hosts, so no burst node could ever be started")
    return tuple(hosts)


def load_hosts(path: Path) -> tuple[Host, ...]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NoInputError(
            f"host list {path} does not exist",
            hint='write the burst nodes as {"IP": "hostname", ...}, one entry per node',
        ) from None
    if size > MAX_HOSTS_FILE_BYTES:
        raise ConfigError(f"host list {path} is {size} bytes; refusing more than 1 MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read host list {path}: {exc}") from exc
    return parse_hosts(text, str(path))
