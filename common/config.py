"""Layered, typed configuration for every mint tool.

Precedence, lowest first: the schema's defaults, `/etc/mint/<tool>.yaml`,
`$XDG_CONFIG_HOME/mint/<tool>.yaml` (default `~/.config`), `--config FILE`,
environment variables `MINT_<TOOL>_<KEY>`, command-line flags.

A schema is a frozen dataclass. Field metadata understood here:
- `secret=True`: the value may also come from `<key>_file` (a file that only
  its owner may read) or `<key>_command` (its stdout); it is registered for
  redaction and held in a `Secret` that never prints itself. A secret is one line:
  a value, file or command output with an internal line break is refused (78),
  since no header can carry it and every printed form of it would leak.
- `aliases=(...)`: other names accepted for the key in files and flags
  (e.g. a legacy setting name), and `env=(...)`: extra environment variable
  names read at the same precedence as `MINT_<TOOL>_<KEY>`.
A field type may provide `from_config(value, source=..., key=...)` to parse itself.
Every error names the source (file, variable or flag), the key and the value: exit 78.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import subprocess
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar, Union

import yaml

from mint_common.errors import ConfigError
from mint_common.logging import MASK, register_secret

T = TypeVar("T")
SECRET_SOURCES = ("", "_file", "_command")
SECRET_COMMAND_TIMEOUT = 30.0
MIN_SECRET_LENGTH = 8
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Secret:
    """A secret string that shows as a mask in repr, str, logs and JSON dumps."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def system_config_dir() -> Path:
    return Path(os.environ.get("MINT_SYSTEM_CONFIG_DIR", "/etc/mint"))


def user_config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "mint"


def env_prefix(tool: str) -> str:
    """`mint-poll` -> `MINT_POLL_`."""
    name = tool[5:] if tool.startswith("mint-") else tool
    return "MINT_" + name.upper().replace("-", "_") + "_"


@dataclasses.dataclass
class _Layer:
    source: str
    values: dict[str, Any]
    key_sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def source_for(self, key: str) -> str:
        """Where `key` came from: the file, the flag layer, or the very variable that was set."""
        return self.key_sources.get(key, self.source)


def load_config(
    schema: type[T],
    tool: str,
    *,
    config_file: Optional[Path] = None,
    cli: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
    system_dir: Optional[Path] = None,
    user_dir: Optional[Path] = None,
) -> T:
    """Build `schema` from every layer; `cli` values that are None mean "flag not given"."""
    if not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        raise TypeError(f"{schema!r} is not a dataclass")
    env = os.environ if environ is None else environ
    layers: list[_Layer] = []
    for directory in (system_dir or system_config_dir(), user_dir or user_config_dir()):
        path = directory / f"{tool}.yaml"
        if path.is_file():
            layers.append(_Layer(str(path), read_yaml_mapping(path)))
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        layers.append(_Layer(str(config_file), read_yaml_mapping(Path(config_file))))
    layers.append(_env_layer(schema, tool, env))
    if cli:
        flags = {k: v for k, v in cli.items() if v is not None}
        layers.append(_Layer("command line", flags))
    return _build(schema, layers, tool)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of keys,"
            f" got {type(data).__name__}"
        )
    return {str(k): v for k, v in data.items()}


def _fields(schema: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(schema) if f.init}


def _key_names(schema: type) -> dict[str, str]:
    """Every accepted key name -> the canonical key it sets (secret variants included)."""
    names: dict[str, str] = {}
    for name, fld in _fields(schema).items():
        suffixes = SECRET_SOURCES if fld.metadata.get("secret") else ("",)
        for alias in (name, *fld.metadata.get("aliases", ())):
            for suffix in suffixes:
                names[alias + suffix] = name + suffix
    return names


