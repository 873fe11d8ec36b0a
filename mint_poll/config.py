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

from mint_common.config import (
    Secret,
    legacy_state_dir,
    load_config,
    migrate_state_dir,
    tool_state_dir,
)
from mint_common.errors import ConfigError
from mint_common.metrics import DEFAULT_ADDRESS, PORT_RANGE, TEXTFILE_FIELD
from mint_common.retry import RetryPolicy
from mint_common.timeutil import Duration, parse_duration
from mint_poll.batch import DEFAULT_MAX_IN_FLIGHT, BatchOverride, BatchSettings, RunnerKind

if TYPE_CHECKING:
    import requests

    from mint_poll.api import DistcompApi

log = logging.getLogger(__name__)

TOOL = "mint-poll"
_SITE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/mint/poll`, else `~/.local/state/mint/poll` (the shared layout)."""
    return tool_state_dir(TOOL)


@dataclass(frozen=True)
class CommandSpec:
    """What runs locally for one command string the server may send.

    In YAML: a path (`/opt/bin/run.sh`), an argv list (`[/opt/bin/run, --fast]`)
    or a mapping `{run: <path or list>, timeout: <duration>, env: {NAME: value}}`, which
    may also carry the command's own batch settings: `runner`, `sbatch_args`, `qsub_args`.
    """

    argv: tuple[str, ...]
    timeout: Optional[float] = None
    env: Mapping[str, str] = field(default_factory=dict)
    batch: Optional[BatchOverride] = None

    @classmethod
    def from_config(cls, value: Any, *, source: str = "config", key: str = "commands") -> Any:
        if isinstance(value, CommandSpec):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"run", "timeout", "env", *_OVERRIDE_KEYS})
            if unknown:
                raise ConfigError(
                    f"{source}: key {key}: unknown setting {unknown[0]!r} (known: run, timeout,"
                    " env, runner, sbatch_args, qsub_args)"
                )
            if "run" not in value:
                raise ConfigError(f"{source}: key {key}: missing 'run' (a path or an argv list)")
            return cls(
                argv=_argv(value["run"], source, key),
                timeout=_timeout(value.get("timeout"), source, key),
                env=_env(value.get("env") or {}, source, key),
                batch=(
                    BatchOverride.from_config(value, source=source, key=key)
                    if set(value) & set(_OVERRIDE_KEYS)
                    else None
                ),
            )
        return cls(argv=_argv(value, source, key))


_OVERRIDE_KEYS = ("runner", "sbatch_args", "qsub_args")


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
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: key {key}.timeout: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"{source}: key {key}.timeout: must be greater than 0, got {value!r}")
    return seconds


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
    connect_timeout: Duration = field(default=Duration(10), metadata={"above": 0})
    read_timeout: Duration = field(default=Duration(60), metadata={"above": 0})
    retry: RetryPolicy = field(default_factory=RetryPolicy.legacy_default)
    poll_interval: Duration = field(default=Duration(60), metadata={"above": 0})
    poll_jitter: float = field(default=0.1, metadata={"min": 0, "max": 1})
    # The quickest poll, right after a calculation was found or delivered (mint_poll.pacing).
    poll_min: Duration = field(default=Duration(2), metadata={"above": 0})
    # The legacy client's working directory root, kept as the default for compatibility.
    calc_base: Path = Path("/tmp")  # noqa: S108
    state_dir: Path = field(default_factory=default_state_dir)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    allow_any_command: bool = False
    command_timeout: Optional[Duration] = field(default=None, metadata={"above": 0})
    #: Calculations in flight. Unset (0): 1 with the local runner, DEFAULT_MAX_IN_FLIGHT with
    #: a scheduler (`__post_init__` fills it in; a value given must be at least 1).
    max_parallel: int = field(default=0, metadata={"min": 1})
    stop_grace: Duration = field(default=Duration(30), metadata={"min": 0})
    keep_days: Optional[float] = field(default=None, metadata={"above": 0})
    min_free_mb: int = field(default=1024, metadata={"min": 0})
    progress_interval: Duration = field(default=Duration(10), metadata={"above": 0})
    #: Where calculations run: on this host, or as jobs of the site's scheduler.
    runner: RunnerKind = "local"
    batch: BatchSettings = field(default_factory=BatchSettings)
    # Prometheus metrics (docs/metrics.md): `run` serves them on metrics_address:metrics_port,
    # `once` writes them to metrics_textfile for node_exporter's textfile collector.
    metrics_port: Optional[int] = field(default=None, metadata=PORT_RANGE)
    metrics_address: str = DEFAULT_ADDRESS
    metrics_textfile: Optional[Path] = field(default=None, metadata=TEXTFILE_FIELD)

    def __post_init__(self) -> None:
        if self.batch.runner not in ("local", self.runner):
            raise ConfigError(
                "set the runner with the top-level key 'runner', not with 'batch.runner'"
            )
        # `batch` carries the runner, so one object holds every batch setting.
        object.__setattr__(self, "batch", dataclasses.replace(self.batch, runner=self.runner))
        if not self.max_parallel:
            default = DEFAULT_MAX_IN_FLIGHT if self.batch.batch else 1
            object.__setattr__(self, "max_parallel", default)

    def validate(self) -> None:
        if not _SITE_ID.match(self.site_id):
            raise ConfigError(
                f"site_id {self.site_id!r} is not a plain identifier (letters, digits, '.', '_',"
                " '-')"
            )
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

    def batch_for(self, command: str) -> Optional[BatchSettings]:
        """The batch settings a command runs with (its override applied); None when it runs
        on this host: the local runner, or a command outside the allowlist (a shell string
        from the server never becomes a job)."""
        spec = self.commands.get(command)
        if spec is None:
            return None
        settings = self.batch.for_command(spec.batch)
        return settings if settings.batch else None

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


#: Stand-ins for the settings `status` does not use, so that it reads neither the token
#: (a missing or unreadable token must not hide the agent's record) nor needs the server's.
_STATUS_PLACEHOLDERS: dict[str, Any] = {
    "url": "https://localhost",
    "site_id": "status",
    "token": Secret("not-read-by-status"),
}


def old_default_state_dir() -> Path:
    """Where releases before the shared layout kept the state: `~/.local/state/mint-poll`."""
    return legacy_state_dir(TOOL)


def load_state_settings(config_file: Optional[Path] = None) -> PollConfig:
    """The configuration as a local-only command (`status`) needs it: `state_dir` and the
    rest, but no token is read and no url or site_id is required."""
    return load_config(PollConfig, TOOL, config_file=config_file, cli=_STATUS_PLACEHOLDERS)


def migrate_default_state(config: PollConfig) -> None:
    """Move the state of an older release (`~/.local/state/mint-poll`) to the shared layout,
    when `state_dir` is the default; nothing in it (an unfinished calculation) is dropped."""
    if config.state_dir == default_state_dir():
        migrate_state_dir(old_default_state_dir(), config.state_dir)
