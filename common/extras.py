"""Tell the user exactly which extra to install when a tool's dependencies are missing."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from mint_common.errors import MissingExtraError


def require_extra(tool: str, extra: str, modules: Iterable[str]) -> None:
    """Raise MissingExtraError (exit 69) naming the pip command if any module is absent.

    Uses `find_spec`, so nothing is imported here and start-up stays fast.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{tool} needs the '{extra}' extra, which is not installed"
            f" (missing Python module: {', '.join(missing)})",
            hint=f"pip install 'mint-tools[{extra}]'",
        )