def _env_layer(schema: type, tool: str, env: Mapping[str, str]) -> _Layer:
    prefix = env_prefix(tool)
    known = _key_names(schema)
    values: dict[str, Any] = {}
    key_sources: dict[str, str] = {}
    for var, value in env.items():
        if var.startswith(prefix) and var not in ("MINT_SYSTEM_CONFIG_DIR",):
            key = var[len(prefix) :].lower()
            if key not in known:
                raise ConfigError(
                    f"environment variable {var}: unknown key {key!r}"
                    + _did_you_mean(key, known, prefix=prefix, upper=True)
                )
            values[known[key]] = value
            key_sources[known[key]] = f"environment variable {var}"
    for name, fld in _fields(schema).items():
        for var in fld.metadata.get("env", ()):
            if var in env and name not in values:
                values[name] = env[var]
                key_sources[name] = f"environment variable {var}"
    return _Layer(f"environment ({prefix}*)", values, key_sources=key_sources)


def _did_you_mean(
    key: str, known: Mapping[str, str], *, prefix: str = "", upper: bool = False
) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not close:
        return ""
    suggestion = (prefix + close[0].upper()) if upper else close[0]
    return f"; did you mean {suggestion!r}?"


def _build(schema: type[T], layers: list[_Layer], tool: str) -> T:
    fields = _fields(schema)
    merged = _merge_layers(layers, fields, _key_names(schema))
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for name, fld in fields.items():
        required = fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING
        secret = bool(fld.metadata.get("secret"))
        if secret:
            value: Any = _resolve_secret(name, merged)
            given = value is not None
        else:
            given = name in merged
            value = _field_value(name, fld, hints, merged) if given else None
        if given:
            kwargs[name] = value
        elif required:
            raise ConfigError(_missing_message(name, tool, secret=secret))
    try:
        instance = schema(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration for {tool}: {exc}") from exc
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()
    return instance


def _merge_layers(
    layers: list[_Layer], fields: Mapping[str, dataclasses.Field[Any]], known: Mapping[str, str]
) -> dict[str, tuple[Any, _Layer]]:
    """Each canonical key -> (its value, the layer it came from); later layers win, mappings
    merge, and a secret given in a layer replaces every form of it from the layers before."""
    merged: dict[str, tuple[Any, _Layer]] = {}
    for layer in layers:
        seen_secret_groups: set[str] = set()
        for raw_key, value in layer.values.items():
            if raw_key not in known:
                raise ConfigError(
                    f"{layer.source}: unknown key {raw_key!r}" + _did_you_mean(raw_key, known)
                )
            key = known[raw_key]
            base = _secret_base(key, fields)
            if base is not None:
                if base in seen_secret_groups:
                    raise ConfigError(
                        f"{layer.source}: give only one of {base!r}, {base + '_file'!r},"
                        f" {base + '_command'!r}"
                    )
                seen_secret_groups.add(base)
                for suffix in SECRET_SOURCES:
                    merged.pop(base + suffix, None)
            previous = merged.get(key)
            if previous is not None and isinstance(previous[0], dict) and isinstance(value, dict):
                value = {**previous[0], **value}
            merged[key] = (value, layer)
    return merged


def _field_value(
    name: str,
    fld: dataclasses.Field[Any],
    hints: Mapping[str, Any],
    merged: Mapping[str, tuple[Any, _Layer]],
) -> Any:
    """The coerced, range-checked value given for a field."""
    value, layer = merged[name]
    source = layer.source_for(name)
    result = coerce(value, hints[name], source=source, key=name)
    check_range(result, fld.metadata, source=source, key=name)
    return result


def _secret_base(key: str, fields: Mapping[str, dataclasses.Field[Any]]) -> Optional[str]:
    for suffix in SECRET_SOURCES:
        base = key[: len(key) - len(suffix)] if suffix and key.endswith(suffix) else key
        if (suffix == "" or key.endswith(suffix)) and base in fields and _is_secret(fields[base]):
            return base
    return None


def _is_secret(fld: dataclasses.Field[Any]) -> bool:
    return bool(fld.metadata.get("secret"))


def _missing_message(name: str, tool: str, *, secret: bool) -> str:
    how = f"{name}, {name}_file or {name}_command" if secret else name
    return (
        f"missing required setting {how!r}: set it in {user_config_dir() / (tool + '.yaml')},"
        f" a --config file, or {env_prefix(tool)}{name.upper()}"
    )


def _resolve_secret(name: str, merged: Mapping[str, tuple[Any, _Layer]]) -> Optional[Secret]:
    if name in merged:
        value, layer = merged[name]
        if isinstance(value, Secret):
            return value
        where = f"{layer.source_for(name)}: key {name!r}"
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: expected a non-empty string")
        return _long_enough(one_line_secret(value, f"{where}: the value"), where)
    if name + "_file" in merged:
        value, layer = merged[name + "_file"]
        where = f"{layer.source_for(name + '_file')}: key {name + '_file'!r}"
        return _long_enough(read_secret_file(Path(str(value)).expanduser(), where), where)
    if name + "_command" in merged:
        value, layer = merged[name + "_command"]
        where = f"{layer.source_for(name + '_command')}: key {name + '_command'!r}"
        return _long_enough(run_secret_command(str(value), where), where)
    return None


def _long_enough(value: str, where: str) -> Secret:
    """A secret is masked wherever it appears: a short one would mask ordinary words in logs."""
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{where}: the secret is shorter than {MIN_SECRET_LENGTH} characters",
            hint="use the real token; a short one is refused because it cannot be told apart"
            " from ordinary words when logs are masked",
        )
    return Secret(value)


