"""Configuration of mint-poll (`mint-poll.yaml`), shared by the agent and `mint-poll submit`.

Loaded with mint_common.config: defaults, /etc/mint/mint-poll.yaml,
~/.config/mint/mint-poll.yaml, --config, MINT_POLL_<KEY>, flags.
Agent-only keys (commands, calc_base, state_dir, ...) have defaults, so the
workflow side needs only url, site_id and the token.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mint_common.config import Secret, load_config
from mint_common.errors import ConfigError
from mint_common.retry import RetryPolicy

if TYPE_CHECKING:
    import requests

    from mint_poll.api import DistcompApi

log = logging.getLogger(__name__)

TOOL = "mint-poll"
_SITE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_retry() -> RetryPolicy:
    """5 attempts, 60 s apart, no backoff or jitter: what the legacy remote client does."""
    return RetryPolicy(max_attempts=5, base_delay=60.0, max_delay=60.0, backoff=1.0, jitter=False)


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/mint-poll`, else `~/.local/state/mint-poll`."""
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "mint-poll"


@dataclass(frozen=True)
class CommandSpec:
    """What runs locally for one command string the server may send.

    In YAML: a path (`/opt/bin/run.sh`), an argv list (`[/opt/bin/run, --fast]`)
    or a mapping `{run: <path or list>, timeout: <seconds>, env: {NAME: value}}`.
    """

    argv: tuple[str, ...]
    timeout: Optional[float] = None
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, value: Any, *, source: str = "config", key: str = "commands") -> Any:
        if isinstance(value, CommandSpec):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"run", "timeout", "env"})
            if unknown:
                raise ConfigError(
                    f"{source}: key {key}: unknown setting {unknown[0]!r} (known: run, timeout,"
                    " env)"
                )
            if "run" not in value:
                raise ConfigError(f"{source}: key {key}: missing 'run' (a path or an argv list)")
            return cls(
                argv=_argv(value["run"], source, key),
                timeout=_timeout(value.get("timeout"), source, key),
                env=_env(value.get("env") or {}, source, key),
            )
        return cls(argv=_argv(value, source, key))


def _argv(value: Any, source: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(
        f"{source}: key {key}: expected a program path or a non-empty argv list, got {value!r}"
    )


def _timeout(value: Any, source: str, key: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{source}: key {key}.timeout: expected seconds > 0, got {value!r}")
    return float(value)


def _env(value: Any, source: str, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: key {key}.env: expected a mapping, got {value!r}")
    result: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ConfigError(f"{source}: key {key}.env: bad variable name {name!r}")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(f"{source}: key {key}.env.{name}: expected a string, got {item!r}")
        result[name] = str(item)
    return result


@dataclass(frozen=True)
class PollConfig:
    """Every mint-poll setting; see docs/mint-poll.md for the meaning of each key."""

    url: str
    site_id: str
    token: Secret = field(metadata={"secret": True})
    ca_bundle: Optional[Path] = None
    verify: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=default_retry)
    poll_interval: float = 60.0
    poll_jitter: float = 0.1
    # The legacy client's working directory root, kept as the default for compatibility.
    calc_base: Path = Path("/tmp")  # noqa: S108
    state_dir: Path = field(default_factory=default_state_dir)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    allow_any_command: bool = False
    command_timeout: Optional[float] = None
    max_parallel: int = 1
    stop_grace: float = 30.0
    keep_days: Optional[float] = None
    min_free_mb: int = 1024
    progress_interval: float = 10.0

    def validate(self) -> None:
        if not _SITE_ID.match(self.site_id):
            raise ConfigError(
                f"site_id {self.site_id!r} is not a plain identifier (letters, digits, '.', '_',"
                " '-')"
            )
        positive = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "poll_interval": self.poll_interval,
            "progress_interval": self.progress_interval,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {value!r}")
        if not 0 <= self.poll_jitter <= 1:
            raise ConfigError(f"poll_jitter must be between 0 and 1, got {self.poll_jitter!r}")
        if self.max_parallel < 1:
            raise ConfigError(f"max_parallel must be at least 1, got {self.max_parallel!r}")
        if self.stop_grace < 0:
            raise ConfigError(f"stop_grace must not be negative, got {self.stop_grace!r}")
        if self.keep_days is not None and self.keep_days <= 0:
            raise ConfigError(f"keep_days must be greater than 0, got {self.keep_days!r}")
        if self.command_timeout is not None and self.command_timeout <= 0:
            raise ConfigError(f"command_timeout must be greater than 0, got {self.command_timeout}")
        if self.ca_bundle is not None:
            if not self.verify:
                raise ConfigError("give either ca_bundle or verify: false, not both")
            if not self.ca_bundle.is_file():
                raise ConfigError(f"ca_bundle {self.ca_bundle} does not exist or is not a file")

    def command_problems(self) -> list[str]:
        """Each configured command whose program is missing or not executable."""
        problems: list[str] = []
        for command, spec in sorted(self.commands.items()):
            program = spec.argv[0]
            found = program if os.path.isabs(program) else shutil.which(program)
            if not found or not os.path.isfile(found):
                problems.append(f"{command!r}: {program} not found")
            elif not os.access(found, os.X_OK):
                problems.append(f"{command!r}: {found} is not executable")
        return problems

    @property
    def verify_setting(self) -> Any:
        """What requests takes as `verify`: the CA bundle path, True or False."""
        return str(self.ca_bundle) if self.ca_bundle is not None else self.verify

    def timeout_for(self, spec: Optional[CommandSpec]) -> Optional[float]:
        """The time limit of a command: its own, else `command_timeout` (None: no limit)."""
        if spec is not None and spec.timeout is not None:
            return spec.timeout
        return self.command_timeout


def load_poll_config(
    config_file: Optional[Path] = None, cli: Optional[Mapping[str, Any]] = None
) -> PollConfig:
    """Load and validate the mint-poll configuration from every layer."""
    return load_config(PollConfig, TOOL, config_file=config_file, cli=cli)


def build_api(config: PollConfig, *, session: Optional[requests.Session] = None) -> DistcompApi:
    """A DistcompApi for this configuration; warns loudly when verification is off."""
    from mint_poll.api import DistcompApi

    if not config.verify:
        log.warning(
            "TLS certificate verification is OFF (verify: false): anyone on the path can read"
            " the token and the data; use this only for testing"
        )
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return DistcompApi(
        config.url,
        config.token,
        verify=config.verify_setting,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retry=config.retry,
        session=session,
    )


def with_overrides(config: PollConfig, **changes: Any) -> PollConfig:
    """A copy of `config` with some settings replaced (validated again)."""
    updated = dataclasses.replace(config, **changes)
    updated.validate()
    return updated
