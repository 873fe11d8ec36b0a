"""Set-up of `mint-poll serve` (sites, token, TLS) kept out of the click layer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from mint_common.config import read_secret_file, read_yaml_mapping
from mint_common.errors import ConfigError, UsageError
from mint_common.logging import register_secret

TOKEN_ENV = "MINT_POLL_SERVE_TOKEN"  # noqa: S105 (a variable name, not a token)


def parse_sites(pairs: Sequence[str], sites_file: Optional[Path]) -> dict[str, list[str]]:
    """`--site nims-dev=a.sh,b.sh` options and/or a YAML file `{site: [commands]}`."""
    sites: dict[str, list[str]] = {}
    if sites_file is not None:
        for site, commands in read_yaml_mapping(sites_file).items():
            if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
                raise ConfigError(
                    f"{sites_file}: site {site!r}: expected a list of command strings"
                )
            sites[str(site)] = list(commands)
    for pair in pairs:
        site, sep, commands = pair.partition("=")
        if not sep or not site.strip():
            raise UsageError(f"--site {pair!r}: expected SITE=COMMAND[,COMMAND...]")
        sites.setdefault(site.strip(), []).extend(c for c in commands.split(",") if c)
    if not sites:
        raise UsageError("give at least one --site SITE=COMMAND[,COMMAND...] or --sites-file")
    return sites


def serve_token(token_file: Optional[Path]) -> str:
    """The token clients must present: from --token-file (mode 0600) or $MINT_POLL_SERVE_TOKEN."""
    if token_file is not None:
        return read_secret_file(token_file, "--token-file")
    value = os.environ.get(TOKEN_ENV, "")
    if not value:
        raise UsageError(
            f"give --token-file FILE or set {TOKEN_ENV}: the token clients must present"
        )
    register_secret(value)
    return value
