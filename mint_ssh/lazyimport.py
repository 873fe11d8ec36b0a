"""Put off importing a module until one of its attributes is used."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _OnFirstUse(types.ModuleType):
    """Stands in `sys.modules` for a module: `import name` binds it for free, and the first
    attribute asked of it imports the real module (importlib's LazyLoader does not do here:
    every later `import` statement reads its `__spec__`, which loads it at once)."""

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attribute)


def defer_import(name: str) -> None:
    """Make `import name` cheap until `name` is really used. A module that is installed
    neither nor was imported already is left alone (its import fails as before)."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    sys.modules[name] = _OnFirstUse(name)
