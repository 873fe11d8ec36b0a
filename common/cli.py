"""The click glue every tool shares: global options, logging set-up, and the error ladder.

    @click.group(cls=MintGroup, tool="mint-poll")
    @common_options
    def main() -> None: ...

    @main.command()
    @common_options
    def once() -> None:
        opts = current_options()
        ...

`common_options` may be given before or after the subcommand
(`mint-poll -v once` and `mint-poll once -v` both work). Errors raised by a
command are mapped to exit statuses in one place (`mint_common.exitcodes`).
Core modules never import this one: it is for `cli.py` files only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click

from mint_common.exitcodes import ExitStatus, report_error
from mint_common.logging import LOG_FORMATS, setup_logging
from mint_common.signals import interrupt_on_signals
from mint_common.timeutil import DURATION_FORMS, parse_duration

F = TypeVar("F", bound=Callable[..., Any])
_META_KEY = "mint.options"
_ALIASES_KEY = "mint.aliases-used"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class GlobalOptions:
    tool: str
    config_file: Optional[Path] = None
    verbosity: int = 0
    log_format: str = "auto"
    log_file: Optional[Path] = None


def _options(ctx: click.Context) -> GlobalOptions:
    opts = ctx.meta.get(_META_KEY)
    if opts is None:
        root = ctx.find_root().command
        opts = GlobalOptions(tool=getattr(root, "tool", None) or root.name or "mint")
        ctx.meta[_META_KEY] = opts
    assert isinstance(opts, GlobalOptions)
    return opts


def current_options() -> GlobalOptions:
    """The global options of the running command (config file, verbosity, log settings)."""
    return _options(click.get_current_context())


def _store(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        opts = _options(ctx)
        if field == "verbose":
            opts.verbosity += int(value or 0)
        elif field == "quiet":
            opts.verbosity -= int(value or 0)
        elif value is not None:
            setattr(opts, field, value)

    return callback


def common_options(fn: F) -> F:
    """Add --config, -v/--verbose, -q/--quiet, --log-format and --log-file."""
    decorators = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_store("config_file"),
            help="Read settings from this YAML file (above /etc/mint and ~/.config/mint).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_store("verbose"),
            help="More detail; -v shows debug lines and tracebacks, -vv library logs too.",
        ),
        click.option(
            "-q",
            "--quiet",
            count=True,
            expose_value=False,
            callback=_store("quiet"),
            help="Only warnings and errors.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            expose_value=False,
            callback=_store("log_format"),
            help="auto: rich on a terminal, plain lines otherwise; json: one object per line.",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_store("log_file"),
            help="Also append log lines to this file.",
        ),
    ]
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


class DurationType(click.ParamType):
    """A length of time on the command line: `600`, `30m`, `2h`, `1h30m` -> seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(f"expected {DURATION_FORMS}, got {value!r}", param, ctx)


DURATION = DurationType()


class AliasedOption(click.Option):
    """An option that also answers to old spellings, hidden from --help until they go.

    `@click.option("--out-dir", cls=AliasedOption, old_names=("--dest",))`: using an old
    spelling works and logs one warning naming the new one.
    """

    def __init__(
        self, param_decls: Sequence[str], *, old_names: Sequence[str] = (), **attrs: Any
    ) -> None:
        super().__init__([*param_decls, *old_names], **attrs)
        self.old_names = tuple(old_names)

    @property
    def current_opts(self) -> list[str]:
        return [name for name in self.opts if name not in self.old_names]

    def get_help_record(self, ctx: click.Context) -> Optional[tuple[str, str]]:
        all_opts = self.opts
        self.opts = self.current_opts
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = all_opts


def _old_spellings_used(command: click.Command, args: Sequence[str]) -> list[tuple[str, str]]:
    used: list[tuple[str, str]] = []
    for arg in args:
        if arg == "--":
            break
        for param in command.params:
            if isinstance(param, AliasedOption):
                for old in param.old_names:
                    if arg == old or arg.startswith(old + "="):
                        used.append((old, param.current_opts[0]))
    return used


class MintCommand(click.Command):
    """Sets up logging from the global options before the command body runs.

    It also makes SIGTERM/SIGHUP unwind the command like Ctrl-C (exit 128 + N) and warns
    once for each old option spelling used.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ALIASES_KEY] = _old_spellings_used(self, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        opts = _options(ctx)
        setup_logging(
            opts.tool, verbosity=opts.verbosity, log_format=opts.log_format, log_file=opts.log_file
        )
        for old, new in ctx.meta.get(_ALIASES_KEY, ()):
            log.warning("%s is an old spelling of %s and goes in the next release", old, new)
        interrupt_on_signals()
        return super().invoke(ctx)


class MintGroup(click.Group):
    """A tool's top-level group: maps every error to the exit-code table and one stderr line."""

    command_class = MintCommand

    def __init__(self, *args: Any, tool: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool = tool or self.name

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            opts = _options(ctx)
            status = report_error(
                exc, opts.tool, verbose=opts.verbosity > 0, as_json=opts.log_format == "json"
            )
            ctx.exit(int(status))

    def main(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None, **extra: Any
    ) -> Any:
        return super().main(args=args, prog_name=prog_name or self.tool, **extra)


def exit_with(status: int) -> None:
    """End the command with `status` (for results that are not errors, like a failed check)."""
    logging.getLogger(__name__).debug("exit status %d", status)
    click.get_current_context().exit(int(ExitStatus(status)))
