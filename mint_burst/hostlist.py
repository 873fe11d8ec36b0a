"""Slurm host list expressions: `c[1-3,7],gpu-[01-02]` -> c1 c2 c3 c7 gpu-01 gpu-02."""

from __future__ import annotations

import re

MAX_EXPANDED = 100_000
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


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
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append("".join(current))
    return [p for p in parts if p]


def expand_hostlist(text: str) -> list[str]:
    """Expand a host list expression; raise ValueError on anything malformed."""
    names: list[str] = []
    for part in split_top_level(text.strip()):
        names.extend(_expand_one(part))
        if len(names) > MAX_EXPANDED:
            raise ValueError(f"host list {text[:80]!r} expands to too many names")
    return names


def _expand_one(part: str) -> list[str]:
    start = part.find("[")
    if start < 0:
        if "]" in part:
            raise ValueError(f"unbalanced ']' in host name {part!r}")
        return [part]
    end = part.find("]", start)
    if end < 0:
        raise ValueError(f"unbalanced '[' in host name {part!r}")
    prefix, body, rest = part[:start], part[start + 1 : end], part[end + 1 :]
    tails = _expand_one(rest) if rest else [""]
    names: list[str] = []
    for item in body.split(","):
        match = _RANGE.match(item)
        if not match:
            raise ValueError(f"bad range {item!r} in host list {part!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low) or int(high) - int(low) > MAX_EXPANDED:
            raise ValueError(f"bad range {item!r} in host list {part!r}")
        width = len(low) if low.startswith("0") else 0
        for number in range(int(low), int(high) + 1):
            names.extend(f"{prefix}{number:0{width}d}{tail}" for tail in tails)
    return names