def read_secret_file(path: Path, where: str) -> str:
    """Read a secret from a file only its owner can access (as ssh insists for keys)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where}: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{where}: {path} is accessible by group or others (mode"
            f" {stat.S_IMODE(info.st_mode):04o}); refusing to read a secret from it",
            hint=f"chmod 600 {path}",
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from exc
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return one_line_secret(
        value, f"{where}: {path}", hint=f"keep only the secret, on one line, in {path}"
    )


def one_line_secret(value: str, where: str, *, hint: Optional[str] = None) -> str:
    """Register `value` for redaction and return it; ConfigError (78) naming `where`, never
    the value, if it has a line break inside (a token is one line; a multi-line one cannot
    go into a header and leaks through every message that quotes the header)."""
    lines = value.splitlines()
    for line in lines:
        register_secret(line)
    register_secret(value)
    if len(lines) > 1:
        raise ConfigError(
            f"{where} holds {len(lines)} lines; a secret must be a single line", hint=hint
        )
    return value


def run_secret_command(command: str, where: str) -> str:
    """Run `command` in a shell and use its standard output (stripped) as the secret."""
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            timeout=SECRET_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{where}: the command did not finish within {SECRET_COMMAND_TIMEOUT:.0f} s"
        ) from None
    value = result.stdout.decode("utf-8", "replace").strip()
    for line in value.splitlines():
        register_secret(line)
    register_secret(value)
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {lines[-1][:200]}" if lines else ""
        raise ConfigError(f"{where}: the command exited with status {result.returncode}{detail}")
    if not value:
        raise ConfigError(f"{where}: the command printed nothing")
    return one_line_secret(
        value,
        f"{where}: the output of the command",
        hint=f"print the secret alone, e.g. {command} | head -n1 (pass show prints more lines)",
    )


def coerce(value: Any, tp: Any, *, source: str, key: str) -> Any:
    """Convert a YAML, environment or flag value to the annotated type, or say what is wrong."""
    try:
        return _coerce(value, tp, source, key)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: key {key!r}: {exc}") from exc


def _bad(source: str, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: key {key!r}: expected {expected}, got {value!r}")


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        return _coerce_union(value, typing.get_args(tp), source, key)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp), source, key)
    if isinstance(tp, type) and hasattr(tp, "from_config"):
        return tp.from_config(_from_env_text(value), source=source, key=key)
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar(value, source, key)
    if origin in (list, tuple) or tp in (list, tuple):
        return _coerce_sequence(value, tp, origin or tp, typing.get_args(tp), source, key)
    if origin is dict or tp is dict:
        return _coerce_mapping(value, typing.get_args(tp), source, key)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _coerce_dataclass(value, tp, source, key)
    raise TypeError(f"unsupported config type {tp!r} for key {key!r}")


def _is_union(tp: Any) -> bool:
    """`Optional[X]`, `Union[X, Y]` and (Python 3.10+) `X | None`."""
    union_type = getattr(types, "UnionType", None)
    return typing.get_origin(tp) is Union or (union_type is not None and isinstance(tp, union_type))


def _coerce_literal(value: Any, choices: tuple[Any, ...], source: str, key: str) -> Any:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{source}: key {key!r}: expected one of {shown}, got {value!r}")
    return value


def _coerce_secret(value: Any, source: str, key: str) -> Secret:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: key {key!r}: expected a non-empty string")
    return Secret(one_line_secret(value, f"{source}: key {key!r}: the value"))


def _coerce_int(value: Any, source: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(source, key, "an integer", value)
    try:
        return int(value)
    except ValueError:
        raise _bad(source, key, "an integer", value) from None


def _coerce_float(value: Any, source: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(source, key, "a number", value)
    try:
        return float(value)
    except ValueError:
        raise _bad(source, key, "a number", value) from None


def _coerce_str(value: Any, source: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(source, key, "a string", value)
    return str(value)


def _coerce_path(value: Any, source: str, key: str) -> Path:
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise _bad(source, key, "a path", value)
    return Path(str(value)).expanduser()


def _coerce_union(value: Any, args: tuple[Any, ...], source: str, key: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors: list[str] = []
    for option in args:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, source, key)
        except (ConfigError, TypeError, ValueError) as exc:
            errors.append(str(exc))
    raise ConfigError(
        errors[0] if len(errors) == 1 else f"{source}: key {key!r}: unexpected value {value!r}"
    )


def _coerce_bool(value: Any, source: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad(source, key, "true or false", value)


_SCALARS: dict[Any, Callable[[Any, str, str], Any]] = {
    Secret: _coerce_secret,
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
    Path: _coerce_path,
}


def _from_env_text(value: Any) -> Any:
    """Environment values are strings; structured ones are written in YAML flow style."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        return yaml.safe_load(value)
    return value


