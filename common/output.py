"""Results go to stdout: JSON for scripts, a rich table on a terminal, plain columns otherwise."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

from mint_common.terminal import terminal


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def emit_json(document: Any, *, stream: Optional[TextIO] = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(document, ensure_ascii=False, indent=2, default=_default) + "\n")
    out.flush()


def emit_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: Optional[str] = None,
    stream: Optional[TextIO] = None,
) -> None:
    """A rich table on a terminal; tab-separated lines with a header otherwise."""
    out = stream if stream is not None else sys.stdout
    if terminal().is_tty(out):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        Console(file=out).print(table)
        return
    out.write("\t".join(columns) + "\n")
    for row in rows:
        out.write("\t".join("" if cell is None else str(cell) for cell in row) + "\n")
    out.flush()
