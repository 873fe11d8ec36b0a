"""The legacy command line of `mi-system-remote.py`, mapped onto mint-poll settings.

    mint-poll legacy <site id> <base url> <token|login> [retry:N,S]
                     [no_auth[:CA file]] [port:N] [calc_base:DIR] [debug]

`no_auth` turns certificate verification off; `no_auth:FILE` verifies with
that CA bundle instead of the system's. `login` (interactive MInt login) is
not supported: an unattended agent cannot type a password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from mint_common.errors import UsageError
from mint_common.retry import RetryPolicy

_PORT = re.compile(r"^port:(\d{1,5})$")


@dataclass(frozen=True)
class LegacyArgs:
    """The settings a legacy command line gives (config keys -> values) and `debug`."""

    settings: dict[str, Any] = field(default_factory=dict)
    debug: bool = False


def parse_legacy(args: Sequence[str]) -> LegacyArgs:
    """Parse the legacy arguments; UsageError (exit 2) names the argument that is wrong."""
    if len(args) < 3:
        raise UsageError(
            "legacy form: mint-poll legacy <site id> <base url> <token|login> [retry:N,S]"
            " [no_auth[:CA file]] [port:N] [calc_base:DIR] [debug]"
        )
    site_id, url, token, *options = args
    if token == "login":  # noqa: S105 (the legacy keyword, not a password)
        raise UsageError(
            "the 'login' form (typing the MInt login name and password) is not supported by"
            " mint-poll: an unattended agent cannot answer a password prompt",
            hint="put the API token in a file (mode 0600) and set token_file in mint-poll.yaml",
        )
    settings: dict[str, Any] = {"site_id": site_id, "token": token}
    port = None
    debug = False
    for option in options:
        if option.startswith("retry:"):
            try:
                settings["retry"] = RetryPolicy.parse_legacy(option)
            except ValueError as exc:
                raise UsageError(f"argument {option!r}: {exc}") from None
        elif option == "no_auth":
            settings["verify"] = False
        elif option.startswith("no_auth:"):
            settings["ca_bundle"] = option[len("no_auth:") :]
        elif _PORT.match(option):
            port = int(option[len("port:") :])
            if not 0 < port < 65536:
                raise UsageError(f"argument {option!r}: port must be 1-65535")
        elif option.startswith("calc_base:") and len(option) > len("calc_base:"):
            settings["calc_base"] = option[len("calc_base:") :]
        elif option == "debug":
            debug = True
        else:
            raise UsageError(
                f"unknown legacy argument {option!r}; known: retry:N,S, no_auth[:CA file],"
                " port:N, calc_base:DIR, debug"
            )
    settings["url"] = _with_port(url, port)
    return LegacyArgs(settings, debug)


def _with_port(url: str, port: Optional[int]) -> str:
    if port is None:
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        raise UsageError(f"base url {url!r} is not a URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))
