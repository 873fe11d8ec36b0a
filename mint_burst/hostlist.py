"""Slurm host list expressions: `c[1-3,7],gpu-[01-02]` -> c1 c2 c3 c7 gpu-01 gpu-02.

A host list comes from the scheduler's output, so it is sized before it is expanded:
at most MAX_EXPANDED names in one list, none longer than MAX_NAME_LENGTH characters
(so one expansion holds at most about 25 MB), and no recursion, however many bracket
groups a name has.
"""

from __future__ import annotations

import itertools
import re
from typing import Union

MAX_EXPANDED = 100_000
# All the host lists of one scheduler answer together (a squeue line per running job).
MAX_NAMES_PER_ANSWER = 1_000_000
MAX_NAME_LENGTH = 255
_RANGE = re.compile(r"^([0-9]{1,18})(?:-([0-9]{1,18}))?$")

# One bracket group: its (low, high, zero-padded width) ranges.
Ranges = tuple[tuple[int, int, int], ...]
Segment = Union[str, Ranges]


class HostListTooLarge(ValueError):
    """A host list (or the host lists of one answer) would expand past its bound."""


def split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text[:80]!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text[:80]!r}")
    parts.append("".join(current))
    return [p for p in parts if p]


def expand_hostlist(text: str, *, limit: int = MAX_EXPANDED) -> list[str]:
    """Expand a host list expression; raise ValueError on anything malformed or too large."""
    patterns = [_parse(part) for part in split_top_level(text.strip())]
    total = 0
    for segments in patterns:
        total += _count(segments, limit)
        if total > limit:
            raise HostListTooLarge(
                f"host list {text[:80]!r} expands to more than {limit} names; refused"
            )
    names: list[str] = []
    for segments in patterns:
        names.extend(_names(segments))
    return names


class NameBudget:
    """How many more names the host lists of one scheduler answer may expand to."""

    def __init__(self, total: int = MAX_NAMES_PER_ANSWER) -> None:
        self.total = self.left = total

    def expand(self, text: str) -> list[str]:
        try:
            names = expand_hostlist(text, limit=min(MAX_EXPANDED, self.left))
        except HostListTooLarge:
            if self.left >= MAX_EXPANDED:
                raise
            raise HostListTooLarge(
                f"the host lists of one answer expand to more than {self.total} names; refused"
            ) from None
        self.left -= len(names)
        return names


def _parse(part: str) -> list[Segment]:
    """`r[1-2]n[01-02]` -> ["r", ((1, 2, 0),), "n", ((1, 2, 2),)]."""
    segments: list[Segment] = []
    position = length = 0
    while position < len(part):
        start = part.find("[", position)
        literal = part[position:] if start < 0 else part[position:start]
        if "]" in literal:
            raise ValueError(f"unbalanced ']' in host name {part[:80]!r}")
        if literal:
            segments.append(literal)
            length += len(literal)
        if start < 0:
            break
        end = part.find("]", start)
        if end < 0:
            raise ValueError(f"unbalanced '[' in host name {part[:80]!r}")
        ranges = tuple(_range(item, part) for item in part[start + 1 : end].split(","))
        segments.append(ranges)
        length += max(max(width, len(str(high))) for _low, high, width in ranges)
        if length > MAX_NAME_LENGTH:
            raise ValueError(f"host name {part[:80]!r} is longer than {MAX_NAME_LENGTH} chars")
        position = end + 1
    if length > MAX_NAME_LENGTH:
        raise ValueError(f"host name {part[:80]!r} is longer than {MAX_NAME_LENGTH} chars")
    return segments


def _range(item: str, part: str) -> tuple[int, int, int]:
    match = _RANGE.match(item)
    if not match:
        raise ValueError(f"bad range {item[:40]!r} in host list {part[:80]!r}")
    low, high = match.group(1), match.group(2) or match.group(1)
    if int(high) < int(low):
        raise ValueError(f"bad range {item!r} in host list {part[:80]!r}")
    return int(low), int(high), len(low) if low.startswith("0") else 0


def _count(segments: list[Segment], limit: int) -> int:
    """How many names the pattern stands for, stopping as soon as it passes `limit`."""
    count = 1
    for segment in segments:
        if isinstance(segment, tuple):
            count *= sum(high - low + 1 for low, high, _width in segment)
            if count > limit:
                return count
    return count


def _names(segments: list[Segment]) -> list[str]:
    choices = [
        [segment]
        if isinstance(segment, str)
        else [
            f"{number:0{width}d}" for low, high, width in segment for number in range(low, high + 1)
        ]
        for segment in segments
    ]
    return ["".join(parts) for parts in itertools.product(*choices)]
