"""Where the node table lives: a JSON state file replaced atomically (or memory, for simulate)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mint_burst.model import NodeTable
from mint_common.files import JsonState


class StateStore(Protocol):
    def load(self) -> NodeTable: ...

    def save(self, table: NodeTable) -> None: ...


class FileStore:
    """The node table in a JSON file; a malformed file is reported and left untouched."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = JsonState(path)

    def load(self) -> NodeTable:
        document = self._state.load(default=None)
        if document is None:
            return NodeTable()
        return NodeTable.from_json(document, str(self.path))

    def save(self, table: NodeTable) -> None:
        self._state.save(table.to_json())


class MemoryStore:
    """The node table kept in memory (simulation and tests)."""

    def __init__(self, table: NodeTable | None = None) -> None:
        self.table = table if table is not None else NodeTable()

    def load(self) -> NodeTable:
        return self.table

    def save(self, table: NodeTable) -> None:
        self.table = table
