"""Small helpers for tests that run the tools as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def run_tool(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a console script of this venv as a subprocess (real exit codes, real signals)."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )
