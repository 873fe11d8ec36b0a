"""Progress bars for transfers and waits: rich on a terminal, nothing otherwise.

Callers always get a callable `advance(n_bytes)`, so code paths do not branch on TTY.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Callable, Optional, TextIO

from mint_common.terminal import terminal


@contextlib.contextmanager
def transfer_progress(
    description: str,
    total: Optional[int],
    *,
    stream: Optional[TextIO] = None,
    enabled: Optional[bool] = None,
) -> Iterator[Callable[[int], None]]:
    out = stream if stream is not None else sys.stderr
    show = terminal().is_tty(out) if enabled is None else enabled
    if not show:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=out),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.update(task, advance=n)
