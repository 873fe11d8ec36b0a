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

F = TypeVar("F", bound=Callable[..., Any])
_META_KEY = "mint.options"


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


class MintCommand(click.Command):
    """Sets up logging from the global options before the command body runs."""

    def invoke(self, ctx: click.Context) -> Any:
        opts = _options(ctx)
        setup_logging(
            opts.tool, verbosity=opts.verbosity, log_format=opts.log_format, log_file=opts.log_file
        )
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
            status = report_error(exc, opts.tool, verbose=opts.verbosity > 0)
            ctx.exit(int(status))

    def main(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None, **extra: Any
    ) -> Any:
        return super().main(args=args, prog_name=prog_name or self.tool, **extra)


def exit_with(status: int) -> None:
    """End the command with `status` (for results that are not errors, like a failed check)."""
    logging.getLogger(__name__).debug("exit status %d", status)
    click.get_current_context().exit(int(ExitStatus(status)))