def _coerce_sequence(
    value: Any, tp: Any, container: Any, args: tuple[Any, ...], source: str, key: str
) -> Any:
    value = _from_env_text(value)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise _bad(source, key, "a list", value)
    item_type = args[0] if args else Any
    items = [_coerce(item, item_type, source, f"{key}[{i}]") for i, item in enumerate(value)]
    return tuple(items) if container is tuple else items


def _coerce_mapping(value: Any, args: tuple[Any, ...], source: str, key: str) -> dict[str, Any]:
    value = _from_env_text(value)
    if not isinstance(value, dict):
        raise _bad(source, key, "a mapping", value)
    value_type = args[1] if len(args) == 2 else Any
    return {str(k): _coerce(v, value_type, source, f"{key}[{str(k)!r}]") for k, v in value.items()}


def _coerce_dataclass(value: Any, tp: type, source: str, key: str) -> Any:
    value = _from_env_text(value)
    if not isinstance(value, dict):
        raise _bad(source, key, "a mapping", value)
    fields = _fields(tp)
    hints = typing.get_type_hints(tp)
    kwargs: dict[str, Any] = {}
    for sub_key, sub_value in value.items():
        if sub_key not in fields:
            raise ConfigError(
                f"{source}: unknown key {key}.{sub_key}"
                + _did_you_mean(str(sub_key), {f: f for f in fields})
            )
        sub_name = f"{key}.{sub_key}"
        kwargs[sub_key] = _coerce(sub_value, hints[sub_key], source, sub_name)
        check_range(kwargs[sub_key], fields[sub_key].metadata, source=source, key=sub_name)
    for name, fld in fields.items():
        if (
            name not in kwargs
            and fld.default is dataclasses.MISSING
            and fld.default_factory is dataclasses.MISSING
        ):
            raise ConfigError(f"{source}: key {key}: missing required {name!r}")
    try:
        instance = tp(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: key {key}: {exc}") from exc
    return instance


def redacted_view(config: Any) -> dict[str, Any]:
    """The effective config as a plain dict with secrets masked, for logging once at start."""

    def convert(value: Any) -> Any:
        if isinstance(value, Secret):
            return MASK
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # Fields kept out of repr (a retry policy's clock, sleep and rng) are not settings.
            return {
                f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
            }
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return repr(value)

    view = convert(config)
    return view if isinstance(view, dict) else {"value": view}


def check_range(value: Any, metadata: Mapping[str, Any], *, source: str, key: str) -> None:
    """Apply a field's range metadata (`min`, `max`, `above`) to a value, naming its source.

    `field(metadata={"above": 0})` means greater than 0; `{"min": 0}` means 0 or more; for
    a path, `{"suffix": ".prom", "suffix_why": "..."}` is the ending it must have.
    None (an optional setting left unset) passes.
    """
    if isinstance(value, Path) and "suffix" in metadata and value.suffix != metadata["suffix"]:
        raise ConfigError(
            f"{source}: key {key!r}: {value} does not end in {metadata['suffix']}"
            + (f", so {metadata['suffix_why']}" if "suffix_why" in metadata else "")
        )
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if "above" in metadata and not value > metadata["above"]:
        raise ConfigError(
            f"{source}: key {key!r}: must be greater than {metadata['above']}, got {shown}"
        )
    if "min" in metadata and value < metadata["min"]:
        raise ConfigError(f"{source}: key {key!r}: must be {metadata['min']} or more, got {shown}")
    if "max" in metadata and value > metadata["max"]:
        raise ConfigError(f"{source}: key {key!r}: must be {metadata['max']} or less, got {shown}")


def state_base_dir() -> Path:
    """`$XDG_STATE_HOME/mint` (default `~/.local/state/mint`): every tool's state lives below."""
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "mint"


def tool_state_dir(tool: str) -> Path:
    """`mint-poll` -> `$XDG_STATE_HOME/mint/poll`."""
    return state_base_dir() / (tool[5:] if tool.startswith("mint-") else tool)


def legacy_state_dir(tool: str) -> Path:
    """Where a tool kept its state before the shared layout: `$XDG_STATE_HOME/<tool>`."""
    return state_base_dir().parent / tool


def migrate_state_dir(old: Path, new: Path) -> bool:
    """Move a state directory from its old place to `new` once, losing nothing; True if moved.

    One rename when both are on the same filesystem; otherwise a full copy to a
    temporary name beside `new`, a rename into place, and only then the old one
    removed. When both exist, `new` wins and a warning names `old`, which is left alone.
    """
    import logging
    import shutil

    log = logging.getLogger(__name__)
    if not old.is_dir() or old.is_symlink():
        return False
    if new.exists():
        if any(old.iterdir()):
            log.warning("state: both %s and the old %s exist; using %s", new, old, new)
        return False
    try:
        new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.rename(old, new)
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: another filesystem, copy instead
                raise
            staging = new.with_name(new.name + ".migrating")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(old, staging, symlinks=True)
            os.rename(staging, new)
            shutil.rmtree(old)
    except OSError as exc:
        raise ConfigError(
            f"cannot move the state directory {old} to {new}: {exc.strerror or exc}",
            hint=f"move it by hand (mv {old} {new}) or set state_dir to {old}",
        ) from exc
    log.warning("state: moved %s to %s (the new shared layout)", old, new)
    return True


def log_effective_config(logger: Any, config: Any, *, at_start: bool) -> None:
    """Log the effective configuration as one JSON object: at INFO when a daemon starts,
    otherwise at DEBUG (shown with -v), so cron runs do not repeat it every time."""
    import json
    import logging

    view = config if isinstance(config, dict) else redacted_view(config)
    logger.log(
        logging.INFO if at_start else logging.DEBUG,
        "effective configuration: %s",
        json.dumps(view, ensure_ascii=False, sort_keys=True, default=str),
    )
